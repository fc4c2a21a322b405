package stream

import (
	"context"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
)

// Pipeline is a Handler that can split a batch in two, so that the next batch is fetched and
// prepared while this one's writes are in flight (Batching.Pipeline). *scorer.Processor is
// the implementation.
type Pipeline interface {
	Handler
	// Prepare does all of a batch's work short of its writes. ahead is the batch whose Finish
	// is in flight (nil if none): Prepare must see ahead's writes as done, as they will be if
	// its Finish succeeds. A Prepared may be thrown away unfinished, so Prepare must have no
	// effect a retry would not repeat.
	Prepare(ctx context.Context, msgs []kafka.Message, ahead Prepared) (Prepared, error)
}

// Prepared is a batch that Pipeline.Prepare prepared.
type Prepared interface {
	// Finish makes the batch's writes; nil only when all are durable, like Handler.Process.
	Finish(ctx context.Context) error
	// Exact reports, after Finish returned nil, whether the writes were exactly the ones
	// Prepare computed, so that a batch prepared with this one ahead stands. False (say, a
	// compare-and-set lost to another writer) makes Run prepare the next batch again.
	Exact() bool
}

// flight is a prepared batch being finished and committed by its own goroutine.
type flight struct {
	batch     []kafka.Message
	prep      Prepared
	fetchedAt time.Time
	fill      time.Duration
	done      chan struct{}
	err       error // Finish's
	exact     bool
}

// startFlight finishes prep and, if that succeeded, hands its batch to c to commit, in a
// goroutine.
func startFlight(ctx context.Context, c *committer, prep Prepared, batch []kafka.Message, fetchedAt time.Time, fill time.Duration) *flight {
	f := &flight{batch: batch, prep: prep, fetchedAt: fetchedAt, fill: fill, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		if f.err = prep.Finish(ctx); f.err != nil {
			return
		}
		f.exact = prep.Exact()
		c.commit(batch, fetchedAt, fill)
	}()
	return f
}

// committer commits batches' offsets in its own goroutine, in the order it is handed them,
// so that the next batch's writes do not wait for this one's commit round trip (at 2,000
// bookings/s its p99 was 2.5 ms, on every booking's path). A batch is handed over only
// after its writes are durable, so offsets are still committed in order, each after its
// batch's writes.
type committer struct {
	queue chan committing
	done  chan struct{}
}

type committing struct {
	batch     []kafka.Message
	fetchedAt time.Time
	fill      time.Duration
}

// committerQueue is how many batches may wait for their commit before the loop waits too.
const committerQueue = 4

func startCommitter(ctx context.Context, src Source, b Batching, log *slog.Logger) *committer {
	c := &committer{queue: make(chan committing, committerQueue), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for j := range c.queue {
			timedCommit(ctx, src, j.batch, j.fetchedAt, j.fill, b, log)
		}
	}()
	return c
}

// commit queues batch's commit after every batch handed over before it.
func (c *committer) commit(batch []kafka.Message, fetchedAt time.Time, fill time.Duration) {
	c.queue <- committing{batch, fetchedAt, fill}
}

// close waits for every queued commit to be made.
func (c *committer) close() {
	close(c.queue)
	<-c.done
}

// land waits for f and, if its Finish failed, processes its batch again whole (with retries)
// and hands it to c to commit. It reports whether a batch prepared with f ahead stands, and whether the
// loop may go on (false: ctx ended with f's batch unprocessed).
func land(ctx, finish context.Context, f *flight, c *committer, proc Handler, b Batching, log *slog.Logger) (stands, goOn bool) {
	<-f.done
	if f.err == nil {
		return f.exact, true
	}
	log.Error("finishing batch failed; processing it again, nothing committed", "messages", len(f.batch), "err", f.err)
	if !processWithRetry(ctx, finish, proc, f.batch, b, log) {
		log.Info("stopping with a batch unprocessed; it will be consumed again after restart", "messages", len(f.batch))
		return false, false
	}
	c.commit(f.batch, f.fetchedAt, f.fill)
	return false, true
}

// timedCommit commits batch and tells b.Timed.
func timedCommit(ctx context.Context, src Source, batch []kafka.Message, fetchedAt time.Time, fill time.Duration, b Batching, log *slog.Logger) {
	committing := time.Now()
	commit(ctx, src, batch, log)
	if b.Timed != nil {
		b.Timed(LoopTimes{Batch: batch, FetchedAt: fetchedAt, Fill: fill, Commit: time.Since(committing)})
	}
}

// runPipelined is Run with batch N+1 fetched and prepared while batch N is finished, and
// finished while batch N's offsets are committed (committer). At most one batch is in
// flight; offsets are committed in order, each batch's only after its Finish succeeded, and
// all of them before runPipelined returns. When ctx ends, the batch in flight is finished and
// committed, and a batch only prepared is dropped (nothing of it was written). A batch prepared with a batch ahead that then failed or
// was not Exact is thrown away and processed again whole (Process) once nothing is in
// flight, as is a batch whose Prepare failed.
func runPipelined(ctx context.Context, src Source, proc Pipeline, b Batching, log *slog.Logger) error {
	finish := context.WithoutCancel(ctx)
	c := startCommitter(finish, src, b, log)
	defer c.close()
	var inFlight *flight
	for {
		batch, fetchedAt, err := fetchBatch(ctx, src, b)
		fill := time.Since(fetchedAt)
		if len(batch) == 0 {
			if inFlight != nil {
				land(ctx, finish, inFlight, c, proc, b, log)
			}
			if err == nil || ctx.Err() != nil {
				return nil
			}
			return wrapFetch(err)
		}
		var ahead Prepared
		if inFlight != nil {
			ahead = inFlight.prep
		}
		prep, perr := proc.Prepare(finish, batch, ahead)
		if inFlight != nil {
			stands, goOn := land(ctx, finish, inFlight, c, proc, b, log)
			inFlight = nil
			if !goOn {
				log.Info("stopping with a batch unprocessed; it will be consumed again after restart", "messages", len(batch))
				return nil
			}
			if ctx.Err() != nil {
				// Shutdown: the batch in flight is finished and committed; this one, prepared
				// but not written, is left to be consumed again.
				return nil
			}
			if !stands {
				prep, perr = nil, nil // prepared on writes that did not happen as computed
			}
		}
		if prep == nil {
			if perr != nil {
				log.Warn("preparing batch failed; processing it whole", "messages", len(batch), "err", perr)
			}
			if !processWithRetry(ctx, finish, proc, batch, b, log) {
				log.Info("stopping with a batch unprocessed; it will be consumed again after restart", "messages", len(batch))
				return nil
			}
			c.commit(batch, fetchedAt, fill)
		} else {
			inFlight = startFlight(finish, c, prep, batch, fetchedAt, fill)
		}
		if ctx.Err() != nil {
			if inFlight != nil {
				land(ctx, finish, inFlight, c, proc, b, log)
			}
			return nil
		}
	}
}
