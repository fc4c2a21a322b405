package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/stream"
)

// backfillSummary is the one JSON line --backfill prints on stdout when it is done.
type backfillSummary struct {
	Topic        string  `json:"topic"`
	Events       int64   `json:"events"`
	Applied      int64   `json:"applied"`
	Refused      int64   `json:"refused"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_s"`
}

// backfill rebuilds the patient histories in Redis from the appointments topic, every
// partition from its first offset to the end it has when the backfill starts: history only,
// nothing scored or published (scorer.Config.HistoryOnly), by the same rules as the
// consumer (the same events refused, the same retention, compare-and-set saves). Apply is
// idempotent, so it may run into an empty Redis (recovery, a new deployment), over
// histories already there, or beside running consumers; events after the end it read are
// the consumer group's as usual. It prints a backfillSummary on out.
func backfill(cfg config, out io.Writer, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg.redisOpts.DisableIdentity = true
	rdb := redis.NewUniversalClient(&cfg.redisOpts)
	defer rdb.Close()
	store := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: cfg.redisPrefix, TTL: cfg.historyTTL})
	maxAhead := cfg.maxAhead
	if maxAhead == 0 {
		maxAhead = -1
	}
	proc, err := scorer.New(scorer.Config{Store: store, Output: noOutput{}, HistoryOnly: true,
		Policy: featurestore.Policy{Retention: cfg.retention}, MaxAhead: maxAhead, Log: log})
	if err != nil {
		return err
	}
	log.Info("backfill started: rebuilding patient histories from the topic, nothing scored or published", "topic", cfg.inTopic, "redis_prefix", cfg.redisPrefix)
	start := time.Now()
	err = stream.Scan(ctx, cfg.brokers, cfg.inTopic, cfg.batch.MaxMessages, func(ctx context.Context, msgs []kafka.Message) error {
		return processWithRetry(ctx, proc, msgs, log)
	}, cfg.kafkaOpts...)
	took := time.Since(start)
	s := backfillSummary{Topic: cfg.inTopic, Events: proc.Stats.Consumed.Load(), Applied: proc.Stats.Applied.Load(),
		Refused: proc.Stats.DeadLettered.Load(), Seconds: took.Seconds()}
	if took > 0 {
		s.EventsPerSec = float64(s.Events) / took.Seconds()
	}
	if err != nil {
		return fmt.Errorf("backfill stopped after %d events: %w", s.Events, err)
	}
	log.Info("backfill done", "events", s.Events, "applied", s.Applied, "refused", s.Refused, "seconds", s.Seconds, "events_per_s", s.EventsPerSec)
	return json.NewEncoder(out).Encode(s)
}

// processWithRetry processes a backfill batch, retrying with backoff while Redis is
// unavailable, until ctx ends.
func processWithRetry(ctx context.Context, proc *scorer.Processor, msgs []kafka.Message, log *slog.Logger) error {
	wait := 100 * time.Millisecond
	for {
		err := proc.Process(ctx, msgs)
		if err == nil {
			return nil
		}
		log.Error("backfill batch failed; retrying", "messages", len(msgs), "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// noOutput is the Output of a history-only processor, which publishes nothing.
type noOutput struct{}

func (noOutput) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	if len(msgs) > 0 {
		return fmt.Errorf("backfill publishes nothing, asked to publish %d messages", len(msgs))
	}
	return nil
}
