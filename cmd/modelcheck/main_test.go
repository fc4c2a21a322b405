package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/scoring"
)

const root = "../.."

func TestModelcheckDefault(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := run([]string{"-min-rows", "10000", filepath.Join(root, "models", "default")}, &out, &errb); rc != 0 {
		t.Fatalf("exit %d: %s", rc, errb.String())
	}
	var rep report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.MaxAbsDiff > 1e-9 || rep.Rows < 10000 || rep.Digest == "" {
		t.Fatalf("report %+v", rep)
	}
}

func copyModel(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{scoring.ModelFile, scoring.ContractFile, scoring.ParityFile} {
		b, err := os.ReadFile(filepath.Join(root, "models", "default", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	return dir
}

func TestModelcheckRefuses(t *testing.T) {
	// A model the consumer would refuse: exit 2 with the consumer's reason.
	dir := copyModel(t)
	b, _ := os.ReadFile(filepath.Join(dir, scoring.ModelFile))
	os.WriteFile(filepath.Join(dir, scoring.ModelFile), b[:len(b)/3], 0o644)
	var out, errb bytes.Buffer
	if rc := run([]string{dir}, &out, &errb); rc != 2 || !strings.Contains(errb.String(), "refused") {
		t.Fatalf("truncated model: exit %d, %s", rc, errb.String())
	}

	// Parity off by more than 1e-9 on one row: exit 1, naming the line.
	dir = copyModel(t)
	pb, _ := os.ReadFile(filepath.Join(dir, scoring.ParityFile))
	lines := strings.Split(string(pb), "\n")
	f := strings.Split(lines[5], ",")
	f[len(f)-1] = "0.5"
	lines[5] = strings.Join(f, ",")
	os.WriteFile(filepath.Join(dir, scoring.ParityFile), []byte(strings.Join(lines, "\n")), 0o644)
	out.Reset()
	errb.Reset()
	if rc := run([]string{dir}, &out, &errb); rc != 1 || !strings.Contains(errb.String(), "line 6") {
		t.Fatalf("wrong parity row: exit %d, %s", rc, errb.String())
	}
}

// python returns the training venv's interpreter (make test exports PYTHON). Without it the
// test skips loudly, or fails under CI=true.
func python(t *testing.T) string {
	t.Helper()
	p := os.Getenv("PYTHON")
	if p == "" {
		p = filepath.Join(root, ".venv", "bin", "python")
	}
	abs, err := filepath.Abs(p)
	if err == nil {
		err = exec.Command(abs, "-c", "import lightgbm, sklearn, matplotlib").Run()
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

// TestMakeModelFromCSV is `make model DATA=... CONFIG=...` end to end on a trust-style CSV
// (made from the simulator, with bad rows and two extra columns): the model directory loads
// in the scorer with the extras as numeric and categorical features, the forced isotonic
// calibration is applied and covered by parity, bad rows are counted and listed, and the
// card has no bayes_auc (and says why) but has its plots; card.html renders in Chromium with
// the declared sensitive column in its subgroup table.
func TestMakeModelFromCSV(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	py := python(t)
	work := t.TempDir()

	ps, _ := pseudo.New([]byte("modelcheck-test-secret-0123456789abcdef"))
	g, err := sim.New(sim.Config{Seed: 5, Patients: 6000, Days: 200}, ps)
	if err != nil {
		t.Fatal(err)
	}
	jsonl := filepath.Join(work, "events.jsonl")
	f, _ := os.Create(jsonl)
	bw := bufio.NewWriter(f)
	for ev := range g.All() {
		b, _ := json.Marshal(ev)
		bw.Write(append(b, '\n'))
	}
	bw.Flush()
	f.Close()
	csvPath := filepath.Join(work, "appointments.csv")
	if out, err := exec.Command(py, filepath.Join(root, "training", "sim_to_csv.py"), "--bad-rows", "0.01", jsonl, csvPath).CombinedOutput(); err != nil {
		t.Fatalf("sim_to_csv: %v\n%s", err, out)
	}
	config := filepath.Join(work, "config.json")
	os.WriteFile(config, []byte(`{"extras": {"distance_km": "numeric", "interpreter_needed": "categorical"},
		"sensitive": ["interpreter_needed"], "calibration": {"force": "isotonic"}}`), 0o644)

	out := filepath.Join(work, "model")
	cmd := exec.Command("make", "--no-print-directory", "model", "DATA="+csvPath, "CONFIG="+config, "OUT="+out)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PYTHON="+py)
	logs, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make model: %v\n%s", err, logs)
	}

	m, rep, err := scoring.CheckParityDir(out)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Calibrated() || rep.MaxAbsDiff > 1e-9 {
		t.Fatalf("calibrated %v, parity %+v", m.Calibrated(), rep)
	}
	types := map[string]scoring.FeatureType{}
	for _, f := range m.Contract().Features {
		types[f.Name] = f.Type
	}
	if types["extra.distance_km"] != scoring.Numeric || types["extra.interpreter_needed"] != scoring.Categorical {
		t.Fatalf("contract features %v: want the extras numeric and categorical", types)
	}

	var card struct {
		AUC, ECE    float64
		AUCCI95     []float64 `json:"auc_ci95"`
		BayesAUC    *float64  `json:"bayes_auc"`
		BayesNote   string    `json:"bayes_auc_note"`
		ParityMax   float64   `json:"parity_max_abs_diff"`
		Calibration struct {
			Applied  bool
			Method   string
			Decision string
		}
		Data struct {
			Trainset struct {
				CSV struct {
					Rows, Imported, Bad int
					BadReasons          map[string]int `json:"bad_reasons"`
				}
			}
		}
		Plots map[string]string
	}
	b, err := os.ReadFile(filepath.Join(out, "card.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &card); err != nil {
		t.Fatal(err)
	}
	csvStats := card.Data.Trainset.CSV
	if card.BayesAUC != nil || !strings.Contains(card.BayesNote, "simulator") || card.ParityMax > 1e-9 ||
		!card.Calibration.Applied || card.Calibration.Method != "isotonic" || !strings.Contains(card.Calibration.Decision, "forced") ||
		// The test window is the last ~1,300 appointments by date (the simulator's end, where
		// bookings stop, is left out): the model must beat chance clearly, not reach a level.
		card.AUC < 0.6 || len(card.AUCCI95) != 2 || card.AUCCI95[0] < 0.55 || csvStats.Bad == 0 || csvStats.Imported+csvStats.Bad != csvStats.Rows || len(csvStats.BadReasons) < 3 {
		t.Fatalf("card.json: %s", b)
	}
	bad, _ := os.ReadFile(filepath.Join(out, "bad_rows.csv"))
	if n := strings.Count(string(bad), "\n") - 1; n != csvStats.Bad {
		t.Fatalf("bad_rows.csv lists %d rows, the card counts %d", n, csvStats.Bad)
	}
	for _, p := range card.Plots {
		png, err := os.ReadFile(filepath.Join(out, p))
		if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10000 {
			t.Fatalf("plot %s: %v, %d bytes", p, err, len(png))
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "card.md"))
	if len(card.Plots) != 4 || !strings.Contains(string(md), "Bayes AUC | not available") || !strings.Contains(string(md), "bad_rows.csv") {
		t.Fatalf("card.md / plots %v:\n%s", card.Plots, md)
	}
	t.Logf("CSV %d rows (%d bad): %s, auc %.4f, ece %.4f, parity %.3g", csvStats.Rows, csvStats.Bad, m.ID(), card.AUC, card.ECE, card.ParityMax)
	checkCard(t, renderCard(t, filepath.Join(out, "card.html")), "age band", "deprivation decile", "interpreter_needed")

	// Wrong columns: one error naming them, before any training.
	os.WriteFile(csvPath, []byte("patient_id,appointment_id,booked_at,outcome,age\n1,a,2025-01-01 10:00,attended,40\n"), 0o644)
	cmd = exec.Command("make", "--no-print-directory", "model", "DATA="+csvPath, "CONFIG="+config, "OUT="+filepath.Join(work, "m2"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PYTHON="+py)
	logs, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(logs), "missing required columns appointment_start") ||
		!strings.Contains(string(logs), "extras distance_km, interpreter_needed are not columns") {
		t.Fatalf("wrong columns: %v\n%s", err, logs)
	}
	if _, err := os.Stat(filepath.Join(work, "m2")); !os.IsNotExist(err) {
		t.Fatal("a failed build left a model directory")
	}
}
