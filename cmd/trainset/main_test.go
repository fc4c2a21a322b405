package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
)

var t0 = time.Date(2025, 1, 6, 9, 0, 0, 0, time.UTC)

func patient(i int) string { return fmt.Sprintf("%064x", i+1) }

// stream builds valid appointment events with unique event IDs.
type stream struct {
	evs []events.Appointment
}

func (s *stream) add(p int, typ events.Type, appt string, version int, at time.Time, start time.Time) {
	ev := events.Appointment{
		Schema: events.AppointmentSchema, EventID: fmt.Sprintf("e%d", len(s.evs)), Type: typ, EventTime: at,
		AppointmentID: appt, Version: version, Patient: patient(p),
	}
	switch typ {
	case events.Booked, events.Rescheduled:
		ev.Booking = &events.Booking{Specialty: "110", Start: start, BookedAt: at, AgeBand: "35-44", FirstVisit: version == 1}
	case events.Cancelled:
		ev.CancelledBy = events.ByPatient
	}
	s.evs = append(s.evs, ev)
}

func (s *stream) jsonl(t testing.TB) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	for i := range s.evs {
		if err := s.evs[i].Validate(); err != nil {
			t.Fatalf("test event %d: %v", i, err)
		}
		line, err := json.Marshal(&s.evs[i])
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(line, '\n'))
	}
	return &b
}

func replayOf(t testing.TB, s *stream) *replay {
	t.Helper()
	r := newReplay()
	if err := r.read(context.Background(), s.jsonl(t)); err != nil {
		t.Fatal(err)
	}
	return r
}

func rowOf(t testing.TB, r *replay, appt string, version int) *row {
	t.Helper()
	for i := range r.rows {
		if r.rows[i].key == (key{appt, version}) {
			return &r.rows[i]
		}
	}
	t.Fatalf("no row for %s v%d", appt, version)
	return nil
}

func feature(v featurestore.Vector, name string) float64 {
	return v[slices.Index(featurestore.Names, name)]
}

// TestPointInTime: outcomes of other appointments recorded after a booking's event time are
// invisible to that booking's row, and visible to a later booking's.
func TestPointInTime(t *testing.T) {
	d := 24 * time.Hour
	var s stream
	s.add(0, events.Booked, "A1", 1, t0, t0.Add(10*d))
	s.add(0, events.Booked, "A2", 1, t0.Add(2*d), t0.Add(40*d))
	s.add(0, events.DidNotAttend, "A1", 1, t0.Add(10*d), time.Time{}) // after A2 was booked
	s.add(0, events.Booked, "A3", 1, t0.Add(11*d), t0.Add(50*d))
	s.add(0, events.Attended, "A2", 1, t0.Add(40*d), time.Time{})
	s.add(0, events.DidNotAttend, "A3", 1, t0.Add(50*d), time.Time{})
	r := replayOf(t, &s)

	a2 := rowOf(t, r, "A2", 1).v
	if feature(a2, "prior_dna") != 0 || feature(a2, "prior_appointments") != 0 || !math.IsNaN(feature(a2, "days_since_last_dna")) {
		t.Fatalf("A2 (booked before A1's DNA was recorded) sees it: prior_dna=%v prior_appointments=%v days_since_last_dna=%v",
			feature(a2, "prior_dna"), feature(a2, "prior_appointments"), feature(a2, "days_since_last_dna"))
	}
	if feature(a2, "open_bookings") != 1 {
		t.Fatalf("A2 open_bookings = %v, want 1 (A1 was booked and in the future)", feature(a2, "open_bookings"))
	}
	a3 := rowOf(t, r, "A3", 1).v
	if feature(a3, "prior_dna") != 1 || feature(a3, "days_since_last_dna") != 1 || feature(a3, "open_bookings") != 1 {
		t.Fatalf("A3 (booked after A1's DNA) = prior_dna %v, days_since_last_dna %v, open_bookings %v; want 1, 1, 1",
			feature(a3, "prior_dna"), feature(a3, "days_since_last_dna"), feature(a3, "open_bookings"))
	}
	// A2's own attendance, recorded later still, does not leak into its row either.
	if feature(a2, "prior_attended") != 0 {
		t.Fatal("A2 sees an attendance")
	}

	var out bytes.Buffer
	if n, err := r.writeCSV(&out, nil); err != nil || n != 3 {
		t.Fatalf("writeCSV = %d, %v; want 3 rows", n, err)
	}
}

func TestLabels(t *testing.T) {
	d := 24 * time.Hour
	var s stream
	s.add(0, events.Booked, "dna", 1, t0, t0.Add(5*d))
	s.add(0, events.Booked, "resched", 1, t0.Add(time.Hour), t0.Add(5*d))
	s.add(0, events.Booked, "cancel", 1, t0.Add(2*time.Hour), t0.Add(5*d))
	s.add(0, events.Booked, "open", 1, t0.Add(3*time.Hour), t0.Add(90*d))
	s.add(1, events.Booked, "corrected", 1, t0.Add(4*time.Hour), t0.Add(5*d))
	s.add(1, events.Booked, "corrected", 1, t0.Add(4*time.Hour), t0.Add(5*d)) // replayed duplicate
	s.add(0, events.Rescheduled, "resched", 2, t0.Add(d), t0.Add(6*d))
	s.add(0, events.Cancelled, "cancel", 1, t0.Add(2*d), time.Time{})
	s.add(0, events.DidNotAttend, "dna", 1, t0.Add(5*d), time.Time{})
	s.add(1, events.DidNotAttend, "corrected", 1, t0.Add(5*d), time.Time{})
	s.add(1, events.Attended, "corrected", 1, t0.Add(5*d+time.Hour), time.Time{}) // PAS correction
	s.add(0, events.Attended, "resched", 2, t0.Add(6*d), time.Time{})
	r := replayOf(t, &s)

	var out bytes.Buffer
	n, err := r.writeCSV(&out, map[key]float64{{"dna", 1}: 0.25})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&out).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, rec := range recs[1:] {
		got[rec[0]+" v"+rec[1]] = rec[len(rec)-2] + " " + rec[len(rec)-1]
	}
	want := map[string]string{"dna v1": "1 0.25", "resched v2": "0 ", "corrected v1": "0 "}
	if n != 3 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows %v, want %v", got, want)
	}
	st := r.stats
	if st.scored != 6 || st.duplicates != 1 || st.superseded != 1 || st.cancelled != 1 || st.noOutcome != 1 || st.dna != 1 || st.attended != 2 || st.noTruth != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCSVFormat(t *testing.T) {
	var s stream
	s.add(0, events.Booked, "A1", 1, t0, t0.Add(48*time.Hour))
	s.add(0, events.Attended, "A1", 1, t0.Add(48*time.Hour), time.Time{})
	dir := t.TempDir()
	in, out, truth := filepath.Join(dir, "e.jsonl"), filepath.Join(dir, "t.csv"), filepath.Join(dir, "truth.csv")
	if err := os.WriteFile(in, s.jsonl(t).Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(truth, []byte("appointment_id,booking_version,p_dna\nA1,1,0.0625\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(options{in: in, truth: truth, out: out}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	wantHeader := "appointment_id,booking_version,event_time,appointment_start," + strings.Join(featurestore.Names, ",") + ",label,p_dna"
	if len(lines) != 2 || lines[0] != wantHeader {
		t.Fatalf("output:\n%s\nwant header %s", b, wantHeader)
	}
	// lead 2 days, first visit, specialty 110, age band 3, deprivation unknown, Wednesday 09:00
	// London, version 1, no history: NaN rate and recencies are empty fields.
	want := "A1,1,2025-01-06T09:00:00Z,2025-01-08T09:00:00Z,2,1,110,3,,2,9,1,0,0,0,,0,,,0,0,0,0,0,0.0625"
	if lines[1] != want {
		t.Fatalf("row\n%s\nwant\n%s", lines[1], want)
	}
}

func TestRefusesUnsortedAndInvalid(t *testing.T) {
	var s stream
	s.add(0, events.Booked, "A1", 1, t0.Add(time.Hour), t0.Add(48*time.Hour))
	s.add(1, events.Booked, "A2", 1, t0, t0.Add(48*time.Hour))
	err := newReplay().read(context.Background(), s.jsonl(t))
	if err == nil || !strings.Contains(err.Error(), "line 2: event_time") || !strings.Contains(err.Error(), "sorted") {
		t.Fatalf("unsorted input: %v, want a line 2 ordering error", err)
	}

	in := s.jsonl(t)
	in.Reset()
	in.WriteString("\n{\"schema\":\"appointment.v1\"}\n")
	if err := newReplay().read(context.Background(), in); err == nil || !strings.HasPrefix(err.Error(), "line 2: ") {
		t.Fatalf("invalid event: %v, want a line 2 error", err)
	}
}

// TestPropertyPointInTime replays random event streams and recomputes every row from the
// patient's final history truncated to facts known at the row's event time (and, as a
// second witness, from a fresh history of only the events before it): the vectors must be
// identical, so no row can have seen anything recorded after its booking.
func TestPropertyPointInTime(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := randomStream(seed, 12, 400)
			r := replayOf(t, s)
			final, err := r.store.Load(context.Background(), patientsOf(s))
			if err != nil {
				t.Fatal(err)
			}
			for _, rw := range r.rows {
				ev := &s.evs[rw.seq]
				h := final[ev.Patient]
				var trunc featurestore.History
				for _, f := range h.Facts {
					if f.At <= ev.EventTime.Unix() {
						trunc.Facts = append(trunc.Facts, f)
					}
				}
				var fresh featurestore.History
				for i := range rw.seq {
					if s.evs[i].Patient == ev.Patient {
						fresh.Apply(&s.evs[i], featurestore.Policy{})
					}
				}
				for name, v := range map[string]featurestore.Vector{
					"truncated final history":   featurestore.Compute(ev, &trunc),
					"history of earlier events": featurestore.Compute(ev, &fresh),
				} {
					if !sameVector(v, rw.v) {
						t.Fatalf("row %s v%d at %s: replay %v, %s %v", rw.appointment, rw.version, rw.at, rw.v, name, v)
					}
				}
			}
			if len(r.rows) < 50 {
				t.Fatalf("only %d rows: the generator is too weak to test anything", len(r.rows))
			}
		})
	}
}

func sameVector(a, b featurestore.Vector) bool {
	for i := range a {
		if a[i] != b[i] && !(math.IsNaN(a[i]) && math.IsNaN(b[i])) {
			return false
		}
	}
	return true
}

func patientsOf(s *stream) []string {
	var ps []string
	for _, ev := range s.evs {
		if !slices.Contains(ps, ev.Patient) {
			ps = append(ps, ev.Patient)
		}
	}
	return ps
}

// randomStream generates n events for the given number of patients with increasing event
// times (about an hour apart, all within the default retention; only a duplicate shares its
// original's time): bookings, reschedules, cancellations by either side, outcomes (some
// corrected) and duplicates.
func randomStream(seed uint64, patients, n int) *stream {
	return randomStreamHorizon(seed, patients, n, 60*24*time.Hour)
}

// randomStreamHorizon is randomStream with appointments starting up to horizon after their
// booking: a short horizon puts decision points (start - lead) inside the stream, before
// most outcomes.
func randomStreamHorizon(seed uint64, patients, n int, horizon time.Duration) *stream {
	hours := int(horizon / time.Hour)
	rng := rand.New(rand.NewPCG(seed, 42))
	type appt struct {
		id       string
		patient  int
		version  int
		start    time.Time
		finished bool
	}
	var s stream
	var open []*appt
	at := t0
	for len(s.evs) < n {
		at = at.Add(time.Duration(1+rng.IntN(7200)) * time.Second)
		switch k := rng.IntN(10); {
		case k < 4 || len(open) == 0:
			a := &appt{id: fmt.Sprintf("A%d", len(s.evs)), patient: rng.IntN(patients), version: 1,
				start: at.Add(time.Duration(rng.IntN(hours)) * time.Hour)}
			open = append(open, a)
			s.add(a.patient, events.Booked, a.id, 1, at, a.start)
		default:
			i := rng.IntN(len(open))
			a := open[i]
			switch {
			case k == 4 && !a.finished:
				a.version++
				a.start = at.Add(time.Duration(rng.IntN(hours)) * time.Hour)
				s.add(a.patient, events.Rescheduled, a.id, a.version, at, a.start)
			case k == 5 && !a.finished:
				s.add(a.patient, events.Cancelled, a.id, a.version, at, time.Time{})
				if rng.IntN(2) == 0 {
					s.evs[len(s.evs)-1].CancelledBy = events.ByHospital
				}
				open = slices.Delete(open, i, i+1)
			case k == 6:
				// a replayed duplicate, as Kafka delivers after a rebalance
				s.evs = append(s.evs, s.evs[len(s.evs)-1])
			default:
				typ := events.Attended
				if rng.IntN(4) == 0 {
					typ = events.DidNotAttend
				}
				s.add(a.patient, typ, a.id, a.version, at, time.Time{})
				a.finished = true
				if rng.IntN(5) > 0 {
					open = slices.Delete(open, i, i+1)
				}
			}
		}
	}
	return &s
}

// TestDecisionRows: with -as-of decision a row is the appointment's latest booking as of its
// decision point (start - lead): it sees outcomes recorded between the booking and the
// decision point, not those after it, and an appointment booked after its decision point has
// no row.
func TestDecisionRows(t *testing.T) {
	d := 24 * time.Hour
	var s stream
	s.add(0, events.Booked, "A1", 1, t0, t0.Add(10*d))
	s.add(0, events.Booked, "A2", 1, t0.Add(2*d), t0.Add(40*d))
	s.add(0, events.DidNotAttend, "A1", 1, t0.Add(10*d), time.Time{}) // after A2's booking, before its decision point
	s.add(0, events.Booked, "A3", 1, t0.Add(11*d), t0.Add(39*d+12*time.Hour))
	s.add(0, events.DidNotAttend, "A3", 1, t0.Add(39*d+13*time.Hour), time.Time{}) // after A2's decision point
	s.add(0, events.Attended, "A2", 1, t0.Add(40*d), time.Time{})
	s.add(0, events.Booked, "A4", 1, t0.Add(45*d), t0.Add(45*d+20*time.Hour)) // booked inside the lead
	s.add(0, events.Attended, "A4", 1, t0.Add(45*d+21*time.Hour), time.Time{})
	r := newReplay()
	r.decisionLead = d
	if err := r.read(context.Background(), s.jsonl(t)); err != nil {
		t.Fatal(err)
	}
	a2 := rowOf(t, r, "A2", 1)
	if !a2.at.Equal(t0.Add(39 * d)) {
		t.Fatalf("A2's row is as of %s, want its decision point %s", a2.at, t0.Add(39*d))
	}
	if feature(a2.v, "prior_dna") != 1 || feature(a2.v, "days_since_last_dna") != 29 || feature(a2.v, "open_bookings") != 1 {
		t.Fatalf("A2 as of its decision point: prior_dna %v, days_since_last_dna %v, open_bookings %v; want 1 (A1), 29, 1 (A3, whose DNA comes after)",
			feature(a2.v, "prior_dna"), feature(a2.v, "days_since_last_dna"), feature(a2.v, "open_bookings"))
	}
	if feature(a2.v, "lead_time_days") != 38 || feature(a2.v, "booking_version") != 1 {
		t.Fatalf("A2's booking facts changed: lead_time_days %v, booking_version %v", feature(a2.v, "lead_time_days"), feature(a2.v, "booking_version"))
	}
	// At booking time the same appointment knew nothing.
	b := replayOf(t, &s)
	if v := rowOf(t, b, "A2", 1).v; feature(v, "prior_dna") != 0 {
		t.Fatalf("A2 as of its booking: prior_dna %v, want 0", feature(v, "prior_dna"))
	}
	for _, rw := range r.rows {
		if rw.appointment == "A4" {
			t.Fatalf("A4, booked 20h before its start, has a decision row as of %s", rw.at)
		}
	}
	var out bytes.Buffer
	n, err := r.writeCSV(&out, nil)
	if err != nil || n != 3 || r.stats.lateBooked != 1 {
		t.Fatalf("writeCSV = %d, %v, %d booked after the decision point; want 3 rows (A1, A3, A2), 1", n, err, r.stats.lateBooked)
	}
	recs, _ := csv.NewReader(&out).ReadAll()
	var order []string
	for _, rec := range recs[1:] {
		order = append(order, rec[0]+"@"+rec[2])
	}
	want := []string{"A1@" + t0.Add(9*d).Format(time.RFC3339), "A3@" + t0.Add(38*d+12*time.Hour).Format(time.RFC3339), "A2@" + t0.Add(39*d).Format(time.RFC3339)}
	if !slices.Equal(order, want) {
		t.Fatalf("rows %v, want %v (event_time is the decision point, rows in its order)", order, want)
	}
}

// TestPropertyDecisionPointInTime replays random streams as of the decision point and
// recomputes every row from the patient's final history truncated to facts recorded before
// the decision point, and from a fresh history of only the events before it: identical, so
// no decision row saw anything recorded at or after its decision point.
func TestPropertyDecisionPointInTime(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := randomStreamHorizon(seed, 12, 400, 10*24*time.Hour)
			r := newReplay()
			r.decisionLead = 24 * time.Hour
			if err := r.read(context.Background(), s.jsonl(t)); err != nil {
				t.Fatal(err)
			}
			final, err := r.store.Load(context.Background(), patientsOf(s))
			if err != nil {
				t.Fatal(err)
			}
			seen := 0
			for i, rw := range r.rows {
				if i > 0 && rw.at.Before(r.rows[i-1].at) {
					t.Fatalf("row %d as of %s after a row as of %s", i, rw.at, r.rows[i-1].at)
				}
				ev := s.evs[rw.seq]
				if !ev.Booking.Start.Add(-24*time.Hour).Equal(rw.at) || !rw.at.After(ev.EventTime) {
					t.Fatalf("row %s v%d as of %s: booked %s, start %s", rw.appointment, rw.version, rw.at, ev.EventTime, ev.Booking.Start)
				}
				ev.EventTime = rw.at
				h := final[ev.Patient]
				var trunc featurestore.History
				for _, f := range h.Facts {
					if f.At < rw.at.Unix() {
						trunc.Facts = append(trunc.Facts, f)
					}
				}
				var fresh featurestore.History
				for j := range s.evs {
					if s.evs[j].EventTime.Before(rw.at) && s.evs[j].Patient == ev.Patient {
						fresh.Apply(&s.evs[j], featurestore.Policy{})
					}
				}
				for name, v := range map[string]featurestore.Vector{
					"truncated final history":   featurestore.Compute(&ev, &trunc),
					"history of earlier events": featurestore.Compute(&ev, &fresh),
				} {
					if !sameVector(v, rw.v) {
						t.Fatalf("row %s v%d at %s: replay %v, %s %v", rw.appointment, rw.version, rw.at, rw.v, name, v)
					}
				}
				if feature(rw.v, "prior_appointments") > 0 {
					seen++
				}
			}
			if len(r.rows) < 50 || seen < 10 {
				t.Fatalf("only %d rows, %d with a prior outcome: the generator is too weak to test anything", len(r.rows), seen)
			}
		})
	}
}
