package reminders_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders"
	"github.com/nhsx/dnarisk/stream"
)

// crashing commits nothing from its crashAt-th commit on and stops its consumer, as a
// process killed between storing the schedule and committing offsets would.
type crashing struct {
	*kafka.Reader
	commits, crashAt int
	committed        int64 // messages whose offsets were committed
	kill             context.CancelFunc
}

func (c *crashing) CommitMessages(ctx context.Context, msgs ...kafka.Message) error {
	c.commits++
	if c.commits >= c.crashAt {
		c.kill()
		return context.Canceled
	}
	if err := c.Reader.CommitMessages(ctx, msgs...); err != nil {
		return err
	}
	c.committed += int64(len(msgs))
	return nil
}

// Real Kafka, one consumer group over both topics: a member dies after storing a batch and
// before committing it, its successor consumes the batch again, and every reminder is still
// planned and sent once.
func TestConsumeRealKafkaCrashBeforeCommit(t *testing.T) {
	brokers := testenv.Kafka(t)
	h := newHarness(t)
	h.opts.Topics = reminders.Topics{Appointments: testenv.Topic(t, brokers, 3), Risk: testenv.Topic(t, brokers, 3)}
	group := fmt.Sprintf("rem-it-%d", time.Now().UnixNano())

	const patients = 60
	start := t0.Add(10*day + 2*time.Hour)
	var appts, risks []kafka.Message
	for i := range patients {
		p := h.addPatient(i)
		id := fmt.Sprintf("K%d", i)
		band := []string{"low", "medium", "high"}[i%3]
		appts = append(appts, msgs(t, booking(p, id, 1, start, t0))...)
		risks = append(risks, msgs(t, risk(p, id, 1, start, band))...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for topic, ms := range map[string][]kafka.Message{h.opts.Topics.Appointments: appts, h.opts.Topics.Risk: risks} {
		w := stream.NewWriter(brokers, topic)
		for i := range ms {
			ms[i].Topic = ""
		}
		if err := w.WriteMessages(ctx, ms...); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	total := int64(2 * patients)

	// First member: dies at its third commit.
	first := h.dispatcher()
	r1 := stream.NewGroupReader(brokers, group, []string{h.opts.Topics.Appointments, h.opts.Topics.Risk})
	runCtx, kill := context.WithCancel(ctx)
	crash := &crashing{Reader: r1, crashAt: 3, kill: kill}
	done := make(chan error, 1)
	go func() { done <- reminders.Consume(runCtx, crash, first, stream.Batching{MaxMessages: 10}) }()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r1.Close()
	uncommitted := first.Stats.Consumed.Load() - crash.committed
	if uncommitted <= 0 {
		t.Fatalf("first member processed %d messages and committed %d: no batch was left uncommitted", first.Stats.Consumed.Load(), crash.committed)
	}

	// Second member: consumes the rest plus the uncommitted batch.
	second := h.dispatcher()
	r2 := stream.NewGroupReader(brokers, group, []string{h.opts.Topics.Appointments, h.opts.Topics.Risk})
	runCtx2, stop := context.WithCancel(ctx)
	go func() { done <- reminders.Consume(runCtx2, r2, second, stream.Batching{MaxMessages: 10}) }()
	want := total - crash.committed
	testenv.Eventually(t, 60*time.Second, func() bool { return second.Stats.Consumed.Load() >= want },
		"the second member to consume the rest and the uncommitted batch")
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r2.Close()
	if got := second.Stats.Consumed.Load(); got != want {
		t.Fatalf("second member read %d, want %d: the rest plus the %d of the uncommitted batch", got, want, uncommitted)
	}
	if got, want := first.Stats.Scheduled.Load()+second.Stats.Scheduled.Load(), int64(2*patients+patients/3); got != want {
		t.Fatalf("scheduled %d reminders, want %d", got, want)
	}
	h.runUntil(second, start)
	if got := len(h.stub.Messages()); got != 2*patients+patients/3 || len(h.byReference()) != got {
		t.Fatalf("%d messages for %d references", got, len(h.byReference()))
	}
}

// The same flow on a real Redis Cluster: every script touches one patient's keys only, so
// it runs in one slot.
func TestOnRedisCluster(t *testing.T) {
	h := newHarness(t, testenv.RedisCluster(t)...)
	d := h.dispatcher()
	start := t0.Add(10*day + 2*time.Hour)
	var evs []any
	for i := range 20 {
		p := h.addPatient(i)
		id := fmt.Sprintf("RC%d", i)
		evs = append(evs, booking(p, id, 1, start, t0), risk(p, id, 1, start, []string{"low", "very_high"}[i%2]))
	}
	h.process(d, evs...)
	h.process(h.dispatcher(), evs...)
	h.process(d, cancellation(pseudonym(0), "RC0", 1, t0))
	h.runUntil(d, start)
	if got := len(h.stub.Messages()); got != 19*2+10 {
		t.Fatalf("%d messages, want 48 (19 live appointments x 2, +1 for each of the 10 very high)", got)
	}
}
