package stream

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/internal/testenv"
)

// bufferedSource is a chanSource that says how many messages it holds.
type bufferedSource struct{ *chanSource }

func (s bufferedSource) Buffered() int { return len(s.in) }

// batchSizes records the size of every batch it is handed.
type batchSizes struct {
	mu    sync.Mutex
	sizes []int
}

func (h *batchSizes) Process(_ context.Context, msgs []kafka.Message) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sizes = append(h.sizes, len(msgs))
	return nil
}

func (h *batchSizes) got() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.sizes...)
}

// runUntilCommitted runs Run over src until want offsets are committed, then stops it.
func runUntilCommitted(t *testing.T, src Source, commits func() []int64, h Handler, b Batching, want int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, src, h, b, nil) }()
	waitFor(t, "the messages committed", func() bool { return len(commits()) >= want })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// A lone message is processed at once: with a fill wait of an hour, waiting for the batch to
// fill would time the test out.
func TestLoneMessageDoesNotWaitForABatch(t *testing.T) {
	src := bufferedSource{&chanSource{in: make(chan kafka.Message, 10)}}
	h := &batchSizes{}
	src.in <- kafka.Message{Offset: 0}
	runUntilCommitted(t, src, src.commits, h, Batching{MaxWait: time.Hour}, 1)
	if got := h.got(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("batches %v, want one of one message", got)
	}
}

// Under load the messages that arrived meanwhile are buffered, and batches fill to
// MaxMessages without waiting.
func TestBufferedMessagesFillBatches(t *testing.T) {
	src := bufferedSource{&chanSource{in: make(chan kafka.Message, 200)}}
	for i := range 120 {
		src.in <- kafka.Message{Offset: int64(i)}
	}
	h := &batchSizes{}
	runUntilCommitted(t, src, src.commits, h, Batching{MaxMessages: 50, MaxWait: time.Hour}, 120)
	if got := h.got(); len(got) != 3 || got[0] != 50 || got[1] != 50 || got[2] != 20 {
		t.Fatalf("batches %v, want [50 50 20]", got)
	}
	c := src.commits()
	for i, off := range c {
		if off != int64(i) {
			t.Fatalf("committed %v, want offsets 0..119 in order", c)
		}
	}
}

// A source that cannot say what it holds keeps the fixed fill: messages that arrive within
// MaxWait of the first join its batch.
func TestUnbufferedSourceFillsUntilMaxWait(t *testing.T) {
	src := &chanSource{in: make(chan kafka.Message, 10)}
	h := &batchSizes{}
	src.in <- kafka.Message{Offset: 0}
	go func() {
		for i := 1; i < 3; i++ {
			time.Sleep(20 * time.Millisecond)
			src.in <- kafka.Message{Offset: int64(i)}
		}
	}()
	runUntilCommitted(t, src, src.commits, h, Batching{MaxWait: time.Hour, MaxMessages: 3}, 3)
	if got := h.got(); len(got) != 1 || got[0] != 3 {
		t.Fatalf("batches %v, want one of three messages", got)
	}
}

// Timed hears every batch's fill and commit, with the batch.
func TestTimedHearsEveryBatch(t *testing.T) {
	src := bufferedSource{&chanSource{in: make(chan kafka.Message, 10)}}
	for i := range 5 {
		src.in <- kafka.Message{Offset: int64(i), Time: time.Now()}
	}
	var mu sync.Mutex
	var heard []int
	b := Batching{MaxMessages: 2, Timed: func(lt LoopTimes) {
		mu.Lock()
		defer mu.Unlock()
		if lt.FetchedAt.IsZero() || lt.Fill < 0 || lt.Commit < 0 {
			t.Errorf("loop times %+v", lt)
		}
		heard = append(heard, len(lt.Batch))
	}}
	runUntilCommitted(t, src, src.commits, &batchSizes{}, b, 5)
	mu.Lock()
	defer mu.Unlock()
	if len(heard) != 3 || heard[0]+heard[1]+heard[2] != 5 {
		t.Fatalf("timed batches %v, want 3 covering 5 messages", heard)
	}
}

// With a real group reader, a lone message is processed without waiting for MaxWait
// (the reader's queue length says nothing more is buffered), and a backlog fills batches.
func TestKafkaReaderAdaptiveFill(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.Topic(t, brokers, 1)
	w := NewWriter(brokers, topic)
	defer w.Close()
	ctx := context.Background()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: []byte("lone")}); err != nil {
		t.Fatal(err)
	}
	r := NewReader(brokers, "test-fill-"+topic, topic)
	defer r.Close()
	h := &batchSizes{}
	runCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- Run(runCtx, r, h, Batching{MaxWait: time.Hour, MaxMessages: 100}, nil) }()
	testenv.Eventually(t, 60*time.Second, func() bool { return len(h.got()) == 1 }, "the lone message processed")
	backlog := make([]kafka.Message, 1000)
	for i := range backlog {
		backlog[i] = kafka.Message{Key: []byte("k"), Value: []byte("backlog")}
	}
	if err := w.WriteMessages(ctx, backlog...); err != nil {
		t.Fatal(err)
	}
	total := func() int {
		n := 0
		for _, s := range h.got() {
			n += s
		}
		return n
	}
	testenv.Eventually(t, 60*time.Second, func() bool { return total() == 1001 }, "the backlog processed")
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	sizes := h.got()
	if sizes[0] != 1 {
		t.Fatalf("first batch %d messages, want the lone one", sizes[0])
	}
	biggest := 0
	for _, s := range sizes[1:] {
		biggest = max(biggest, s)
	}
	if biggest < 50 {
		t.Fatalf("backlog of 1000 processed in batches %v: no batch filled past 50", sizes[1:])
	}
}

// Scan hands every message of every partition, each partition in order, in batches no
// larger than asked, and stops at the end the topic had when it started.
func TestScanReadsEveryPartitionInOrder(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.Topic(t, brokers, 3)
	w := NewWriter(brokers, topic)
	defer w.Close()
	ctx := context.Background()
	var in []kafka.Message
	for i := range 200 {
		in = append(in, kafka.Message{Key: []byte{byte('a' + i%7)}, Value: []byte{byte(i)}})
	}
	if err := w.WriteMessages(ctx, in...); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[int][]int64{}
	n := 0
	err := Scan(ctx, brokers, topic, 16, func(_ context.Context, msgs []kafka.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if len(msgs) == 0 || len(msgs) > 16 {
			t.Errorf("batch of %d", len(msgs))
		}
		for _, m := range msgs {
			got[m.Partition] = append(got[m.Partition], m.Offset)
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 200 {
		t.Fatalf("scanned %d messages, want 200", n)
	}
	for p, offs := range got {
		for i, o := range offs {
			if o != int64(i) {
				t.Fatalf("partition %d offsets %v, want 0.. in order", p, offs)
			}
		}
	}
}
