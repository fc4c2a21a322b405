package scorer

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
)

// memOpen is an in-memory OpenStore.
type memOpen struct{ m map[string]map[string][]byte }

func (o *memOpen) Load(_ context.Context, patients []string) (map[string]map[string][]byte, error) {
	out := map[string]map[string][]byte{}
	for _, p := range patients {
		if len(o.m[p]) > 0 {
			out[p] = maps.Clone(o.m[p])
		}
	}
	return out, nil
}

func (o *memOpen) Update(_ context.Context, put map[string]map[string][]byte, closed map[string][]string) error {
	if o.m == nil {
		o.m = map[string]map[string][]byte{}
	}
	for p, appts := range closed {
		for _, a := range appts {
			delete(o.m[p], a)
		}
	}
	for p, bs := range put {
		if o.m[p] == nil {
			o.m[p] = map[string][]byte{}
		}
		maps.Copy(o.m[p], bs)
	}
	return nil
}

// bookAt books appointment id at at, starting start.
func bookAt(id string, at, start time.Time) events.Appointment {
	ev := book(id, 1, at)
	ev.Booking.Start = start
	return ev
}

// A no-show changes the patient's history: their open bookings are scored again, as of the
// decision point, with the new history; a cancelled, concluded or begun appointment is not;
// the same batch processed again (a crash before the commit) publishes the re-scores again
// but changes nothing.
func TestRescoreOpenBookingsWhenHistoryChanges(t *testing.T) {
	store, open, out := &featurestore.MemoryStore{}, &memOpen{}, &memOutput{}
	p := mustNew(t, Config{Store: store, Output: out, Model: fakeModel{"m1"}, MaxAhead: -1,
		Rescore: &Rescore{Open: open}})
	ctx := context.Background()
	c := bookAt("C", t0.Add(-5*24*time.Hour), t0.Add(2*24*time.Hour))
	a := bookAt("A", t0, t0.Add(10*24*time.Hour))
	b := bookAt("B", t0, t0.Add(20*24*time.Hour))
	d := bookAt("D", t0, t0.Add(30*24*time.Hour))
	if err := p.Process(ctx, []kafka.Message{msg(t, c, 0), msg(t, a, 1), msg(t, b, 2), msg(t, d, 3)}); err != nil {
		t.Fatal(err)
	}
	if n := len(risks(t, out)); n != 4 || p.Stats.Rescored.Load() != 0 || len(open.m[pat]) != 4 {
		t.Fatalf("after the bookings: %d risk events, %d re-scored, %d open; want 4, 0, 4", n, p.Stats.Rescored.Load(), len(open.m[pat]))
	}
	cancelD := done("D", events.Cancelled, t0.Add(time.Hour))
	dna := done("C", events.DidNotAttend, t0.Add(2*24*time.Hour))
	batch := []kafka.Message{msg(t, cancelD, 4), msg(t, dna, 5)}
	out.msgs = nil
	if err := p.Process(ctx, batch); err != nil {
		t.Fatal(err)
	}
	rs := risks(t, out)
	if len(rs) != 2 || p.Stats.Rescored.Load() != 2 {
		t.Fatalf("after the no-show: %d risk events (%d re-scored), want A and B", len(rs), p.Stats.Rescored.Load())
	}
	for _, r := range rs {
		start := map[string]time.Time{"A": a.Booking.Start, "B": b.Booking.Start}[r.AppointmentID]
		if r.Reason != events.RescoreHistoryChanged || !r.ScoredAsOf.Equal(start.Add(-24*time.Hour)) || r.Version != 1 ||
			r.Features["prior_dna"] != 1 || r.Band != "high" {
			t.Errorf("re-score %+v: want reason history_changed, as of the day before %s, version 1, one prior DNA, band high", r, start)
		}
	}
	if _, ok := open.m[pat]["C"]; ok || len(open.m[pat]) != 2 {
		t.Fatalf("open bookings after the no-show and the cancellation: %v, want A and B", maps.Keys(open.m[pat]))
	}

	// Processed again: the history does not change, so nothing is re-scored a second time.
	out.msgs = nil
	if err := p.Process(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if n := len(risks(t, out)); n != 0 {
		t.Fatalf("the batch processed again published %d risk events", n)
	}

	// A late outcome, after A has begun: only B is re-scored, now as of the outcome.
	late := done("C", events.Attended, t0.Add(12*24*time.Hour))
	out.msgs = nil
	if err := p.Process(ctx, []kafka.Message{msg(t, late, 6)}); err != nil {
		t.Fatal(err)
	}
	rs = risks(t, out)
	if len(rs) != 1 || rs[0].AppointmentID != "B" || !rs[0].ScoredAsOf.Equal(b.Booking.Start.Add(-24*time.Hour)) {
		t.Fatalf("after a correction on day 12: %+v, want B only", rs)
	}
}

// Without Rescore nothing is kept and nothing re-scored; Rescore without a store is refused.
func TestRescoreIsOptional(t *testing.T) {
	out := &memOutput{}
	p := mustNew(t, Config{Store: &featurestore.MemoryStore{}, Output: out, Model: fakeModel{"m1"}, MaxAhead: -1})
	ctx := context.Background()
	a := bookAt("A", t0, t0.Add(10*24*time.Hour))
	c := bookAt("C", t0, t0.Add(24*time.Hour))
	if err := p.Process(ctx, []kafka.Message{msg(t, a, 0), msg(t, c, 1), msg(t, done("C", events.DidNotAttend, t0.Add(24*time.Hour)), 2)}); err != nil {
		t.Fatal(err)
	}
	if n := len(risks(t, out)); n != 2 {
		t.Fatalf("%d risk events without Rescore, want the 2 bookings", n)
	}
	if _, err := New(Config{Store: &featurestore.MemoryStore{}, Output: out, Model: fakeModel{"m1"}, Rescore: &Rescore{}}); err == nil {
		t.Fatal("Rescore without Open accepted")
	}
}
