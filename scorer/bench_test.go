package scorer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
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
)

// Per-stage costs of the hot path. Run with `make bench` (or
// go test -run XXX -bench . -benchmem ./stream/).

type benchWorld struct {
	msgs     []kafka.Message
	bookings []events.Appointment
	store    *featurestore.MemoryStore
	model    *scoring.Model
}

// newBenchWorld simulates a year of a 5,000-patient hospital, applies the first ten months to
// the histories and keeps the last two months' events as the workload, so bookings are scored
// against realistic histories.
func newBenchWorld(b *testing.B) *benchWorld {
	b.Helper()
	ps, _ := pseudo.New([]byte("benchmark-secret-0123456789abcdefghijkl"))
	g, err := sim.New(sim.Config{Seed: 5, Patients: 5000, Days: 365}, ps)
	if err != nil {
		b.Fatal(err)
	}
	model, err := scoring.Load("../models/default")
	if err != nil {
		b.Fatal(err)
	}
	w := &benchWorld{store: &featurestore.MemoryStore{}, model: model}
	cut := time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC)
	hist := map[string]*featurestore.History{}
	for ev := range g.All() {
		if ev.EventTime.Before(cut) {
			h := hist[ev.Patient]
			if h == nil {
				h = &featurestore.History{}
				hist[ev.Patient] = h
			}
			h.Apply(&ev, featurestore.Policy{})
			continue
		}
		v, _ := json.Marshal(ev)
		w.msgs = append(w.msgs, kafka.Message{Topic: "appointments", Key: []byte(ev.Patient), Value: v})
		if ev.Type == events.Booked || ev.Type == events.Rescheduled {
			w.bookings = append(w.bookings, ev)
		}
	}
	if err := w.store.Save(context.Background(), hist); err != nil {
		b.Fatal(err)
	}
	return w
}

type discard struct{}

func (discard) WriteMessages(context.Context, ...kafka.Message) error { return nil }

func BenchmarkStageDecode(b *testing.B) {
	w := newBenchWorld(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := events.DecodeAppointment(w.msgs[i%len(w.msgs)].Value); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStageFeatures(b *testing.B) {
	w := newBenchWorld(b)
	hs, _ := w.store.Load(context.Background(), patientsOf(w.bookings))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev := &w.bookings[i%len(w.bookings)]
		featurestore.Compute(ev, hs[ev.Patient])
	}
}

func BenchmarkStageScore(b *testing.B) {
	w := newBenchWorld(b)
	hs, _ := w.store.Load(context.Background(), patientsOf(w.bookings))
	vs := make([]featurestore.Vector, len(w.bookings))
	for i := range w.bookings {
		vs[i] = featurestore.Compute(&w.bookings[i], hs[w.bookings[i].Patient])
	}
	var x []float64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := i % len(w.bookings)
		x = w.model.Vector(&w.bookings[j], vs[j], x)
		w.model.Score(x)
	}
}

func BenchmarkStageEncodeRisk(b *testing.B) {
	w := newBenchWorld(b)
	ev := &w.bookings[0]
	hs, _ := w.store.Load(context.Background(), []string{ev.Patient})
	x := w.model.Vector(ev, featurestore.Compute(ev, hs[ev.Patient]), nil)
	p := w.model.Score(x)
	var buf []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := events.Risk{Schema: events.RiskSchema, AppointmentID: ev.AppointmentID, Version: 1, Patient: ev.Patient,
			SourceEventID: ev.EventID, AppointmentStart: ev.Booking.Start, Probability: p, Band: w.model.Band(p),
			ModelID: w.model.ID(), ScoredAt: time.Now(), Features: w.model.FeatureMap(x)}
		buf = r.AppendJSON(buf[:0])
	}
}

// BenchmarkProcessBatch is the whole processor on 500-message batches with an in-memory
// store and no Kafka: the CPU cost per event of everything but the network.
func BenchmarkProcessBatch(b *testing.B) {
	w := newBenchWorld(b)
	benchProcess(b, w, mustNew(b, scorer.Config{Store: w.store, Output: discard{}, Model: w.model}))
}

// BenchmarkProcessBatchChallenger is BenchmarkProcessBatch with a shadow challenger
// (models/decision, as a stand-in of the same size) scoring every booking again: its cost is
// the ratio of the two events/s (docs/performance.md). The bound: not half.
func BenchmarkProcessBatchChallenger(b *testing.B) {
	w := newBenchWorld(b)
	chal, err := scoring.Load("../models/decision")
	if err != nil {
		b.Fatal(err)
	}
	benchProcess(b, w, mustNew(b, scorer.Config{Store: w.store, Output: discard{}, Model: w.model, Challenger: chal}))
}

// BenchmarkProcessBatchChallengerSmall is the same with models/challenger (the simulator's
// model without history features, fewer inputs), when the checkout has it.
func BenchmarkProcessBatchChallengerSmall(b *testing.B) {
	chal, err := scoring.Load("../models/challenger")
	if errors.Is(err, fs.ErrNotExist) {
		b.Skip("no models/challenger")
	}
	if err != nil {
		b.Fatal(err)
	}
	w := newBenchWorld(b)
	benchProcess(b, w, mustNew(b, scorer.Config{Store: w.store, Output: discard{}, Model: w.model, Challenger: chal}))
}

// benchProcess reports, beside the batch's ns/op and allocs/op, events/s and allocs/event
// (allocs/op over the 500 events of a batch).
func benchProcess(b *testing.B, w *benchWorld, p *scorer.Processor) {
	const batch = 500
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := (i * batch) % (len(w.msgs) - batch)
		if err := p.Process(context.Background(), w.msgs[start:start+batch]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N*batch), "allocs/event")
}

// BenchmarkStageRedisLoad is the enrichment round trip: one pipelined load of the histories
// of a 500-event batch from the real Redis.
func BenchmarkStageRedisLoad(b *testing.B) {
	addr := testenv.Redis(b)
	w := newBenchWorld(b)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	store := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: "bench:", TTL: time.Hour})
	ctx := context.Background()
	patients := patientsOf(w.bookings)
	hs, _ := w.store.Load(ctx, patients)
	for _, h := range hs {
		h.Rev = 0
	}
	_ = store.Save(ctx, hs) // histories may already be there from an earlier run
	const batch = 500
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := (i * batch) % (len(patients) - batch)
		if _, err := store.Load(ctx, patients[start:start+batch]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "patients/s")
}

func patientsOf(evs []events.Appointment) []string {
	seen := map[string]bool{}
	var out []string
	for _, ev := range evs {
		if !seen[ev.Patient] {
			seen[ev.Patient] = true
			out = append(out, ev.Patient)
		}
	}
	return out
}

// BenchmarkStageRedisSave is the write-back round trip: one pipelined compare-and-set save
// of a 500-patient batch's histories to the real Redis. Run it against servers with
// appendfsync everysec and always to price durability (docs/chaos.md, Redis crashes).
func BenchmarkStageRedisSave(b *testing.B) {
	addr := testenv.Redis(b)
	w := newBenchWorld(b)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	prefix := fmt.Sprintf("benchsave%d:", time.Now().UnixNano())
	store := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: prefix, TTL: time.Hour})
	ctx := context.Background()
	patients := patientsOf(w.bookings)
	hs, _ := w.store.Load(ctx, patients)
	for _, h := range hs {
		h.Rev = 0
	}
	const batch = 500
	groups := make([]map[string]*featurestore.History, 0, len(patients)/batch)
	for start := 0; start+batch <= len(patients); start += batch {
		g := make(map[string]*featurestore.History, batch)
		for _, p := range patients[start : start+batch] {
			g[p] = hs[p]
		}
		groups = append(groups, g)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := store.Save(ctx, groups[i%len(groups)]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "patients/s")
	if it := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator(); it != nil {
		for it.Next(ctx) {
			rdb.Del(ctx, it.Val())
		}
	}
}
