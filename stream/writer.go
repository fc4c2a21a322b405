package stream

import (
	"time"

	"github.com/segmentio/kafka-go"
)

// NewWriter returns a kafka-go Writer with the settings every producer in this project needs:
// acknowledged by all in-sync replicas (the zero value acknowledges nothing), a short batch
// linger (the default blocks each WriteMessages call for up to a second) and murmur2 key
// hashing, the Java client's partitioner, so an integration engine using the Java client and
// this project put a patient's events on the same partition.
func NewWriter(brokers []string, topic string) *kafka.Writer {
	return &kafka.Writer{
		Addr:            kafka.TCP(brokers...),
		Topic:           topic,
		Balancer:        &kafka.Murmur2Balancer{},
		RequiredAcks:    kafka.RequireAll,
		BatchTimeout:    2 * time.Millisecond,
		BatchSize:       1000,
		BatchBytes:      4 << 20,
		MaxAttempts:     10,
		WriteBackoffMin: 50 * time.Millisecond,
		WriteBackoffMax: 2 * time.Second,
	}
}
