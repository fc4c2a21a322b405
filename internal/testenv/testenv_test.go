package testenv_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/internal/testenv"
)

// TestKafkaConsumerGroup proves that kafka-go, unchanged, works against the
// broker the tests run on: acknowledged writes, a consumer group with
// explicit commits, and a restarted member resuming after the committed
// offsets. (Kafka 4.0.0 rejected kafka-go's JoinGroup v1; this is the test
// that catches such a broker.)
func TestKafkaConsumerGroup(t *testing.T) {
	brokers := testenv.Kafka(t)
	const partitions, total = 4, 100
	topic := testenv.Topic(t, brokers, partitions)
	group := topic + ".group"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond,
	}
	defer w.Close()
	want := make(map[string]string, total)
	msgs := make([]kafka.Message, 0, total)
	for i := range total {
		k, v := fmt.Sprintf("patient-%02d", i%25), fmt.Sprintf("event-%03d", i)
		want[v] = k
		msgs = append(msgs, kafka.Message{Key: []byte(k), Value: []byte(v)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("write %d messages: %v", total, err)
	}

	r1 := newGroupReader(brokers, topic, group)
	got := make(map[string]string, total)
	keyPartition := map[string]int{}
	lastSeen := map[string]string{}
	for len(got) < total {
		m, err := r1.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("fetch after %d of %d messages: %v", len(got), total, err)
		}
		k, v := string(m.Key), string(m.Value)
		if _, dup := got[v]; dup {
			t.Fatalf("message %s delivered twice to one group member", v)
		}
		got[v] = k
		if p, ok := keyPartition[k]; ok && p != m.Partition {
			t.Errorf("key %s on partitions %d and %d: per-key order is lost", k, p, m.Partition)
		}
		keyPartition[k] = m.Partition
		if prev := lastSeen[k]; prev > v {
			t.Errorf("key %s: %s delivered after %s", k, v, prev)
		}
		lastSeen[k] = v
		if err := r1.CommitMessages(ctx, m); err != nil {
			t.Fatalf("commit %s: %v", v, err)
		}
	}
	if err := r1.Close(); err != nil {
		t.Fatalf("close first reader: %v", err)
	}
	for v, k := range want {
		if got[v] != k {
			t.Errorf("message %s: got key %q, want %q", v, got[v], k)
		}
	}
	used := map[int]bool{}
	for _, p := range keyPartition {
		used[p] = true
	}
	if len(used) < 2 {
		t.Errorf("25 keys landed on %d partition(s) of %d", len(used), partitions)
	}

	committed := committedOffsets(ctx, t, brokers, group, topic, partitions)
	if committed != total {
		t.Fatalf("group %s committed %d offsets in total, want %d", group, committed, total)
	}

	// A new member of the same group must resume after the commits: the only
	// message it sees is one written after the first member left.
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("patient-00"), Value: []byte("after")}); err != nil {
		t.Fatalf("write sentinel: %v", err)
	}
	r2 := newGroupReader(brokers, topic, group)
	defer r2.Close()
	m, err := r2.FetchMessage(ctx)
	if err != nil {
		t.Fatalf("second member fetch: %v", err)
	}
	if string(m.Value) != "after" {
		t.Fatalf("second member got %q first: committed offsets were not honoured", m.Value)
	}
	if err := r2.CommitMessages(ctx, m); err != nil {
		t.Fatalf("second member commit: %v", err)
	}
	// Proving absence needs a bounded wait; the other partitions' fetches
	// were issued together with the one that returned the sentinel.
	quiet, stop := context.WithTimeout(ctx, 2*time.Second)
	defer stop()
	if extra, err := r2.FetchMessage(quiet); err == nil {
		t.Fatalf("second member re-read committed message %q from partition %d", extra.Value, extra.Partition)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second member fetch: %v", err)
	}
}

func newGroupReader(brokers []string, topic, group string) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:     brokers,
		Topic:       topic,
		GroupID:     group,
		StartOffset: kafka.FirstOffset,
		MaxWait:     100 * time.Millisecond,
		// Commits are synchronous (CommitInterval 0), so CommitMessages
		// returns only once the broker stored them.
	})
}

func committedOffsets(ctx context.Context, t *testing.T, brokers []string, group, topic string, partitions int) int64 {
	t.Helper()
	parts := make([]int, partitions)
	for i := range parts {
		parts[i] = i
	}
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		t.Fatalf("fetch committed offsets of %s: %v", group, err)
	}
	if resp.Error != nil {
		t.Fatalf("fetch committed offsets of %s: %v", group, resp.Error)
	}
	var sum int64
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("committed offset of %s/%d: %v", topic, p.Partition, p.Error)
		}
		if p.CommittedOffset > 0 {
			sum += p.CommittedOffset
		}
	}
	return sum
}

func TestRedisStandalone(t *testing.T) {
	addr := testenv.Redis(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() }) // after the Del below: cleanups run last-in first-out
	key := "testenv:" + randHex(t)
	t.Cleanup(func() { c.Del(context.Background(), key) })
	if err := c.Set(ctx, key, "value", time.Minute).Err(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
	got, err := c.Get(ctx, key).Result()
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	if got != "value" {
		t.Fatalf("GET %s = %q, want %q", key, got, "value")
	}
}

// TestRedisCluster writes hash-tagged keys through a ClusterClient and checks
// that they are spread over the masters and that each is stored on the node
// that owns its slot.
func TestRedisCluster(t *testing.T) {
	addrs := testenv.RedisCluster(t)
	ctx := context.Background()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { c.Close() }) // after the Del below
	run := randHex(t)
	keys := make([]string, 100)
	for i := range keys {
		// The tag keeps one patient's keys in one slot, as the feature store does.
		keys[i] = fmt.Sprintf("{testenv-%s-%d}:history", run, i)
	}
	t.Cleanup(func() {
		for _, k := range keys {
			if err := c.Del(context.Background(), k).Err(); err != nil {
				t.Errorf("DEL %s: %v", k, err)
			}
		}
	})
	for i, k := range keys {
		if err := c.Set(ctx, k, i, time.Minute).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}

	//lint:ignore SA1019 CLUSTER SLOTS answers on every Redis the tests may meet; CLUSTER SHARDS needs 7.0.
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatalf("CLUSTER SLOTS: %v", err)
	}
	owner := func(slot int64) string {
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				return s.Nodes[0].Addr
			}
		}
		return ""
	}
	perNode := map[string]int{}
	for i, k := range keys {
		slot, err := c.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %s: %v", k, err)
		}
		node := owner(slot)
		if node == "" {
			t.Fatalf("slot %d of %s has no owner", slot, k)
		}
		perNode[node]++
		direct := redis.NewClient(&redis.Options{Addr: node})
		got, err := direct.Get(ctx, k).Int()
		direct.Close()
		if err != nil || got != i {
			t.Fatalf("GET %s directly on its owner %s = %d, %v; want %d", k, node, got, err, i)
		}
	}
	masters := map[string]bool{}
	for _, s := range slots {
		masters[s.Nodes[0].Addr] = true
	}
	if len(masters) < 2 || len(perNode) != len(masters) {
		t.Fatalf("100 keys spread over %d of %d master(s) (%v), want all of at least 2", len(perNode), len(masters), perNode)
	}
	t.Logf("keys per master: %v", perNode)
}

func TestEventually(t *testing.T) {
	n := 0
	testenv.Eventually(t, time.Second, func() bool { n++; return n == 3 }, "counter reaches 3")
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}

func randHex(t *testing.T) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
