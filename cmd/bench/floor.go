package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/stream"
)

// floorRun (--floor) measures the Kafka round trip alone, the floor under the latency run's
// figures (docs/performance.md, "The latency tail"): booking-sized messages offered as the
// latency run offers bookings (same producer settings, rate, warm-up and timing) and fetched
// by --workers members of a consumer group as cmd/consumer's (stream.NewReader), timed from
// hand-over to the producer to fetched. No scorer, no Redis.
func floorRun(ctx context.Context, c config, log *slog.Logger) error {
	topic := fmt.Sprintf("bench-floor-%d", time.Now().UnixNano())
	if err := createTopic(ctx, c.brokers, topic, c.partitions); err != nil {
		return err
	}
	warm, total := c.latencyRate, c.latencyRate*c.latencySeconds
	lt := newLatencies(warm + total)
	readCtx, stopRead := context.WithCancel(ctx)
	defer stopRead()
	for range c.workers {
		r := stream.NewReader(c.brokers, topic+".group", topic)
		go func() {
			defer r.Close()
			for {
				m, err := r.FetchMessage(readCtx)
				if err != nil {
					return
				}
				lt.arrived(string(m.Key), time.Now())
			}
		}()
	}

	pad := strings.Repeat("x", 360) // about the size of an appointment event
	msgs := make([]kafka.Message, warm+total)
	for i := range msgs {
		id := fmt.Sprintf("floor-%d", i)
		msgs[i] = kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil, `{"event_id":%q,"pad":%q}`, id, pad)}
	}
	wr := stream.NewWriter(c.brokers, topic)
	wr.BatchTimeout = stream.AckedLinger // as cmd/pasgateway's, whose place the load generator takes
	defer wr.Close()
	send := func(batch []kafka.Message) error {
		lt.sending(batch)
		return wr.WriteMessages(ctx, batch...)
	}
	if err := lt.run(send, msgs, warm, c.latencyRate, nil); err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	lat := lt.samples()
	log.Info("kafka round trip", "rate", c.latencyRate, "members", c.workers, "samples", len(lat),
		"p50_ms", round(pct(lat, 50), 2), "p99_ms", round(pct(lat, 99), 2), "p999_ms", round(pct(lat, 99.9), 2))
	return nil
}
