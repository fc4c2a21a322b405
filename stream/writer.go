package stream

import (
	"time"

	"github.com/segmentio/kafka-go"
)

// NewWriter returns a kafka-go Writer with the settings every producer in this project needs:
// acknowledged by all in-sync replicas (the zero value acknowledges nothing), a short batch
// linger (the default blocks each WriteMessages call for up to a second), batches of at most
// 128 messages a partition (kafka-go v0.4.51 allocates BatchSize messages for every batch it
// opens, writer.go writeBatch.add: at 1,000 that was 150 KB for a batch of three bookings,
// 200 MB/s of garbage at 2,000 bookings/s, whose collection put 20-60 ms stalls into the
// latency tail; docs/performance.md) and murmur2 key
// hashing, the Java client's partitioner, so an integration engine using the Java client and
// this project put a patient's events on the same partition.
//
// Each Writer gets its own Transport: kafka-go's shared DefaultTransport answers metadata
// from a cache, so a topic created after the process first asked is "Unknown Topic Or
// Partition" to every new Writer until the cache expires, and the Writer does not retry it.
//
// opts add TLS and SASL (see Option).
func NewWriter(brokers []string, topic string, opts ...Option) *kafka.Writer {
	return &kafka.Writer{
		Transport:       applyOptions(opts).transport(),
		Addr:            kafka.TCP(brokers...),
		Topic:           topic,
		Balancer:        &kafka.Murmur2Balancer{},
		RequiredAcks:    kafka.RequireAll,
		BatchTimeout:    2 * time.Millisecond,
		BatchSize:       128,
		BatchBytes:      4 << 20,
		MaxAttempts:     10,
		WriteBackoffMin: 50 * time.Millisecond,
		WriteBackoffMax: 2 * time.Second,
	}
}

// AckedLinger is the batch linger of a Writer whose callers each hand it what they have and
// wait for the acknowledgement: the consumer publishing a batch, the gateway publishing an
// HL7 message before its ACK. Lingering longer only delays them (NewWriter's 2 ms was most
// of the consumer's publish stage at 2,000 bookings/s, docs/performance.md); writes from
// callers that overlap within it still share a produce request.
const AckedLinger = 100 * time.Microsecond

// FetchMaxWait is the MaxWait of every Reader here. A fetch returns as soon as one message
// is there (MinBytes 1), so it does not add latency; it is how long the broker holds a fetch
// on an idle partition. It must be long because kafka-go v0.4.51 (reader.go, read) uses it as
// the connection's read deadline too, asking the broker to wait only a quarter less: a
// response later than that slack is an "i/o timeout", and the reader closes its connection
// and backs off before fetching again (segmentio/kafka-go#574, #726). At 10 ms, on a busy
// 2-core machine, that happened every second or so and put 100-130 ms stalls into 1-2% of
// risk events (docs/performance.md, "The latency tail").
const FetchMaxWait = 500 * time.Millisecond

// PartitionWatchInterval is how often a group reader checks its topics' partition counts.
const PartitionWatchInterval = 5 * time.Second

// NewReader returns a consumer-group Reader for topic with explicit, synchronous commits
// (CommitMessages returns once Kafka stored the offsets; kafka-go's background committer
// only logs failures) and a new group starting from the earliest offset, so no booking
// published before the scorer first started is missed. opts add TLS and SASL (see Option).
func NewReader(brokers []string, group, topic string, opts ...Option) *kafka.Reader {
	return NewGroupReader(brokers, group, []string{topic}, opts...)
}

// NewGroupReader is NewReader over several topics in one consumer group (the reminder
// dispatcher reads appointments and risk events together).
//
// The Reader joins the group at once (kafka-go starts the group in NewReader). Every member
// then checks its topics' partition counts every PartitionWatchInterval and, when one
// changes, ends its generation, so the group rebalances and partitions added while it runs
// are assigned and read from their first offset. kafka-go v0.4.51 (consumergroup.go,
// partitionWatcher; conn.go, ReadPartitions) counts partitions with a metadata request that
// allows auto-creation, and ends the generation at once if that request fails, as it does
// for a missing topic where the broker does not auto-create: the member would rejoin in a
// tight loop, and where the broker does auto-create, a misspelt topic would be created with
// the broker's defaults. So make readers only over topics that exist: TopicGate.Wait first.
func NewGroupReader(brokers []string, group string, topics []string, opts ...Option) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:           brokers,
		Dialer:            applyOptions(opts).dialer(),
		GroupID:           group,
		GroupTopics:       topics,
		MinBytes:          1,
		MaxBytes:          10 << 20,
		MaxWait:           FetchMaxWait,
		QueueCapacity:     2000,
		CommitInterval:    0,
		StartOffset:       kafka.FirstOffset,
		HeartbeatInterval: 1 * time.Second,
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  10 * time.Second,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    1 * time.Second,

		WatchPartitionChanges:  true,
		PartitionWatchInterval: PartitionWatchInterval,
	})
}
