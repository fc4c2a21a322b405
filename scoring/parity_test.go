package scoring

import (
	"encoding/csv"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// defaultModel is the committed model built by training/build_default_model.sh.
var defaultModel = filepath.Join("..", "models", "default")

// parityRow is one row of parity.csv: LightGBM's own probability for a feature row.
type parityRow struct {
	kind string
	x    []float64
	want float64
}

// readParity reads models/default/parity.csv (written by training/train.py): a kind column,
// the contract's features in order (empty = missing), then LightGBM's probability.
func readParity(t testing.TB, m *Model) []parityRow {
	t.Helper()
	f, err := os.Open(filepath.Join(defaultModel, "parity.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	names := m.Contract().Names()
	if want := append(append([]string{"kind"}, names...), "probability"); !slices.Equal(header, want) {
		t.Fatalf("parity.csv header %v, want %v", header, want)
	}
	var rows []parityRow
	for line := 2; ; line++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		row := parityRow{kind: rec[0], x: make([]float64, len(names))}
		for i, s := range rec[1 : len(rec)-1] {
			row.x[i] = math.NaN()
			if s != "" {
				if row.x[i], err = strconv.ParseFloat(s, 64); err != nil {
					t.Fatalf("parity.csv line %d: %v", line, err)
				}
			}
		}
		if row.want, err = strconv.ParseFloat(rec[len(rec)-1], 64); err != nil {
			t.Fatalf("parity.csv line %d: %v", line, err)
		}
		rows = append(rows, row)
	}
	return rows
}

// TestParity proves that the Go scorer (leaves, after the v4 header shim) gives LightGBM's
// own predict() probabilities for the committed model, over held-out rows and perturbed rows
// with missing values and missing, negative and unseen categories.
func TestParity(t *testing.T) {
	m, err := Load(defaultModel)
	if err != nil {
		t.Fatal(err)
	}
	rows := readParity(t, m)
	if len(rows) < 10000 {
		t.Fatalf("parity.csv has %d rows, want at least 10000", len(rows))
	}
	var maxRaw, maxNorm float64
	var withNaN, catMissing int
	cats := map[float64]bool{}
	x := make([]float64, m.NumFeatures())
	for i, r := range rows {
		if d := math.Abs(m.Score(r.x) - r.want); d > maxRaw || math.IsNaN(d) {
			maxRaw = d
		}
		// The production path: Vector's categorical encoding (missing -> -1).
		copy(x, r.x)
		if d := math.Abs(m.Score(m.normalise(x)) - r.want); d > maxNorm || math.IsNaN(d) {
			maxNorm = d
		}
		if slices.ContainsFunc(r.x, math.IsNaN) {
			withNaN++
		}
		for j, in := range m.inputs {
			if in.categorical {
				if x[j] < 0 {
					catMissing++
				} else {
					cats[x[j]] = true
				}
			}
		}
		if math.IsNaN(maxRaw) || math.IsNaN(maxNorm) {
			t.Fatalf("row %d: NaN probability", i)
		}
	}
	t.Logf("model %s: %d rows (%d with missing values, %d missing/negative categories, %d distinct categories): max |leaves - LightGBM| = %.3g raw, %.3g with Vector's categorical encoding",
		m.ID(), len(rows), withNaN, catMissing, len(cats), maxRaw, maxNorm)
	if maxRaw > 1e-9 || maxNorm > 1e-9 {
		t.Fatalf("max |leaves - LightGBM| = %g raw, %g encoded; want <= 1e-9", maxRaw, maxNorm)
	}
	if withNaN == 0 || catMissing == 0 || len(cats) < 2 {
		t.Fatalf("parity.csv does not exercise missing values and categories (%d rows with NaN, %d missing categories, %d categories)", withNaN, catMissing, len(cats))
	}

	// ScoreBatch gives the same numbers as Score.
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
