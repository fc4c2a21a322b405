package scorer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
)

// smallModel is a challenger with another contract: one input (the prior DNA count, from
// position 9 of the feature vector), its own score and its own band names.
type smallModel struct{ id string }

func (s smallModel) ID() string { return s.id }
func (s smallModel) Vector(_ *events.Appointment, v featurestore.Vector, dst []float64) []float64 {
	return append(dst[:0], v[9])
}
func (s smallModel) Score(x []float64) float64 {
	if len(x) != 1 {
		panic("smallModel: want one input")
	}
	return 0.2 + 0.3*x[0]
}
func (s smallModel) Band(p float64) string {
	if p >= 0.5 {
		return "c-high"
	}
	return "c-low"
}
func (s smallModel) FeatureMap(x []float64) map[string]float64 {
	return map[string]float64{"dna": x[0]}
}
func (s smallModel) FeatureNames() []string        { return []string{"dna"} }
func (s smallModel) CountMissing([]float64, []int) {}

// callOutput records each WriteMessages call separately.
type callOutput struct {
	mu    sync.Mutex
	calls [][]kafka.Message
}

func (o *callOutput) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, append([]kafka.Message(nil), msgs...))
	return nil
}

func decodeRisks(t *testing.T, msgs []kafka.Message, topic string) []events.Risk {
	t.Helper()
	var out []events.Risk
	for _, m := range msgs {
		if m.Topic != topic {
			continue
		}
		var r events.Risk
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		if string(m.Key) != r.Patient || header(m, "schema") != events.RiskSchema {
			t.Fatalf("%s event keyed %q with schema header %q, patient %q", topic, m.Key, header(m, "schema"), r.Patient)
		}
		out = append(out, r)
	}
	return out
}

// Every booking the model scores is scored by the challenger too, from the same features
// but through its own contract, and published to the shadow topic in the same write: same
// key, appointment, version and scored_at; the challenger's model id, band and features.
// The champion's risk events, stats and report are as without a challenger.
func TestChallengerShadowsEveryRiskEventInTheSameWrite(t *testing.T) {
	store, out := &featurestore.MemoryStore{}, &callOutput{}
	rec := &recorder{}
	clock := t0.Add(time.Hour)
	p := mustNew(t, Config{Store: store, Output: out, Model: fakeModel{"champ"}, Challenger: smallModel{"chal"},
		Observer: rec, Now: func() time.Time { clock = clock.Add(time.Second); return clock }})
	batch := []kafka.Message{
		msg(t, book("A", 1, t0), 0),
		msg(t, done("A", events.DidNotAttend, t0.Add(96*time.Hour)), 1),
		msg(t, book("B", 1, t0.Add(100*time.Hour)), 2),
		{Topic: "appointments", Offset: 3, Key: []byte(pat), Value: []byte("not json")},
	}
	if err := p.Process(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if len(out.calls) != 1 {
		t.Fatalf("%d writes, want the risk, shadow and dead-letter events in one", len(out.calls))
	}
	champ, shadow := decodeRisks(t, out.calls[0], "risk"), decodeRisks(t, out.calls[0], "risk.shadow")
	if len(champ) != 2 || len(shadow) != 2 {
		t.Fatalf("%d risk and %d shadow events, want 2 and 2", len(champ), len(shadow))
	}
	for i, s := range shadow {
		c := champ[i]
		if s.AppointmentID != c.AppointmentID || s.Version != c.Version || s.Patient != c.Patient ||
			!s.ScoredAt.Equal(c.ScoredAt) || s.SourceEventID != c.SourceEventID || !s.AppointmentStart.Equal(c.AppointmentStart) {
			t.Errorf("shadow %+v does not describe the same booking and moment as risk %+v", s, c)
		}
		if s.ModelID != "chal" || c.ModelID != "champ" {
			t.Errorf("model ids %q (shadow) and %q (risk)", s.ModelID, c.ModelID)
		}
		if len(s.Features) != 1 || s.Features["dna"] != c.Features["prior_dna"] {
			t.Errorf("shadow features %v, want the challenger's own map of the same history (%v)", s.Features, c.Features)
		}
	}
	if shadow[0].Band != "c-low" || shadow[1].Band != "c-high" || shadow[1].Probability != 0.5 {
		t.Errorf("shadow bands %q %q (p=%v), want the challenger's bands c-low, c-high", shadow[0].Band, shadow[1].Band, shadow[1].Probability)
	}
	if p.Stats.Scored.Load() != 2 || p.Stats.Shadow.Load() != 2 || p.Stats.DeadLettered.Load() != 1 {
		t.Errorf("stats scored %d shadow %d dead-lettered %d, want 2 2 1", p.Stats.Scored.Load(), p.Stats.Shadow.Load(), p.Stats.DeadLettered.Load())
	}
	if got := p.Stats.Bands(); got["c-low"] != 0 || got["c-high"] != 0 || got["low"] != 1 || got["high"] != 1 {
		t.Errorf("bands %v count the challenger's", got)
	}
	r := rec.done[0]
	if len(r.Scores) != 2 || len(r.Shadow) != 2 || r.Shadow[1].ModelID != "chal" || r.Shadow[1].Band != "c-high" ||
		r.Published["risk.shadow"] != 2 || r.Published["risk"] != 2 {
		t.Errorf("report: %d scores, shadow %+v, published %v", len(r.Scores), r.Shadow, r.Published)
	}

	// Replayed (a crash before the commit): the same shadow events again, as the risk events.
	out2 := &callOutput{}
	p2 := mustNew(t, Config{Store: store, Output: out2, Model: fakeModel{"champ"}, Challenger: smallModel{"chal"}})
	if err := p2.Process(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	again := decodeRisks(t, out2.calls[0], "risk.shadow")
	if len(again) != 2 || again[0].Probability != shadow[0].Probability || again[1].Probability != shadow[1].Probability ||
		again[1].AppointmentID != shadow[1].AppointmentID || p2.Stats.Applied.Load() != 0 {
		t.Fatalf("replay: shadow %+v, applied %d; want %+v and no history change", again, p2.Stats.Applied.Load(), shadow)
	}
}

// A failed write publishes nothing and counts nothing; the retry publishes both again.
func TestShadowIsRetriedWithItsBatch(t *testing.T) {
	out := &memOutput{fail: errors.New("broker down")}
	p := mustNew(t, Config{Store: &featurestore.MemoryStore{}, Output: out, Model: fakeModel{"champ"}, Challenger: smallModel{"chal"}})
	batch := []kafka.Message{msg(t, book("A", 1, t0), 0)}
	if err := p.Process(context.Background(), batch); err == nil {
		t.Fatal("a failed write did not fail the batch")
	}
	if p.Stats.Shadow.Load() != 0 {
		t.Fatalf("a failed batch counted %d shadow events", p.Stats.Shadow.Load())
	}
	out.fail = nil
	if err := p.Process(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if len(out.topic("risk")) != 1 || len(out.topic("risk.shadow")) != 1 || p.Stats.Shadow.Load() != 1 {
		t.Fatalf("retry: %d risk, %d shadow, counted %d", len(out.topic("risk")), len(out.topic("risk.shadow")), p.Stats.Shadow.Load())
	}
}

// Re-scores are shadowed too, with the same as-of time and reason.
func TestChallengerShadowsRescores(t *testing.T) {
	out := &memOutput{}
	p := mustNew(t, Config{Store: &featurestore.MemoryStore{}, Output: out, Model: fakeModel{"champ"}, MaxAhead: -1,
		Rescore: &Rescore{Open: &memOpen{}}, Challenger: smallModel{"chal"}, Topics: Topics{Shadow: "shadow.test"}})
	ctx := context.Background()
	c := bookAt("C", t0.Add(-5*24*time.Hour), t0.Add(2*24*time.Hour))
	a := bookAt("A", t0, t0.Add(10*24*time.Hour))
	if err := p.Process(ctx, []kafka.Message{msg(t, c, 0), msg(t, a, 1)}); err != nil {
		t.Fatal(err)
	}
	out.msgs = nil
	if err := p.Process(ctx, []kafka.Message{msg(t, done("C", events.DidNotAttend, t0.Add(2*24*time.Hour)), 2)}); err != nil {
		t.Fatal(err)
	}
	champ, shadow := decodeRisks(t, out.msgs, "risk"), decodeRisks(t, out.msgs, "shadow.test")
	if len(champ) != 1 || len(shadow) != 1 {
		t.Fatalf("%d re-scores and %d shadow events, want 1 and 1", len(champ), len(shadow))
	}
	s, r := shadow[0], champ[0]
	if s.AppointmentID != "A" || s.Reason != events.RescoreHistoryChanged || !s.ScoredAsOf.Equal(r.ScoredAsOf) ||
		!s.ScoredAt.Equal(r.ScoredAt) || s.Features["dna"] != 1 || s.ModelID != "chal" {
		t.Fatalf("shadow re-score %+v, risk re-score %+v", s, r)
	}
	if p.Stats.Rescored.Load() != 1 || p.Stats.Shadow.Load() != 3 {
		t.Fatalf("re-scored %d, shadow %d; want 1 and 3", p.Stats.Rescored.Load(), p.Stats.Shadow.Load())
	}
}

// SetChallenger swaps or removes the challenger between batches, while batches run; every
// batch's shadow events name the one challenger it started with.
func TestSetChallengerSwapsAndRemoves(t *testing.T) {
	out := &callOutput{}
	p := mustNew(t, Config{Store: &featurestore.MemoryStore{}, Output: out, Model: fakeModel{"champ"}})
	ctx := context.Background()
	if p.Challenger() != nil {
		t.Fatal("a challenger without one configured")
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch i % 3 {
			case 0:
				p.SetChallenger(smallModel{"c1"})
			case 1:
				p.SetChallenger(smallModel{"c2"})
			default:
				p.SetChallenger(nil)
			}
		}
	}()
	for i := 0; i < 50; i++ {
		a := book(fmt.Sprint("A", i), 1, t0)
		b := book(fmt.Sprint("B", i), 1, t0)
		if err := p.Process(ctx, []kafka.Message{msg(t, a, int64(2*i)), msg(t, b, int64(2*i+1))}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	for _, call := range out.calls {
		shadow := decodeRisks(t, call, "risk.shadow")
		if len(shadow) != 0 && (len(shadow) != 2 || shadow[0].ModelID != shadow[1].ModelID) {
			t.Fatalf("one batch's shadow events: %+v", shadow)
		}
	}
	p.SetChallenger(nil)
	out.calls = nil
	if err := p.Process(ctx, []kafka.Message{msg(t, book("Z", 1, t0), 1000)}); err != nil {
		t.Fatal(err)
	}
	if n := len(decodeRisks(t, out.calls[0], "risk.shadow")); n != 0 || p.Challenger() != nil {
		t.Fatalf("%d shadow events after the challenger was removed", n)
	}
	p.SetChallenger(smallModel{"c3"})
	out.calls = nil
	if err := p.Process(ctx, []kafka.Message{msg(t, book("Y", 1, t0), 1001)}); err != nil {
		t.Fatal(err)
	}
	if s := decodeRisks(t, out.calls[0], "risk.shadow"); len(s) != 1 || s[0].ModelID != "c3" {
		t.Fatalf("shadow events after setting c3: %+v", s)
	}
}
