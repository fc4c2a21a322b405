package scoring

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestCalibrationApplyIsNumpyInterp(t *testing.T) {
	c := &Calibration{X: []float64{0.01, 0.1, 0.2, 0.5}, Y: []float64{0.02, 0.05, 0.05, 0.6}}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	// Expected values from numpy.interp(p, x, y).
	for _, tc := range []struct{ p, want float64 }{
		{0, 0.02}, {0.005, 0.02}, {0.01, 0.02}, {0.055, 0.035}, {0.1, 0.05}, {0.15, 0.05},
		{0.2, 0.05}, {0.35, 0.325}, {0.5, 0.6}, {0.9, 0.6}, {1, 0.6},
	} {
		if got := c.apply(tc.p); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("apply(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if !math.IsNaN(c.apply(math.NaN())) {
		t.Error("NaN in, want NaN out")
	}
}

func TestCalibrationRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		x, y []any
		want string
	}{
		{"one knot", []any{0.1}, []any{0.1}, "want the same number"},
		{"lengths differ", []any{0.1, 0.2}, []any{0.1}, "want the same number"},
		{"x not ascending", []any{0.1, 0.1}, []any{0.1, 0.2}, "strictly ascending"},
		{"y decreasing", []any{0.1, 0.2}, []any{0.2, 0.1}, "non-decreasing"},
		{"y reaches 0", []any{0.1, 0.2}, []any{0, 0.1}, "strictly between 0 and 1"},
		{"y reaches 1", []any{0.1, 0.2}, []any{0.5, 1}, "strictly between 0 and 1"},
		{"x above 1", []any{0.1, 1.5}, []any{0.1, 0.2}, "outside 0..1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			model, c := fixture(t)
			c["calibration"] = map[string]any{"method": "isotonic", "x": tc.x, "y": tc.y}
			_, err := Load(writeDir(t, model, c))
			if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrInvalidModel containing %q", err, tc.want)
			}
		})
	}
}

// TestCalibratedModel: a calibration map in the contract changes Score and ScoreBatch to
// the map applied to the trees' probability, and nothing else.
func TestCalibratedModel(t *testing.T) {
	model, c := fixture(t)
	delete(c, "calibration") // the committed model may or may not be calibrated
	plain, err := Load(writeDir(t, model, c))
	if err != nil {
		t.Fatal(err)
	}
	cal := &Calibration{Method: "isotonic", X: []float64{0, 0.05, 0.1, 0.3, 1}, Y: []float64{0.001, 0.04, 0.12, 0.35, 0.9}}
	c["calibration"] = map[string]any{"method": cal.Method, "x": cal.X, "y": cal.Y}
	m, err := Load(writeDir(t, model, c))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Calibrated() || plain.Calibrated() || m.Digest() == plain.Digest() {
		t.Fatalf("Calibrated %v/%v, digests %s/%s", m.Calibrated(), plain.Calibrated(), m.Digest(), plain.Digest())
	}
	rows := readDefaultParity(t, plain)[:500]
	flat := make([]float64, 0, len(rows)*m.NumFeatures())
	for _, r := range rows {
		flat = append(flat, r.x...)
		if got, want := m.Score(r.x), cal.apply(plain.Score(r.x)); got != want {
			t.Fatalf("calibrated Score %v, want cal(%v) = %v", got, plain.Score(r.x), want)
		}
	}
	out := make([]float64, len(rows))
	m.ScoreBatch(flat, out)
	for i, r := range rows {
		if out[i] != m.Score(r.x) {
			t.Fatalf("row %d: ScoreBatch %v, Score %v", i, out[i], m.Score(r.x))
		}
	}
	if mc := m.Contract(); mc.Calibration == nil || &mc.Calibration.X[0] == &m.cal.X[0] {
		t.Fatal("Contract does not return a copy of the calibration")
	}
}

func TestLoadRefusesMismatchedPair(t *testing.T) {
	model, c := fixture(t)
	dir := writeDir(t, model, c)
	other := strings.Replace(model, "\nTree=0\n", "\nTree=0\n", 1) + "\n"
	writeFile(t, dir+"/"+ModelFile, []byte(other))
	_, err := Load(dir)
	if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), "different models") {
		t.Fatalf("model.txt that does not match model_sha256: %v", err)
	}
	c["model_sha256"] = "ABC"
	_, err = Load(writeDir(t, "", c))
	if err == nil || !strings.Contains(err.Error(), "64 lower-case hex") {
		t.Fatalf("malformed model_sha256: %v", err)
	}
}
