package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/producer/csvimport"
	"github.com/nhsx/dnarisk/scoring"
)

const csvHeader = "patient_id,appointment_id,booked_at,appointment_start,outcome,specialty,age_band,distance_km,clinic_code,interpreter_needed\n"

// csvFile writes a CSV in docs/csv.md's layout: patient 1 has A1 booked, then A2 booked
// before A1's DNA is recorded, then A3 booked after it; two rows are bad.
func csvFile(t *testing.T) string {
	t.Helper()
	body := csvHeader +
		"9990000001,A1,2025-01-06 09:00,2025-01-20 10:00,did_not_attend,110,25-34,12.5,3,0\n" +
		"9990000001,A2,2025-01-10 09:00,2025-03-03 10:00,attended,110,25-34,,3,1\n" +
		"9990000001,A3,2025-01-21 09:00,2025-02-03 10:00,did_not_attend,110,25-34,4,7,0\n" +
		"9990000002,B1,2025-01-07 09:00,2025-01-27 10:00,maybe,300,45-54,1,1,0\n" + // bad outcome
		"9990000002,B2,2025-01-07 09:00,2025-01-28 10:00,attended,300,45-55,Inf,1,0\n" + // bad age band and extra
		"9990000002,B3,2025-01-08 09:00,2025-01-29 10:00,attended,300,45-54,2,1,0\n"
	path := filepath.Join(t.TempDir(), "appointments.csv")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func readCSVFile(t *testing.T, path string) []map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	for _, rec := range recs[1:] {
		m := map[string]string{}
		for i, h := range recs[0] {
			if _, dup := m[h]; !dup {
				m[h] = rec[i]
			}
		}
		out = append(out, m)
	}
	return out
}

// TestCSVInput: a historical CSV becomes training rows with the chosen extras as
// extra.<key> columns; bad rows are counted by reason and listed by line; an outcome
// recorded after a booking is invisible to it.
func TestCSVInput(t *testing.T) {
	in := csvFile(t)
	dir := t.TempDir()
	o := options{csv: in, out: filepath.Join(dir, "trainset.csv"), badRows: filepath.Join(dir, "bad_rows.csv"),
		summary: filepath.Join(dir, "summary.json"), extras: []string{"distance_km", "clinic_code"}}
	if err := run(o); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(o.out)
	header := strings.SplitN(string(b), "\n", 2)[0]
	if !strings.HasSuffix(header, ",open_bookings,extra.distance_km,extra.clinic_code,label,p_dna") {
		t.Fatalf("header %s", header)
	}
	rows := readCSVFile(t, o.out)
	got := map[string]map[string]string{}
	for _, r := range rows {
		got[r["appointment_id"]] = r
	}
	if len(rows) != 4 || got["A1"]["extra.distance_km"] != "12.5" || got["A2"]["extra.distance_km"] != "" ||
		got["A3"]["extra.clinic_code"] != "7" || got["A3"]["label"] != "1" || got["B3"]["label"] != "0" {
		t.Fatalf("rows %v", rows)
	}
	// A2 was booked before A1's DNA was recorded (at A1's start); A3 after it.
	if got["A2"]["prior_dna"] != "0" || got["A3"]["prior_dna"] != "1" {
		t.Fatalf("prior_dna: A2 %q (want 0), A3 %q (want 1)", got["A2"]["prior_dna"], got["A3"]["prior_dna"])
	}

	bad := readCSVFile(t, o.badRows)
	if len(bad) != 2 || bad[0]["line"] != "5" || !strings.Contains(bad[0]["reason"], "outcome") ||
		bad[1]["line"] != "6" || !strings.Contains(bad[1]["reason"], "age_band") || !strings.Contains(bad[1]["reason"], "extra columns distance_km") {
		t.Fatalf("bad rows %v", bad)
	}
	var sum summary
	sb, _ := os.ReadFile(o.summary)
	if err := json.Unmarshal(sb, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Source != "csv" || sum.CSV == nil || sum.CSV.Rows != 6 || sum.CSV.Imported != 4 || sum.CSV.Bad != 2 ||
		len(sum.CSV.BadReasons) != 2 || !slices.Equal(sum.CSV.UnusedExtraColumns, []string{"interpreter_needed"}) ||
		sum.TrainingRows != 4 || sum.DidNotAttend != 2 || !slices.Equal(sum.Extras, o.extras) {
		t.Fatalf("summary %s", sb)
	}
	// Pseudonyms are keyed per run and never written: the training set has no patient column.
	if strings.Contains(string(b), "9990000001") || slices.Contains(strings.Split(header, ","), "patient_id") || slices.Contains(strings.Split(header, ","), "patient") {
		t.Fatal("patient identity in the training set")
	}
}

// TestCSVColumnErrors: every header problem, and every configured extra the file lacks, in
// one error naming them all.
func TestCSVColumnErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.csv")
	os.WriteFile(path, []byte("patient_id,booked_at,appointment_start,outcome,age,distance_km\n1,x,y,attended,40,1\n"), 0o644)
	err := run(options{csv: path, out: filepath.Join(t.TempDir(), "o.csv"), extras: []string{"imd_score", "distance_km", "waiting_days", "age"}})
	if !errors.Is(err, csvimport.ErrHeader) {
		t.Fatalf("error %v, want ErrHeader", err)
	}
	for _, want := range []string{"missing required columns appointment_id", "extras imd_score, waiting_days are not columns", "its extra columns: distance_km", "age are standard columns"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	t.Log(err)

	for _, extras := range [][]string{{"Distance KM"}, {"a", "a"}} {
		if err := run(options{csv: path, out: "-", extras: extras}); !errors.Is(err, errUsage) {
			t.Errorf("extras %q: %v, want a usage error", extras, err)
		}
	}
	// JSONL input: an extra no booking carries is an error too.
	var s stream
	s.add(0, events.Booked, "A1", 1, t0, t0.Add(48*3600e9))
	in := filepath.Join(t.TempDir(), "e.jsonl")
	os.WriteFile(in, s.jsonl(t).Bytes(), 0o644)
	if err := run(options{in: in, out: filepath.Join(t.TempDir(), "o.csv"), extras: []string{"distance_km"}}); err == nil || !strings.Contains(err.Error(), "no booking carries the extras distance_km") {
		t.Fatalf("JSONL without the extra: %v", err)
	}
}

// TestPropertyFutureOutcomesInvisible is the leakage test stated directly: rewrite every
// outcome recorded after a cut-off time (attended <-> did not attend) and replay again. Every
// row booked at or before the cut-off has exactly the same features, including booking
// extras, though the future it is labelled with has changed. It runs the functions
// trainset -flip-check runs on a real training set (flipcheck.go). With -as-of decision the
// rows are as of their decision points and the cut-off is the middle row's decision point: no
// row as of a point at or before it may see an outcome recorded after it.
func TestPropertyFutureOutcomesInvisible(t *testing.T) {
	for _, lead := range []time.Duration{0, 24 * time.Hour, 72 * time.Hour} {
		for seed := range uint64(20) {
			t.Run(fmt.Sprintf("lead=%s/%d", lead, seed), func(t *testing.T) { futureOutcomesInvisible(t, seed, lead) })
		}
	}
}

func futureOutcomesInvisible(t *testing.T, seed uint64, lead time.Duration) {
	s := randomStream(seed, 10, 400)
	if lead > 0 {
		// decision points inside the stream, before most outcomes
		s = randomStreamHorizon(seed, 10, 400, 10*24*time.Hour)
	}
	for i := range s.evs {
		if b := s.evs[i].Booking; b != nil {
			b.Extra = events.Extra{"distance_km": float64(i % 17)}
		}
	}
	a := newReplay()
	a.extras = []string{"distance_km"}
	a.decisionLead = lead
	if err := a.read(context.Background(), s.jsonl(t)); err != nil {
		t.Fatal(err)
	}
	cut := flipCutOff(a)
	changed := 0
	b := newReplay()
	b.extras = []string{"distance_km"}
	b.decisionLead = lead
	b.transform = flipOutcomesAfter(cut, &changed)
	if err := b.read(context.Background(), s.jsonl(t)); err != nil {
		t.Fatal(err)
	}
	rep, err := compareReplays(a, b, cut, changed)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Columns {
		if rep.ChangedBefore[c] != 0 {
			t.Fatalf("%s changed in %d rows booked at or before the cut-off %s when later outcomes changed: %+v", c, rep.ChangedBefore[c], cut, rep)
		}
	}
	// The later rows do see the flipped outcomes, or the test would prove nothing.
	if !rep.OK || rep.RowsBefore < 20 || rep.ChangedAfter["prior_dna"] == 0 || changed == 0 {
		t.Fatalf("%d outcomes flipped, %d rows before the cut-off compared, later rows changed %v: the stream is too weak", changed, rep.RowsBefore, rep.ChangedAfter)
	}
	if lead > 0 && !a.rows[0].at.Equal(s.evs[a.rows[0].seq].Booking.Start.Add(-lead)) {
		t.Fatalf("first row as of %s, not its decision point", a.rows[0].at)
	}
}

// TestFlipCheckCatchesLeak: the comparison is not vacuous. A row before the cut-off whose
// feature or extra differs between the two replays is counted under its column and fails
// the check.
func TestFlipCheckCatchesLeak(t *testing.T) {
	s := randomStream(3, 10, 400)
	for i := range s.evs {
		if b := s.evs[i].Booking; b != nil {
			b.Extra = events.Extra{"distance_km": 1}
		}
	}
	a, b := replayWith(t, s, "distance_km"), replayWith(t, s, "distance_km")
	cut := flipCutOff(a)
	b.rows[0].v[slices.Index(featurestore.Names, "prior_dna")] += 1
	b.rows[1].extra[0] = math.NaN()
	rep, err := compareReplays(a, b, cut, 1)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.ChangedBefore["prior_dna"] != 1 || rep.ChangedBefore["extra.distance_km"] != 1 || rep.ChangedBefore["lead_time_days"] != 0 {
		t.Fatalf("report %+v: want the two changed values counted and the check failed", rep)
	}
	b.rows = b.rows[1:]
	if _, err := compareReplays(a, b, cut, 1); err == nil {
		t.Fatal("different row counts compared without an error")
	}
}

// TestFlipCheckFlag: -flip-check on a CSV and on JSONL writes a passing report naming every
// column, including the extras.
func TestFlipCheckFlag(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "e.jsonl")
	s := randomStream(4, 10, 400)
	os.WriteFile(in, s.jsonl(t).Bytes(), 0o644)
	for name, o := range map[string]options{
		"jsonl": {in: in, out: filepath.Join(dir, "t1.csv"), flipCheck: filepath.Join(dir, "f1.json")},
		"csv":   {csv: csvFile(t), out: filepath.Join(dir, "t2.csv"), flipCheck: filepath.Join(dir, "f2.json"), extras: []string{"distance_km"}},
	} {
		if err := run(o); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var rep flipReport
		b, _ := os.ReadFile(o.flipCheck)
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		wantCols := len(featurestore.Names) + len(o.extras)
		if len(rep.Columns) != wantCols || len(rep.ChangedBefore) != wantCols || rep.RowsBefore == 0 || rep.OutcomesFlipped == 0 {
			t.Fatalf("%s: report %s", name, b)
		}
		for c, n := range rep.ChangedBefore {
			if n != 0 {
				t.Fatalf("%s: %s changed in %d rows before the cut-off: %s", name, c, n, b)
			}
		}
		if name == "jsonl" && !rep.OK {
			t.Fatalf("jsonl: report %s", b)
		}
	}
}

func replayWith(t *testing.T, s *stream, extras ...string) *replay {
	t.Helper()
	r := newReplay()
	r.extras = extras
	if err := r.read(context.Background(), s.jsonl(t)); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCSVTextCategories: a categorical extra with text becomes category codes, its code list
// (texts and numbers, sorted) goes to the summary for the contract, and the codes are the
// ones the scorer gives the same text; text in a numeric extra is missing and counted.
func TestCSVTextCategories(t *testing.T) {
	body := "patient_id,appointment_id,booked_at,appointment_start,outcome,age,sex,area,distance_km\n" +
		"9990000001,A1,2025-01-06 09:00,2025-01-20,did_not_attend,30,F,North Leeds,12.5\n" +
		"9990000001,A2,2025-01-10 09:00,2025-03-03,attended,30,f,0,n/a\n" +
		"9990000002,B1,2025-01-07 09:00,2025-01-27,attended,50,M,Bradford,4\n" +
		"9990000003,C1,2025-01-08,2025-01-29,attended,60,,NORTH LEEDS,\n"
	dir := t.TempDir()
	in := filepath.Join(dir, "a.csv")
	os.WriteFile(in, []byte(body), 0o644)
	o := options{csv: in, out: filepath.Join(dir, "trainset.csv"), summary: filepath.Join(dir, "summary.json"),
		extras: []string{"sex:categorical", "area:categorical", "distance_km"}, minCategoryRows: 1}
	if err := run(o); err != nil {
		t.Fatal(err)
	}
	var sum summary
	sb, _ := os.ReadFile(o.summary)
	if err := json.Unmarshal(sb, &sum); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sum.Categories["sex"], []string{"f", "m"}) || !slices.Equal(sum.Categories["area"], []string{"0", "bradford", "north leeds"}) ||
		len(sum.Categories) != 2 || sum.TextAsMissing["distance_km"] != 1 || !slices.Equal(sum.Extras, []string{"sex", "area", "distance_km"}) ||
		sum.TimeZone != "Europe/London" || sum.DateOnlyTime != "23:59" {
		t.Fatalf("summary %s", sb)
	}
	got := map[string]map[string]string{}
	for _, r := range readCSVFile(t, o.out) {
		got[r["appointment_id"]] = r
	}
	want := map[string][3]string{"A1": {"0", "2", "12.5"}, "A2": {"0", "0", ""}, "B1": {"1", "1", "4"}, "C1": {"", "2", ""}}
	for id, w := range want {
		if r := got[id]; r["extra.sex"] != w[0] || r["extra.area"] != w[1] || r["extra.distance_km"] != w[2] {
			t.Errorf("%s: sex %q area %q distance %q, want %v", id, r["extra.sex"], r["extra.area"], r["extra.distance_km"], w)
		}
	}
	// The scorer, given the learned list, codes the text as the training set did.
	codes, err := scoring.NewCodeList(sum.Categories["area"])
	if err != nil {
		t.Fatal(err)
	}
	if c := codes.Code(scoring.TextCode(" north leeds")); c != 2 {
		t.Errorf("scorer codes North Leeds as %v, the training set as 2", c)
	}

	// A value in fewer than -min-category-rows rows is left out of the list (it could point
	// at a patient in a shared model folder) and is missing in the training set.
	o.minCategoryRows = 2
	if err := run(o); err != nil {
		t.Fatal(err)
	}
	sb, _ = os.ReadFile(o.summary)
	sum = summary{}
	json.Unmarshal(sb, &sum)
	if !slices.Equal(sum.Categories["sex"], []string{"f"}) || !slices.Equal(sum.Categories["area"], []string{"north leeds"}) ||
		sum.RareCategories["sex"] != 1 || sum.RareCategories["area"] != 2 {
		t.Fatalf("min-category-rows 2: summary %s", sb)
	}
	for _, r := range readCSVFile(t, o.out) {
		if r["appointment_id"] == "B1" && (r["extra.sex"] != "" || r["extra.area"] != "") {
			t.Errorf("B1's rare sex and area: %q %q, want missing", r["extra.sex"], r["extra.area"])
		}
	}

	// Without -summary the code list would be lost.
	o.summary = ""
	if err := run(o); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "give -summary") {
		t.Errorf("no -summary: %v", err)
	}
	// Every bad -extras entry is named in one error.
	err = run(options{csv: in, out: "-", extras: []string{"Sex", "area:text", "dist-km", "sex"}})
	for _, w := range []string{`"Sex"`, `"dist-km"`, `"area:text"`} {
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), w) {
			t.Errorf("bad extras: %v lacks %s", err, w)
		}
	}
	// Events carry only the text's code: JSONL cannot teach a code list.
	var s stream
	s.add(0, events.Booked, "A1", 1, t0, t0.Add(48*3600e9))
	s.evs[0].Booking.Extra = events.Extra{"sex": scoring.TextCode("F")}
	jl := filepath.Join(dir, "e.jsonl")
	os.WriteFile(jl, s.jsonl(t).Bytes(), 0o644)
	if err := run(options{in: jl, out: filepath.Join(dir, "o.csv"), extras: []string{"sex:categorical"}}); err == nil || !strings.Contains(err.Error(), "build the training set from the CSV") {
		t.Errorf("JSONL with text: %v", err)
	}
}

// TestModelEvaluation: with -model (make evaluate), the extras, their types and code lists
// come from the model's contract, not the data: the same text gets the code the scorer gives
// it (testdata/textmodel lists sex as m, f: learned from the data it would be f, m), text
// the list lacks is missing, and every row carries what the scorer serves (Vector, Score,
// Band on the replayed event). A column the model needs and the file lacks, and a model
// the scorer refuses, are refused by name.
func TestModelEvaluation(t *testing.T) {
	const modelDir = "testdata/textmodel"
	body := "patient_id,appointment_id,booked_at,appointment_start,outcome,age_band,sex,area\n" +
		"9990000001,A1,2025-01-06 09:00,2025-01-20 10:00,did_not_attend,25-34,F,north\n" +
		"9990000001,A2,2025-01-10 09:00,2025-03-03 10:00,attended,25-34,f,north\n" +
		"9990000002,B1,2025-01-07 09:00,2025-01-27 10:00,attended,45-54,M,south\n" +
		"9990000003,C1,2025-01-08 09:00,2025-02-28 10:00,attended,45-54,x,south\n" +
		"9990000004,D1,2025-01-09 09:00,2025-01-29 10:00,did_not_attend,45-54,,north\n"
	dir := t.TempDir()
	in := filepath.Join(dir, "a.csv")
	os.WriteFile(in, []byte(body), 0o644)
	o := options{csv: in, out: filepath.Join(dir, "scored.csv"), summary: filepath.Join(dir, "summary.json"), model: modelDir,
		extras: []string{"sex:numeric", "area:categorical"}, minCategoryRows: 1}
	if err := run(o); err != nil {
		t.Fatal(err)
	}
	var sum summary
	sb, _ := os.ReadFile(o.summary)
	if err := json.Unmarshal(sb, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.ModelID != "test-text-sex" || !slices.Equal(sum.Extras, []string{"sex", "area"}) ||
		!slices.Equal(sum.Categories["sex"], []string{"m", "f"}) || !slices.Equal(sum.Categories["area"], []string{"north", "south"}) {
		t.Fatalf("summary %s", sb)
	}
	m, err := scoring.Load(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	rows := readCSVFile(t, o.out)
	if len(rows) != 5 {
		t.Fatalf("%d rows, want 5", len(rows))
	}
	wantSex := map[string]string{"A1": "1", "A2": "1", "B1": "0", "C1": "", "D1": ""}
	bands := map[string]int{}
	for _, r := range rows {
		id := r["appointment_id"]
		if r["extra.sex"] != wantSex[id] {
			t.Errorf("%s: extra.sex %q, want %q (the contract's code list)", id, r["extra.sex"], wantSex[id])
		}
		// What the scorer serves for the same inputs.
		lead, _ := strconv.ParseFloat(r["lead_time_days"], 64)
		sex := -1.0
		if r["extra.sex"] != "" {
			sex, _ = strconv.ParseFloat(r["extra.sex"], 64)
		}
		p := m.Score([]float64{lead, sex})
		if r["served_probability"] != strconv.FormatFloat(p, 'g', -1, 64) || r["served_band"] != m.Band(p) {
			t.Errorf("%s: served %s %s, the scorer %v %s", id, r["served_probability"], r["served_band"], p, m.Band(p))
		}
		bands[r["served_band"]]++
	}
	if bands["high"] != 2 || bands["low"] != 3 {
		t.Errorf("bands %v: want the two F bookings high, the rest low", bands)
	}

	// A file without a column the model needs.
	noSex := filepath.Join(dir, "nosex.csv")
	os.WriteFile(noSex, []byte(strings.ReplaceAll(strings.ReplaceAll(body, ",sex,", ","), ",F,", ",")), 0o644)
	o2 := o
	o2.csv, o2.extras = noSex, nil
	if err := run(o2); err == nil || !strings.Contains(err.Error(), "the model test-text-sex needs the column(s) sex") {
		t.Errorf("no sex column: %v", err)
	}
	// A model the scorer refuses.
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "contract.json"), []byte(`{"model_id": "x"}`), 0o644)
	o3 := o
	o3.model = bad
	if err := run(o3); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "the scorer refuses this model") || !strings.Contains(err.Error(), "no features") {
		t.Errorf("bad model: %v", err)
	}
}
