package stream

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// logPipeline is a Pipeline that logs, in order, what happens to each batch (named by its
// first offset): "prep N@M" (prepared with batch M ahead, -1 for none), "fin N", "proc N";
// it can fail a batch's Finish once, or report it not Exact, and can hold Finish until
// released so a test sees the next batch prepared meanwhile.
type logPipeline struct {
	mu        sync.Mutex
	log       []string
	failOnce  map[int64]bool
	inexact   map[int64]bool
	hold      chan struct{} // nil: Finish does not wait
	finishing chan int64    // told when a Finish starts, if not nil
}

type logPrepared struct {
	pl    *logPipeline
	first int64
}

func (pl *logPipeline) note(s string) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.log = append(pl.log, s)
}

func (pl *logPipeline) entries() []string {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return slices.Clone(pl.log)
}

func (pl *logPipeline) Process(_ context.Context, msgs []kafka.Message) error {
	pl.note("proc " + itoa(msgs[0].Offset))
	return nil
}

func (pl *logPipeline) Prepare(_ context.Context, msgs []kafka.Message, ahead Prepared) (Prepared, error) {
	a := int64(-1)
	if ahead != nil {
		a = ahead.(*logPrepared).first
	}
	pl.note("prep " + itoa(msgs[0].Offset) + "@" + itoa(a))
	return &logPrepared{pl: pl, first: msgs[0].Offset}, nil
}

func (p *logPrepared) Finish(context.Context) error {
	pl := p.pl
	if pl.finishing != nil {
		pl.finishing <- p.first
	}
	if pl.hold != nil {
		<-pl.hold
	}
	pl.mu.Lock()
	fail := pl.failOnce[p.first]
	delete(pl.failOnce, p.first)
	pl.mu.Unlock()
	if fail {
		pl.note("fail " + itoa(p.first))
		return errors.New("publish failed")
	}
	pl.note("fin " + itoa(p.first))
	return nil
}

func (p *logPrepared) Exact() bool {
	p.pl.mu.Lock()
	defer p.pl.mu.Unlock()
	return !p.pl.inexact[p.first]
}

func itoa(n int64) string {
	if n < 0 {
		return "-" + itoa(-n)
	}
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + itoa(n%10)
}

// runPipeline feeds offsets 0..n-1 one batch each (MaxMessages 1) through a pipelined Run and
// stops it once all are committed.
func runPipeline(t *testing.T, pl *logPipeline, n int) []int64 {
	t.Helper()
	src := bufferedSource{&chanSource{in: make(chan kafka.Message, n)}}
	for i := range n {
		src.in <- kafka.Message{Offset: int64(i)}
	}
	runUntilCommitted(t, src, src.commits, pl, Batching{MaxMessages: 1, Pipeline: true, RetryBackoff: time.Millisecond}, n)
	return src.commits()
}

func TestPipelineCommitsInOrderAfterEachFinish(t *testing.T) {
	pl := &logPipeline{}
	commits := runPipeline(t, pl, 4)
	if !slices.Equal(commits, []int64{0, 1, 2, 3}) {
		t.Fatalf("committed %v, want 0..3 in order", commits)
	}
	log := pl.entries()
	for i := int64(0); i < 4; i++ {
		if !slices.Contains(log, "fin "+itoa(i)) {
			t.Fatalf("batch %d committed without its Finish: %v", i, log)
		}
	}
	// Each batch after the first is prepared with the one before it ahead.
	for i := int64(1); i < 4; i++ {
		if !slices.Contains(log, "prep "+itoa(i)+"@"+itoa(i-1)) && !slices.Contains(log, "prep "+itoa(i)+"@-1") {
			t.Fatalf("batch %d not prepared: %v", i, log)
		}
	}
}

// runUntilFirstFinish starts a pipelined Run of pl over src, one message a batch, and waits
// until batch 0's Finish starts (pl.finishing). cancel stops the Run; errc has its result.
func runUntilFirstFinish(t *testing.T, src Source, pl *logPipeline) (cancel context.CancelFunc, errc <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, src, pl, Batching{MaxMessages: 1, Pipeline: true}, nil)
	}()
	if got := <-pl.finishing; got != 0 {
		cancel()
		t.Fatalf("first Finish was batch %d", got)
	}
	return cancel, done
}

// While batch 0's Finish is held, batch 1 is prepared with batch 0 ahead, and nothing is
// committed until batch 0's Finish returns.
func TestPipelinePreparesNextWhileFinishing(t *testing.T) {
	pl := &logPipeline{hold: make(chan struct{}), finishing: make(chan int64, 4)}
	src := bufferedSource{&chanSource{in: make(chan kafka.Message, 4)}}
	src.in <- kafka.Message{Offset: 0}
	cancel, errc := runUntilFirstFinish(t, src, pl)
	src.in <- kafka.Message{Offset: 1}
	waitFor(t, "batch 1 prepared while batch 0 finishes", func() bool { return slices.Contains(pl.entries(), "prep 1@0") })
	if c := src.commits(); len(c) != 0 {
		t.Fatalf("committed %v before batch 0 finished", c)
	}
	pl.hold <- struct{}{} // batch 0 finishes
	if got := <-pl.finishing; got != 1 {
		t.Fatalf("second Finish was batch %d", got)
	}
	waitFor(t, "batch 0 committed", func() bool { return len(src.commits()) == 1 })
	cancel()
	pl.hold <- struct{}{} // batch 1 finishes: shutdown finishes the batch in flight
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if c := src.commits(); !slices.Equal(c, []int64{0, 1}) {
		t.Fatalf("committed %v, want [0 1]: the batch in flight is finished and committed on shutdown", c)
	}
}

// A Finish that fails commits nothing; its batch is processed again whole and committed,
// and the batch prepared on top of it is thrown away and processed whole too.
func TestPipelineFinishFailureRedoesBothBatches(t *testing.T) {
	pl := &logPipeline{failOnce: map[int64]bool{1: true}}
	commits := runPipeline(t, pl, 4)
	if !slices.Equal(commits, []int64{0, 1, 2, 3}) {
		t.Fatalf("committed %v, want 0..3 in order", commits)
	}
	log := pl.entries()
	fail, proc1 := slices.Index(log, "fail 1"), slices.Index(log, "proc 1")
	if fail < 0 || proc1 < fail {
		t.Fatalf("batch 1 not processed again after its Finish failed: %v", log)
	}
	if slices.Contains(log, "prep 2@1") && !slices.Contains(log, "proc 2") {
		t.Fatalf("batch 2, prepared on the failed batch 1, was finished anyway: %v", log)
	}
	if slices.Contains(log, "prep 2@1") && slices.Contains(log, "fin 2") {
		t.Fatalf("batch 2, prepared on the failed batch 1, was finished: %v", log)
	}
	if !slices.Contains(log, "prep 2@1") {
		t.Fatalf("batch 2 was not prepared while batch 1 was in flight (the case under test): %v", log)
	}
}

// A batch prepared on a batch whose writes were not exact is prepared again (processed
// whole), not finished.
func TestPipelineInexactAheadRedoesNext(t *testing.T) {
	pl := &logPipeline{inexact: map[int64]bool{0: true}}
	commits := runPipeline(t, pl, 2)
	if !slices.Equal(commits, []int64{0, 1}) {
		t.Fatalf("committed %v", commits)
	}
	log := pl.entries()
	if slices.Contains(log, "prep 1@0") && (slices.Contains(log, "fin 1") || !slices.Contains(log, "proc 1")) {
		t.Fatalf("batch 1, prepared on inexact batch 0, was finished instead of processed again: %v", log)
	}
}

// heldCommits is a source whose CommitMessages waits until released.
type heldCommits struct {
	bufferedSource
	hold chan struct{}
}

func (s heldCommits) CommitMessages(ctx context.Context, msgs ...kafka.Message) error {
	<-s.hold
	return s.bufferedSource.CommitMessages(ctx, msgs...)
}

// While batch 0's commit is held, batch 1 is still finished (its writes need not wait for
// the commit round trip); the commits are still made in order, and Run returns only after
// both are made.
func TestPipelineFinishesNextWhileCommitting(t *testing.T) {
	pl := &logPipeline{finishing: make(chan int64, 4)}
	src := heldCommits{bufferedSource{&chanSource{in: make(chan kafka.Message, 4)}}, make(chan struct{})}
	src.in <- kafka.Message{Offset: 0}
	cancel, errc := runUntilFirstFinish(t, src, pl)
	src.in <- kafka.Message{Offset: 1}
	select {
	case got := <-pl.finishing:
		if got != 1 {
			t.Fatalf("second Finish was batch %d", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("batch 1 not finished while batch 0's commit was held: %v", pl.entries())
	}
	waitFor(t, "batch 1 finished", func() bool { return slices.Contains(pl.entries(), "fin 1") })
	if c := src.commits(); len(c) != 0 {
		t.Fatalf("committed %v while the commit was held", c)
	}
	cancel()
	select {
	case err := <-errc:
		t.Fatalf("Run returned (%v) with commits still held", err)
	case <-time.After(50 * time.Millisecond):
	}
	src.hold <- struct{}{}
	src.hold <- struct{}{}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if c := src.commits(); !slices.Equal(c, []int64{0, 1}) {
		t.Fatalf("committed %v, want [0 1] in order", c)
	}
}
