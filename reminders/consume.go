package reminders

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// Source is a consumer-group reader with explicit commits; *kafka.Reader is the
// implementation. CommitMessages must return only once the offsets are stored.
type Source interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	CommitMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Batching bounds a batch. Zero values take the defaults in brackets.
type Batching struct {
	MaxMessages int           // per batch [500]
	MaxWait     time.Duration // to fill a batch after its first message [10ms]
	// RetryBackoff is the first wait before a failed batch is processed again; it doubles up
	// to MaxRetryBackoff [100ms, 5s].
	RetryBackoff, MaxRetryBackoff time.Duration
}

func (b *Batching) setDefaults() {
	if b.MaxMessages <= 0 {
		b.MaxMessages = 500
	}
	if b.MaxWait <= 0 {
		b.MaxWait = 10 * time.Millisecond
	}
	if b.RetryBackoff <= 0 {
		b.RetryBackoff = 100 * time.Millisecond
	}
	if b.MaxRetryBackoff <= 0 {
		b.MaxRetryBackoff = 5 * time.Second
	}
}

// NewReader returns one consumer-group reader over the appointments and risk topics, with
// the settings of stream.NewReader: synchronous commits, earliest offset for a new group.
func NewReader(brokers []string, group string, topics ...string) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:           brokers,
		GroupID:           group,
		GroupTopics:       topics,
		MinBytes:          1,
		MaxBytes:          10 << 20,
		MaxWait:           100 * time.Millisecond,
		QueueCapacity:     2000,
		CommitInterval:    0,
		StartOffset:       kafka.FirstOffset,
		HeartbeatInterval: time.Second,
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  10 * time.Second,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    time.Second,
	})
}

// Consume feeds src to d.Process in batches until ctx ends, committing a batch only after
// Process has stored everything it implies in Redis. A failing batch is retried with
// backoff (nothing is committed meanwhile). When ctx ends, the batch in hand is finished
// and committed, and Consume returns nil.
func Consume(ctx context.Context, src Source, d *Dispatcher, b Batching) error {
	b.setDefaults()
	finish := context.WithoutCancel(ctx)
	for {
		batch, err := fetchBatch(ctx, src, b)
		if len(batch) == 0 {
			if err == nil || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("fetch appointment and risk events: %w", err)
		}
		wait := b.RetryBackoff
		for attempt := 1; ; attempt++ {
			err := d.Process(finish, batch)
			if err == nil {
				break
			}
			d.o.Log.Error("reminder intake batch failed; retrying, nothing committed", "attempt", attempt, "messages", len(batch), "err", err, "retry_in", wait)
			select {
			case <-ctx.Done():
				d.o.Log.Info("stopping with a batch unprocessed; it will be consumed again after restart", "messages", len(batch))
				return nil
			case <-time.After(wait):
			}
			wait = min(2*wait, b.MaxRetryBackoff)
		}
		if err := commit(finish, src, batch); err != nil {
			d.o.Log.Error("offsets not committed; the batch will be consumed again (idempotently)", "messages", len(batch), "err", err)
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func fetchBatch(ctx context.Context, src Source, b Batching) ([]kafka.Message, error) {
	first, err := src.FetchMessage(ctx)
	if err != nil {
		return nil, err
	}
	batch := []kafka.Message{first}
	fill, cancel := context.WithTimeout(ctx, b.MaxWait)
	defer cancel()
	for len(batch) < b.MaxMessages {
		m, err := src.FetchMessage(fill)
		if err != nil {
			break
		}
		batch = append(batch, m)
	}
	return batch, nil
}

func commit(ctx context.Context, src Source, batch []kafka.Message) error {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = src.CommitMessages(ctx, batch...); err == nil || errors.Is(err, context.Canceled) {
			return err
		}
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
	return err
}
