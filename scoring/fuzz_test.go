package scoring

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// smallModel cuts the default model down to its first n trees, so the fuzzer mutates a few
// kilobytes of real LightGBM output instead of a third of a megabyte.
func smallModel(tb testing.TB, n int) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(defaultModel, ModelFile))
	if err != nil {
		tb.Fatal(err)
	}
	head, rest, _ := bytes.Cut(b, []byte("\n\n"))
	lines := strings.Split(string(head), "\n")
	var sizes []string
	for i, l := range lines {
		if v, ok := strings.CutPrefix(l, "tree_sizes="); ok {
			sizes = strings.Fields(v)[:n]
			lines[i] = "tree_sizes=" + strings.Join(sizes, " ")
		}
	}
	off := 0
	for _, s := range sizes {
		k, _ := strconv.Atoi(s)
		off += k
	}
	tail := rest[bytes.Index(rest, []byte("end of trees\n")):]
	return []byte(strings.Join(lines, "\n") + "\n\n" + string(rest[:off]) + string(tail))
}

// smallContract is the default contract without model_sha256 (so a mutated model text is
// not refused for its hash alone) and with a short calibration table.
func smallContract(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(defaultModel, ContractFile))
	if err != nil {
		tb.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		tb.Fatal(err)
	}
	delete(c, "model_sha256")
	c["calibration"] = map[string]any{"method": "platt", "x": []float64{0, 0.1, 0.5, 1}, "y": []float64{0.01, 0.08, 0.45, 0.97}}
	out, err := json.Marshal(c)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestSmallModelLoads(t *testing.T) {
	m, err := parse(smallContract(t), smallModel(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	if m.NumFeatures() != len(m.Contract().Features) {
		t.Fatalf("%d inputs for %d features", m.NumFeatures(), len(m.Contract().Features))
	}
}

// FuzzLoad feeds the model loader hostile contracts and model texts: a model directory is
// written by people and copy jobs, and a bad one must be refused with an error, never crash
// the scorer serving the current model or load into something that scores nonsense.
func FuzzLoad(f *testing.F) {
	contract, model := smallContract(f), smallModel(f, 3)
	f.Add(contract, model)
	f.Add(contract, bytes.Replace(model, []byte("version=v4"), []byte("version=v3"), 1))
	f.Add(contract, withThreshold(f, "inf"))
	f.Add(contract, withThreshold(f, "-inf"))
	f.Add(contract, model[:len(model)/2])                       // truncated mid-tree
	f.Add(contract, model[:bytes.Index(model, []byte("\n\n"))]) // header only
	f.Add(contract[:len(contract)/2], model)
	f.Add([]byte("{}"), []byte("tree\n"))
	f.Add([]byte(nil), []byte(nil))
	f.Fuzz(func(t *testing.T, cb, mb []byte) {
		m, err := parse(cb, mb)
		if err != nil {
			if m != nil {
				t.Fatal("a model returned with an error")
			}
			return
		}
		n := len(m.Contract().Features)
		if m.NumFeatures() != n || m.ens.NFeatures() != n {
			t.Fatalf("contract has %d features, model inputs %d, trees %d", n, m.NumFeatures(), m.ens.NFeatures())
		}
		// Whatever it is given, a loaded model serves a probability: the consumer publishes
		// it, and NaN cannot even be written as JSON.
		for _, fill := range []float64{math.NaN(), 0, 1, -1, 1e9, -1e9} {
			x := make([]float64, n)
			for i := range x {
				x[i] = fill
			}
			p := m.Score(m.normalise(x))
			if !(p >= 0 && p <= 1) {
				t.Fatalf("loaded model scores a row of %v as %v", fill, p)
			}
			if b := m.Band(p); b == "" {
				t.Fatalf("probability %v has no band", p)
			}
		}
		if _, err := json.Marshal(m.FeatureMap(make([]float64, n))); err != nil {
			t.Fatal(err)
		}
	})
}

// A model directory whose files are truncated or garbled is refused with an error naming
// the file, wrapping ErrInvalidModel.
func TestLoadRefusesDamagedFiles(t *testing.T) {
	contract, model := smallContract(t), smallModel(t, 3)
	for name, c := range map[string]struct{ contract, model []byte }{
		"truncated model":    {contract, model[:len(model)-200]},
		"model cut in tree":  {contract, model[:len(model)/3]},
		"empty model":        {contract, []byte{}},
		"truncated contract": {contract[:len(contract)-10], model},
		"binary model":       {contract, []byte("\x00\x01\x02\x03")},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, ContractFile), c.contract, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, ModelFile), c.model, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(dir)
			if !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("err = %v, want ErrInvalidModel", err)
			}
			if !strings.Contains(err.Error(), ModelFile) && !strings.Contains(err.Error(), ContractFile) {
				t.Fatalf("error does not name the file: %v", err)
			}
		})
	}
}

// withLeaf returns the small model with its first tree's second leaf value replaced, and
// tree_sizes corrected, as a hand edit or a broken exporter would leave it.
func withLeaf(tb testing.TB, value string) []byte {
	tb.Helper()
	return withField(tb, smallModel(tb, 3), `(?m)^leaf_value=\S+ (\S+)`, value)
}

// withThreshold returns the small model with its first tree's first threshold replaced.
func withThreshold(tb testing.TB, value string) []byte {
	tb.Helper()
	return withField(tb, smallModel(tb, 3), `(?m)^threshold=(\S+)`, value)
}

// withField replaces the first submatch of re in model text mb with value and corrects
// tree_sizes[0] (the edits are in the first tree).
func withField(tb testing.TB, mb []byte, re, value string) []byte {
	tb.Helper()
	loc := regexp.MustCompile(re).FindSubmatchIndex(mb)
	grow := len(value) - (loc[3] - loc[2])
	out := append(append(append([]byte{}, mb[:loc[2]]...), value...), mb[loc[3]:]...)
	sl := regexp.MustCompile(`tree_sizes=(\d+)`).FindSubmatchIndex(out)
	n, _ := strconv.Atoi(string(out[sl[2]:sl[3]]))
	return append(append(append([]byte{}, out[:sl[2]]...), strconv.Itoa(n+grow)...), out[sl[3]:]...)
}

// LightGBM writes threshold=inf for a split of missing values from every present one (issue
// 13: two trainings in eleven were refused for it). Infinite thresholds load; a NaN
// threshold, which no LightGBM writes, does not. Parity on such models is proven against
// LightGBM itself by TestParityInfiniteThresholds.
func TestLoadAcceptsInfiniteThresholds(t *testing.T) {
	for _, v := range []string{"inf", "-inf", "+inf", "Infinity"} {
		if _, err := parse(smallContract(t), withThreshold(t, v)); err != nil {
			t.Errorf("threshold %s refused: %v", v, err)
		}
	}
	for _, v := range []string{"nan", "NaN", "x"} {
		if _, err := parse(smallContract(t), withThreshold(t, v)); err == nil || !strings.Contains(err.Error(), "threshold[0]") {
			t.Errorf("threshold %s: err = %v, want a refusal naming it", v, err)
		}
	}

	// The regression seed: a model LightGBM 4.6 trained with threshold=inf on a rate that
	// first-time patients lack. It loads, and the split reads as LightGBM's: every present
	// value, +inf included, is <= inf, and a missing one goes the default way.
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzLoad", "lightgbm-threshold-inf"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var args [][]byte
	for _, l := range lines[1:3] {
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(l, "[]byte("), ")"))
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, []byte(s))
	}
	if !bytes.Contains(args[1], []byte("\nthreshold=inf ")) {
		t.Fatal("the seed has no threshold=inf")
	}
	m, err := parse(args[0], args[1])
	if err != nil {
		t.Fatal(err)
	}
	row := func(rate float64) []float64 { return []float64{rate, 10, 1, 0.5} }
	if a, b := m.Score(row(math.Inf(1))), m.Score(row(1e300)); a != b {
		t.Errorf("rate +inf scores %v, 1e300 %v: both are present values <= inf", a, b)
	}
	if a, b := m.Score(row(math.NaN())), m.Score(row(0.2)); a == b {
		t.Errorf("a missing rate scores as a present one (%v): the missing-vs-present split is lost", a)
	}
}

// Found while writing FuzzLoad: a NaN leaf loaded, and the model then scored some rows as
// NaN, which the consumer cannot encode into a risk event, so it retried that batch forever.
func TestLoadRefusesNonFiniteTreeValues(t *testing.T) {
	for _, v := range []string{"NaN", "nan", "Inf", "-Inf", "+Inf", "infinity"} {
		_, err := parse(smallContract(t), withLeaf(t, v))
		if err == nil || !strings.Contains(err.Error(), "not a finite number") {
			t.Errorf("leaf %s: err = %v, want a refusal", v, err)
		}
	}
	if _, err := parse(smallContract(t), withLeaf(t, "-0.25")); err != nil {
		t.Fatalf("an ordinary edit is refused: %v", err)
	}
}
