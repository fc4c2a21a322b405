package featurestore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// OpenBookings keeps each patient's open bookings — the latest booking event of every
// appointment not yet cancelled or concluded, exactly as received — so that when an outcome
// or a cancellation changes the patient's history, the scorer can score those bookings again
// with what is known now. One hash per patient, "<prefix>{<pseudonym>}:open", appointment
// id → event bytes, in the slot of the patient's history; it expires with the history.
type OpenBookings struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
}

// NewOpenBookings returns the open-bookings store over rdb, with the history's options.
func NewOpenBookings(rdb redis.UniversalClient, o RedisOptions) *OpenBookings {
	o = o.withDefaults()
	return &OpenBookings{rdb: rdb, prefix: o.Prefix, ttl: o.TTL}
}

// Key returns the Redis key of a patient's open bookings.
func (s *OpenBookings) Key(patient string) string { return s.prefix + "{" + patient + "}:open" }

// Load returns the open bookings of patients (appointment id → event bytes), in one round
// trip; a patient without any is absent.
func (s *OpenBookings) Load(ctx context.Context, patients []string) (map[string]map[string][]byte, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(patients))
	for i, p := range patients {
		cmds[i] = pipe.HGetAll(ctx, s.Key(p))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, fmt.Errorf("load open bookings of %d patients: %w", len(patients), err)
	}
	out := make(map[string]map[string][]byte, len(patients))
	for i, p := range patients {
		m := cmds[i].Val()
		if len(m) == 0 {
			continue
		}
		open := make(map[string][]byte, len(m))
		for appt, v := range m {
			open[appt] = []byte(v)
		}
		out[p] = open
	}
	return out, nil
}

// Update records bookings (patient → appointment id → event bytes) and forgets closed
// appointments (patient → appointment ids), in one round trip. Both are idempotent, so a
// batch processed again after a crash writes the same.
func (s *OpenBookings) Update(ctx context.Context, put map[string]map[string][]byte, closed map[string][]string) error {
	if len(put) == 0 && len(closed) == 0 {
		return nil
	}
	pipe := s.rdb.Pipeline()
	for p, appts := range closed {
		if len(appts) > 0 {
			pipe.HDel(ctx, s.Key(p), appts...)
		}
	}
	for p, bookings := range put {
		if len(bookings) == 0 {
			continue // booked and closed in the same batch
		}
		args := make([]any, 0, 2*len(bookings))
		for appt, v := range bookings {
			args = append(args, appt, v)
		}
		pipe.HSet(ctx, s.Key(p), args...)
		pipe.PExpire(ctx, s.Key(p), s.ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("update open bookings: %w", err)
	}
	return nil
}
