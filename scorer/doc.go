// Package scorer is the DNA scorer's batch step: decode appointment events, enrich bookings
// with point-in-time features from the feature store, score them, publish risk events and dead
// letters, and save histories — all idempotent, so stream.Run may hand it a batch again.
package scorer
