package scoring

import (
	"os"
	"path/filepath"
	"testing"
)

// defaultModel is the committed model built by `make model` (training/build_model.sh).
var defaultModel = filepath.Join("..", "models", "default")

// readDefaultParity reads models/default/parity.csv for the model m.
func readDefaultParity(t testing.TB, m *Model) []parityRow {
	t.Helper()
	f, err := os.Open(filepath.Join(defaultModel, ParityFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := readParity(f, m.Contract().Names())
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestParity proves that the Go scorer (leaves, after the v4 header shim, then the
// calibration map if the model has one) gives the probabilities Python computed with
// LightGBM's own predict() for the committed model, over synthetic rows, edge cases and
// perturbed rows with missing values, infinities and missing, negative and unseen categories.
func TestParity(t *testing.T) {
	m, rep, err := CheckParityDir(defaultModel)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("model %s (calibrated: %v): %d rows (%d with missing values, %d missing/negative categories, %d distinct categories): max |Go - LightGBM| = %.3g raw, %.3g with Vector's categorical encoding (worst at line %d)",
		m.ID(), rep.Calibrated, rep.Rows, rep.RowsWithMissing, rep.MissingCategories, rep.DistinctCategories, rep.MaxAbsDiffRaw, rep.MaxAbsDiffEncoded, rep.WorstLine)
	if rep.Rows < 10000 {
		t.Fatalf("parity.csv has %d rows, want at least 10000", rep.Rows)
	}
	if rep.MaxAbsDiff > 1e-9 {
		t.Fatalf("max |Go - LightGBM| = %g (line %d); want <= 1e-9", rep.MaxAbsDiff, rep.WorstLine)
	}
	if rep.RowsWithMissing == 0 || rep.MissingCategories == 0 || rep.DistinctCategories < 2 {
		t.Fatalf("parity.csv does not exercise missing values and categories: %+v", rep)
	}

	// ScoreBatch gives the same numbers as Score.
	rows := readDefaultParity(t, m)
	flat := make([]float64, 0, len(rows)*m.NumFeatures())
	for _, r := range rows {
		flat = append(flat, r.x...)
	}
	out := make([]float64, len(rows))
	m.ScoreBatch(flat, out)
	for i, r := range rows {
		if out[i] != m.Score(r.x) {
			t.Fatalf("row %d: ScoreBatch %v, Score %v", i, out[i], m.Score(r.x))
		}
	}
}
