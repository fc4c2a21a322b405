package stream

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// chanSource feeds messages from a channel and records commits.
type chanSource struct {
	in        chan kafka.Message
	mu        sync.Mutex
	committed []int64
}

func (s *chanSource) FetchMessage(ctx context.Context) (kafka.Message, error) {
	select {
	case m := <-s.in:
		return m, nil
	case <-ctx.Done():
		return kafka.Message{}, ctx.Err()
	}
}

func (s *chanSource) CommitMessages(_ context.Context, msgs ...kafka.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		s.committed = append(s.committed, m.Offset)
	}
	return nil
}

func (s *chanSource) commits() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.committed...)
}

// flakyHandler fails its first fails batches, then records the offsets it processed.
type flakyHandler struct {
	mu        sync.Mutex
	fails     int
	processed []int64
}

func (h *flakyHandler) Process(_ context.Context, msgs []kafka.Message) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fails > 0 {
		h.fails--
		return errors.New("not leader for partition")
	}
	for _, m := range msgs {
		h.processed = append(h.processed, m.Offset)
	}
	return nil
}

func (h *flakyHandler) done() []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int64(nil), h.processed...)
}

func (h *flakyHandler) failsLeft() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fails
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunRetriesThenCommitsAndStopsCleanly(t *testing.T) {
	src := &chanSource{in: make(chan kafka.Message, 10)}
	p := &flakyHandler{fails: 2}
	src.in <- kafka.Message{Offset: 0}
	src.in <- kafka.Message{Offset: 1}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, src, p, Batching{MaxWait: 20 * time.Millisecond, RetryBackoff: time.Millisecond}, nil)
	}()
	waitFor(t, "both offsets committed", func() bool { return len(src.commits()) == 2 })
	if got := p.done(); len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Fatalf("processed %v after two failed attempts, want [0 1]", got)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

func TestRunDoesNotCommitUnprocessedBatchOnShutdown(t *testing.T) {
	src := &chanSource{in: make(chan kafka.Message, 10)}
	p := &flakyHandler{fails: 1 << 30} // Kafka never comes back
	src.in <- kafka.Message{Offset: 7}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, src, p, Batching{RetryBackoff: time.Millisecond}, nil) }()
	waitFor(t, "a few failed attempts", func() bool { return p.failsLeft() < 1<<30-3 })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if c := src.commits(); len(c) != 0 {
		t.Fatalf("committed %v for a batch that was never published", c)
	}
}
