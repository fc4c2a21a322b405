package scorer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

// pipeline is one scorer wired to the real Kafka and Redis, on fresh topics and keys.
type pipeline struct {
	t             *testing.T
	brokers       []string
	in, risk, dlq string
	group         string
	rdb           redis.UniversalClient
	store         *featurestore.RedisStore
	model         *scoring.Model
	produced      []events.Appointment
	bookings      map[string]bool // appointment/version of every booking produced
	log           *slog.Logger
	pipelined     bool // members run with stream.Batching.Pipeline
}

func newPipeline(t *testing.T) *pipeline {
	brokers := testenv.Kafka(t)
	addr := testenv.Redis(t)
	model, err := scoring.Load("../models/default")
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}})
	t.Cleanup(func() { rdb.Close() })
	p := &pipeline{
		t: t, brokers: brokers, model: model, rdb: rdb,
		in:       testenv.Topic(t, brokers, 4),
		risk:     testenv.Topic(t, brokers, 2),
		dlq:      testenv.Topic(t, brokers, 1),
		group:    fmt.Sprintf("it-%d", time.Now().UnixNano()),
		bookings: map[string]bool{},
		log:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	p.store = featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: p.group + ":", TTL: time.Hour})
	return p
}

// simulate generates a small synthetic PAS stream.
func (p *pipeline) simulate(patients, days int) {
	ps, _ := pseudo.New([]byte("integration-test-secret-0123456789abcdef"))
	g, err := sim.New(sim.Config{Seed: 7, Patients: patients, Days: days}, ps)
	if err != nil {
		p.t.Fatal(err)
	}
	for ev := range g.All() {
		p.produced = append(p.produced, ev)
		if ev.Type == events.Booked || ev.Type == events.Rescheduled {
			p.bookings[key(ev.AppointmentID, ev.Version)] = true
		}
	}
}

func key(appt string, v int) string { return fmt.Sprintf("%s/%d", appt, v) }

func (p *pipeline) publish(msgs ...kafka.Message) {
	p.t.Helper()
	w := stream.NewWriter(p.brokers, p.in)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for len(msgs) > 0 {
		n := min(len(msgs), 500)
		if err := w.WriteMessages(ctx, msgs[:n]...); err != nil {
			p.t.Fatalf("publish: %v", err)
		}
		msgs = msgs[n:]
	}
}

func asMessages(t *testing.T, evs []events.Appointment) []kafka.Message {
	out := make([]kafka.Message, len(evs))
	for i := range evs {
		b, err := json.Marshal(evs[i])
		if err != nil {
			t.Fatal(err)
		}
		out[i] = kafka.Message{Key: []byte(evs[i].Patient), Value: b}
	}
	return out
}

// consumer is one running member of the scorer's group.
type consumer struct {
	proc *scorer.Processor
	stop context.CancelFunc
	done chan error
}

func (p *pipeline) start(batch int) *consumer { return p.startWith(batch, 0) }

// startWith starts a member that "dies" at its commit number crashAt (if > 0): the batch is
// processed and published but its offsets are never committed, as when the process is killed
// between the two.
func (p *pipeline) startWith(batch, crashAt int) *consumer {
	w := stream.NewWriter(p.brokers, "")
	r := stream.NewReader(p.brokers, p.group, p.in)
	proc := mustNew(p.t, scorer.Config{Store: p.store, Output: w, Model: p.model, Topics: scorer.Topics{Risk: p.risk, DeadLetter: p.dlq}, Log: p.log})
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{proc: proc, stop: cancel, done: make(chan error, 1)}
	var src stream.Source = r
	b := stream.Batching{MaxMessages: batch, Pipeline: p.pipelined}
	if crashAt > 0 {
		src = &crashingSource{Reader: r, crashAt: crashAt, kill: cancel}
		// Its batches must be full for the test's arithmetic: the wrapper hides the reader's
		// queue length, so a batch fills until MaxWait, and the default 10 ms was missed once
		// under -race on a busy machine (203 events in 5 batches). The stream is far longer
		// than crashAt batches, so a long fill never waits for its end.
		b.MaxWait = time.Minute
	}
	go func() {
		err := stream.Run(ctx, src, proc, b, p.log)
		r.Close()
		w.Close()
		c.done <- err
	}()
	p.t.Cleanup(func() { c.shutdown(p.t) })
	return c
}

type crashingSource struct {
	*kafka.Reader
	commits, crashAt int
	kill             context.CancelFunc
}

func (s *crashingSource) CommitMessages(ctx context.Context, msgs ...kafka.Message) error {
	s.commits++
	if s.commits >= s.crashAt {
		s.kill()
		return context.Canceled
	}
	return s.Reader.CommitMessages(ctx, msgs...)
}

func (c *consumer) shutdown(t *testing.T) {
	if c.stop == nil {
		return
	}
	c.stop()
	c.stop = nil
	select {
	case err := <-c.done:
		if err != nil {
			t.Errorf("consumer: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("consumer did not stop within 30s of cancel")
	}
}

func (p *pipeline) read(topic string) []kafka.Message {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := stream.ReadAll(ctx, p.brokers, topic)
	if err != nil {
		p.t.Fatal(err)
	}
	return msgs
}

func (p *pipeline) risks() map[string]events.Risk {
	out := map[string]events.Risk{}
	for _, m := range p.read(p.risk) {
		var r events.Risk
		if err := json.Unmarshal(m.Value, &r); err != nil {
			p.t.Fatalf("unreadable risk event: %v", err)
		}
		if string(m.Key) != r.Patient {
			p.t.Fatalf("risk event for %s keyed %q", r.Patient, m.Key)
		}
		out[key(r.AppointmentID, r.Version)] = r
	}
	return out
}

// bothModes runs test with members processing batch after batch, and pipelined.
func bothModes(t *testing.T, test func(t *testing.T, pipelined bool)) {
	t.Run("sequential", func(t *testing.T) { test(t, false) })
	t.Run("pipelined", func(t *testing.T) { test(t, true) })
}

func TestEndToEndRealKafkaAndRedis(t *testing.T) { bothModes(t, testEndToEnd) }

func testEndToEnd(t *testing.T, pipelined bool) {
	p := newPipeline(t)
	p.pipelined = pipelined
	p.simulate(150, 30)
	msgs := asMessages(t, p.produced)
	// Malformed input in the middle of the stream: it must be dead-lettered and must not stop
	// the bookings after it from being scored.
	bad := []kafka.Message{
		{Key: []byte("x"), Value: []byte(`{"schema":"appointment.v1",`)},
		{Key: msgs[0].Key, Value: []byte(`{"schema":"appointment.v7","event_id":"e"}`)},
	}
	half := len(msgs) / 2
	all := append(append(append([]kafka.Message{}, msgs[:half]...), bad...), msgs[half:]...)
	p.publish(all...)

	c := p.start(100)
	testenv.Eventually(t, 90*time.Second, func() bool { return c.proc.Stats.Consumed.Load() >= int64(len(all)) },
		"consumer to process every event")
	c.shutdown(t)

	risks := p.risks()
	for k := range p.bookings {
		r, ok := risks[k]
		if !ok {
			t.Fatalf("booking %s has no risk event", k)
		}
		if r.ModelID != p.model.ID() || r.Probability <= 0 || r.Probability >= 1 || r.Band == "" {
			t.Fatalf("risk event %+v", r)
		}
	}
	if len(risks) != len(p.bookings) {
		t.Fatalf("%d distinct risk events for %d bookings", len(risks), len(p.bookings))
	}
	dl := p.read(p.dlq)
	if len(dl) != len(bad) {
		t.Fatalf("%d dead letters, want %d", len(dl), len(bad))
	}
	for _, m := range dl {
		var d events.DeadLetter
		if err := json.Unmarshal(m.Value, &d); err != nil || d.Reason == "" || d.Topic != p.in || !slices.Contains(events.DeadLetterReasons, d.ReasonCode) {
			t.Fatalf("dead letter %s: %v", m.Value, err)
		}
	}

	// A replayed outcome (same fact, new event id, as a PAS resend would be) changes no history.
	var outcome events.Appointment
	for _, ev := range p.produced {
		if ev.Type == events.DidNotAttend {
			outcome = ev
		}
	}
	if outcome.EventID == "" {
		t.Fatal("simulation produced no DNA")
	}
	ctx := context.Background()
	before, err := p.store.Load(ctx, []string{outcome.Patient})
	if err != nil {
		t.Fatal(err)
	}
	replay := outcome
	replay.EventID += "-resent"
	p.publish(asMessages(t, []events.Appointment{replay, outcome})...)
	c2 := p.start(100)
	testenv.Eventually(t, 60*time.Second, func() bool { return c2.proc.Stats.Consumed.Load() >= 2 }, "replayed outcomes consumed")
	c2.shutdown(t)
	after, err := p.store.Load(ctx, []string{outcome.Patient})
	if err != nil {
		t.Fatal(err)
	}
	if c2.proc.Stats.Applied.Load() != 0 || len(after[outcome.Patient].Facts) != len(before[outcome.Patient].Facts) {
		t.Fatalf("replayed outcome changed history: %d facts before, %d after, %d applied",
			len(before[outcome.Patient].Facts), len(after[outcome.Patient].Facts), c2.proc.Stats.Applied.Load())
	}
	if c2.proc.Stats.Consumed.Load() != 2 {
		t.Fatalf("restarted consumer read %d events, want only the 2 new ones (offsets were committed)", c2.proc.Stats.Consumed.Load())
	}
}

func TestCrashBeforeCommitLosesNothingAndCountsOnce(t *testing.T) {
	bothModes(t, testCrashBeforeCommit)
}

func testCrashBeforeCommit(t *testing.T, pipelined bool) {
	p := newPipeline(t)
	p.pipelined = pipelined
	p.simulate(2000, 60)
	msgs := asMessages(t, p.produced)
	p.publish(msgs...)

	// The first member processes five batches, then dies as it commits the fifth: four
	// commits made. Pipelined, the commit runs beside the next batch's writes, so the batch
	// after it may be finished (written, not committed) too before the member stops.
	first := p.startWith(50, 5)
	select {
	case err := <-first.done:
		first.stop = nil
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("first member did not reach its crash point")
	}
	const committed = 4 * 50
	processed := first.proc.Stats.Consumed.Load()
	if processed%50 != 0 || processed < 250 || (!pipelined && processed != 250) {
		t.Fatalf("first member processed %d events before dying, want 5 batches of 50 (or more when pipelined)", processed)
	}

	// It resumes from the last commit: the rest of the stream, the uncommitted batches included.
	second := p.start(50)
	remaining := int64(len(msgs)) - committed
	testenv.Eventually(t, 120*time.Second, func() bool { return second.proc.Stats.Consumed.Load() >= remaining },
		"second member to resume from the last commit and finish")
	second.shutdown(t)
	if got := second.proc.Stats.Consumed.Load(); got != remaining {
		t.Fatalf("second member read %d events, want %d: all after the last commit, %d of them re-read", got, remaining, processed-committed)
	}

	// Every booking scored; a booking scored twice (the replayed batch) scored identically.
	seen := map[string]float64{}
	for _, m := range p.read(p.risk) {
		var r events.Risk
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		k := key(r.AppointmentID, r.Version)
		if prev, dup := seen[k]; dup && prev != r.Probability {
			t.Fatalf("booking %s scored %v then %v on replay", k, prev, r.Probability)
		}
		seen[k] = r.Probability
	}
	for k := range p.bookings {
		if _, ok := seen[k]; !ok {
			t.Fatalf("booking %s left unscored across the crash", k)
		}
	}
	// Histories hold each fact once: the replayed batch counted nothing twice.
	want := map[string]int{}
	for _, ev := range p.produced {
		want[ev.Patient]++ // the simulator emits each fact once
	}
	var patients []string
	for pt := range want {
		patients = append(patients, pt)
	}
	hs, err := p.store.Load(context.Background(), patients)
	if err != nil {
		t.Fatal(err)
	}
	for pt, n := range want {
		if got := len(hs[pt].Facts); got != n {
			t.Fatalf("patient %s…: %d facts stored, %d events produced", pt[:8], got, n)
		}
	}
	t.Logf("%d events: %d before the crash, %d after it (%d re-read), %d bookings all scored once or identically twice",
		len(msgs), processed, remaining, processed-committed, len(p.bookings))
}

// mustNew is scorer.New for a config the test knows to be valid.
func mustNew(t testing.TB, cfg scorer.Config) *scorer.Processor {
	t.Helper()
	p, err := scorer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
