package scoring

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nhsx/dnarisk/internal/testenv"
)

// python returns the training venv's interpreter (make test exports PYTHON; otherwise the
// worktree's .venv from scripts/python.sh). Without one the test skips loudly, or fails
// under CI=true.
func python(t *testing.T) string {
	t.Helper()
	p := os.Getenv("PYTHON")
	if p == "" {
		p = filepath.Join("..", ".venv", "bin", "python")
	}
	abs, err := filepath.Abs(p)
	if err == nil {
		err = exec.Command(abs, "-c", "import lightgbm, numpy").Run()
	}
	if err != nil {
		msg := "the training venv (PYTHON, or .venv from scripts/python.sh) is not usable: " + p
		if testenv.CI() {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING: " + msg + "; run `make test` or scripts/python.sh")
	}
	return abs
}

// missingModels trains small LightGBM models on a booking-like table whose rate feature is
// missing (NaN) for first-time patients and 0 for half the others — the shape that makes
// LightGBM write threshold=inf for its "missing vs present" split — once per missing-value
// mode (use_missing with NaN, zero_as_missing, use_missing=false), and a fourth model that is
// the first with one inf threshold rewritten to -inf, which LightGBM itself loads and
// predicts. Each directory gets contract.json and a parity.csv of LightGBM's own
// predictions on sampled rows and on edge rows: every threshold of the model and the
// numbers either side of it, NaN, ±0, ±inf, and values around LightGBM's zero (1e-35f).
const missingModels = `
import json, os, sys
import lightgbm as lgb, numpy as np

out = sys.argv[1]
rng = np.random.default_rng(7)
n = 6000
first = rng.random(n) < 0.3
rate = np.where(rng.random(n) < 0.5, 0.0, rng.beta(1, 4, n))
rate = np.where(first, np.nan, rate)
lead = rng.exponential(20, n)
lead[rng.random(n) < 0.1] = 0.0
specialty = rng.integers(0, 8, n).astype(float)
specialty[rng.random(n) < 0.05] = np.nan
score = rng.normal(size=n)
score[rng.random(n) < 0.2] = 0.0
score[rng.random(n) < 0.1] = np.nan
logit = -2 + 1.5 * first + 0.3 * np.nan_to_num(rate) - 0.02 * lead + 0.3 * (specialty % 3 == 0) + 0.4 * np.nan_to_num(score)
y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
X = np.column_stack([rate, lead, specialty, score])
names = ["prior_dna_rate", "lead_time_days", "specialty", "extra.score"]
KZERO = float(np.float32(1e-35))

def edge_rows(model_text, base):
    rows = []
    thr = {j: set() for j in range(4)}
    for block in model_text.split("Tree=")[1:]:
        kv = dict(l.split("=", 1) for l in block.splitlines()[1:] if "=" in l)
        if "split_feature" not in kv:
            continue
        for f, t, d in zip(kv["split_feature"].split(), kv["threshold"].split(), kv["decision_type"].split()):
            if int(d) & 1 == 0:
                thr[int(f)].add(float(t))
    specials = [np.nan, 0.0, -0.0, np.inf, -np.inf, 5e-36, -5e-36, 1e-35, -1e-35, KZERO, -KZERO,
                np.nextafter(KZERO, 1), np.nextafter(-KZERO, -1), 2e-35, -2e-35, 1e300, -1e300]
    for j in (0, 1, 3):
        vals = list(specials)
        for t in thr[j]:
            vals += [t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf)]
        for v in vals:
            for r in base[rng.choice(len(base), 3, replace=False)]:
                r = r.copy()
                r[j] = v
                rows.append(r)
    for v in [np.nan, -1.0, 0.0, 3.0, 7.0, 999.0, 2.5]:
        for r in base[rng.choice(len(base), 3, replace=False)]:
            r = r.copy()
            r[2] = v
            rows.append(r)
    return np.array(rows)

def write(name, booster_text):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.txt"), "w") as f:
        f.write(booster_text)
    model = lgb.Booster(model_file=os.path.join(d, "model.txt"))
    rows = np.vstack([X[rng.choice(n, 1500, replace=False)], edge_rows(booster_text, X)])
    p = model.predict(rows)
    contract = {"model_id": "inf-" + name, "risk_bands": [{"name": "low", "min_probability": 0}],
                "features": [{"name": c, "type": "categorical" if c == "specialty" else "numeric"} for c in names]}
    with open(os.path.join(d, "contract.json"), "w") as f:
        json.dump(contract, f)
    with open(os.path.join(d, "parity.csv"), "w") as f:
        f.write(",".join(["kind"] + names + ["probability"]) + "\n")
        for r, q in zip(rows, p):
            f.write("edge," + ",".join("" if np.isnan(v) else repr(float(v)) for v in r) + "," + repr(float(q)) + "\n")

variants = {"nan": {}, "zero": {"zero_as_missing": True}, "none": {"use_missing": False}}
texts = {}
for name, extra in variants.items():
    params = dict(objective="binary", verbose=-1, num_leaves=15, min_data_in_leaf=20, seed=3,
                  deterministic=True, num_threads=1, **extra)
    ds = lgb.Dataset(X, y, feature_name=names, categorical_feature=[2])
    texts[name] = lgb.train(params, ds, 40).model_to_string()
    write(name, texts[name])

# -inf: LightGBM's bins never end at -inf, so no trainer writes it here; rewrite the first
# +inf threshold and let LightGBM load and predict the edited model.
head, sep, rest = texts["nan"].partition("\n\n")
trees = rest.split("end of trees")[0]
blocks = ["Tree=" + b for b in trees.split("Tree=")[1:]]
for i, b in enumerate(blocks):
    lines = b.split("\n")
    for k, l in enumerate(lines):
        if l.startswith("threshold=") and " inf" in " " + l[10:]:
            toks = l[10:].split(" ")
            toks[toks.index("inf")] = "-inf"
            lines[k] = "threshold=" + " ".join(toks)
            blocks[i] = "\n".join(lines)
            break
    else:
        continue
    break
else:
    sys.exit("no inf threshold to rewrite")
sizes = " ".join(str(len(b.encode())) for b in blocks)
head = "\n".join("tree_sizes=" + sizes if l.startswith("tree_sizes=") else l for l in head.split("\n"))
write("neginf", head + sep + "".join(blocks) + "end of trees" + rest.split("end of trees", 1)[1])
`

// TestParityInfiniteThresholds proves that models LightGBM writes with threshold=inf (and a
// -inf edited in) load, and score exactly as LightGBM's own predict, under each missing-value
// mode (missing_type None, Zero and NaN, with default_left both ways), including rows at
// every threshold, at ±inf, NaN and values around LightGBM's zero.
func TestParityInfiniteThresholds(t *testing.T) {
	if testing.Short() {
		t.Skip("trains LightGBM models")
	}
	py := python(t)
	work := t.TempDir()
	script := filepath.Join(work, "train.py")
	os.WriteFile(script, []byte(missingModels), 0o644)
	if out, err := exec.Command(py, script, work).CombinedOutput(); err != nil {
		t.Fatalf("training: %v\n%s", err, out)
	}
	missingTypes := map[int64]bool{}
	defaultLeft := map[bool]bool{}
	for _, name := range []string{"nan", "zero", "none", "neginf"} {
		dir := filepath.Join(work, name)
		mb, _ := os.ReadFile(filepath.Join(dir, ModelFile))
		thr := regexp.MustCompile(`(?m)^threshold=(.*)$`).FindAllStringSubmatch(string(mb), -1)
		dts := regexp.MustCompile(`(?m)^decision_type=(.*)$`).FindAllStringSubmatch(string(mb), -1)
		var inf, negInf int
		for i := range thr {
			ts, ds := strings.Fields(thr[i][1]), strings.Fields(dts[i][1])
			for j, s := range ts {
				inf += b2i(s == "inf")
				negInf += b2i(s == "-inf")
				d, _ := strconv.ParseInt(ds[j], 10, 64)
				if d&1 == 0 {
					missingTypes[d>>2&3] = true
					defaultLeft[d&2 != 0] = true
				}
			}
		}
		m, rep, err := CheckParityDir(dir)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %d inf, %d -inf thresholds; %d parity rows (%d with missing values): max |Go - LightGBM| %.3g (line %d)",
			name, inf, negInf, rep.Rows, rep.RowsWithMissing, rep.MaxAbsDiff, rep.WorstLine)
		if rep.MaxAbsDiff > 1e-9 || rep.Rows < 2000 {
			t.Errorf("%s: parity %+v", name, rep)
		}
		switch name {
		case "nan":
			if inf == 0 {
				t.Errorf("%s: LightGBM wrote no threshold=inf; the test no longer reproduces the issue", name)
			}
		case "neginf":
			if negInf != 1 {
				t.Errorf("%s: %d -inf thresholds, want the 1 edited in", name, negInf)
			}
		case "zero":
			// LightGBM's predict treats |x| <= 1e-35f as 0; leaves alone would compare such a
			// value with the threshold, and a zero-as-missing split sends 0 the default way.
			if worst := rawLeavesWorst(t, m, dir); worst <= 1e-9 {
				t.Errorf("%s: leaves without the zeroing already matches (%.3g): the edge rows no longer test it", name, worst)
			}
		}
	}
	for _, mt := range []int64{0, 1, 2} {
		if !missingTypes[mt] {
			t.Errorf("no numeric split with missing_type %d in the models: %v", mt, missingTypes)
		}
	}
	if !defaultLeft[true] || !defaultLeft[false] {
		t.Errorf("default_left seen %v, want both", defaultLeft)
	}
}

// rawLeavesWorst scores a model's parity rows with leaves directly, without Score's zeroing
// of LightGBM's near-zero values, and returns the largest difference from LightGBM.
func rawLeavesWorst(t *testing.T, m *Model, dir string) float64 {
	f, err := os.Open(filepath.Join(dir, ParityFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := readParity(f, m.Contract().Names())
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for _, r := range rows {
		worst = max(worst, math.Abs(m.ens.PredictSingle(m.normalise(r.x), 0)-r.want))
	}
	return worst
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Score reads a value LightGBM's predict would see as zero (|x| <= 1e-35f) as zero, on every
// path: Score, ScoreBatch and the row it is given is left as it was.
func TestScoreZeroesLightGBMZero(t *testing.T) {
	m, err := Load(defaultModel)
	if err != nil {
		t.Fatal(err)
	}
	zero := make([]float64, m.NumFeatures())
	for _, tiny := range []float64{5e-36, -5e-36, kZeroThreshold, -kZeroThreshold, math.SmallestNonzeroFloat64} {
		x := make([]float64, m.NumFeatures())
		for i := range x {
			x[i] = tiny
		}
		out := make([]float64, 1)
		m.ScoreBatch(x, out)
		if p, want := m.Score(x), m.Score(zero); p != want || out[0] != want {
			t.Errorf("row of %g scores %v (batch %v), a row of zeros %v", tiny, p, out[0], want)
		}
		if x[0] != tiny {
			t.Errorf("Score changed its input: %g -> %g", tiny, x[0])
		}
	}
	if got := float64(float32(1e-35)); kZeroThreshold != got || kZeroThreshold <= 1e-35 {
		t.Fatalf("kZeroThreshold %g", kZeroThreshold)
	}
}
