package reminders_test

import (
	"testing"
	"time"
)

const day = 24 * time.Hour

// A replayed batch and a restarted dispatcher plan the same reminders and send each once;
// high and very-high bands get the extra day-before reminder, low and medium do not.
func TestExactlyOnceAcrossReplaysAndRestarts(t *testing.T) {
	h := newHarness(t)
	start := t0.Add(10*day + 2*time.Hour) // Thursday week, 11:00
	var evs []any
	bands := []string{"low", "medium", "high", "very_high"}
	for i, band := range bands {
		p := h.addPatient(i)
		appt := "A" + band
		evs = append(evs, booking(p, appt, 1, start, t0), risk(p, appt, 1, start, band))
	}
	d1 := h.dispatcher()
	h.process(d1, evs...)
	h.process(d1, evs...) // replay
	if got := d1.Stats.Scheduled.Load(); got != 2*4+2 {
		t.Fatalf("scheduled %d reminders, want 10 (2 each, +1 for high and very_high)", got)
	}

	// Restart: a new process over the same Redis, the batch replayed again, then time runs.
	d2 := h.dispatcher()
	h.process(d2, evs...)
	if d2.Stats.Scheduled.Load() != 0 {
		t.Fatalf("replay after restart scheduled %d new reminders", d2.Stats.Scheduled.Load())
	}
	h.runUntil(d2, start.Add(day))
	h.process(d2, evs...) // a replay after sending
	h.runUntil(d2, start.Add(2*day))

	refs := h.byReference()
	if len(h.stub.Messages()) != 10 || len(refs) != 10 {
		t.Fatalf("%d messages with %d references, want 10 and 10", len(h.stub.Messages()), len(refs))
	}
	perPhone := map[string]int{}
	for _, m := range h.stub.Messages() {
		perPhone[m.PhoneNumber]++
		if len(m.Reference) != 32 || m.Personalisation["appointment_time"] != "11:00" ||
			m.Personalisation["appointment_date"] != "Thursday 13 March 2025" || len(m.Personalisation) != 2 {
			t.Fatalf("message %+v", m)
		}
	}
	for i, want := range []int{2, 2, 3, 3} {
		if got := perPhone[contactsDrama(i)]; got != want {
			t.Errorf("%s band: %d messages, want %d", bands[i], got, want)
		}
	}
	if d2.Stats.Sent.Load() != 10 {
		t.Fatalf("sent %d", d2.Stats.Sent.Load())
	}
}
