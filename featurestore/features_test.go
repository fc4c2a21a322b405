package featurestore

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/events"
)

const patient = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC) // a Monday

func booking(id string, version int, at, start time.Time) events.Appointment {
	typ := events.Booked
	if version > 1 {
		typ = events.Rescheduled
	}
	dep := 3
	return events.Appointment{
		Schema: events.AppointmentSchema, EventID: id + "-b", Type: typ, EventTime: at,
		AppointmentID: id, Version: version, Patient: patient,
		Booking: &events.Booking{Specialty: "110", Clinic: "T&O", FirstVisit: true, Start: start,
			BookedAt: at, AgeBand: "25-34", Deprivation: &dep},
	}
}

func outcome(id string, typ events.Type, at time.Time) events.Appointment {
	return events.Appointment{Schema: events.AppointmentSchema, EventID: id + string(typ), Type: typ,
		EventTime: at, AppointmentID: id, Version: 1, Patient: patient}
}

func cancel(id string, by events.CancelledBy, at time.Time) events.Appointment {
	ev := outcome(id, events.Cancelled, at)
	ev.CancelledBy = by
	return ev
}

func days(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

func feature(v Vector, name string) float64 {
	for i, n := range Names {
		if n == name {
			return v[i]
		}
	}
	panic("no feature " + name)
}

func TestNamesMatchVector(t *testing.T) {
	if len(Names) != NumFeatures {
		t.Fatalf("len(Names) = %d, NumFeatures = %d", len(Names), NumFeatures)
	}
}

func TestComputeCountsHistory(t *testing.T) {
	var h History
	seq := []events.Appointment{
		booking("A", 1, t0, t0.Add(days(10))),
		outcome("A", events.DidNotAttend, t0.Add(days(10))),
		booking("B", 1, t0.Add(days(11)), t0.Add(days(30))),
		booking("B", 2, t0.Add(days(20)), t0.Add(days(40))),
		outcome("B", events.Attended, t0.Add(days(40))),
		booking("C", 1, t0.Add(days(41)), t0.Add(days(50))),
		cancel("C", events.ByPatient, t0.Add(days(45))),
		booking("D", 1, t0.Add(days(46)), t0.Add(days(200))), // still open
	}
	for i := range seq {
		if !h.Apply(&seq[i], Policy{}) {
			t.Fatalf("event %d did not change history", i)
		}
	}
	ev := booking("E", 1, t0.Add(days(60)), t0.Add(days(74)))
	v := Compute(&ev, &h)
	want := map[string]float64{
		"lead_time_days": 14, "first_visit": 1, "specialty": 110, "age_band": 2,
		"deprivation_decile": 3, "booking_version": 1,
		"prior_appointments": 2, "prior_dna": 1, "prior_attended": 1, "prior_dna_rate": 0.5,
		"dna_last_365d": 1, "days_since_last_dna": 50, "days_since_last_attended": 20,
		"prior_patient_cancellations": 1, "prior_hospital_cancellations": 0,
		"prior_reschedules": 1, "open_bookings": 1,
	}
	for name, w := range want {
		if got := feature(v, name); got != w {
			t.Errorf("%s = %v, want %v", name, got, w)
		}
	}
}

func TestComputeTellsApartIdsThatEndAlike(t *testing.T) {
	// Compute compares the last eight bytes of ids first (idKey); ids that share them, or
	// that are shorter than eight bytes, must still be told apart by the whole id.
	var h History
	seq := []events.Appointment{
		booking("north-00000001", 1, t0, t0.Add(days(10))),
		outcome("north-00000001", events.DidNotAttend, t0.Add(days(10))),
		booking("south-00000001", 1, t0.Add(days(11)), t0.Add(days(30))),
		outcome("south-00000001", events.Attended, t0.Add(days(30))),
		booking("7", 1, t0.Add(days(31)), t0.Add(days(35))),
		outcome("7", events.DidNotAttend, t0.Add(days(35))),
		booking("\x007", 1, t0.Add(days(36)), t0.Add(days(200))), // shorter than eight bytes, same key as "7"
	}
	for i := range seq {
		h.Apply(&seq[i], Policy{})
	}
	ev := booking("east-00000001", 1, t0.Add(days(60)), t0.Add(days(74)))
	v := Compute(&ev, &h)
	want := map[string]float64{"prior_appointments": 3, "prior_dna": 2, "prior_attended": 1, "open_bookings": 1}
	for name, w := range want {
		if got := feature(v, name); got != w {
			t.Errorf("%s = %v, want %v", name, got, w)
		}
	}
	// The booking's own appointment is left out even when another id ends alike.
	own := booking("south-00000001", 2, t0.Add(days(60)), t0.Add(days(74)))
	if got := feature(Compute(&own, &h), "prior_attended"); got != 0 {
		t.Errorf("prior_attended = %v counting the booking's own appointment, want 0", got)
	}
}

func TestComputeIsPointInTime(t *testing.T) {
	// History already holds outcomes recorded after the booking (a replayed batch after a
	// crash, or a training replay): the booking must not see them.
	var h History
	later := []events.Appointment{
		outcome("X", events.DidNotAttend, t0.Add(days(5))),
		cancel("Y", events.ByHospital, t0.Add(days(6))),
	}
	for i := range later {
		h.Apply(&later[i], Policy{})
	}
	ev := booking("E", 1, t0, t0.Add(days(20)))
	h.Apply(&ev, Policy{}) // its own booking fact must not count either
	got := Compute(&ev, &h)
	empty := Compute(&ev, &History{})
	for i := range got {
		if !same(got[i], empty[i]) {
			t.Errorf("%s = %v with future facts, %v without", Names[i], got[i], empty[i])
		}
	}
}

func same(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }

func TestApplyIsIdempotent(t *testing.T) {
	var h History
	b := booking("A", 1, t0, t0.Add(days(3)))
	dna := outcome("A", events.DidNotAttend, t0.Add(days(3)))
	dnaAgain := dna
	dnaAgain.EventID = "re-sent-with-new-id"
	dnaAgain.Version = 2
	for _, ev := range []*events.Appointment{&b, &dna, &b, &dna, &dnaAgain} {
		h.Apply(ev, Policy{})
	}
	if len(h.Facts) != 2 {
		t.Fatalf("history has %d facts after replays, want 2: %+v", len(h.Facts), h.Facts)
	}
}

func TestCorrectedOutcomeCountsOnce(t *testing.T) {
	dna1 := outcome("A", events.DidNotAttend, t0)
	att := outcome("A", events.Attended, t0.Add(time.Hour))
	dna2 := outcome("A", events.DidNotAttend, t0.Add(2*time.Hour))
	cases := []struct {
		name          string
		seq           []events.Appointment
		dna, attended float64
	}{
		{"DNA corrected to attended", []events.Appointment{dna1, att}, 0, 1},
		{"corrected back to DNA", []events.Appointment{dna1, att, dna2}, 1, 0},
		{"whole chain replayed", []events.Appointment{dna1, att, dna2, dna1, att, dna2}, 1, 0},
		{"stale correction replayed", []events.Appointment{dna1, att, dna1}, 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h History
			for i := range c.seq {
				h.Apply(&c.seq[i], Policy{})
			}
			ev := booking("B", 1, t0.Add(days(1)), t0.Add(days(9)))
			v := Compute(&ev, &h)
			if feature(v, "prior_dna") != c.dna || feature(v, "prior_attended") != c.attended {
				t.Fatalf("prior_dna=%v prior_attended=%v, want %v and %v",
					feature(v, "prior_dna"), feature(v, "prior_attended"), c.dna, c.attended)
			}
		})
	}
}

func TestRetentionAndCap(t *testing.T) {
	var h History
	old := outcome("OLD", events.DidNotAttend, t0)
	h.Apply(&old, Policy{Retention: days(365)})
	recent := outcome("NEW", events.Attended, t0.Add(days(400)))
	h.Apply(&recent, Policy{Retention: days(365)})
	if len(h.Facts) != 1 || h.Facts[0].Appointment != "NEW" {
		t.Fatalf("retention kept %+v", h.Facts)
	}
	for i := 0; i < 10; i++ {
		ev := outcome(string(rune('a'+i)), events.Attended, t0.Add(days(400+i)))
		h.Apply(&ev, Policy{MaxFacts: 4})
	}
	if len(h.Facts) != 4 || h.Facts[3].Appointment != "j" {
		t.Fatalf("cap kept %+v", h.Facts)
	}
}

func TestCancelledAndLatestVersion(t *testing.T) {
	var h History
	for _, ev := range []events.Appointment{
		booking("A", 1, t0, t0.Add(days(9))),
		booking("A", 3, t0.Add(days(1)), t0.Add(days(19))),
		cancel("B", events.ByHospital, t0),
	} {
		h.Apply(&ev, Policy{})
	}
	if h.LatestVersion("A") != 3 || h.LatestVersion("B") != 0 {
		t.Fatalf("LatestVersion A=%d B=%d", h.LatestVersion("A"), h.LatestVersion("B"))
	}
	if h.Cancelled("A") || !h.Cancelled("B") {
		t.Fatal("Cancelled wrong")
	}
}

func TestHistoryTellsApartIdsThatEndAlike(t *testing.T) {
	// Apply, Cancelled and LatestVersion compare idKeys first too: ids that end alike, or
	// share the key of a short id, are still told apart by the whole id.
	var h History
	for _, ev := range []events.Appointment{
		booking("north-00000001", 4, t0, t0.Add(days(10))),
		cancel("north-00000001", events.ByPatient, t0.Add(days(1))),
		outcome("7", events.DidNotAttend, t0.Add(days(2))),
	} {
		h.Apply(&ev, Policy{})
	}
	if h.Cancelled("south-00000001") || h.LatestVersion("south-00000001") != 0 {
		t.Fatalf("south-00000001: Cancelled %v, LatestVersion %d, want false and 0 (only north's id ends alike)",
			h.Cancelled("south-00000001"), h.LatestVersion("south-00000001"))
	}
	for _, ev := range []events.Appointment{
		booking("south-00000001", 4, t0.Add(days(3)), t0.Add(days(20))), // same version as north's
		outcome("\x007", events.DidNotAttend, t0.Add(days(2))),          // same key and time as "7"'s outcome
	} {
		if !h.Apply(&ev, Policy{}) {
			t.Fatalf("%s %s was taken for a fact already recorded about another appointment", ev.AppointmentID, ev.Type)
		}
	}
	if len(h.Facts) != 5 {
		t.Fatalf("%d facts, want 5", len(h.Facts))
	}
}

func TestMemoryStoreCompareAndSet(t *testing.T) {
	ctx := context.Background()
	var s MemoryStore
	a, _ := s.Load(ctx, []string{"p"})
	b, _ := s.Load(ctx, []string{"p"})
	ev := outcome("A", events.Attended, t0)
	a["p"].Apply(&ev, Policy{})
	if err := s.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	b["p"].Apply(&ev, Policy{})
	err := s.Save(ctx, b)
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) || len(ce.Patients) != 1 {
		t.Fatalf("stale save: err = %v, want a conflict for one patient", err)
	}
	got, _ := s.Load(ctx, []string{"p", "q"})
	if got["p"].Rev != 1 || len(got["p"].Facts) != 1 || got["q"].Rev != 0 {
		t.Fatalf("after saves: %+v %+v", got["p"], got["q"])
	}
}

func TestSameSecondFactsAreNotKnownAtBooking(t *testing.T) {
	// An outcome recorded in the booking's own second may have been processed before or after
	// it; leaving it out either way makes a replay score exactly as the first pass did.
	var h History
	dna := outcome("X", events.DidNotAttend, t0)
	h.Apply(&dna, Policy{})
	ev := booking("E", 1, t0, t0.Add(days(20)))
	if got := feature(Compute(&ev, &h), "prior_dna"); got != 0 {
		t.Fatalf("prior_dna = %v for an outcome in the booking's own second, want 0", got)
	}
	later := booking("F", 1, t0.Add(time.Second), t0.Add(days(20)))
	if got := feature(Compute(&later, &h), "prior_dna"); got != 1 {
		t.Fatalf("prior_dna = %v a second later, want 1", got)
	}
}

func TestLateSupersededVersionDoesNotMoveAppointment(t *testing.T) {
	var h History
	v1 := booking("A", 1, t0, t0.Add(days(30)))
	v3 := booking("A", 3, t0.Add(days(2)), t0.Add(days(60)))
	v2 := booking("A", 2, t0.Add(days(1)), t0.Add(days(5))) // arrives last, superseded
	for _, ev := range []*events.Appointment{&v1, &v3, &v2} {
		h.Apply(ev, Policy{})
	}
	ev := booking("B", 1, t0.Add(days(10)), t0.Add(days(12)))
	if got := feature(Compute(&ev, &h), "open_bookings"); got != 1 {
		t.Fatalf("open_bookings = %v, want 1: version 3 starts on day 60, after the booking", got)
	}
}
