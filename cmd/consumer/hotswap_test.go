package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

func TestModelPollFlag(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	c, err := parseConfigEnv(nil, none, os.Stderr)
	if err != nil || c.modelPoll != 5*time.Second {
		t.Fatalf("default --model-poll %v, %v; want 5s", c.modelPoll, err)
	}
	for _, v := range []string{"0", "250ms"} {
		if _, err := parseConfigEnv([]string{"--model-poll", v}, none, os.Stderr); err != nil {
			t.Errorf("--model-poll %s refused: %v", v, err)
		}
	}
	for _, v := range []string{"-1s", "1ms"} {
		if _, err := parseConfigEnv([]string{"--model-poll", v}, none, os.Stderr); err == nil {
			t.Errorf("--model-poll %s accepted", v)
		}
	}
	env := func(k string) (string, bool) { return map[string]string{"MODEL_POLL": "2s"}[k], k == "MODEL_POLL" }
	if c, err := parseConfigEnv(nil, env, os.Stderr); err != nil || c.modelPoll != 2*time.Second {
		t.Fatalf("MODEL_POLL=2s gave %v, %v", c.modelPoll, err)
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testenv.Buffer

// TestHotSwapOnRealKafka streams a simulated PAS through the real Kafka and Redis into the
// consumer's own pipeline (stream.Run, a Processor, watchModelDir as run wires it) while the
// model directory changes under it: first half a model.txt arrives, as a copy in progress
// leaves it (refused, the old model keeps serving), then the rest of it (swapped in). Every
// booking is scored exactly once, only by the two valid models, and in every input partition
// the bookings scored by the old model all come before those scored by the new one.
func TestHotSwapOnRealKafka(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	in := testenv.Topic(t, brokers, 4)
	risk := testenv.Topic(t, brokers, 2)
	dlq := testenv.Topic(t, brokers, 1)
	group := fmt.Sprintf("hotswap-%d", time.Now().UnixNano())

	// The served directory starts as a copy of the default model (A).
	dir := t.TempDir()
	modelText, err := os.ReadFile("../../models/default/model.txt")
	if err != nil {
		t.Fatal(err)
	}
	contractA, err := os.ReadFile("../../models/default/contract.json")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(scoring.ModelFile, modelText)
	write(scoring.ContractFile, contractA)
	modelA, err := scoring.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Model B: the same trees under another id, with its own risk bands.
	var c map[string]any
	if err := json.Unmarshal(contractA, &c); err != nil {
		t.Fatal(err)
	}
	const idB = "dna-gbm-hotswap-b"
	c["model_id"] = idB
	c["risk_bands"] = []map[string]any{{"name": "low", "min_probability": 0}, {"name": "high", "min_probability": 0.2}}
	contractB, _ := json.Marshal(c)

	// The simulated stream, in event order.
	ps, _ := pseudo.New([]byte("hotswap-test-secret-0123456789abcdefghij"))
	g, err := sim.New(sim.Config{Seed: 11, Patients: 1500, Days: 90}, ps)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []kafka.Message
	bookings := map[string]bool{}
	for ev := range g.All() {
		b, _ := json.Marshal(ev)
		msgs = append(msgs, kafka.Message{Key: []byte(ev.Patient), Value: b})
		if ev.Type == events.Booked || ev.Type == events.Rescheduled {
			bookings[bookingKey(ev.AppointmentID, ev.Version)] = true
		}
	}

	// The consumer, wired as run wires it.
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{redisAddr}})
	defer rdb.Close()
	store := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: group + ":", TTL: time.Hour})
	w := stream.NewWriter(brokers, "")
	defer w.Close()
	r := stream.NewReader(brokers, group, in)
	defer r.Close()
	proc, err := scorer.New(scorer.Config{Store: store, Output: w, Model: modelA, Topics: scorer.Topics{Risk: risk, DeadLetter: dlq}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type swap struct {
		id  string
		err error
	}
	swaps := make(chan swap, 10)
	go watchModelDir(ctx, dir, 50*time.Millisecond, scoring.LiveFeed{}, modelA, proc, log, func(next *scoring.Model, err error) {
		s := swap{err: err}
		if next != nil {
			s.id = next.ID()
		}
		swaps <- s
	})
	done := make(chan error, 1)
	go func() { done <- stream.Run(ctx, r, proc, stream.Batching{MaxMessages: 50}, log) }()

	// Publish steadily, so events are flowing throughout the swap.
	published := make(chan error, 1)
	go func() {
		pw := stream.NewWriter(brokers, in)
		defer pw.Close()
		for rest := msgs; len(rest) > 0; {
			n := min(100, len(rest))
			if err := pw.WriteMessages(ctx, rest[:n]...); err != nil {
				published <- err
				return
			}
			rest = rest[n:]
			time.Sleep(40 * time.Millisecond)
		}
		published <- nil
	}()
	wait := func(what string, d time.Duration) swap {
		t.Helper()
		select {
		case s := <-swaps:
			return s
		case <-time.After(d):
			t.Fatalf("no %s within %s\n%s", what, d, logs.String())
		}
		return swap{}
	}

	testenv.Eventually(t, 60*time.Second, func() bool { return proc.Stats.Consumed.Load() >= int64(len(msgs)/3) },
		"a third of the stream to be scored by model A")
	// A copy in progress: half of model.txt, then the new contract. (In either order, and
	// whenever the watcher looks, the directory holds no valid model until the copy is done.)
	write(scoring.ModelFile, modelText[:len(modelText)/2])
	write(scoring.ContractFile, contractB)
	if s := wait("refusal of the half-copied model", 10*time.Second); s.err == nil || !strings.Contains(s.err.Error(), "model_sha256") {
		t.Fatalf("half-copied model: %+v, want a refusal naming model_sha256", s)
	}
	if id := proc.Model().ID(); id != modelA.ID() {
		t.Fatalf("serving %s after a refused model, want %s", id, modelA.ID())
	}
	consumedAtRefusal := proc.Stats.Consumed.Load()
	// The copy completes.
	write(scoring.ModelFile, modelText)
	if s := wait("swap to the completed model", 10*time.Second); s.err != nil || s.id != idB {
		t.Fatalf("completed model: %+v, want a swap to %s", s, idB)
	}
	consumedAtSwap := proc.Stats.Consumed.Load()
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 90*time.Second, func() bool { return proc.Stats.Consumed.Load() >= int64(len(msgs)) },
		"the whole stream to be consumed")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if int(proc.Stats.Consumed.Load()) != len(msgs) || proc.Stats.DeadLettered.Load() != 0 {
		t.Fatalf("consumed %d of %d, %d dead-lettered", proc.Stats.Consumed.Load(), len(msgs), proc.Stats.DeadLettered.Load())
	}

	// Which model scored each booking.
	rctx, rcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer rcancel()
	out, err := stream.ReadAll(rctx, brokers, risk)
	if err != nil {
		t.Fatal(err)
	}
	scoredBy := map[string]string{}
	perModel := map[string]int{}
	for _, m := range out {
		var re events.Risk
		if err := json.Unmarshal(m.Value, &re); err != nil {
			t.Fatal(err)
		}
		k := bookingKey(re.AppointmentID, re.Version)
		if prev, dup := scoredBy[k]; dup {
			t.Fatalf("booking %s scored twice (by %s and %s)", k, prev, re.ModelID)
		}
		if re.ModelID == idB && re.Band != "low" && re.Band != "high" {
			t.Fatalf("risk event from %s in band %q: B's bands not used", idB, re.Band)
		}
		scoredBy[k] = re.ModelID
		perModel[re.ModelID]++
	}
	for k := range bookings {
		if _, ok := scoredBy[k]; !ok {
			t.Fatalf("booking %s lost: no risk event", k)
		}
	}
	if len(scoredBy) != len(bookings) || len(perModel) != 2 || perModel[modelA.ID()] == 0 || perModel[idB] == 0 {
		t.Fatalf("%d risk events for %d bookings, by model %v; want each booking once, by %s then %s",
			len(scoredBy), len(bookings), perModel, modelA.ID(), idB)
	}

	// Before and after: in each input partition (one consumer's order of work), the bookings
	// scored by A come first, then those scored by B.
	input, err := stream.ReadAll(rctx, brokers, in)
	if err != nil {
		t.Fatal(err)
	}
	byPartition := map[int][]kafka.Message{}
	for _, m := range input {
		byPartition[m.Partition] = append(byPartition[m.Partition], m)
	}
	for p, ms := range byPartition {
		slices.SortFunc(ms, func(a, b kafka.Message) int { return int(a.Offset - b.Offset) })
		seenB := false
		for _, m := range ms {
			ev, err := events.DecodeAppointment(m.Value)
			if err != nil || (ev.Type != events.Booked && ev.Type != events.Rescheduled) {
				continue
			}
			switch scoredBy[bookingKey(ev.AppointmentID, ev.Version)] {
			case idB:
				seenB = true
			default:
				if seenB {
					t.Fatalf("partition %d offset %d: booking scored by %s after an earlier booking was scored by %s", p, m.Offset, modelA.ID(), idB)
				}
			}
		}
	}
	for _, want := range []string{`"msg":"new model refused; keeping the current model"`, `"msg":"model swapped"`, `"previous_model_id":"` + modelA.ID()} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s", want)
		}
	}
	t.Logf("%d events, %d bookings: %d scored by %s, %d by %s; refusal after %d events consumed, swap after %d",
		len(msgs), len(bookings), perModel[modelA.ID()], modelA.ID(), perModel[idB], idB, consumedAtRefusal, consumedAtSwap)
}

func bookingKey(appt string, version int) string { return fmt.Sprintf("%s/%d", appt, version) }
