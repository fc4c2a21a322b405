package stream

import (
	"context"
	"fmt"

	"github.com/segmentio/kafka-go"
)

// ReadAll reads every partition of topic from its first offset to the end it has when
// ReadAll starts. It is for verification (the demo, tests, audits), not the hot path.
func ReadAll(ctx context.Context, brokers []string, topic string, opts ...Option) ([]kafka.Message, error) {
	d := applyOptions(opts).dialer()
	conn, err := d.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", brokers[0], err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", topic, err)
	}
	var out []kafka.Message
	for _, p := range parts {
		msgs, err := readPartition(ctx, d, brokers, topic, p)
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
	}
	return out, nil
}

func readPartition(ctx context.Context, d *kafka.Dialer, brokers []string, topic string, p kafka.Partition) ([]kafka.Message, error) {
	leader := fmt.Sprintf("%s:%d", p.Leader.Host, p.Leader.Port)
	pc, err := d.DialLeader(ctx, "tcp", leader, topic, p.ID)
	if err != nil {
		return nil, fmt.Errorf("dial leader of %s/%d: %w", topic, p.ID, err)
	}
	first, end, err := pc.ReadOffsets()
	pc.Close()
	if err != nil {
		return nil, fmt.Errorf("offsets of %s/%d: %w", topic, p.ID, err)
	}
	if end <= first {
		return nil, nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Dialer: d, Topic: topic, Partition: p.ID, MaxWait: FetchMaxWait})
	defer r.Close()
	if err := r.SetOffset(first); err != nil {
		return nil, err
	}
	out := make([]kafka.Message, 0, end-first)
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("read %s/%d: %w", topic, p.ID, err)
		}
		out = append(out, m)
		if m.Offset+1 >= end {
			return out, nil
		}
	}
}

// Scan reads every partition of topic from its first offset to the end it has when Scan
// starts, each partition in its own goroutine and in order, handing fn batches of at most
// batch messages of one partition. fn is called concurrently for different partitions; the
// first error it returns (or a read fails with) stops the scan and is returned. It is for
// rebuilding state from a topic (cmd/consumer --backfill) without holding it in memory;
// fn must not keep msgs after it returns.
func Scan(ctx context.Context, brokers []string, topic string, batch int, fn func(ctx context.Context, msgs []kafka.Message) error, opts ...Option) error {
	d := applyOptions(opts).dialer()
	conn, err := d.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return fmt.Errorf("dial %s: %w", brokers[0], err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return fmt.Errorf("list partitions of %s: %w", topic, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(parts))
	for _, p := range parts {
		go func() {
			err := scanPartition(ctx, d, brokers, topic, p, max(1, batch), fn)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var first error
	for range parts {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func scanPartition(ctx context.Context, d *kafka.Dialer, brokers []string, topic string, p kafka.Partition, batch int, fn func(context.Context, []kafka.Message) error) error {
	leader := fmt.Sprintf("%s:%d", p.Leader.Host, p.Leader.Port)
	pc, err := d.DialLeader(ctx, "tcp", leader, topic, p.ID)
	if err != nil {
		return fmt.Errorf("dial leader of %s/%d: %w", topic, p.ID, err)
	}
	first, end, err := pc.ReadOffsets()
	pc.Close()
	if err != nil {
		return fmt.Errorf("offsets of %s/%d: %w", topic, p.ID, err)
	}
	if end <= first {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Dialer: d, Topic: topic, Partition: p.ID,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: FetchMaxWait, QueueCapacity: 2 * batch})
	defer r.Close()
	if err := r.SetOffset(first); err != nil {
		return err
	}
	msgs := make([]kafka.Message, 0, batch)
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return fmt.Errorf("read %s/%d: %w", topic, p.ID, err)
		}
		msgs = append(msgs, m)
		last := m.Offset+1 >= end
		if len(msgs) == batch || last {
			if err := fn(ctx, msgs); err != nil {
				return err
			}
			msgs = msgs[:0]
		}
		if last {
			return nil
		}
	}
}
