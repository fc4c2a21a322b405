package scoring

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nhsx/dnarisk/featurestore"
)

// TestCommittedReferences: every committed model directory has a training reference that
// loads, belongs to its contract (model id, features in contract order with their types),
// has the score's deciles as bins, and holds its inputs in the risk event's representation
// (the specialty as FeatureMap gives it is a listed category).
func TestCommittedReferences(t *testing.T) {
	for _, name := range []string{"default", "decision", "challenger"} {
		dir := filepath.Join("..", "models", name)
		if _, err := os.Stat(dir); name == "challenger" && os.IsNotExist(err) {
			continue
		}
		t.Run(name, func(t *testing.T) {
			m, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			r, err := LoadReference(dir)
			if err != nil {
				t.Fatal(err)
			}
			if r == nil {
				t.Fatalf("%s has no %s", dir, ReferenceFile)
			}
			if err := r.Check(m.Contract()); err != nil {
				t.Fatal(err)
			}
			// Deciles: a tenth of the rows in each bin, unless the served probabilities tie
			// (isotonic calibration's steps, models/decision): a step holding more than a
			// tenth of the rows merges deciles, leaving fewer edges.
			if len(r.Score.Edges) < 5 || r.Rows < 10000 {
				t.Errorf("score edges %v over %d rows, want deciles over at least 10,000 rows", r.Score.Edges, r.Rows)
			}
			for i, s := range r.Score.Shares {
				if len(r.Score.Edges) == 9 && math.Abs(s-0.1) > 0.01 || s < 0.02 {
					t.Errorf("score bin %d of %d holds %.4f of the rows, want about a tenth (deciles)", i, len(r.Score.Shares), s)
				}
			}
			if m.Contract().Calibration == nil || m.Contract().Calibration.Method == "platt" {
				if len(r.Score.Edges) != 9 {
					t.Errorf("%d score edges, want 9: served probabilities without isotonic steps do not tie", len(r.Score.Edges))
				}
			}
			ev := booking(nil)
			ev.Booking.Specialty = "130"
			fm := m.FeatureMap(m.Vector(ev, featurestore.Compute(ev, nil), nil))
			for _, f := range r.Features {
				if f.Name == "specialty" {
					if fm["specialty"] != 130 || f.Bin(fm["specialty"]) == len(f.Categories) || f.Shares[f.Bin(130)] < 0.05 {
						t.Errorf("specialty 130 is %v in the risk event, bin %d of categories %v (shares %v)", fm["specialty"], f.Bin(fm["specialty"]), f.Categories, f.Shares)
					}
				}
			}
		})
	}
}

func TestLoadReferenceAbsent(t *testing.T) {
	r, err := LoadReference(t.TempDir())
	if r != nil || err != nil {
		t.Fatalf("LoadReference of a directory without one = %v, %v; want nil, nil", r, err)
	}
}

func TestBins(t *testing.T) {
	b := Bins{Edges: []float64{1, 2, 4}}
	for _, c := range []struct {
		v    float64
		want int
	}{{0, 0}, {1, 0}, {1.5, 1}, {2, 1}, {3, 2}, {4, 2}, {4.01, 3}, {math.Inf(1), 3}} {
		if got := b.Bin(c.v); got != c.want {
			t.Errorf("Bin(%v) = %d, want %d (edges strictly less than v)", c.v, got, c.want)
		}
	}
	f := FeatureReference{Type: Categorical, Categories: []float64{110, 130}}
	if f.Bin(110) != 0 || f.Bin(130) != 1 || f.Bin(420) != 2 {
		t.Errorf("categorical bins %d %d %d, want 0 1 2 (other)", f.Bin(110), f.Bin(130), f.Bin(420))
	}
	n := FeatureReference{Type: Numeric, Edges: []float64{0, 1}}
	if n.Bin(0) != 0 || n.Bin(0.5) != 1 || n.Bin(7) != 2 {
		t.Errorf("numeric bins %d %d %d, want 0 1 2", n.Bin(0), n.Bin(0.5), n.Bin(7))
	}
}

// TestReferenceRefused: a malformed reference is refused, saying what is wrong and how to
// rebuild it; one for another model fails Check.
func TestReferenceRefused(t *testing.T) {
	good := func() map[string]any {
		return map[string]any{
			"schema": ReferenceSchema, "model_id": "dna-gbm-1", "rows": 100,
			"window": map[string]any{"from": "2025-11-20", "to": "2026-01-03"}, "how": "test rows",
			"score": map[string]any{"edges": []float64{0.1, 0.2}, "shares": []float64{0.3, 0.3, 0.4}},
			"features": []any{
				map[string]any{"name": "lead_time_days", "type": "numeric", "missing_share": 0, "edges": []float64{7, 30}, "shares": []float64{0.2, 0.5, 0.3}},
				map[string]any{"name": "specialty", "type": "categorical", "missing_share": 0.1, "categories": []float64{110, 130}, "shares": []float64{0.6, 0.4, 0}},
				map[string]any{"name": "deprivation_decile", "type": "numeric", "missing_share": 1, "edges": []float64{}, "shares": []float64{0}},
			},
		}
	}
	feature := func(m map[string]any, i int) map[string]any { return m["features"].([]any)[i].(map[string]any) }
	write := func(t *testing.T, m map[string]any) string {
		t.Helper()
		dir := t.TempDir()
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ReferenceFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	r, err := LoadReference(write(t, good()))
	if err != nil || r == nil || len(r.Features) != 3 || r.Features[1].Categories[1] != 130 {
		t.Fatalf("good reference: %+v, %v", r, err)
	}
	contract := Contract{ModelID: "dna-gbm-1", Features: []Feature{{"lead_time_days", Numeric, nil}, {"specialty", Categorical, nil}, {"deprivation_decile", Numeric, nil}}}
	if err := r.Check(contract); err != nil {
		t.Errorf("Check against its own contract: %v", err)
	}
	for _, c := range []struct {
		contract Contract
		want     string
	}{
		{Contract{ModelID: "other", Features: contract.Features}, "training reference is for model dna-gbm-1, the contract for other"},
		{Contract{ModelID: "dna-gbm-1", Features: contract.Features[:2]}, "has 3 features, the contract of dna-gbm-1 2"},
		{Contract{ModelID: "dna-gbm-1", Features: []Feature{contract.Features[1], contract.Features[0], contract.Features[2]}}, "features[0] is lead_time_days (numeric), the contract's specialty (categorical)"},
	} {
		if err := r.Check(c.contract); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Check = %v, want %q", err, c.want)
		}
	}

	bad := []struct {
		name   string
		change func(m map[string]any)
		want   string
	}{
		{"schema", func(m map[string]any) { m["schema"] = "reference.v0" }, `schema "reference.v0", want "reference.v1"`},
		{"unknown field", func(m map[string]any) { m["extra"] = 1 }, `unknown field "extra"`},
		{"no rows", func(m map[string]any) { m["rows"] = 0 }, "rows 0"},
		{"window", func(m map[string]any) { m["window"] = map[string]any{"from": "2026-01-03", "to": "2025-11-20"} }, "window"},
		{"score edges decrease", func(m map[string]any) { m["score"].(map[string]any)["edges"] = []float64{0.2, 0.1} }, "score: edges[1] 0.1: want finite, strictly increasing"},
		{"score shares sum", func(m map[string]any) { m["score"].(map[string]any)["shares"] = []float64{0.3, 0.3, 0.3} }, "score: shares sum to 0.8999"},
		{"score shares count", func(m map[string]any) { m["score"].(map[string]any)["shares"] = []float64{0.5, 0.5} }, "score: 2 shares for 2 edges, want 3"},
		{"ten edges", func(m map[string]any) {
			feature(m, 0)["edges"] = []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
		}, "features[0] (lead_time_days): 10 edges, at most 9"},
		{"negative share", func(m map[string]any) { feature(m, 0)["shares"] = []float64{-0.1, 0.8, 0.3} }, "shares[0] -0.1 out of range"},
		{"missing share", func(m map[string]any) { feature(m, 0)["missing_share"] = 1.5 }, "missing_share 1.5"},
		{"type", func(m map[string]any) { feature(m, 0)["type"] = "text" }, `type "text"`},
		{"category code", func(m map[string]any) { feature(m, 1)["categories"] = []float64{110, -1} }, "features[1] (specialty): categories[1] -1"},
		{"repeated category", func(m map[string]any) { feature(m, 1)["categories"] = []float64{110, 110} }, "categories[1] 110"},
		{"no other share", func(m map[string]any) { feature(m, 1)["shares"] = []float64{0.6, 0.4} }, "2 shares for 2 categories"},
		{"edges on a categorical", func(m map[string]any) { feature(m, 1)["edges"] = []float64{1} }, "a categorical feature has edges"},
		{"zero shares with values", func(m map[string]any) { feature(m, 2)["missing_share"] = 0.5 }, "features[2] (deprivation_decile): shares sum to 0, want 1"},
		{"twice", func(m map[string]any) { feature(m, 2)["name"] = "lead_time_days" }, "lead_time_days is listed twice"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			m := good()
			b.change(m)
			dir := write(t, m)
			r, err := LoadReference(dir)
			if err == nil || r != nil || !strings.Contains(err.Error(), b.want) || !strings.Contains(err.Error(), "training/reference.py --model-dir "+dir) {
				t.Errorf("LoadReference = %v, %v; want an error with %q and how to rebuild", r, err, b.want)
			}
		})
	}
}
