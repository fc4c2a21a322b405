package scorer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

// A booking in batch N+1, prepared while batch N (the patient's non-attendance) is still
// unsaved, is scored with that non-attendance; after both finish the history holds each fact
// once.
func TestPipelinedBookingSeesTheOutcomeOfTheBatchAhead(t *testing.T) {
	store := &featurestore.MemoryStore{}
	out := &memOutput{}
	p := mustNew(t, Config{Store: store, Output: out, Model: fakeModel{"m1"}})
	ctx := context.Background()
	n := []kafka.Message{msg(t, book("A", 1, t0), 0), msg(t, done("A", events.DidNotAttend, t0.Add(96*time.Hour)), 1)}
	n1 := []kafka.Message{msg(t, book("B", 1, t0.Add(100*time.Hour)), 2)}
	prepN, err := p.Prepare(ctx, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	prepN1, err := p.Prepare(ctx, n1, prepN)
	if err != nil {
		t.Fatal(err)
	}
	if hs, _ := store.Load(ctx, []string{pat}); len(hs[pat].Facts) != 0 {
		t.Fatal("batch N saved before its Finish")
	}
	if err := prepN.Finish(ctx); err != nil || !prepN.Exact() {
		t.Fatalf("finish N: %v, exact %v", err, prepN.Exact())
	}
	if err := prepN1.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	rs := risks(t, out)
	if len(rs) != 2 || rs[1].AppointmentID != "B" || rs[1].Features["prior_dna"] != 1 {
		t.Fatalf("risk events %+v, want B scored with one prior DNA", rs)
	}
	hs, _ := store.Load(ctx, []string{pat})
	if got := len(hs[pat].Facts); got != 3 || hs[pat].Rev != 2 {
		t.Fatalf("history has %d facts at rev %d, want 3 (booked A, DNA A, booked B) at rev 2", got, hs[pat].Rev)
	}
}

// A batch prepared on a batch whose save then lost a compare-and-set race is not Exact: the
// stream loop prepares the next batch again.
func TestPipelinedConflictIsNotExact(t *testing.T) {
	store := &racingStore{other: done("Z", events.Attended, t0)}
	p := mustNew(t, Config{Store: store, Output: &memOutput{}, Model: fakeModel{"m"}})
	prep, err := p.Prepare(context.Background(), []kafka.Message{msg(t, done("A", events.DidNotAttend, t0), 0)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := prep.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	if prep.Exact() {
		t.Fatal("a save that lost a compare-and-set race reported exact")
	}
}

func TestPrepareRefusesRescore(t *testing.T) {
	p := mustNew(t, Config{Store: &featurestore.MemoryStore{}, Output: &memOutput{}, Model: fakeModel{"m"},
		Rescore: &Rescore{Open: nopOpen{}}})
	if _, err := p.Prepare(context.Background(), []kafka.Message{msg(t, done("A", events.Attended, t0), 0)}, nil); err == nil {
		t.Fatal("Prepare with Rescore: no error")
	}
}

// nopOpen is an open-bookings store that holds nothing.
type nopOpen struct{}

func (nopOpen) Load(context.Context, []string) (map[string]map[string][]byte, error) {
	return nil, nil
}
func (nopOpen) Update(context.Context, map[string]map[string][]byte, map[string][]string) error {
	return nil
}

// Over a simulated stream in small batches, with the real model, pipelining (each batch
// prepared before the previous one is finished) publishes byte for byte what processing
// batch after batch publishes, and leaves the same histories.
func TestPipelinedEqualsSequential(t *testing.T) {
	ps, _ := pseudo.New([]byte("pipeline-test-secret-0123456789abcdef"))
	g, err := sim.New(sim.Config{Seed: 11, Patients: 150, Days: 300}, ps)
	if err != nil {
		t.Fatal(err)
	}
	model, err := scoring.Load("../models/default")
	if err != nil {
		t.Fatal(err)
	}
	var msgs []kafka.Message
	patients := map[string]bool{}
	for ev := range g.All() {
		b, _ := json.Marshal(ev)
		msgs = append(msgs, kafka.Message{Topic: "appointments", Offset: int64(len(msgs)), Key: []byte(ev.Patient), Value: b})
		patients[ev.Patient] = true
	}
	if len(msgs) < 500 {
		t.Fatalf("only %d simulated events", len(msgs))
	}
	now := func() time.Time { return time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) }
	var batches [][]kafka.Message
	for i := 0; i < len(msgs); i += 7 {
		batches = append(batches, msgs[i:min(i+7, len(msgs))])
	}
	ctx := context.Background()

	seqStore, seqOut := &featurestore.MemoryStore{}, &memOutput{}
	seq := mustNew(t, Config{Store: seqStore, Output: seqOut, Model: model, Now: now, MaxAhead: -1})
	for _, b := range batches {
		if err := seq.Process(ctx, b); err != nil {
			t.Fatal(err)
		}
	}

	pipStore, pipOut := &featurestore.MemoryStore{}, &memOutput{}
	pip := mustNew(t, Config{Store: pipStore, Output: pipOut, Model: model, Now: now, MaxAhead: -1})
	var ahead stream.Prepared
	for _, b := range batches {
		next, err := pip.Prepare(ctx, b, ahead)
		if err != nil {
			t.Fatal(err)
		}
		if ahead != nil {
			if err := ahead.Finish(ctx); err != nil || !ahead.Exact() {
				t.Fatalf("finish: %v, exact %v", err, ahead.Exact())
			}
		}
		ahead = next
	}
	if err := ahead.Finish(ctx); err != nil {
		t.Fatal(err)
	}

	if len(seqOut.msgs) != len(pipOut.msgs) || len(seqOut.msgs) == 0 {
		t.Fatalf("published %d pipelined, %d sequentially", len(pipOut.msgs), len(seqOut.msgs))
	}
	for i := range seqOut.msgs {
		if !bytes.Equal(seqOut.msgs[i].Value, pipOut.msgs[i].Value) {
			t.Fatalf("message %d differs:\n pipelined  %s\n sequential %s", i, pipOut.msgs[i].Value, seqOut.msgs[i].Value)
		}
	}
	ids := slices.Sorted(func(yield func(string) bool) {
		for p := range patients {
			if !yield(p) {
				return
			}
		}
	})
	a, _ := seqStore.Load(ctx, ids)
	b, _ := pipStore.Load(ctx, ids)
	for _, id := range ids {
		if a[id].Rev != b[id].Rev || !slices.Equal(a[id].Facts, b[id].Facts) {
			t.Fatalf("history of a patient differs: rev %d vs %d, %d vs %d facts", b[id].Rev, a[id].Rev, len(b[id].Facts), len(a[id].Facts))
		}
	}
	if seq.Stats.Applied.Load() != pip.Stats.Applied.Load() || seq.Stats.Scored.Load() != pip.Stats.Scored.Load() {
		t.Fatalf("stats differ: applied %d/%d scored %d/%d", pip.Stats.Applied.Load(), seq.Stats.Applied.Load(), pip.Stats.Scored.Load(), seq.Stats.Scored.Load())
	}
}

// If the batch ahead fails to finish, the batch prepared on it must not be finished; the
// loop processes both again whole, and the history counts each fact once.
func TestPipelinedFailureAheadRedoneCountsOnce(t *testing.T) {
	store := &featurestore.MemoryStore{}
	out := &memOutput{}
	p := mustNew(t, Config{Store: store, Output: out, Model: fakeModel{"m1"}})
	ctx := context.Background()
	n := []kafka.Message{msg(t, book("A", 1, t0), 0), msg(t, done("A", events.DidNotAttend, t0.Add(96*time.Hour)), 1)}
	n1 := []kafka.Message{msg(t, book("B", 1, t0.Add(100*time.Hour)), 2)}
	prepN, _ := p.Prepare(ctx, n, nil)
	if _, err := p.Prepare(ctx, n1, prepN); err != nil {
		t.Fatal(err)
	}
	out.fail = errors.New("broker down")
	if err := prepN.Finish(ctx); err == nil {
		t.Fatal("finish with the output down: no error")
	}
	out.fail = nil
	// What stream.Run does: batch N again whole, then N+1 whole.
	for _, b := range [][]kafka.Message{n, n1} {
		if err := p.Process(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	hs, _ := store.Load(ctx, []string{pat})
	if got := len(hs[pat].Facts); got != 3 {
		t.Fatalf("history has %d facts, want 3", got)
	}
	rs := risks(t, out)
	if len(rs) != 2 || rs[1].Features["prior_dna"] != 1 {
		t.Fatalf("risk events %+v", rs)
	}
}

// A history-only processor (a backfill) publishes nothing, needs no model, and leaves the
// histories the scoring processor leaves, refusing the same events.
func TestHistoryOnlyLeavesTheSameHistories(t *testing.T) {
	if err := (&Config{Store: &featurestore.MemoryStore{}, Output: &memOutput{}, HistoryOnly: true, Challenger: fakeModel{"c"}}).Validate(); err == nil {
		t.Fatal("HistoryOnly with a challenger validated")
	}
	ps, _ := pseudo.New([]byte("pipeline-test-secret-0123456789abcdef"))
	g, err := sim.New(sim.Config{Seed: 12, Patients: 100, Days: 200}, ps)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []kafka.Message
	var ids []string
	for ev := range g.All() {
		b, _ := json.Marshal(ev)
		msgs = append(msgs, kafka.Message{Topic: "appointments", Offset: int64(len(msgs)), Key: []byte(ev.Patient), Value: b})
		ids = append(ids, ev.Patient)
	}
	msgs = append(msgs, kafka.Message{Topic: "appointments", Key: []byte("x"), Value: []byte(`{"schema":"appointment.v1"`)})
	ctx := context.Background()
	fullStore, fullOut := &featurestore.MemoryStore{}, &memOutput{}
	full := mustNew(t, Config{Store: fullStore, Output: fullOut, Model: fakeModel{"m"}, MaxAhead: -1})
	histStore, histOut := &featurestore.MemoryStore{}, &memOutput{}
	hist := mustNew(t, Config{Store: histStore, Output: histOut, HistoryOnly: true, MaxAhead: -1})
	for i := 0; i < len(msgs); i += 50 {
		b := msgs[i:min(i+50, len(msgs))]
		if err := full.Process(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := hist.Process(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if len(histOut.msgs) != 0 || hist.Stats.Scored.Load() != 0 {
		t.Fatalf("history-only published %d messages, scored %d", len(histOut.msgs), hist.Stats.Scored.Load())
	}
	if hist.Stats.DeadLettered.Load() != 1 || full.Stats.DeadLettered.Load() != 1 {
		t.Fatalf("refused %d (history only) and %d, want the one malformed event each", hist.Stats.DeadLettered.Load(), full.Stats.DeadLettered.Load())
	}
	a, _ := fullStore.Load(ctx, ids)
	b, _ := histStore.Load(ctx, ids)
	for _, id := range ids {
		if len(a[id].Facts) == 0 || !slices.Equal(a[id].Facts, b[id].Facts) {
			t.Fatalf("history-only history differs: %d vs %d facts", len(b[id].Facts), len(a[id].Facts))
		}
	}
}
