package scoring

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// ParityFile is the file in a model directory with LightGBM's own probabilities for synthetic
// feature rows (no row of the training data; training/parity.py), written by training/train.py.
const ParityFile = "parity.csv"

// ParityReport is what CheckParity measured.
type ParityReport struct {
	ModelID string `json:"model_id"`
	Rows    int    `json:"rows"`
	// RowsWithMissing have at least one missing (empty) value; MissingCategories counts
	// categorical values that are missing or negative; DistinctCategories the distinct
	// non-negative categorical values.
	RowsWithMissing    int `json:"rows_with_missing"`
	MissingCategories  int `json:"missing_categories"`
	DistinctCategories int `json:"distinct_categories"`
	// MaxAbsDiffRaw compares Score on the row as written (NaN for a missing category);
	// MaxAbsDiffEncoded on the row with Vector's categorical encoding (missing -> -1), the
	// production path. MaxAbsDiff is the larger of the two.
	MaxAbsDiffRaw     float64 `json:"max_abs_diff_raw"`
	MaxAbsDiffEncoded float64 `json:"max_abs_diff_encoded"`
	MaxAbsDiff        float64 `json:"max_abs_diff"`
	// WorstLine is the parity.csv line of the largest difference.
	WorstLine  int  `json:"worst_line"`
	Calibrated bool `json:"calibrated"`
}

// parityRow is one row of parity.csv: a feature row and the probability Python computed.
type parityRow struct {
	line int
	kind string
	x    []float64
	want float64
}

// readParity reads parity.csv: a kind column, the contract's features in model order (empty
// = missing), then the expected probability.
func readParity(r io.Reader, names []string) ([]parityRow, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if want := append(append([]string{"kind"}, names...), "probability"); !slices.Equal(header, want) {
		return nil, fmt.Errorf("header %v, want %v (kind, the contract's features in order, probability)", header, want)
	}
	var rows []parityRow
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		line, _ := cr.FieldPos(0)
		row := parityRow{line: line, kind: rec[0], x: make([]float64, len(names))}
		for i, s := range rec[1 : len(rec)-1] {
			row.x[i] = math.NaN()
			if s != "" {
				if row.x[i], err = strconv.ParseFloat(s, 64); err != nil {
					return nil, fmt.Errorf("line %d: %w", line, err)
				}
			}
		}
		if row.want, err = strconv.ParseFloat(rec[len(rec)-1], 64); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// CheckParity scores every row of a parity file (parity.csv, as training/train.py writes it)
// with m and reports the largest difference from the probability Python computed with
// LightGBM (and the calibration map, when the model has one). It returns an error only when
// the file cannot be read; judging the difference is the caller's.
func CheckParity(m *Model, r io.Reader) (ParityReport, error) {
	rep := ParityReport{ModelID: m.ID(), Calibrated: m.Calibrated()}
	rows, err := readParity(r, m.contract.Names())
	if err != nil {
		return rep, fmt.Errorf("%s: %w", ParityFile, err)
	}
	rep.Rows = len(rows)
	cats := map[float64]bool{}
	x := make([]float64, m.NumFeatures())
	worst := -1.0
	for _, r := range rows {
		copy(x, r.x)
		raw := math.Abs(m.Score(x) - r.want)
		enc := math.Abs(m.Score(m.normalise(x)) - r.want)
		if math.IsNaN(raw) || math.IsNaN(enc) {
			raw, enc = math.Inf(1), math.Inf(1)
		}
		rep.MaxAbsDiffRaw = max(rep.MaxAbsDiffRaw, raw)
		rep.MaxAbsDiffEncoded = max(rep.MaxAbsDiffEncoded, enc)
		if d := max(raw, enc); d > worst {
			worst, rep.WorstLine = d, r.line
		}
		if slices.ContainsFunc(r.x, math.IsNaN) {
			rep.RowsWithMissing++
		}
		for j, in := range m.inputs {
			if in.categorical {
				if x[j] < 0 {
					rep.MissingCategories++
				} else {
					cats[x[j]] = true
				}
			}
		}
	}
	rep.DistinctCategories = len(cats)
	rep.MaxAbsDiff = max(rep.MaxAbsDiffRaw, rep.MaxAbsDiffEncoded)
	return rep, nil
}

// CheckParityDir loads the model directory dir and checks it against its parity.csv.
func CheckParityDir(dir string) (*Model, ParityReport, error) {
	m, err := Load(dir)
	if err != nil {
		return nil, ParityReport{}, err
	}
	f, err := os.Open(filepath.Join(dir, ParityFile))
	if err != nil {
		return m, ParityReport{ModelID: m.ID()}, err
	}
	defer f.Close()
	rep, err := CheckParity(m, f)
	return m, rep, err
}
