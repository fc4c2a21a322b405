package scorer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/scoring"
)

// memOut keeps what a processor publishes.
type memOut struct {
	mu   sync.Mutex
	msgs []kafka.Message
	fail error
}

func (o *memOut) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fail != nil {
		return o.fail
	}
	o.msgs = append(o.msgs, msgs...)
	return nil
}

func (o *memOut) topic(name string) []kafka.Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []kafka.Message
	for _, m := range o.msgs {
		if m.Topic == name {
			out = append(out, m)
		}
	}
	return out
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testenv.Buffer

var qt0 = time.Date(2026, 5, 4, 9, 30, 0, 0, time.UTC)

func patient(i int) string { return fmt.Sprintf("%064x", 0xbad000+i) }

// bookingMsg is a valid booking of appt by patient, as the appointments topic carries it.
func bookingMsg(t *testing.T, patient, appt string, offset int64) kafka.Message {
	t.Helper()
	ev := events.Appointment{Schema: events.AppointmentSchema, EventID: appt + "-v1", Type: events.Booked,
		EventTime: qt0, AppointmentID: appt, Version: 1, Patient: patient,
		Booking: &events.Booking{Specialty: "130", Start: qt0.Add(96 * time.Hour), BookedAt: qt0, AgeBand: "45-54"}}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Topic: "appointments", Partition: 0, Offset: offset, Key: []byte(patient), Value: b, Time: qt0}
}

type quarantineRig struct {
	rdb   redis.UniversalClient
	store *featurestore.RedisStore
	model *scoring.Model
	out   *memOut
	met   *metrics.Metrics
	logs  *syncBuffer
	proc  *scorer.Processor
}

func newQuarantineRig(t *testing.T, store func(*featurestore.RedisStore) featurestore.Store) *quarantineRig {
	addr := testenv.Redis(t)
	model, err := scoring.Load("../models/default")
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}})
	t.Cleanup(func() { rdb.Close() })
	r := &quarantineRig{rdb: rdb, model: model, out: &memOut{}, met: metrics.New(), logs: &syncBuffer{},
		store: featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: fmt.Sprintf("q%d:", time.Now().UnixNano()), TTL: time.Hour})}
	t.Cleanup(func() { // the keys this test wrote by hand have no expiry
		ctx := context.Background()
		for it := rdb.Scan(ctx, 0, r.store.Key("*")+"*", 100).Iterator(); it.Next(ctx); {
			rdb.Del(ctx, it.Val())
		}
	})
	var s featurestore.Store = r.store
	if store != nil {
		s = store(r.store)
	}
	r.proc = mustNew(t, scorer.Config{Store: s, Output: r.out, Model: model, Observer: r.met,
		Log: slog.New(slog.NewJSONHandler(r.logs, nil)), Now: func() time.Time { return qt0 }})
	return r
}

// savedAppointments lists the appointments in patient's stored history.
func (r *quarantineRig) savedAppointments(t *testing.T, patient string) []string {
	t.Helper()
	hs, err := r.store.Load(context.Background(), []string{patient})
	if err != nil {
		t.Fatalf("load %s: %v", patient, err)
	}
	var out []string
	for _, f := range hs[patient].Facts {
		out = append(out, f.Appointment)
	}
	return out
}

func (r *quarantineRig) scoredPatients(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range r.out.topic("risk") {
		var ev events.Risk
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			t.Fatal(err)
		}
		out[ev.Patient]++
	}
	return out
}

// A patient whose stored history is garbage does not stop the batch: it is quarantined with
// its bytes, starts again empty, and every patient is scored and saved.
func TestGarbageHistoryIsQuarantinedAndTheBatchCompletes(t *testing.T) {
	r := newQuarantineRig(t, nil)
	ctx := context.Background()
	bad := patient(2)
	garbage := "\x01\x05\x03not-a-history-\xfe\xff"
	if err := r.rdb.HSet(ctx, r.store.Key(bad), "rev", "4", "facts", garbage).Err(); err != nil {
		t.Fatal(err)
	}
	msgs := []kafka.Message{
		bookingMsg(t, patient(1), "A1", 0),
		bookingMsg(t, bad, "A2", 1),
		bookingMsg(t, patient(3), "A3", 2),
	}
	if err := r.proc.Process(ctx, msgs); err != nil {
		t.Fatalf("batch with one garbage history failed: %v", err)
	}

	scored := r.scoredPatients(t)
	for i := 1; i <= 3; i++ {
		if scored[patient(i)] != 1 {
			t.Fatalf("scored %v: want each of the three patients once", scored)
		}
		if got := r.savedAppointments(t, patient(i)); len(got) != 1 || got[0] != fmt.Sprint("A", i) {
			t.Fatalf("patient %d saved %v", i, got)
		}
	}
	if n := len(r.out.topic("appointments.dlq")); n != 0 {
		t.Fatalf("%d dead letters; the garbage was in the store, not the input", n)
	}

	keys, err := r.rdb.Keys(ctx, r.store.Key(bad)+":quarantine:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("quarantine keys %v (%v), want one", keys, err)
	}
	if got := r.rdb.HGetAll(ctx, keys[0]).Val(); got["facts"] != garbage || got["rev"] != "4" {
		t.Fatalf("quarantine key holds %q, want the raw bytes", got)
	}
	if r.proc.Stats.Quarantined.Load() != 1 {
		t.Fatalf("Stats.Quarantined = %d", r.proc.Stats.Quarantined.Load())
	}
	want := `
# HELP dnarisk_history_quarantined_total Patient histories that could not be read (corrupt) and were moved to a quarantine key; each patient's history started again empty and should be rebuilt from the topic.
# TYPE dnarisk_history_quarantined_total counter
dnarisk_history_quarantined_total 1
`
	if err := testutil.GatherAndCompare(r.met.Registry, strings.NewReader(want), metrics.HistoryQuarantined); err != nil {
		t.Fatal(err)
	}
	logs := r.logs.String()
	if !strings.Contains(logs, bad) || !strings.Contains(logs, keys[0]) {
		t.Fatalf("no log line names the pseudonym and quarantine key:\n%s", logs)
	}
	if strings.Contains(logs, "not-a-history") {
		t.Fatalf("the log carries the stored bytes:\n%s", logs)
	}

	// The next batch for that patient reads its new history and quarantines nothing more.
	if err := r.proc.Process(ctx, []kafka.Message{bookingMsg(t, bad, "A4", 3)}); err != nil {
		t.Fatal(err)
	}
	if got := r.savedAppointments(t, bad); len(got) != 2 {
		t.Fatalf("after quarantine the patient's history is %v", got)
	}
	if r.proc.Stats.Quarantined.Load() != 1 {
		t.Fatalf("Stats.Quarantined = %d after a clean batch", r.proc.Stats.Quarantined.Load())
	}
}

// A quarantine is not undone when its batch then fails (here: Kafka refuses the publish):
// the retry finds the fresh history, quarantines nothing more, and its report counts the one.
func TestQuarantineInAFailedBatchIsCountedOnce(t *testing.T) {
	r := newQuarantineRig(t, nil)
	ctx := context.Background()
	bad := patient(42)
	if err := r.rdb.HSet(ctx, r.store.Key(bad), "facts", "\x09garbage").Err(); err != nil {
		t.Fatal(err)
	}
	msgs := []kafka.Message{bookingMsg(t, patient(41), "E1", 40), bookingMsg(t, bad, "E2", 41)}
	r.out.fail = errors.New("kafka unavailable")
	if err := r.proc.Process(ctx, msgs); err == nil {
		t.Fatal("batch succeeded with Kafka refusing the publish")
	}
	if r.proc.Stats.Quarantined.Load() != 1 {
		t.Fatalf("Stats.Quarantined = %d after the failed batch", r.proc.Stats.Quarantined.Load())
	}
	r.out.fail = nil
	if err := r.proc.Process(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if keys := r.rdb.Keys(ctx, r.store.Key(bad)+":quarantine:*").Val(); len(keys) != 1 {
		t.Fatalf("quarantine keys %v, want one", keys)
	}
	if r.proc.Stats.Quarantined.Load() != 1 || len(r.scoredPatients(t)) != 2 {
		t.Fatalf("after the retry: Stats.Quarantined = %d, scored %v", r.proc.Stats.Quarantined.Load(), r.scoredPatients(t))
	}
	want := `
# HELP dnarisk_history_quarantined_total Patient histories that could not be read (corrupt) and were moved to a quarantine key; each patient's history started again empty and should be rebuilt from the topic.
# TYPE dnarisk_history_quarantined_total counter
dnarisk_history_quarantined_total 1
`
	if err := testutil.GatherAndCompare(r.met.Registry, strings.NewReader(want), metrics.HistoryQuarantined); err != nil {
		t.Fatal(err)
	}
}

// newerHistory is a history as a binary one codec version ahead writes it.
var newerHistory = map[string]any{"rev": "9", "codec": "2", "facts": "\x02\x01\x05future"}

func assertNewerUntouched(t *testing.T, rdb redis.UniversalClient, key string) {
	t.Helper()
	got := rdb.HGetAll(context.Background(), key).Val()
	for k, v := range newerHistory {
		if got[k] != v {
			t.Fatalf("the newer history at %s is now %q: destroyed", key, got)
		}
	}
	if len(got) != len(newerHistory) {
		t.Fatalf("the newer history at %s is now %q", key, got)
	}
}

// Old and new binaries side by side across a codec version change: a newer binary has
// written one patient's history in format 2, which this binary does not read. This binary
// (the old one) neither reads nor overwrites it, dead-letters that patient's events with
// their original bytes for a redrive, and scores and saves every other patient of the batch.
func TestNewerCodecHistoryIsNeitherDestroyedNorStallsOthers(t *testing.T) {
	r := newQuarantineRig(t, nil)
	ctx := context.Background()
	newer := patient(12)
	if err := r.rdb.HSet(ctx, r.store.Key(newer), newerHistory).Err(); err != nil {
		t.Fatal(err)
	}
	msgs := []kafka.Message{
		bookingMsg(t, patient(11), "B1", 10),
		bookingMsg(t, newer, "B2", 11),
		bookingMsg(t, patient(13), "B3", 12),
	}
	if err := r.proc.Process(ctx, msgs); err != nil {
		t.Fatalf("batch with a newer-format history failed: %v", err)
	}
	scored := r.scoredPatients(t)
	if len(scored) != 2 || scored[patient(11)] != 1 || scored[patient(13)] != 1 {
		t.Fatalf("scored %v, want patients 11 and 13 once each", scored)
	}
	for _, p := range []string{patient(11), patient(13)} {
		if got := r.savedAppointments(t, p); len(got) != 1 {
			t.Fatalf("patient %s saved %v", p, got)
		}
	}
	assertNewerUntouched(t, r.rdb, r.store.Key(newer))
	if keys := r.rdb.Keys(ctx, r.store.Key(newer)+":quarantine:*").Val(); len(keys) != 0 {
		t.Fatalf("a newer history was quarantined: %v", keys)
	}
	assertHeldForRedrive(t, r, msgs[1])
}

// assertHeldForRedrive: want is the one dead letter, reason history_newer_format, carrying
// the original key and bytes, counted by reason.
func assertHeldForRedrive(t *testing.T, r *quarantineRig, want kafka.Message) {
	t.Helper()
	dl := r.out.topic("appointments.dlq")
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want the newer patient's one event", len(dl))
	}
	var d events.DeadLetter
	if err := json.Unmarshal(dl[0].Value, &d); err != nil {
		t.Fatal(err)
	}
	if d.ReasonCode != events.ReasonHistoryNewer || !bytes.Equal(d.Value, want.Value) || !bytes.Equal(d.Key, want.Key) || d.Offset != want.Offset {
		t.Fatalf("dead letter %+v: want reason %s with the original key, bytes and offset", d, events.ReasonHistoryNewer)
	}
	wantMetric := `
# HELP dnarisk_events_dead_lettered_total Input messages refused and sent to the dead-letter topic, by source topic and reason.
# TYPE dnarisk_events_dead_lettered_total counter
dnarisk_events_dead_lettered_total{reason="history_newer_format",topic="appointments"} 1
`
	if err := testutil.GatherAndCompare(r.met.Registry, strings.NewReader(wantMetric), metrics.EventsDeadLettered); err != nil {
		t.Fatal(err)
	}
}

// upgradingStore plays the newer binary: between this binary's load and save it writes the
// patient's history in format 2 (possible for a moment while a rebalance moves the partition).
type upgradingStore struct {
	*featurestore.RedisStore
	rdb     redis.UniversalClient
	patient string
	done    bool
}

func (s *upgradingStore) Save(ctx context.Context, hs map[string]*featurestore.History) error {
	if !s.done {
		s.done = true
		if err := s.rdb.HSet(ctx, s.Key(s.patient), newerHistory).Err(); err != nil {
			return err
		}
	}
	return s.RedisStore.Save(ctx, hs)
}

// The race of a rolling upgrade: this binary read a patient's history in its own format, and
// a newer binary rewrote it in format 2 before this one saved. The save loses the
// compare-and-set, the reload finds format 2, and the batch fails instead of writing format 1
// over it; processed again (as stream.Run does), that patient's events are held for redrive
// and the others are saved. Nothing of the newer history is lost.
func TestNewerCodecWrittenMidBatchIsNotOverwritten(t *testing.T) {
	var up *upgradingStore
	raced := patient(22)
	r := newQuarantineRig(t, func(s *featurestore.RedisStore) featurestore.Store {
		up = &upgradingStore{RedisStore: s, patient: raced}
		return up
	})
	up.rdb = r.rdb
	ctx := context.Background()
	msgs := []kafka.Message{
		bookingMsg(t, patient(21), "C1", 20),
		bookingMsg(t, raced, "C2", 21),
		bookingMsg(t, patient(23), "C3", 22),
	}
	err := r.proc.Process(ctx, msgs)
	if !errors.Is(err, featurestore.ErrNewerFormat) {
		t.Fatalf("first attempt: %v, want a failure naming the newer format", err)
	}
	assertNewerUntouched(t, r.rdb, r.store.Key(raced))

	r.out.msgs = nil // the retry publishes again; readers deduplicate risk events
	if err := r.proc.Process(ctx, msgs); err != nil {
		t.Fatalf("retry: %v", err)
	}
	assertNewerUntouched(t, r.rdb, r.store.Key(raced))
	for _, p := range []string{patient(21), patient(23)} {
		if got := r.savedAppointments(t, p); len(got) != 1 {
			t.Fatalf("patient %s saved %v", p, got)
		}
	}
	if s := r.scoredPatients(t); len(s) != 2 || s[raced] != 0 {
		t.Fatalf("retry scored %v, want the two other patients", s)
	}
	assertHeldForRedrive(t, r, msgs[1])
}

// A held event is a faithful copy: redriven (key and value published again) to a consumer
// that reads the patient's history, it is scored and applied like the original.
func TestHeldEventRedrivesIntact(t *testing.T) {
	r := newQuarantineRig(t, nil)
	ctx := context.Background()
	newer := patient(32)
	if err := r.rdb.HSet(ctx, r.store.Key(newer), newerHistory).Err(); err != nil {
		t.Fatal(err)
	}
	orig := bookingMsg(t, newer, "D1", 30)
	if err := r.proc.Process(ctx, []kafka.Message{orig}); err != nil {
		t.Fatal(err)
	}
	var d events.DeadLetter
	if err := json.Unmarshal(r.out.topic("appointments.dlq")[0].Value, &d); err != nil {
		t.Fatal(err)
	}
	// Stand-in for the binary that reads format 2: a store holding that patient's history.
	mem := &featurestore.MemoryStore{}
	out := &memOut{}
	p := mustNew(t, scorer.Config{Store: mem, Output: out, Model: r.model, Now: func() time.Time { return qt0 }})
	redriven := kafka.Message{Topic: "appointments", Offset: 99, Key: d.Key, Value: d.Value, Time: qt0}
	if err := p.Process(ctx, []kafka.Message{redriven}); err != nil {
		t.Fatal(err)
	}
	if len(out.topic("risk")) != 1 || len(out.topic("appointments.dlq")) != 0 {
		t.Fatalf("redrive published %d risk events and %d dead letters", len(out.topic("risk")), len(out.topic("appointments.dlq")))
	}
	hs, _ := mem.Load(ctx, []string{newer})
	if len(hs[newer].Facts) != 1 || hs[newer].Facts[0].Appointment != "D1" {
		t.Fatalf("redriven history %+v", hs[newer])
	}
}
