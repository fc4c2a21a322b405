// Package stream is the Kafka runtime every service shares: consumer-group readers with
// explicit commits, the batch loop with retry and backoff (Run), acks=all writers, topic
// administration and lag, and the TLS/SASL options; it knows nothing of scoring.
package stream
