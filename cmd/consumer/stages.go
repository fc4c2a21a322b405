package main

import (
	"cmp"
	"encoding/json"
	"math"
	"os"
	"os/signal"
	"slices"
	"sync"
	"time"

	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/stream"
)

// stageNames are the stages of a batch, in the order a booking goes through them: fetch
// (its oldest message from the producer's timestamp to being fetched), fill (first message
// fetched to the batch complete), load (histories from Redis), score (decode, features,
// model, encode), publish (until Kafka acknowledged), save (histories to Redis), commit
// (offsets), and total (the processor's whole batch: load to save).
var stageNames = []string{"fetch", "fill", "load", "score", "publish", "save", "commit", "total"}

// maxStageSamples bounds the samples kept per stage (a batch a sample): about an hour at
// 100 batches a second.
const maxStageSamples = 400_000

// stageSample is one batch's duration of a stage, and how many messages waited on it.
type stageSample struct {
	ms       float64
	messages int
}

// stageTimes keeps every batch's stage durations (--stage-timings), for exact quantiles
// where the metrics' histogram buckets are a factor of two wide. It is a scorer.Observer
// and the stream loop's Timed hook.
type stageTimes struct {
	mu      sync.Mutex
	samples map[string][]stageSample
}

func newStageTimes() *stageTimes { return &stageTimes{samples: map[string][]stageSample{}} }

func (s *stageTimes) add(stage string, d time.Duration, messages int) {
	if v := s.samples[stage]; len(v) < maxStageSamples {
		s.samples[stage] = append(v, stageSample{float64(d.Microseconds()) / 1000, messages})
	}
}

// resetOn forgets the samples so far whenever the process receives sig: cmd/bench signals
// after its warm-up, so the stages describe the same steady state as its latency samples.
func (s *stageTimes) resetOn(sig os.Signal) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, sig)
	go func() {
		for range c {
			s.mu.Lock()
			clear(s.samples)
			s.mu.Unlock()
		}
	}()
}

// BatchDone implements scorer.Observer.
func (s *stageTimes) BatchDone(r *scorer.BatchReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add("load", r.Load, r.Messages)
	s.add("score", r.Score, r.Messages)
	if r.Published != nil {
		s.add("publish", r.Publish, r.Messages)
	}
	s.add("save", r.Save, r.Messages)
	s.add("total", r.Took, r.Messages)
}

// BatchFailed implements scorer.Observer.
func (s *stageTimes) BatchFailed(int, time.Duration, error) {}

// loopDone records the consumer loop's own stages of a batch.
func (s *stageTimes) loopDone(lt stream.LoopTimes) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(lt.Batch)
	if w, ok := metrics.FetchWait(lt); ok {
		s.add("fetch", w, n)
	}
	s.add("fill", lt.Fill, n)
	s.add("commit", lt.Commit, n)
	if v := s.samples["batch_messages"]; len(v) < maxStageSamples {
		s.samples["batch_messages"] = append(v, stageSample{float64(n), 1})
	}
}

// StageQuantiles is one stage's distribution in ms, over the messages that went through it
// (each message counts its batch's duration, so a large batch that stalled weighs as much
// as the bookings it held up); --stage-timings writes a map of them by stage, and cmd/bench
// reads it.
type StageQuantiles struct {
	Batches int     `json:"batches"`
	Events  int     `json:"events"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	Maxms   float64 `json:"max_ms"`
}

// summary is every stage's quantiles, and the batch sizes' under "batch_messages" (in
// messages over batches, not ms).
func (s *stageTimes) summary() map[string]StageQuantiles {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]StageQuantiles{}
	for _, name := range append(stageNames, "batch_messages") {
		if v := s.samples[name]; len(v) > 0 {
			out[name] = quantiles(v)
		}
	}
	return out
}

// quantiles are v's weighted quantiles: the smallest duration with at least p of the
// messages at or below it.
func quantiles(v []stageSample) StageQuantiles {
	v = slices.Clone(v)
	slices.SortFunc(v, func(a, b stageSample) int { return cmp.Compare(a.ms, b.ms) })
	total := 0
	for _, x := range v {
		total += x.messages
	}
	q := func(p float64) float64 {
		need := int(math.Ceil(p * float64(total)))
		seen := 0
		for _, x := range v {
			if seen += x.messages; seen >= need {
				return math.Round(x.ms*1000) / 1000
			}
		}
		return v[len(v)-1].ms
	}
	return StageQuantiles{Batches: len(v), Events: total, P50ms: q(0.50), P99ms: q(0.99), Maxms: v[len(v)-1].ms}
}

// write writes the summary to path as JSON.
func (s *stageTimes) write(path string) error {
	b, err := json.MarshalIndent(s.summary(), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
