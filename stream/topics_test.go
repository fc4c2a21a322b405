package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/internal/testenv"
)

// newTopicName returns a topic name no one has used, without creating the topic, and deletes
// the topic (if anything created it) when the test ends.
func newTopicName(t *testing.T, brokers []string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "test.gate." + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = (&kafka.Client{Addr: kafka.TCP(brokers...)}).DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{name}})
	})
	return name
}

// partitionCount asks Kafka afresh (no cache) how many partitions topic has; 0 if it does
// not exist.
func partitionCount(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := NewAdmin(brokers)
	defer a.Close()
	md, err := a.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range md.Topics {
		if tp.Name == topic && tp.Error == nil {
			return len(tp.Partitions)
		}
	}
	return 0
}

// On real Kafka (whose test broker has auto.create.topics.enable=true): a gate over a missing
// topic names it and does not create it by asking; once someone creates the topic, Wait
// returns and the gate is open.
func TestTopicGateWaitsForMissingTopic(t *testing.T) {
	brokers := testenv.Kafka(t)
	name := newTopicName(t, brokers)
	a := NewAdmin(brokers)
	defer a.Close()
	g := NewTopicGate(a, Topics{Names: []string{name}, Interval: 100 * time.Millisecond})
	if !errors.Is(g.Err(), errNotChecked) {
		t.Fatalf("Err before any check = %v", g.Err())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Wait(ctx) }()

	var missing *MissingTopicsError
	testenv.Eventually(t, 20*time.Second, func() bool { return errors.As(g.Err(), &missing) }, "the gate to report the missing topic")
	if !slices.Equal(missing.Topics, []string{name}) {
		t.Fatalf("missing %v, want [%s]", missing.Topics, name)
	}
	time.Sleep(time.Second) // ten more checks
	if n := partitionCount(t, brokers, name); n != 0 {
		t.Fatalf("checking created the topic (%d partitions)", n)
	}
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v with the topic missing", err)
	default:
	}

	other := NewAdmin(brokers)
	defer other.Close()
	if err := other.CreateTopics(ctx, TopicSpec{Partitions: 2, Replication: 1}, name); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || g.Err() != nil {
			t.Fatalf("Wait = %v, Err = %v after the topic was created", err, g.Err())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Wait still waiting 30s after the topic was created; Err = %v", g.Err())
	}
}

// With Create, missing topics are made with the spec and an existing one is left alone; a
// spec Kafka can never satisfy ends Wait with Kafka's reason instead of waiting forever.
func TestTopicGateCreates(t *testing.T) {
	brokers := testenv.Kafka(t)
	existing := testenv.Topic(t, brokers, 1)
	fresh := newTopicName(t, brokers)
	a := NewAdmin(brokers)
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := NewTopicGate(a, Topics{Names: []string{existing, fresh}, Create: true, Spec: TopicSpec{Partitions: 3}})
	if err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if n := partitionCount(t, brokers, fresh); n != 3 {
		t.Fatalf("created topic has %d partitions, want 3", n)
	}
	if n := partitionCount(t, brokers, existing); n != 1 {
		t.Fatalf("existing topic now has %d partitions, want 1", n)
	}
	// A second gate racing the first to create is not an error (TopicAlreadyExists).
	if err := a.CreateTopics(ctx, TopicSpec{}, fresh); err != nil {
		t.Fatalf("creating an existing topic: %v", err)
	}

	never := newTopicName(t, brokers)
	g = NewTopicGate(a, Topics{Names: []string{never}, Create: true, Spec: TopicSpec{Replication: 3}, Interval: 100 * time.Millisecond})
	start := time.Now()
	err := g.Wait(ctx)
	if !errors.Is(err, kafka.InvalidReplicationFactor) || ctx.Err() != nil {
		t.Fatalf("replication 3 on one broker: Wait = %v after %s, want Kafka's InvalidReplicationFactor", err, time.Since(start))
	}
	if g.Err() == nil || partitionCount(t, brokers, never) != 0 {
		t.Fatalf("after a refused creation: Err = %v, topic has %d partitions", g.Err(), partitionCount(t, brokers, never))
	}
	t.Logf("refused creation: %v", err)
}

// A group reader started over a one-partition topic reads the partitions added while it runs,
// without a restart: the partition watcher makes the group rebalance.
func TestGroupReaderReadsPartitionsAddedWhileRunning(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.Topic(t, brokers, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := NewWriter(brokers, topic)
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("first"), Value: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r := NewReader(brokers, fmt.Sprintf("added-partitions-%d", time.Now().UnixNano()), topic)
	defer r.Close()
	m, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CommitMessages(ctx, m); err != nil {
		t.Fatal(err)
	}

	res, err := (&kafka.Client{Addr: kafka.TCP(brokers...)}).CreatePartitions(ctx, &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 3}}})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		t.Fatalf("add partitions: %v", err)
	}
	// A writer made now sees three partitions; murmur2 spreads these keys over all of them.
	w = NewWriter(brokers, topic)
	defer w.Close()
	const n = 30
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(fmt.Sprintf("key-%d", i)), Value: []byte("v")}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	got := map[int]int{}
	seen := map[string]bool{}
	for len(seen) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("after %d of %d messages (by partition %v): %v", len(seen), n, got, err)
		}
		if !seen[string(m.Key)] {
			seen[string(m.Key)] = true
			got[m.Partition]++
		}
		_ = r.CommitMessages(ctx, m) // may fail once across the rebalance; redelivery is deduplicated above
	}
	if got[1] == 0 || got[2] == 0 {
		t.Fatalf("messages by partition %v: nothing read from the added partitions", got)
	}
	t.Logf("messages by partition: %v", got)
}
