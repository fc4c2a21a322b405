package reminders_test

import (
	"context"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/reminders/contacts"
)

// A cancelled appointment gets nothing more, even when its booking and risk are replayed
// after the cancellation; a rescheduled one is reminded for the new time only, and a
// reminder already sent for the old time is not sent again.
func TestCancellationAndReschedule(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher()
	start := t0.Add(10*day + 2*time.Hour)
	pc, pr := h.addPatient(1), h.addPatient(2)

	h.process(d, booking(pc, "C1", 1, start, t0), risk(pc, "C1", 1, start, "very_high"),
		booking(pr, "R1", 1, start, t0), risk(pr, "R1", 1, start, "high"))
	if n, _ := d.Pending(context.Background()); n != 6 {
		t.Fatalf("%d pending, want 6", n)
	}
	// The 7-day reminders go out, then C1 is cancelled and R1 moves a week later.
	h.runUntil(d, start.Add(-7*day))
	if got := len(h.stub.Messages()); got != 2 {
		t.Fatalf("%d messages by the 7-day mark, want 2", got)
	}
	moved := start.Add(7 * day)
	at := h.clock.Now().Add(time.Hour)
	h.clock.Set(at)
	h.process(d, cancellation(pc, "C1", 1, at), booking(pr, "R1", 2, moved, at))
	if got := d.Stats.Cancelled.Load(); got != 4 {
		t.Fatalf("cancelled %d pending reminders, want 4 (2 of C1, 2 of R1 v1)", got)
	}
	// Replays of the old booking and risk change nothing.
	h.process(d, booking(pc, "C1", 1, start, t0), risk(pc, "C1", 1, start, "very_high"), booking(pr, "R1", 1, start, t0))
	// R1 v2 is not scored yet: the v1 band (high) still applies; then v2 scores low.
	h.runUntil(d, moved.Add(-2*day).Add(-time.Hour))
	h.process(d, risk(pr, "R1", 2, moved, "low"))
	h.runUntil(d, moved.Add(day))

	var c1, r1 []string
	for _, m := range h.stub.Messages() {
		switch m.PhoneNumber {
		case contactsDrama(1):
			c1 = append(c1, m.Personalisation["appointment_date"])
		case contactsDrama(2):
			r1 = append(r1, m.Personalisation["appointment_date"])
		}
	}
	if len(c1) != 1 {
		t.Fatalf("cancelled appointment got %d messages (%v), want only the one sent before cancelling", len(c1), c1)
	}
	// R1: 7-day for the old date; 7- and 2-day for the new date; no extra (rescored low).
	want := []string{"Thursday 13 March 2025", "Thursday 20 March 2025", "Thursday 20 March 2025"}
	if len(r1) != len(want) {
		t.Fatalf("rescheduled appointment got %v, want %v", r1, want)
	}
	for i := range want {
		if r1[i] != want[i] {
			t.Fatalf("rescheduled appointment got %v, want %v", r1, want)
		}
	}
}

// Booked too close: only slots at least MinLead before the start and not before the
// booking are planned; a booking without SMS consent plans none.
func TestTooCloseAndOptOut(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher()
	p := h.addPatient(3)
	start := t0.Add(30 * time.Hour) // Tuesday 15:00
	b := booking(p, "S1", 1, start, t0)
	noSMS := booking(p, "S2", 1, start.Add(5*day), t0)
	noSMS.Booking.Contact = events.Contact{SMS: true, OptOut: true}
	h.process(d, b, risk(p, "S1", 1, start, "high"), noSMS)
	if n, _ := d.Pending(context.Background()); n != 1 {
		t.Fatalf("%d pending, want 1 (only the day-before extra fits)", n)
	}
	// The patient then opts out in the contact service: nothing is sent.
	if err := h.contacts.Put(context.Background(), p, contacts.Contact{Phone: contacts.Drama(3), OptOut: true}); err != nil {
		t.Fatal(err)
	}
	h.runUntil(d, start)
	if len(h.stub.Messages()) != 0 || d.Stats.Cancelled.Load() != 1 {
		t.Fatalf("%d messages, %d cancelled after opt-out", len(h.stub.Messages()), d.Stats.Cancelled.Load())
	}
}

// A reminder that falls due while the dispatcher is down and is found in quiet hours is
// moved to the end of them; one found more than MaxLate late is dropped; one for a patient
// without contact details fails with a reason.
func TestQuietHoursLateAndNoContact(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher()
	p := h.addPatient(4)
	start := t0.Add(9*day + 10*time.Hour) // Wednesday week 19:00
	h.process(d, booking(p, "Q1", 1, start, t0))
	// Down from before the 7-day slot (Wed 19:00) until 21:30: quiet hours.
	h.clock.Set(start.Add(-7*day + 150*time.Minute))
	if _, err := d.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	next, _, _ := d.NextDue(context.Background())
	if want := time.Date(2025, 3, 6, 8, 0, 0, 0, time.UTC); !next.Equal(want) || d.Stats.Retimed.Load() != 1 {
		t.Fatalf("next due %s, retimed %d; want %s", next, d.Stats.Retimed.Load(), want)
	}
	h.runUntil(d, start.Add(-6*day))
	if len(h.stub.Messages()) != 1 {
		t.Fatalf("%d messages after quiet hours", len(h.stub.Messages()))
	}
	// Down for a day across the 2-day slot: dropped as late.
	h.clock.Set(start.Add(-2*day + 13*time.Hour))
	if _, err := d.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(h.stub.Messages()) != 1 || d.Stats.Cancelled.Load() != 1 {
		t.Fatalf("late reminder: %d messages, %d cancelled", len(h.stub.Messages()), d.Stats.Cancelled.Load())
	}

	ghost := pseudonym(99) // no contact record
	h.process(d, booking(ghost, "N1", 1, h.clock.Now().Add(3*day), h.clock.Now()))
	h.runUntil(d, h.clock.Now().Add(3*day))
	f := h.failed.events(t)
	if len(f) != 1 || f[0].Patient != ghost || f[0].Reason != "no contact details for the patient" || f[0].AppointmentID != "N1" {
		t.Fatalf("failed events %+v", f)
	}
}

// An appointment event keyed by anything but its patient is dead-lettered by the scorer;
// the dispatcher, reading the same topic, must not remind anyone of it either.
func TestEventKeyedByAnotherPatientIsIgnored(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher()
	p, other := h.addPatient(1), h.addPatient(2)
	m := msgs(t, booking(p, "K1", 1, t0.Add(10*day), t0))
	m[0].Key = []byte(other)
	if err := d.Process(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if n, _ := d.Pending(context.Background()); n != 0 || d.Stats.Ignored.Load() != 1 {
		t.Fatalf("%d reminders pending, %d ignored; want 0 and 1", n, d.Stats.Ignored.Load())
	}
}

// The dispatcher acts only on events the scorer accepts: a cancellation dated more than
// MaxAhead past its Kafka timestamp is dead-lettered by the scorer, so it cancels nothing here.
func TestEventsDatedTooFarAheadAreSkipped(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher()
	start := t0.Add(10 * day)
	p := h.addPatient(1)
	h.process(d, booking(p, "F1", 1, start, t0), risk(p, "F1", 1, start, "high"))
	before, _ := d.Pending(context.Background())
	if before == 0 {
		t.Fatal("nothing planned")
	}
	m := msgs(t, cancellation(p, "F1", 1, t0.Add(events.DefaultMaxAhead+time.Hour)))
	m[0].Time = t0
	if err := d.Process(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if n, _ := d.Pending(context.Background()); n != before || d.Stats.Ignored.Load() != 1 {
		t.Fatalf("pending %d (was %d), ignored %d: a future-dated cancellation was acted on", n, before, d.Stats.Ignored.Load())
	}
	m[0].Time = t0.Add(2 * time.Hour) // within the limit of its own timestamp
	if err := d.Process(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if n, _ := d.Pending(context.Background()); n != 0 {
		t.Fatalf("%d still pending after an accepted cancellation", n)
	}
}
