package monitor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// BenchmarkProcess measures the monitor's batch step on the real Redis: 500 messages a batch,
// half risk events, half outcomes, each outcome joining a score of an earlier batch.
// events/s = 500 * 1e9 / (ns/op).
func BenchmarkProcess(b *testing.B) {
	st := newTestStore(b)
	m, err := New(Config{Store: st, Model: "champ", Features: []string{"lead_time_days", "age_band", "specialty"}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	start := time.Date(2025, 6, 2, 9, 0, 0, 0, time.UTC)
	f := map[string]float64{"lead_time_days": 12, "age_band": 3, "specialty": 110}
	batch := func(n int) []kafka.Message {
		var msgs []kafka.Message
		for i := range 250 {
			id := n*250 + i
			p := pseudonym(id)
			at := start.Add(time.Duration(id) * time.Minute)
			msgs = append(msgs, riskMsg("risk", p, fmt.Sprint("B", id), 1, 0.1, "medium", "champ", at, "", f))
			if n > 0 {
				prev := (n-1)*250 + i
				msgs = append(msgs, outcomeMsg(pseudonym(prev), fmt.Sprint("B", prev), 1, i%10 == 0, start.Add(time.Duration(prev)*time.Minute)))
			}
		}
		return msgs
	}
	batches := make([][]kafka.Message, b.N+1)
	for i := range batches {
		batches[i] = batch(i)
	}
	if err := m.Process(ctx, batches[0]); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		if err := m.Process(ctx, batches[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "events/s")
}
