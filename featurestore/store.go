package featurestore

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrConflict is returned (wrapped) by Store.Save when another writer saved a patient's
// history since it was loaded. Reload, re-apply (Apply is idempotent) and save again.
var ErrConflict = errors.New("history changed since it was loaded")

// ConflictError lists the patients whose save lost a compare-and-set race.
type ConflictError struct{ Patients []string }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%d patient histories changed since they were loaded", len(e.Patients))
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Store loads and saves patient histories. Implementations must be safe for concurrent use.
// Load returns a history for every patient asked for (empty for unknown patients); a store
// that can hold unreadable histories (RedisStore) may instead return an *UnreadableError with
// the map, which then lacks only the patients the error lists as Newer. Save
// writes each history only if its Rev still matches the stored one, then increments Rev; the
// patients that lost that race are reported in a *ConflictError and left unsaved.
type Store interface {
	Load(ctx context.Context, patients []string) (map[string]*History, error)
	Save(ctx context.Context, histories map[string]*History) error
}

// MemoryStore is a Store in process memory, used to replay history into training sets and in
// unit tests. The zero value is ready to use.
type MemoryStore struct {
	mu sync.Mutex
	m  map[string]History
}

// Load implements Store. The returned histories are copies.
func (s *MemoryStore) Load(_ context.Context, patients []string) (map[string]*History, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*History, len(patients))
	for _, p := range patients {
		h := s.m[p]
		out[p] = &History{Rev: h.Rev, Facts: append([]Fact(nil), h.Facts...)}
	}
	return out, nil
}

// Save implements Store.
func (s *MemoryStore) Save(_ context.Context, hs map[string]*History) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]History{}
	}
	var conflicts []string
	for p, h := range hs {
		if s.m[p].Rev != h.Rev {
			conflicts = append(conflicts, p)
			continue
		}
		h.Rev++
		s.m[p] = History{Rev: h.Rev, Facts: append([]Fact(nil), h.Facts...)}
	}
	if conflicts != nil {
		return &ConflictError{Patients: conflicts}
	}
	return nil
}

// Len reports how many patients have a history.
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
