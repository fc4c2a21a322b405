package main

import (
	"encoding/json"
	"math"
	"os"
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
// 100 batches a second, 8 bytes each.
const maxStageSamples = 400_000

// stageTimes keeps every batch's stage durations (--stage-timings), for exact quantiles
// where the metrics' histogram buckets are a factor of two wide. It is a scorer.Observer
// and the stream loop's Timed hook.
type stageTimes struct {
	mu       sync.Mutex
	samples  map[string][]float64 // ms
	messages []float64
}

func newStageTimes() *stageTimes { return &stageTimes{samples: map[string][]float64{}} }

func (s *stageTimes) add(stage string, d time.Duration) {
	if v := s.samples[stage]; len(v) < maxStageSamples {
		s.samples[stage] = append(v, float64(d.Microseconds())/1000)
	}
}

// BatchDone implements scorer.Observer.
func (s *stageTimes) BatchDone(r *scorer.BatchReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add("load", r.Load)
	s.add("score", r.Score)
	if r.Published != nil {
		s.add("publish", r.Publish)
	}
	s.add("save", r.Save)
	s.add("total", r.Took)
	if len(s.messages) < maxStageSamples {
		s.messages = append(s.messages, float64(r.Messages))
	}
}

// BatchFailed implements scorer.Observer.
func (s *stageTimes) BatchFailed(int, time.Duration, error) {}

// loopDone records the consumer loop's own stages of a batch.
func (s *stageTimes) loopDone(lt stream.LoopTimes) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w, ok := metrics.FetchWait(lt); ok {
		s.add("fetch", w)
	}
	s.add("fill", lt.Fill)
	s.add("commit", lt.Commit)
}

// StageQuantiles is one stage's distribution over batches, in ms; --stage-timings writes a
// map of them by stage, and cmd/bench reads it.
type StageQuantiles struct {
	Batches int     `json:"batches"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	Maxms   float64 `json:"max_ms"`
}

// summary is every stage's quantiles, and the batch sizes' under "batch_messages" (in
// messages, not ms).
func (s *stageTimes) summary() map[string]StageQuantiles {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]StageQuantiles{}
	for _, name := range stageNames {
		if v := s.samples[name]; len(v) > 0 {
			out[name] = quantiles(v)
		}
	}
	if len(s.messages) > 0 {
		out["batch_messages"] = quantiles(s.messages)
	}
	return out
}

func quantiles(v []float64) StageQuantiles {
	v = slices.Clone(v)
	slices.Sort(v)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return math.Round(v[max(0, min(i, len(v)-1))]*1000) / 1000
	}
	return StageQuantiles{Batches: len(v), P50ms: q(0.50), P99ms: q(0.99), Maxms: v[len(v)-1]}
}

// write writes the summary to path as JSON.
func (s *stageTimes) write(path string) error {
	b, err := json.MarshalIndent(s.summary(), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
