package stream

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/segmentio/kafka-go"
)

// Admin answers questions about the cluster that an operator asks: is Kafka reachable with
// our credentials, do our topics exist, how far behind is a consumer group. It is safe for
// concurrent use; Close releases its connections.
type Admin struct {
	client *kafka.Client
	tr     *kafka.Transport
}

// NewAdmin returns an Admin for the cluster at brokers. opts add TLS and SASL.
func NewAdmin(brokers []string, opts ...Option) *Admin {
	tr := applyOptions(opts).transport()
	return &Admin{client: &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr, Timeout: dialTimeout}, tr: tr}
}

// Close closes idle connections.
func (a *Admin) Close() { a.tr.CloseIdleConnections() }

// Ping asks for the metadata of topics: it fails if no broker answers, the TLS handshake or
// SASL authentication fails, or a topic is missing or has a partition without a leader.
func (a *Admin) Ping(ctx context.Context, topics ...string) error {
	md, err := a.client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("kafka metadata: %w", err)
	}
	found := map[string]bool{}
	for _, t := range md.Topics {
		if t.Error != nil {
			return fmt.Errorf("topic %s: %w", t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			if p.Error != nil && !errors.Is(p.Error, kafka.ReplicaNotAvailable) {
				return fmt.Errorf("topic %s partition %d: %w", t.Name, p.ID, p.Error)
			}
		}
		found[t.Name] = true
	}
	for _, t := range topics {
		if !found[t] {
			return fmt.Errorf("topic %s does not exist", t)
		}
	}
	return nil
}

// Missing returns those of topics that do not exist, in the order given. Its metadata
// request never asks the broker to create a topic, whatever the broker's
// auto.create.topics.enable says. Answers come from the metadata cache of the Admin's
// transport, so a topic someone else creates is seen within its MetadataTTL (10s).
func (a *Admin) Missing(ctx context.Context, topics ...string) ([]string, error) {
	md, err := a.client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("kafka metadata: %w", err)
	}
	exists := map[string]bool{}
	for _, t := range md.Topics {
		switch {
		case t.Error == nil:
			exists[t.Name] = true
		case !errors.Is(t.Error, kafka.UnknownTopicOrPartition):
			return nil, fmt.Errorf("topic %s: %w", t.Name, t.Error)
		}
	}
	var missing []string
	for _, t := range topics {
		if !exists[t] {
			missing = append(missing, t)
		}
	}
	return missing, nil
}

// TopicSpec says how CreateTopics makes a topic.
type TopicSpec struct {
	// Partitions of a new topic. 0: the broker's num.partitions.
	Partitions int
	// Replication factor of a new topic. 0: the broker's default.replication.factor.
	Replication int
}

// CreateTopics creates topics with spec. A topic that already exists (made by someone else,
// perhaps at the same moment) is not an error and is left as it is, whatever its partition
// count.
func (a *Admin) CreateTopics(ctx context.Context, spec TopicSpec, topics ...string) error {
	// -1 asks the broker for its default (CreateTopics v4+, Kafka 2.4+).
	parts, repl := spec.Partitions, spec.Replication
	if parts <= 0 {
		parts = -1
	}
	if repl <= 0 {
		repl = -1
	}
	cfgs := make([]kafka.TopicConfig, len(topics))
	for i, t := range topics {
		cfgs[i] = kafka.TopicConfig{Topic: t, NumPartitions: parts, ReplicationFactor: repl}
	}
	res, err := a.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: cfgs})
	if err != nil {
		return fmt.Errorf("create topics %s: %w", strings.Join(topics, ", "), err)
	}
	var errs []error
	for _, t := range topics {
		if err := res.Errors[t]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("create topic %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// PartitionLag is how many messages of one partition a consumer group has not committed.
type PartitionLag struct {
	Partition int
	// Lag is the partition's end offset minus the group's committed offset (minus the
	// partition's first offset when the group has committed nothing yet).
	Lag int64
}

// Lag returns group's lag on every partition of topic, ordered by partition. It measures
// committed offsets, so a member that is stuck retrying a batch shows as growing lag.
func (a *Admin) Lag(ctx context.Context, group, topic string) ([]PartitionLag, error) {
	md, err := a.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("kafka metadata for %s: %w", topic, err)
	}
	var parts []int
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("topic %s: %w", topic, t.Error)
		}
		for _, p := range t.Partitions {
			parts = append(parts, p.ID)
		}
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("topic %s has no partitions", topic)
	}
	sort.Ints(parts)

	committed, err := a.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("committed offsets of group %s: %w", group, err)
	}
	// A group that never committed is "not found" to some brokers and empty to others.
	if committed.Error != nil && !errors.Is(committed.Error, kafka.GroupIdNotFound) {
		return nil, fmt.Errorf("committed offsets of group %s: %w", group, committed.Error)
	}
	commit := map[int]int64{}
	for _, p := range committed.Topics[topic] {
		if p.Error != nil {
			if errors.Is(p.Error, kafka.GroupIdNotFound) {
				continue
			}
			return nil, fmt.Errorf("committed offset of %s/%d: %w", topic, p.Partition, p.Error)
		}
		commit[p.Partition] = p.CommittedOffset
	}

	end, err := a.offsets(ctx, topic, parts, kafka.LastOffsetOf)
	if err != nil {
		return nil, err
	}
	var never []int
	for _, p := range parts {
		if c, ok := commit[p]; !ok || c < 0 {
			never = append(never, p)
		}
	}
	first := map[int]int64{}
	if len(never) > 0 {
		if first, err = a.offsets(ctx, topic, never, kafka.FirstOffsetOf); err != nil {
			return nil, err
		}
	}
	out := make([]PartitionLag, 0, len(parts))
	for _, p := range parts {
		from, ok := commit[p]
		if !ok || from < 0 {
			from = first[p]
		}
		out = append(out, PartitionLag{Partition: p, Lag: max(0, end[p]-from)})
	}
	return out, nil
}

// offsets asks for the first or last offset of each partition (one kind per request: a
// broker refuses a request naming a partition twice).
func (a *Admin) offsets(ctx context.Context, topic string, parts []int, which func(int) kafka.OffsetRequest) (map[int]int64, error) {
	reqs := make([]kafka.OffsetRequest, len(parts))
	for i, p := range parts {
		reqs[i] = which(p)
	}
	res, err := a.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	out := make(map[int]int64, len(parts))
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("offsets of %s/%d: %w", topic, p.Partition, p.Error)
		}
		if p.LastOffset >= 0 {
			out[p.Partition] = p.LastOffset
		} else {
			out[p.Partition] = p.FirstOffset
		}
	}
	return out, nil
}
