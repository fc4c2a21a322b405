package scoring

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmitryikh/leaves"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
)

// fixture returns the default model's text and its contract as a generic JSON object, for
// tests to break one thing at a time.
func fixture(t *testing.T) (string, map[string]any) {
	t.Helper()
	mb, err := os.ReadFile(filepath.Join(defaultModel, ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	cb, err := os.ReadFile(filepath.Join(defaultModel, ContractFile))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(cb, &c); err != nil {
		t.Fatal(err)
	}
	return string(mb), c
}

// writeDir writes a model directory into a temporary directory; a nil contract or an empty
// model text leaves that file out. The contract's model_sha256 is set to the model text's,
// so a test that edits the text tests what it means to (TestLoadRefusesMismatchedPair tests
// the hash itself).
func writeDir(t *testing.T, model string, contract map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	if contract != nil && model != "" {
		if _, ok := contract["model_sha256"]; ok {
			sum := sha256.Sum256([]byte(model))
			contract["model_sha256"] = hex.EncodeToString(sum[:])
		}
	}
	if model != "" {
		if err := os.WriteFile(filepath.Join(dir, ModelFile), []byte(model), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if contract != nil {
		b, err := json.Marshal(contract)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ContractFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func features(c map[string]any) []any { return c["features"].([]any) }

func feature(c map[string]any, name string) map[string]any {
	for _, f := range features(c) {
		if f := f.(map[string]any); f["name"] == name {
			return f
		}
	}
	panic("no feature " + name)
}

func bands(c map[string]any, b ...any) {
	var out []any
	for i := 0; i < len(b); i += 2 {
		out = append(out, map[string]any{"name": b[i], "min_probability": b[i+1]})
	}
	c["risk_bands"] = out
}

func TestLoadDefault(t *testing.T) {
	m, err := Load(defaultModel)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Contract()
	if m.ID() == "" || m.ID() != c.ModelID || m.NumFeatures() != len(c.Features) {
		t.Fatalf("ID %q, contract %+v", m.ID(), c)
	}
	if c.TrainingRows <= 0 || c.TrainedAt.IsZero() {
		t.Fatalf("contract misses training facts: %+v", c)
	}
	c.Features[0].Name = "changed"
	if m.Contract().Features[0].Name == "changed" {
		t.Fatal("Contract returned shared state")
	}
}

// TestLeavesNeedsTheShim shows why the shim exists: leaves refuses LightGBM 4's header.
func TestLeavesNeedsTheShim(t *testing.T) {
	text, _ := fixture(t)
	if !strings.Contains(text, "\nversion=v4\n") {
		t.Skip("default model is not a v4 model")
	}
	_, err := leaves.LGEnsembleFromReader(bufio.NewReader(strings.NewReader(text)), true)
	if err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("leaves on an unshimmed v4 model: %v, want a version error", err)
	}
}

func TestLoadRefuses(t *testing.T) {
	text, _ := fixture(t)
	endTrees := strings.Index(text, "end of trees")
	if resized(text) != text {
		t.Fatal("resized changes an unedited model")
	}
	tests := []struct {
		name   string
		model  func(string) string
		change func(c map[string]any)
		want   string
	}{
		{name: "no model file", model: func(string) string { return "" }, want: "no such file"},
		{name: "no contract file", change: func(c map[string]any) {}, want: "no such file"},
		{name: "truncated in half", model: func(s string) string { return s[:len(s)/2] }, want: "truncated"},
		{name: "truncated inside the last tree", model: func(s string) string { return s[:endTrees-100] }, want: "truncated"},
		{name: "truncated after the trees", model: func(s string) string { return s[:endTrees] }, want: "end of trees"},
		{name: "only the header", model: func(s string) string { return s[:strings.Index(s, "\n\n")] }, want: "no blank line after the header"},
		{name: "empty file", model: func(string) string { return "\n" }, want: "no blank line"},
		{name: "JSON dump", model: func(string) string { return "{\"name\":\"tree\",\"version\":\"v4\"}\n\n" }, want: "not a LightGBM text model"},
		{name: "unknown format version", model: replace("\nversion=v4\n", "\nversion=v5\n"), want: `version "v5"`},
		{name: "tree_sizes off by one", model: func(s string) string {
			i := strings.Index(s, "tree_sizes=") + len("tree_sizes=")
			j := i + strings.IndexByte(s[i:], ' ')
			n := s[i:j]
			return s[:i] + n + "0" + s[j:]
		}, want: "tree_sizes"},
		{name: "split on a feature the model does not have", model: func(s string) string {
			s = strings.Replace(s, "\nsplit_feature=", "\nsplit_feature=99", 1)
			return resized(s)
		}, want: "splits on feature 99"},
		{name: "tree array too short", model: func(s string) string {
			s = strings.Replace(s, "\nleaf_value=", "\nleaf_value=1 ", 1)
			return resized(s)
		}, want: "leaf_value has"},
		{name: "regression objective", model: replace("objective=binary sigmoid:1", "objective=regression"), want: "binary classification only"},
		{name: "multiclass objective", model: replace("objective=binary sigmoid:1", "objective=multiclass num_class:1"), want: "binary classification only"},
		{name: "cross-entropy objective", model: replace("objective=binary sigmoid:1", "objective=cross_entropy"), want: "binary classification only"},
		{name: "sigmoid 2", model: replace("objective=binary sigmoid:1", "objective=binary sigmoid:2"), want: "sigmoid 1 only"},
		{name: "random forest", model: replace("objective=binary sigmoid:1\n", "objective=binary sigmoid:1\naverage_output\n"), want: "random forest"},
		{name: "linear tree", model: replace("is_linear=0", "is_linear=1"), want: "linear tree"},
		{name: "pandas categories", model: replace("pandas_categorical:", "pandas_categorical:[[\"110\", \"300\"]]\nx:"), want: "pandas category columns"},
		{name: "contract has fewer features", change: func(c map[string]any) {
			c["features"] = features(c)[:len(features(c))-1]
		}, want: fmt.Sprintf("contract.json lists %d", len(featurestore.Names)-1)},
		{name: "contract in a different order", change: func(c map[string]any) {
			f := features(c)
			f[0], f[1] = f[1], f[0]
		}, want: "differs from contract.json features"},
		{name: "unknown feature", change: func(c map[string]any) { feature(c, "lead_time_days")["name"] = "lead_time" }, want: `unknown feature "lead_time"`},
		{name: "extra without a key", change: func(c map[string]any) { feature(c, "lead_time_days")["name"] = "extra." }, want: "names no booking extra key"},
		{name: "extra not in the model", change: func(c map[string]any) { feature(c, "lead_time_days")["name"] = "extra.imd_score" }, want: "differs from contract.json features"},
		{name: "duplicate feature", change: func(c map[string]any) { feature(c, "first_visit")["name"] = "lead_time_days" }, want: "listed twice"},
		{name: "unknown feature type", change: func(c map[string]any) { feature(c, "hour")["type"] = "ordinal" }, want: `type "ordinal"`},
		{name: "categorical feature declared numeric", change: func(c map[string]any) { feature(c, "specialty")["type"] = "numeric" }, want: `"specialty" is numeric in contract.json but the model's feature_infos`},
		{name: "numeric feature declared categorical", change: func(c map[string]any) { feature(c, "lead_time_days")["type"] = "categorical" }, want: `"lead_time_days" is categorical in contract.json but the model's feature_infos`},
		{name: "categorical only detectable from the splits", model: func(s string) string {
			// Hide specialty's categories so only the trees can tell.
			i := strings.Index(s, "feature_infos=")
			infos := strings.Fields(s[i+len("feature_infos=") : i+strings.IndexByte(s[i:], '\n')])
			spec := slices.Index(featurestore.Names, "specialty")
			infos[spec] = "none"
			s = s[:i] + "feature_infos=" + strings.Join(infos, " ") + s[i+strings.IndexByte(s[i:], '\n'):]
			return replace(fmt.Sprintf("[categorical_feature: %d]\n", spec), "")(s)
		}, change: func(c map[string]any) { feature(c, "specialty")["type"] = "numeric" }, want: "split on it as categorical"},
		{name: "no bands", change: func(c map[string]any) { bands(c) }, want: "risk_bands is empty"},
		{name: "bands not starting at 0", change: func(c map[string]any) { bands(c, "low", 0.01, "high", 0.2) }, want: "must start at 0"},
		{name: "bands descending", change: func(c map[string]any) { bands(c, "low", 0, "high", 0.3, "medium", 0.1) }, want: "strictly ascending"},
		{name: "bands equal", change: func(c map[string]any) { bands(c, "low", 0, "medium", 0.1, "high", 0.1) }, want: "strictly ascending"},
		{name: "band above 1", change: func(c map[string]any) { bands(c, "low", 0, "high", 1.5) }, want: "outside 0..1"},
		{name: "band without a name", change: func(c map[string]any) { bands(c, "low", 0, "", 0.5) }, want: "has no name"},
		{name: "band twice", change: func(c map[string]any) { bands(c, "low", 0, "low", 0.5) }, want: "listed twice"},
		{name: "no model_id", change: func(c map[string]any) { delete(c, "model_id") }, want: "model_id"},
		{name: "model_id with spaces", change: func(c map[string]any) { c["model_id"] = "my model" }, want: "model_id"},
		{name: "contract not JSON", change: func(c map[string]any) { c["features"] = "all of them" }, want: "contract.json: cannot decode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			model, contract := fixture(t)
			if tc.model != nil {
				model = tc.model(model)
			}
			if tc.name == "no contract file" {
				contract = nil
			} else if tc.change != nil {
				tc.change(contract)
			}
			_, err := Load(writeDir(t, model, contract))
			if err == nil {
				t.Fatalf("Load accepted it, want an error containing %q", tc.want)
			}
			if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want ErrInvalidModel containing %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

// resized rewrites tree_sizes to match the tree blocks after a test edited one of them.
func resized(s string) string {
	head, rest, _ := strings.Cut(s, "\n\n")
	end := strings.Index(rest, "end of trees\n")
	var sizes []string
	for blocks := rest[:end]; blocks != ""; {
		next := strings.Index(blocks[1:], "\nTree=")
		n := len(blocks)
		if next >= 0 {
			n = next + 2
		}
		sizes = append(sizes, strconv.Itoa(n))
		blocks = blocks[n:]
	}
	i := strings.Index(head, "tree_sizes=")
	j := i + strings.IndexByte(head[i:]+"\n", '\n')
	return head[:i] + "tree_sizes=" + strings.Join(sizes, " ") + head[j:] + "\n\n" + rest
}

func replace(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("fixture lacks " + old)
		}
		return strings.Replace(s, old, new, 1)
	}
}

// testModel is a Model with the given contract features and no trees, for the input tests.
func testModel(fs ...Feature) *Model {
	c := Contract{ModelID: "t", Features: fs, RiskBands: []Band{{"low", 0}, {"medium", 0.1}, {"high", 0.2}, {"very_high", 0.4}}}
	return &Model{contract: c, inputs: newInputs(c), names: c.featureNames()}
}

func booking(extra events.Extra) *events.Appointment {
	start := time.Date(2025, 3, 10, 9, 30, 0, 0, time.UTC)
	return &events.Appointment{
		Schema: events.AppointmentSchema, EventID: "e1", Type: events.Booked, Version: 1,
		EventTime: start.Add(-14 * 24 * time.Hour), AppointmentID: "a1", Patient: strings.Repeat("ab", 32),
		Booking: &events.Booking{Specialty: "110", Start: start, BookedAt: start.Add(-14 * 24 * time.Hour), AgeBand: "25-34", Extra: extra},
	}
}

func TestVector(t *testing.T) {
	m := testModel(
		Feature{Name: "prior_dna_rate", Type: Numeric},
		Feature{Name: "specialty", Type: Categorical},
		Feature{Name: "lead_time_days", Type: Numeric},
		Feature{Name: "extra.imd_score", Type: Numeric},
		Feature{Name: "extra.clinic_code", Type: Categorical},
		Feature{Name: "extra.absent", Type: Numeric},
	)
	ev := booking(events.Extra{"imd_score": 12.5, "clinic_code": 7})
	v := featurestore.Compute(ev, &featurestore.History{})
	x := m.Vector(ev, v, nil)
	want := []float64{math.NaN(), 110, 14, 12.5, 7, math.NaN()}
	for i := range want {
		if !same(x[i], want[i]) {
			t.Fatalf("Vector = %v, want %v", x, want)
		}
	}

	// Missing categories become -1, on every platform.
	ev.Booking.Specialty = "not-a-code"
	delete(ev.Booking.Extra, "clinic_code")
	x = m.Vector(ev, featurestore.Compute(ev, nil), x)
	if x[1] != -1 || x[4] != -1 {
		t.Fatalf("missing categories encoded as %v and %v, want -1", x[1], x[4])
	}
	for _, c := range []struct{ in, want float64 }{{math.NaN(), -1}, {-3, -1}, {math.Inf(1), -1}, {1 << 40, -1}, {0, 0}, {502, 502}} {
		if got := category(c.in); got != c.want {
			t.Errorf("category(%v) = %v, want %v", c.in, got, c.want)
		}
	}

	fm := m.FeatureMap(x)
	if len(fm) != 2 || fm["lead_time_days"] != 14 || fm["extra.imd_score"] != 12.5 {
		t.Fatalf("FeatureMap = %v, want only the known features", fm)
	}
	if _, err := json.Marshal(fm); err != nil {
		t.Fatalf("FeatureMap is not JSON-safe: %v", err)
	}
	// CountMissing counts exactly what FeatureMap leaves out.
	counts := make([]int, len(m.FeatureNames()))
	m.CountMissing(x, counts)
	m.CountMissing(x, counts)
	for i, name := range m.FeatureNames() {
		_, known := fm[name]
		if want := map[bool]int{true: 0, false: 2}[known]; counts[i] != want {
			t.Errorf("CountMissing %s = %d after two calls, want %d (FeatureMap has it: %v)", name, counts[i], want, known)
		}
	}

	// No allocation when dst has the capacity: Vector sits on the hot path.
	ev = booking(events.Extra{"imd_score": 1})
	v = featurestore.Compute(ev, nil)
	dst := make([]float64, 0, m.NumFeatures())
	if n := testing.AllocsPerRun(100, func() { dst = m.Vector(ev, v, dst) }); n != 0 {
		t.Fatalf("Vector allocates %v times per call", n)
	}
}

func same(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }

func TestBand(t *testing.T) {
	m := testModel()
	for _, c := range []struct {
		p    float64
		want string
	}{{0, "low"}, {0.0999, "low"}, {0.1, "medium"}, {0.19, "medium"}, {0.2, "high"}, {0.4, "very_high"}, {1, "very_high"}} {
		if got := m.Band(c.p); got != c.want {
			t.Errorf("Band(%v) = %q, want %q", c.p, got, c.want)
		}
	}
}

func TestScoreWrongLengthPanics(t *testing.T) {
	m, err := Load(defaultModel)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Score on a short vector did not panic; leaves would have returned 0")
		}
	}()
	m.Score(make([]float64, m.NumFeatures()-1))
}

// TestConcurrentScoring runs the model from many goroutines (meaningful under -race).
func TestConcurrentScoring(t *testing.T) {
	m, err := Load(defaultModel)
	if err != nil {
		t.Fatal(err)
	}
	rows := readDefaultParity(t, m)[:2000]
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			x := make([]float64, 0, m.NumFeatures())
			for i := g; i < len(rows); i += 8 {
				x = append(x[:0], rows[i].x...)
				p := m.Score(m.normalise(x))
				if math.Abs(p-rows[i].want) > 1e-9 {
					t.Errorf("row %d: %v, want %v", i, p, rows[i].want)
					return
				}
				_ = m.Band(p)
				_ = m.FeatureMap(x)
			}
		})
	}
	wg.Wait()
}

func BenchmarkScore(b *testing.B) {
	m, err := Load(defaultModel)
	if err != nil {
		b.Fatal(err)
	}
	ev := booking(nil)
	v := featurestore.Compute(ev, nil)
	x := make([]float64, 0, m.NumFeatures())
	b.ReportAllocs()
	for b.Loop() {
		x = m.Vector(ev, v, x)
		_ = m.Score(x)
	}
}

func TestLiveFeedRefusesAModelNeedingAnUnmappedExtra(t *testing.T) {
	m := testModel(
		Feature{Name: "lead_time_days", Type: Numeric},
		Feature{Name: "extra.imd_score", Type: Numeric},
		Feature{Name: "extra.clinic_code", Type: Categorical},
	)
	err := LiveFeed{Filled: map[string]bool{"imd_score": true}, Source: "--mapping gw.json"}.Check(m)
	if err == nil || !strings.Contains(err.Error(), `"clinic_code"`) || strings.Contains(err.Error(), `"imd_score"`) ||
		!strings.Contains(err.Error(), "--allow-unmapped-extras clinic_code") || !strings.Contains(err.Error(), "--mapping gw.json") {
		t.Fatalf("a model needing an unmapped extra: %v", err)
	}
	if err := (LiveFeed{}).Check(m); err == nil || !strings.Contains(err.Error(), `"clinic_code", "imd_score"`) {
		t.Fatalf("no mapping at all: %v", err)
	}
	for _, f := range []LiveFeed{
		{Filled: map[string]bool{"imd_score": true, "clinic_code": true}},
		{Filled: map[string]bool{"imd_score": true}, Allowed: map[string]bool{"clinic_code": true}},
		{Allowed: map[string]bool{"*": true}},
	} {
		if err := f.Check(m); err != nil {
			t.Errorf("%+v: %v", f, err)
		}
	}
	if err := (LiveFeed{}).Check(testModel(Feature{Name: "lead_time_days", Type: Numeric})); err != nil {
		t.Errorf("a model without extras needs no mapping: %v", err)
	}
}

// AppendFeatures lists exactly FeatureMap's entries, in name order, on the real model.
func TestAppendFeaturesIsFeatureMapInNameOrder(t *testing.T) {
	m, err := Load("../models/default")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	x := make([]float64, m.NumFeatures())
	var names []string
	var values []float64
	for range 200 {
		for i := range x {
			switch rng.IntN(4) {
			case 0:
				x[i] = math.NaN()
			case 1:
				x[i] = -1
			default:
				x[i] = rng.Float64() * 100
			}
		}
		names, values = m.AppendFeatures(x, names[:0], values[:0])
		fm := m.FeatureMap(x)
		if len(names) != len(fm) || len(values) != len(names) || !slices.IsSorted(names) {
			t.Fatalf("AppendFeatures %v, want the %d names of FeatureMap, sorted", names, len(fm))
		}
		for i, n := range names {
			if v, ok := fm[n]; !ok || v != values[i] {
				t.Fatalf("AppendFeatures %s = %v, FeatureMap has %v (%v)", n, values[i], v, ok)
			}
		}
	}
	if n := testing.AllocsPerRun(50, func() { names, values = m.AppendFeatures(x, names[:0], values[:0]) }); n != 0 {
		t.Fatalf("AppendFeatures allocates %v times with room in its slices", n)
	}
}
