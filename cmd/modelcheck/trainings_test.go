package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/producer/csvimport"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/scoring"
)

// asModelcheck makes the test binary act as cmd/modelcheck, so train.py can run the Go check
// on what it writes without a separate build.
const asModelcheck = "MODELCHECK_TEST_AS_COMMAND"

func TestMain(m *testing.M) {
	if os.Getenv(asModelcheck) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// trustCSV writes the simulator's appointments as a trust's extract would hold them, one row
// per appointment (the last booking version), with extra columns: distance_km (a number,
// missing for some), interpreter_needed (a 0/1 code), sex (F/M text) and area (place names in
// mixed case, and a numeric code 0 for "unknown"). shaped gives the form our simulator never
// writes: date-only appointment days, local times without an offset in UTC (read with
// -csv-timezone UTC), no specialty, deprivation, first-visit or SMS columns, and the extract
// cut before its last month: appointments after the cut are still booked, with no outcome.
func trustCSV(t *testing.T, evs []events.Appointment, path string, shaped bool) {
	t.Helper()
	type appt struct {
		patient, bookedAt, outcome, cancelledAt string
		b                                       *events.Booking
	}
	rows := map[string]*appt{}
	var order []string
	var last time.Time
	for i := range evs {
		ev := &evs[i]
		a := rows[ev.AppointmentID]
		if a == nil {
			a = &appt{patient: ev.Patient[:20]}
			rows[ev.AppointmentID] = a
			order = append(order, ev.AppointmentID)
		}
		switch ev.Type {
		case events.Booked, events.Rescheduled:
			a.b, a.bookedAt = ev.Booking, stamp(ev.EventTime, shaped)
		case events.Cancelled:
			a.outcome, a.cancelledAt = "cancelled_by_"+string(ev.CancelledBy), stamp(ev.EventTime, shaped)
		case events.Attended, events.DidNotAttend:
			a.outcome = string(ev.Type)
		}
		last = ev.EventTime
	}
	cut := last.AddDate(0, -1, 0)
	areas := []string{"North Leeds", "BRADFORD", "Wakefield", "Calderdale", "kirklees", "Harrogate", "0"}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := csv.NewWriter(f)
	header := []string{"patient_id", "appointment_id", "booked_at", "appointment_start", "outcome", "cancelled_at", "age_band",
		"distance_km", "interpreter_needed", "sex", "area"}
	if !shaped {
		header = append(header, "specialty", "first_visit", "deprivation_decile", "sms_opt_in")
	}
	w.Write(header)
	for _, id := range order {
		a := rows[id]
		if a.b == nil {
			continue
		}
		h := fnv.New64a()
		h.Write([]byte(a.patient))
		p := h.Sum64()
		dist := strconv.FormatFloat(float64(p%400)/10, 'f', 1, 64)
		if p%11 == 0 {
			dist = ""
		}
		sex := []string{"F", "M", "f", "m", ""}[p%5]
		start := stamp(a.b.Start, shaped)
		outcome, cancelledAt := a.outcome, a.cancelledAt
		if shaped {
			start = a.b.Start.In(time.UTC).Format(time.DateOnly)
			if a.b.Start.After(cut) && !strings.HasPrefix(outcome, "cancelled") {
				outcome = ""
			}
		}
		rec := []string{a.patient, id, a.bookedAt, start, outcome, cancelledAt, a.b.AgeBand,
			dist, strconv.Itoa(int(p>>8) % 2), sex, areas[(p>>16)%uint64(len(areas))]}
		if !shaped {
			dep := ""
			if a.b.Deprivation != nil {
				dep = strconv.Itoa(*a.b.Deprivation)
			}
			rec = append(rec, a.b.Specialty, strconv.FormatBool(a.b.FirstVisit), dep, strconv.FormatBool(a.b.Contact.SMS))
		}
		w.Write(rec)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func stamp(t time.Time, shaped bool) string {
	if shaped {
		return t.UTC().Format("2006-01-02 15:04:05")
	}
	return t.UTC().Format(time.RFC3339)
}

// trainMany is the training driver: one Python process imports training/train.py and runs
// its main() once per job (exactly what `python training/train.py ARGS` does, without paying
// for the imports every time), recording each job's outcome.
const trainMany = `
import json, sys, traceback
training, jobs_path, results_path = sys.argv[1:4]
sys.path.insert(0, training)
import train
results = {}
for job in json.load(open(jobs_path)):
    sys.argv = ["train.py"] + job["args"]
    print(f"=== {job['name']}", file=sys.stderr, flush=True)
    try:
        train.main()
        results[job["name"]] = "ok"
    except SystemExit as e:
        results[job["name"]] = f"exit {e.code}"
    except Exception:
        results[job["name"]] = traceback.format_exc()
with open(results_path, "w") as f:
    json.dump(results, f)
`

type trainJob struct {
	Name string   `json:"name"`
	Args []string `json:"args"`
}

// Feature groups to leave out, by name.
var featureGroups = map[string][]string{
	"none":         {},
	"history":      {"prior_appointments", "prior_dna", "prior_attended", "dna_last_365d", "days_since_last_dna", "days_since_last_attended", "prior_patient_cancellations", "prior_hospital_cancellations", "prior_reschedules"},
	"booking":      {"lead_time_days", "weekday", "hour", "booking_version", "first_visit"},
	"demographics": {"age_band", "deprivation_decile", "specialty"},
}

// TestManyTrainings trains 24 models through the real path — cmd/trainset on a trust-style
// CSV, then training/train.py with its Go parity check — over varied seeds, tree sizes,
// minimum leaf sizes, missing-value modes, calibration, feature groups left out, and with and
// without extras (numeric, a numeric code, text categories), on two extracts: one as the
// simulator writes times, one with date-only days, UTC local times, missing optional columns
// and a cut-off end. Every training must succeed, and every model must load in the scorer
// with Go/LightGBM parity within 1e-9 on its parity rows (issue 13: 2 in 11 trainings on a
// real data set were refused for threshold=inf).
func TestManyTrainings(t *testing.T) {
	if testing.Short() {
		t.Skip("trains 24 models")
	}
	py := python(t)
	work := t.TempDir()
	began := time.Now()

	ps, _ := pseudo.New([]byte("modelcheck-test-secret-0123456789abcdef"))
	g, err := sim.New(sim.Config{Seed: 11, Patients: 3000, Days: 240}, ps)
	if err != nil {
		t.Fatal(err)
	}
	var evs []events.Appointment
	for ev := range g.All() {
		evs = append(evs, ev)
	}
	trainset := filepath.Join(work, "trainset")
	if out, err := exec.Command("go", "build", "-o", trainset, "../trainset").CombinedOutput(); err != nil {
		t.Fatalf("go build ../trainset: %v\n%s", err, out)
	}
	extras := "distance_km:numeric,interpreter_needed:categorical,sex:categorical,area:categorical"
	for _, shaped := range []bool{false, true} {
		name := map[bool]string{false: "a", true: "b"}[shaped]
		csvPath := filepath.Join(work, name+".csv")
		trustCSV(t, evs, csvPath, shaped)
		args := []string{"-csv", csvPath, "-out", filepath.Join(work, name+".trainset.csv"), "-extras", extras,
			"-summary", filepath.Join(work, name+".summary.json")}
		if shaped {
			args = append(args, "-csv-timezone", "UTC", "-csv-date-only-time", "17:00")
		}
		if out, err := exec.Command(trainset, args...).CombinedOutput(); err != nil {
			t.Fatalf("trainset %s: %v\n%s", name, err, out)
		}
	}

	groups := []string{"none", "history", "booking", "demographics"}
	var jobs [2][]trainJob
	var names []string
	for i := range 24 {
		data := "a"
		if i%3 == 2 {
			data = "b"
		}
		params := map[string]any{
			"seed":              100 + i,
			"num_leaves":        []int{4, 7, 15, 31, 63}[i%5],
			"min_data_in_leaf":  []int{5, 20, 50, 200}[i%4],
			"max_cat_to_onehot": []int{4, 32}[i%2],
		}
		switch i % 6 {
		case 1:
			params["zero_as_missing"] = true
		case 4:
			params["use_missing"] = false
		}
		if i%5 == 3 {
			params["feature_fraction"], params["bagging_fraction"], params["bagging_freq"] = 0.7, 0.8, 1
		}
		cfg := map[string]any{
			"params":                params,
			"exclude":               featureGroups[groups[(i/2)%4]],
			"calibration":           map[string]any{"force": []any{nil, "none", "platt", "isotonic"}[i%4]},
			"parity_rows":           1500,
			"parity_perturbed_rows": 500,
			"minimums":              map[string]any{"train_rows": 500, "validation_rows": 100, "test_rows": 100, "each_outcome": 10},
		}
		switch i % 4 {
		case 0, 3:
			cfg["extras"] = map[string]string{"distance_km": "numeric", "interpreter_needed": "categorical", "sex": "categorical", "area": "categorical"}
		case 1:
			cfg["extras"] = map[string]string{"sex": "categorical"}
		}
		name := fmt.Sprintf("m%02d-%s-%s-leaves%d", i, data, groups[(i/2)%4], params["num_leaves"])
		cb, _ := json.Marshal(cfg)
		cfgPath := filepath.Join(work, name+".json")
		os.WriteFile(cfgPath, cb, 0o644)
		jobs[i%2] = append(jobs[i%2], trainJob{Name: name, Args: []string{
			"--trainset", filepath.Join(work, data+".trainset.csv"), "--out", filepath.Join(work, name),
			"--config", cfgPath, "--data-summary", filepath.Join(work, data+".summary.json"),
			"--modelcheck", os.Args[0] + " -min-rows 1000",
		}})
		names = append(names, name)
	}

	// Two drivers, one per core.
	driver := filepath.Join(work, "train_many.py")
	os.WriteFile(driver, []byte(trainMany), 0o644)
	training, _ := filepath.Abs(filepath.Join(root, "training"))
	results := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for k := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			jp, rp, lp := filepath.Join(work, fmt.Sprintf("jobs%d.json", k)), filepath.Join(work, fmt.Sprintf("results%d.json", k)), filepath.Join(work, fmt.Sprintf("log%d.txt", k))
			jb, _ := json.Marshal(jobs[k])
			os.WriteFile(jp, jb, 0o644)
			logf, _ := os.Create(lp)
			defer logf.Close()
			cmd := exec.Command(py, driver, training, jp, rp)
			cmd.Env = append(os.Environ(), asModelcheck+"=1")
			cmd.Stdout, cmd.Stderr = logf, logf
			err := cmd.Run()
			rb, rerr := os.ReadFile(rp)
			var got map[string]string
			if err != nil || rerr != nil || json.Unmarshal(rb, &got) != nil {
				lb, _ := os.ReadFile(lp)
				got = map[string]string{}
				for _, j := range jobs[k] {
					got[j.Name] = fmt.Sprintf("driver failed: %v\n%s", err, tail(string(lb), 4000))
				}
			}
			mu.Lock()
			for n, r := range got {
				results[n] = r
			}
			mu.Unlock()
		}()
	}
	wg.Wait()

	withInf, withText := 0, 0
	servedText := false
	for _, name := range names {
		if r := results[name]; r != "ok" {
			t.Errorf("%s: training failed: %s", name, tail(r, 2000))
			continue
		}
		dir := filepath.Join(work, name)
		m, rep, err := scoring.CheckParityDir(dir)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if rep.MaxAbsDiff > 1e-9 || rep.Rows < 1000 {
			t.Errorf("%s: parity %+v", name, rep)
		}
		mb, _ := os.ReadFile(filepath.Join(dir, scoring.ModelFile))
		inf := len(regexp.MustCompile(`(?m)^threshold=.*\binf\b`).FindAll(mb, -1))
		if inf > 0 {
			withInf++
		}
		cats := 0
		for _, f := range m.Contract().Features {
			if f.Categories != nil {
				cats++
			}
		}
		if cats > 0 {
			withText++
		}
		if cats == 2 && strings.Contains(name, "-a-") && !servedText {
			servedText = true
			sameTextCodes(t, m, filepath.Join(work, "a.csv"), filepath.Join(work, "a.trainset.csv"))
		}
		t.Logf("%s: %d features (%d with a text code list), %d trees with an inf threshold, parity %.3g over %d rows", name, m.NumFeatures(), cats, inf, rep.MaxAbsDiff, rep.Rows)
	}
	t.Logf("%d trainings in %s: %d models with threshold=inf, %d with text categories", len(names), time.Since(began).Round(time.Second), withInf, withText)
	if withInf == 0 || withText == 0 {
		t.Errorf("no model had threshold=inf (%d) or text categories (%d): the trainings no longer cover what they are for", withInf, withText)
	}
}

// sameTextCodes checks one definition for text categories: every training row's sex and
// area codes (cmd/trainset) are what the scorer's Vector makes of the same CSV row's booking
// event, as the producer would publish it.
func sameTextCodes(t *testing.T, m *scoring.Model, csvPath, trainsetPath string) {
	t.Helper()
	f, err := os.Open(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ps, _ := pseudo.New([]byte("another-secret-as-the-producer-has-0123"))
	res, err := csvimport.Import(f, ps, csvimport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	booked := map[string]*events.Appointment{}
	for i := range res.Events {
		if res.Events[i].Type == events.Booked {
			booked[res.Events[i].AppointmentID] = &res.Events[i]
		}
	}
	tf, err := os.Open(trainsetPath)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	recs, err := csv.NewReader(tf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	pos := map[string]int{}
	for i, f := range m.Contract().Features {
		pos[f.Name] = i
	}
	compared := 0
	for _, rec := range recs[1:] {
		x := m.Vector(booked[rec[0]], featurestore.Vector{}, nil)
		for _, name := range []string{"extra.sex", "extra.area"} {
			want := -1.0 // missing, as Vector encodes a missing category
			if s := rec[col[name]]; s != "" {
				want, _ = strconv.ParseFloat(s, 64)
			}
			if got := x[pos[name]]; got != want {
				t.Fatalf("%s of appointment %s: training set %v, scorer %v", name, rec[0], want, got)
			}
			compared++
		}
	}
	t.Logf("%s: %d text category values coded alike in the training set and by the scorer", m.ID(), compared)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
