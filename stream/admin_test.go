package stream

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Lag counts what a group has not committed, per partition, before and after it commits.
func TestAdminLagAndPing(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := NewAdmin(brokers)
	defer a.Close()
	if err := a.Ping(ctx, "in"); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(ctx, "in", "no-such-topic"); err == nil {
		t.Fatal("Ping passed with a missing topic")
	}
	lag := func() int64 {
		t.Helper()
		ls, err := a.Lag(ctx, "g", "in")
		if err != nil {
			t.Fatalf("Lag: %v", err)
		}
		if len(ls) != 2 {
			t.Fatalf("lag of %d partitions, want 2", len(ls))
		}
		var n int64
		for _, l := range ls {
			n += l.Lag
		}
		return n
	}
	if n := lag(); n != 0 {
		t.Fatalf("empty topic: lag %d", n)
	}
	w := NewWriter(brokers, "in")
	defer w.Close()
	msgs := make([]kafka.Message, 10)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte{byte('a' + i)}, Value: []byte("x")}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	if n := lag(); n != 10 {
		t.Fatalf("nothing committed: lag %d, want 10", n)
	}
	r := NewReader(brokers, "g", "in")
	defer r.Close()
	var got []kafka.Message
	for len(got) < 4 {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	if err := r.CommitMessages(ctx, got...); err != nil {
		t.Fatal(err)
	}
	if n := lag(); n != 6 {
		t.Fatalf("4 committed: lag %d, want 6", n)
	}
}
