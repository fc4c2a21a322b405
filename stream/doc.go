// Package stream is the Kafka side of the scorer: it reads appointment events with a
// kafka-go consumer group, processes them in batches (decode, enrich from the feature store,
// score, publish risk events and dead letters), and commits offsets only after every output
// of a batch is acknowledged by Kafka and every history update is saved. Delivery is
// at-least-once; every sink is idempotent so a replayed batch changes nothing downstream.
package stream
