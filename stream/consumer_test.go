package stream

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/featurestore"
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

// flakyOutput fails its first n writes.
type flakyOutput struct {
	memOutput
	mu    sync.Mutex
	fails int
}

func (o *flakyOutput) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fails > 0 {
		o.fails--
		return errors.New("not leader for partition")
	}
	return o.memOutput.WriteMessages(ctx, msgs...)
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
	out := &flakyOutput{fails: 2}
	p := NewProcessor(&featurestore.MemoryStore{}, out, fakeModel{"m"}, Topics{}, featurestore.Policy{}, nil)
	src.in <- msg(t, book("A", 1, t0), 0)
	src.in <- msg(t, book("B", 1, t0), 1)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, src, p, Batching{MaxWait: 20 * time.Millisecond, RetryBackoff: time.Millisecond}, nil)
	}()
	waitFor(t, "both offsets committed", func() bool { return len(src.commits()) == 2 })
	if n := len(out.topic("risk")); n != 2 {
		t.Fatalf("%d risk events after two failed attempts, want 2", n)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

func TestRunDoesNotCommitUnprocessedBatchOnShutdown(t *testing.T) {
	src := &chanSource{in: make(chan kafka.Message, 10)}
	out := &flakyOutput{fails: 1 << 30} // Kafka never comes back
	p := NewProcessor(&featurestore.MemoryStore{}, out, fakeModel{"m"}, Topics{}, featurestore.Policy{}, nil)
	src.in <- msg(t, book("A", 1, t0), 7)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, src, p, Batching{RetryBackoff: time.Millisecond}, nil) }()
	waitFor(t, "a few failed attempts", func() bool {
		out.mu.Lock()
		defer out.mu.Unlock()
		return out.fails < 1<<30-3
	})
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if c := src.commits(); len(c) != 0 {
		t.Fatalf("committed %v for a batch that was never published", c)
	}
}
