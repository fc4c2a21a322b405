package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
)

// Source is a consumer-group reader with explicit commits; *kafka.Reader is the
// implementation. FetchMessage blocks until a message or ctx ends; CommitMessages must return
// only once the offsets are stored.
type Source interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	CommitMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Handler processes one batch. It returns nil only when everything the batch implies is
// durable, so its offsets may be committed; an error means the same batch will be handed to it
// again, so Process must be idempotent. *scorer.Processor and the reminder dispatcher
// are the implementations.
type Handler interface {
	Process(ctx context.Context, msgs []kafka.Message) error
}

// Batching bounds a batch.
type Batching struct {
	// MaxMessages per batch. Default 500.
	MaxMessages int
	// MaxWait is the longest a batch keeps filling after its first message. Default 10ms.
	// The fill adapts: with a source that says what it holds in memory (a *kafka.Reader, or
	// a Buffered), a batch stops filling as soon as nothing more is buffered, so a lone
	// booking is processed at once while a busy topic still fills batches (the messages that
	// arrived during the previous batch are all buffered). Other sources fill until MaxWait.
	MaxWait time.Duration
	// RetryBackoff is the first wait before processing a failed batch again; it doubles up
	// to MaxRetryBackoff. Defaults 100ms and 5s.
	RetryBackoff, MaxRetryBackoff time.Duration
	// Pipeline, with a Handler that is a Pipeline, fetches and prepares the next batch while
	// this one is finished and committed (see Pipeline). Offsets are still committed in
	// order and only after the batch's writes are durable.
	Pipeline bool
	// Timed, when set, hears the loop's own stages of every committed batch, from the
	// goroutine running Run; it must return quickly and not keep t.Batch.
	Timed func(t LoopTimes)
}

// LoopTimes is how long one batch spent in the stages Run itself runs; the handler's stages
// (load, score, publish, save) are its own to report.
type LoopTimes struct {
	// Batch is the batch, in fetch order; its messages' Time is when the producer sent them.
	Batch []kafka.Message
	// FetchedAt is when the batch's first message was fetched.
	FetchedAt time.Time
	// Fill runs from the first message fetched to the batch complete; Commit is the offset
	// commit round trip (retries included).
	Fill, Commit time.Duration
}

// Buffered is what a Source may also implement to say how many fetched messages wait in
// memory, so that FetchMessage would return at once; Run stops filling a batch when none do.
type Buffered interface {
	Buffered() int
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

// Run consumes src until ctx ends: fetch a batch, process it (retrying with backoff until it
// succeeds, so an unavailable Redis or Kafka stops intake instead of buffering), then commit.
// When ctx ends, Run finishes the batch in hand, commits it and returns nil; it never commits
// a batch that was not fully processed. It returns an error only if src fails for another
// reason than ctx ending.
func Run(ctx context.Context, src Source, proc Handler, b Batching, log *slog.Logger) error {
	b.setDefaults()
	if log == nil {
		log = slog.Default()
	}
	if pl, ok := proc.(Pipeline); ok && b.Pipeline {
		return runPipelined(ctx, src, pl, b, log)
	}
	// Work already fetched is finished even after shutdown is asked for.
	finish := context.WithoutCancel(ctx)
	for {
		batch, fetchedAt, err := fetchBatch(ctx, src, b)
		filled := time.Now()
		if len(batch) == 0 {
			if err == nil || ctx.Err() != nil {
				return nil
			}
			return wrapFetch(err)
		}
		if !processWithRetry(ctx, finish, proc, batch, b, log) {
			log.Info("stopping with a batch unprocessed; it will be consumed again after restart", "messages", len(batch))
			return nil
		}
		committing := time.Now()
		commit(finish, src, batch, log)
		if b.Timed != nil {
			b.Timed(LoopTimes{Batch: batch, FetchedAt: fetchedAt, Fill: filled.Sub(fetchedAt), Commit: time.Since(committing)})
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func wrapFetch(err error) error { return fmt.Errorf("fetch appointments: %w", err) }

// fetchBatch blocks for a first message, then fills the batch up to b.MaxMessages for at
// most b.MaxWait, stopping early when the source says nothing more is buffered. It returns
// when the first message was fetched.
func fetchBatch(ctx context.Context, src Source, b Batching) ([]kafka.Message, time.Time, error) {
	first, err := src.FetchMessage(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	fetchedAt := time.Now()
	buffered := bufferedOf(src)
	known := -1 // what buffered said last and has not been fetched yet; -1 when not asked
	if buffered != nil {
		known = buffered()
	}
	// Sized for what is buffered now, so a full batch is not grown by doubling (the copies
	// were 4% of the bytes the consumer allocated) and a lone booking's is not 500 long.
	batch := make([]kafka.Message, 1, 1+max(0, min(b.MaxMessages-1, known)))
	batch[0] = first
	fill, cancel := context.WithTimeout(ctx, b.MaxWait)
	defer cancel()
	for len(batch) < b.MaxMessages {
		// Fetch what is known to be buffered without asking again per message; asking is
		// cheap, but not free (kafka-go's Stats).
		n := b.MaxMessages - len(batch)
		if buffered != nil {
			if known < 0 {
				known = buffered()
			}
			n, known = min(n, known), -1
			if n == 0 {
				break
			}
		}
		for ; n > 0; n-- {
			m, err := src.FetchMessage(fill)
			if err != nil {
				return batch, fetchedAt, nil
			}
			batch = append(batch, m)
		}
	}
	return batch, fetchedAt, nil
}

// bufferedOf says how many messages src holds fetched in memory, or is nil if src cannot
// tell. A *kafka.Reader's queue length comes from Stats, which also resets the reader's
// counters: nothing else in this project reads them.
func bufferedOf(src Source) func() int {
	switch s := src.(type) {
	case Buffered:
		return s.Buffered
	case *kafka.Reader:
		return func() int { return int(s.Stats().QueueLength) }
	}
	return nil
}

// processWithRetry reports false if ctx ended before the batch could be processed.
func processWithRetry(ctx, finish context.Context, proc Handler, batch []kafka.Message, b Batching, log *slog.Logger) bool {
	wait := b.RetryBackoff
	for attempt := 1; ; attempt++ {
		err := proc.Process(finish, batch)
		if err == nil {
			return true
		}
		log.Error("processing batch failed; retrying, nothing committed", "attempt", attempt, "messages", len(batch), "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, b.MaxRetryBackoff)
	}
}

// commitAttempts bounds commit retries: a commit that keeps failing usually means the
// partitions moved to another member, which will re-consume (idempotently) from the last
// committed offset.
const commitAttempts = 3

func commit(ctx context.Context, src Source, batch []kafka.Message, log *slog.Logger) {
	var err error
	for attempt := 1; attempt <= commitAttempts; attempt++ {
		if err = src.CommitMessages(ctx, batch...); err == nil {
			return
		}
		if errors.Is(err, context.Canceled) {
			break
		}
		log.Warn("offset commit failed", "attempt", attempt, "err", err)
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
	log.Error("offsets not committed; the batch will be consumed again (idempotently)", "messages", len(batch), "err", err)
}
