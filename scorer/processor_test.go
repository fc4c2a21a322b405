package scorer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
)

// fakeModel scores the prior DNA count, so tests can see which history a booking was scored
// against.
type fakeModel struct{ id string }

func (f fakeModel) ID() string { return f.id }
func (f fakeModel) Vector(_ *events.Appointment, v featurestore.Vector, dst []float64) []float64 {
	return append(dst[:0], v[:]...)
}
func (f fakeModel) Score(x []float64) float64 { return math.Min(0.9, 0.05+0.1*x[9]) }
func (f fakeModel) Band(p float64) string {
	if p >= 0.1 {
		return "high"
	}
	return "low"
}
func (f fakeModel) FeatureMap(x []float64) map[string]float64 {
	return map[string]float64{"prior_dna": x[9]}
}
func (f fakeModel) FeatureNames() []string { return featurestore.Names[:] }
func (f fakeModel) CountMissing(x []float64, counts []int) {
	for i := range counts {
		if math.IsNaN(x[i]) {
			counts[i]++
		}
	}
}

type memOutput struct {
	msgs []kafka.Message
	fail error
}

func (o *memOutput) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	if o.fail != nil {
		return o.fail
	}
	o.msgs = append(o.msgs, msgs...)
	return nil
}

func (o *memOutput) topic(name string) []kafka.Message {
	var out []kafka.Message
	for _, m := range o.msgs {
		if m.Topic == name {
			out = append(out, m)
		}
	}
	return out
}

const pat = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

var t0 = time.Date(2026, 5, 4, 9, 30, 0, 0, time.UTC)

// mustNew is New for a config the test knows to be valid.
func mustNew(t testing.TB, cfg Config) *Processor {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigValidateNamesTheMissingField(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Output: &memOutput{}, Model: fakeModel{"m"}}, "Store"},
		{Config{Store: &featurestore.MemoryStore{}, Model: fakeModel{"m"}}, "Output"},
		{Config{Store: &featurestore.MemoryStore{}, Output: &memOutput{}}, "Model"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New without %s: %v", tc.want, err)
		}
	}
	p := mustNew(t, Config{Store: &featurestore.MemoryStore{}, Output: &memOutput{}, Model: fakeModel{"m"}})
	if p.cfg.MaxAhead != DefaultMaxAhead || p.cfg.Topics.Risk != "risk" || p.cfg.Topics.DeadLetter != "appointments.dlq" {
		t.Fatalf("defaults not applied: %+v", p.cfg)
	}
}

func msg(t *testing.T, ev events.Appointment, offset int64) kafka.Message {
	t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Topic: "appointments", Partition: 1, Offset: offset, Key: []byte(ev.Patient), Value: b}
}

func book(id string, version int, at time.Time) events.Appointment {
	typ := events.Booked
	if version > 1 {
		typ = events.Rescheduled
	}
	return events.Appointment{Schema: events.AppointmentSchema, EventID: fmt.Sprint(id, "-v", version),
		Type: typ, EventTime: at, AppointmentID: id, Version: version, Patient: pat,
		Booking: &events.Booking{Specialty: "130", FirstVisit: false, Start: at.Add(96 * time.Hour),
			BookedAt: at, AgeBand: "45-54"}}
}

func done(id string, typ events.Type, at time.Time) events.Appointment {
	ev := events.Appointment{Schema: events.AppointmentSchema, EventID: fmt.Sprint(id, "-", typ),
		Type: typ, EventTime: at, AppointmentID: id, Version: 1, Patient: pat}
	if typ == events.Cancelled {
		ev.CancelledBy = events.ByPatient
	}
	return ev
}

func risks(t *testing.T, o *memOutput) []events.Risk {
	t.Helper()
	var out []events.Risk
	for _, m := range o.topic("risk") {
		var r events.Risk
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		if string(m.Key) != r.Patient {
			t.Fatalf("risk event keyed %q, patient %q", m.Key, r.Patient)
		}
		out = append(out, r)
	}
	return out
}

func TestProcessScoresAgainstPriorHistoryOnly(t *testing.T) {
	store := &featurestore.MemoryStore{}
	out := &memOutput{}
	p := mustNew(t, Config{Store: store, Output: out, Model: fakeModel{"m1"}})
	batch := []kafka.Message{
		msg(t, book("A", 1, t0), 0),
		msg(t, done("A", events.DidNotAttend, t0.Add(96*time.Hour)), 1),
		msg(t, book("B", 1, t0.Add(100*time.Hour)), 2),
	}
	if err := p.Process(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	rs := risks(t, out)
	if len(rs) != 2 {
		t.Fatalf("%d risk events, want 2", len(rs))
	}
	if rs[0].AppointmentID != "A" || rs[0].Features["prior_dna"] != 0 || rs[0].Band != "low" {
		t.Errorf("first booking scored %+v, want no prior DNA", rs[0])
	}
	if rs[1].AppointmentID != "B" || rs[1].Features["prior_dna"] != 1 || rs[1].Band != "high" || rs[1].ModelID != "m1" {
		t.Errorf("second booking scored %+v, want one prior DNA", rs[1])
	}
	if got := p.Stats.Bands(); got["low"] != 1 || got["high"] != 1 {
		t.Errorf("bands %v", got)
	}

	// Replaying the whole batch (a crash before commit) publishes the same scores again and
	// leaves history unchanged.
	before, _ := store.Load(context.Background(), []string{pat})
	out2 := &memOutput{}
	p2 := mustNew(t, Config{Store: store, Output: out2, Model: fakeModel{"m1"}})
	if err := p2.Process(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	again := risks(t, out2)
	if len(again) != 2 || again[0].Probability != rs[0].Probability || again[1].Probability != rs[1].Probability {
		t.Fatalf("replay scored differently: %+v vs %+v", again, rs)
	}
	after, _ := store.Load(context.Background(), []string{pat})
	if len(after[pat].Facts) != len(before[pat].Facts) || p2.Stats.Applied.Load() != 0 {
		t.Fatalf("replay changed history: %d facts before, %d after", len(before[pat].Facts), len(after[pat].Facts))
	}
}

func TestProcessCancelledAndSupersededAreNotScored(t *testing.T) {
	out := &memOutput{}
	p := mustNew(t, Config{Store: &featurestore.MemoryStore{}, Output: out, Model: fakeModel{"m"}})
	ctx := context.Background()
	first := []kafka.Message{
		msg(t, book("A", 1, t0), 0),
		msg(t, book("A", 2, t0.Add(time.Hour)), 1),
		msg(t, done("A", events.Cancelled, t0.Add(2*time.Hour)), 2),
	}
	if err := p.Process(ctx, first); err != nil {
		t.Fatal(err)
	}
	// Redelivered old versions of a cancelled appointment produce nothing.
	if err := p.Process(ctx, []kafka.Message{msg(t, book("A", 1, t0), 0), msg(t, book("A", 2, t0.Add(time.Hour)), 1)}); err != nil {
		t.Fatal(err)
	}
	rs := risks(t, out)
	if len(rs) != 2 || rs[0].Version != 1 || rs[1].Version != 2 {
		t.Fatalf("risk events %+v, want v1 and v2 once each", rs)
	}
	if p.Stats.Skipped.Load() != 2 {
		t.Fatalf("skipped %d, want 2", p.Stats.Skipped.Load())
	}
}

func TestProcessDeadLettersBadInputAndCarriesOn(t *testing.T) {
	out := &memOutput{}
	p := mustNew(t, Config{Store: &featurestore.MemoryStore{}, Output: out, Model: fakeModel{"m"}, Topics: Topics{DeadLetter: "dlq"}})
	wrongKey := msg(t, book("K", 1, t0), 3)
	wrongKey.Key = []byte("someone-else")
	batch := []kafka.Message{
		{Topic: "appointments", Partition: 2, Offset: 1, Key: []byte(pat), Value: []byte("{not json")},
		msg(t, book("A", 1, t0), 2),
		wrongKey,
		{Topic: "appointments", Partition: 2, Offset: 4, Value: []byte{0xff, 0xfe}},
	}
	if err := p.Process(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	dl := out.topic("dlq")
	if len(dl) != 3 || len(risks(t, out)) != 1 {
		t.Fatalf("%d dead letters and %d risk events, want 3 and 1", len(dl), len(risks(t, out)))
	}
	var d events.DeadLetter
	if err := json.Unmarshal(dl[0].Value, &d); err != nil {
		t.Fatal(err)
	}
	if d.Offset != 1 || d.Partition != 2 || string(d.Value) != "{not json" || d.Reason == "" {
		t.Fatalf("dead letter %+v does not carry the original and the reason", d)
	}
	// Each carries the code the metric counts it under, in the record and in a header, and a
	// text that says "json:" once.
	for i, want := range []string{ReasonMalformedJSON, ReasonKeyMismatch, ReasonNotUTF8} {
		var d events.DeadLetter
		if err := json.Unmarshal(dl[i].Value, &d); err != nil {
			t.Fatal(err)
		}
		if d.ReasonCode != want || header(dl[i], "reason_code") != want {
			t.Errorf("dead letter %d: reason_code %q, header %q, want %q", i, d.ReasonCode, header(dl[i], "reason_code"), want)
		}
		if strings.Count(d.Reason, "json:") > 1 || strings.Count(d.Reason, events.ErrInvalid.Error()) != 1 {
			t.Errorf("dead letter %d: reason %q repeats itself", i, d.Reason)
		}
	}
	if p.Stats.DeadLettered.Load() != 3 || p.Stats.Consumed.Load() != 4 {
		t.Fatalf("stats: %d dead-lettered of %d", p.Stats.DeadLettered.Load(), p.Stats.Consumed.Load())
	}
}

func TestProcessFailsWithoutSavingWhenPublishFails(t *testing.T) {
	store := &featurestore.MemoryStore{}
	out := &memOutput{fail: errors.New("broker down")}
	p := mustNew(t, Config{Store: store, Output: out, Model: fakeModel{"m"}})
	if err := p.Process(context.Background(), []kafka.Message{msg(t, book("A", 1, t0), 0)}); err == nil {
		t.Fatal("publish failure not reported")
	}
	if store.Len() != 0 || p.Stats.Consumed.Load() != 0 {
		t.Fatal("history saved or stats counted for a batch that was not published")
	}
}

// racingStore lets another writer save between this processor's load and save.
type racingStore struct {
	featurestore.MemoryStore
	raced bool
	other events.Appointment
}

func (s *racingStore) Save(ctx context.Context, hs map[string]*featurestore.History) error {
	if !s.raced {
		s.raced = true
		other, _ := s.MemoryStore.Load(ctx, []string{pat})
		other[pat].Apply(&s.other, featurestore.Policy{})
		if err := s.MemoryStore.Save(ctx, other); err != nil {
			return err
		}
	}
	return s.MemoryStore.Save(ctx, hs)
}

func TestProcessReappliesAfterConflict(t *testing.T) {
	store := &racingStore{other: done("Z", events.Attended, t0)}
	p := mustNew(t, Config{Store: store, Output: &memOutput{}, Model: fakeModel{"m"}})
	if err := p.Process(context.Background(), []kafka.Message{msg(t, done("A", events.DidNotAttend, t0), 0)}); err != nil {
		t.Fatal(err)
	}
	hs, _ := store.Load(context.Background(), []string{pat})
	if len(hs[pat].Facts) != 2 || p.Stats.Conflicts.Load() != 1 {
		t.Fatalf("after a conflict: %+v, conflicts %d", hs[pat].Facts, p.Stats.Conflicts.Load())
	}
}

func TestProcessDeadLettersEventsFromTheFarFuture(t *testing.T) {
	store := &featurestore.MemoryStore{}
	out := &memOutput{}
	cfg := Config{Store: store, Output: out, Model: fakeModel{"m"}, Topics: Topics{DeadLetter: "dlq"}, Now: func() time.Time { return t0 }}
	p := mustNew(t, cfg)
	ctx := context.Background()
	if err := p.Process(ctx, []kafka.Message{msg(t, done("A", events.Attended, t0.Add(-time.Hour)), 0)}); err != nil {
		t.Fatal(err)
	}
	// Dated 2099: applied, it would prune the patient's real history as "older than three years".
	if err := p.Process(ctx, []kafka.Message{msg(t, done("Z", events.DidNotAttend, t0.AddDate(73, 0, 0)), 1)}); err != nil {
		t.Fatal(err)
	}
	if n := len(out.topic("dlq")); n != 1 {
		t.Fatalf("%d dead letters, want the future-dated event", n)
	}
	var d events.DeadLetter
	if err := json.Unmarshal(out.topic("dlq")[0].Value, &d); err != nil || d.ReasonCode != ReasonFuture {
		t.Fatalf("future-dated dead letter: reason_code %q (%v), want %q", d.ReasonCode, err, ReasonFuture)
	}
	hs, _ := store.Load(ctx, []string{pat})
	if len(hs[pat].Facts) != 1 || hs[pat].Facts[0].Appointment != "A" {
		t.Fatalf("history after a future-dated event: %+v", hs[pat].Facts)
	}
	cfg.MaxAhead = -1
	p = mustNew(t, cfg)
	if err := p.Process(ctx, []kafka.Message{msg(t, done("Y", events.Attended, t0.AddDate(0, 1, 0)), 2)}); err != nil {
		t.Fatal(err)
	}
	if n := len(out.topic("dlq")); n != 1 {
		t.Fatal("with no limit, a future event was still refused")
	}
}

// header returns the value of m's header key ("" if absent).
func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// The rule is measured against the Kafka timestamp, so a scorer reading late (or with a clock
// behind the producer's) decides as the gateway did when it accepted the message.
func TestProcessMeasuresEventTimeAgainstTheKafkaTimestamp(t *testing.T) {
	out := &memOutput{}
	p := mustNew(t, Config{Store: &featurestore.MemoryStore{}, Output: out, Model: fakeModel{"m"}, Topics: Topics{DeadLetter: "dlq"},
		Now: func() time.Time { return t0 }})
	sentLate := msg(t, done("A", events.Attended, t0.Add(DefaultMaxAhead+time.Hour)), 0)
	sentLate.Time = t0.Add(2 * time.Hour) // published two hours after the scorer's clock
	tooFar := msg(t, done("B", events.Attended, t0.Add(DefaultMaxAhead+time.Hour)), 1)
	tooFar.Time = t0.Add(30 * time.Minute)
	if err := p.Process(context.Background(), []kafka.Message{sentLate, tooFar}); err != nil {
		t.Fatal(err)
	}
	dl := out.topic("dlq")
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want only the event dated more than %s past its timestamp", len(dl), DefaultMaxAhead)
	}
	var rec events.DeadLetter
	if err := json.Unmarshal(dl[0].Value, &rec); err != nil || rec.Offset != 1 || rec.Reason == "" {
		t.Fatalf("dead letter %+v %v", rec, err)
	}
}
