package pas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/events"
)

// Facts are the booking facts whose change makes a new booking version: what the scorer's
// features use, plus the patient.
type Facts struct {
	Patient    string `json:"p"`
	Start      int64  `json:"s"` // unix seconds
	Specialty  string `json:"sp"`
	Clinic     string `json:"c"`
	FirstVisit bool   `json:"f"`
}

func factsOf(patient string, b *events.Booking) Facts {
	return Facts{Patient: patient, Start: b.Start.Unix(), Specialty: b.Specialty, Clinic: b.Clinic, FirstVisit: b.FirstVisit}
}

// State is what the gateway remembers about one appointment.
type State struct {
	// Rev counts saves, for compare-and-set; 0 for an appointment never saved.
	Rev int64 `json:"-"`
	// Version is the latest booking version published; 0 if no booking was published.
	Version   int    `json:"v"`
	Facts     Facts  `json:"f"`
	Patient   string `json:"p"`
	Cancelled bool   `json:"x,omitempty"`
	// Fields are the merged source fields of the latest booking message (Change.Fields), onto
	// which the next update is laid.
	Fields Fields `json:"fl,omitempty"`
}

// ErrConflict is returned (wrapped) by Tracker.Save when the state changed since it was
// loaded: another gateway instance handled the same appointment at the same time.
var ErrConflict = errors.New("appointment state changed since it was loaded")

// Tracker keeps the State of each appointment. Implementations must be safe for concurrent
// use. Load returns the zero State for an unknown appointment. Save stores st only if the
// stored Rev still equals st.Rev, and otherwise returns an error wrapping ErrConflict.
type Tracker interface {
	Load(ctx context.Context, appointment string) (State, error)
	Save(ctx context.Context, appointment string, st State) error
}

// RedisTracker keeps states in Redis (standalone or Cluster): one hash per appointment,
// "<prefix>pas:appt:<appointment id>", fields rev and state, expiring TTL after its last
// change. Appointment ids are PAS identifiers, not personal data; no patient identifier
// other than the pseudonym is stored.
type RedisTracker struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
}

// NewRedisTracker returns a Tracker over rdb. prefix defaults to "dna:" and ttl to three
// years (an appointment can be booked a year or more ahead and corrected long after).
func NewRedisTracker(rdb redis.UniversalClient, prefix string, ttl time.Duration) *RedisTracker {
	if prefix == "" {
		prefix = "dna:"
	}
	if ttl <= 0 {
		ttl = 3 * 365 * 24 * time.Hour
	}
	return &RedisTracker{rdb: rdb, prefix: prefix, ttl: ttl}
}

// Key returns the Redis key of an appointment's state.
func (t *RedisTracker) Key(appointment string) string { return t.prefix + "pas:appt:" + appointment }

// Load implements Tracker.
func (t *RedisTracker) Load(ctx context.Context, appointment string) (State, error) {
	vals, err := t.rdb.HMGet(ctx, t.Key(appointment), "rev", "state").Result()
	if err != nil {
		return State{}, err
	}
	var st State
	if rev, ok := vals[0].(string); ok {
		if st.Rev, err = strconv.ParseInt(rev, 10, 64); err != nil {
			return State{}, fmt.Errorf("state %s: bad rev", t.Key(appointment))
		}
	}
	if s, ok := vals[1].(string); ok {
		if err := json.Unmarshal([]byte(s), &st); err != nil {
			return State{}, fmt.Errorf("state %s: %w", t.Key(appointment), err)
		}
	}
	return st, nil
}

// saveScript writes the state only if rev is unchanged: KEYS[1]; ARGV expected rev, new rev,
// state JSON, TTL in ms. Returns 1 on success, 0 on conflict.
var saveScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'rev')
if (cur or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'state', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

// Save implements Tracker.
func (t *RedisTracker) Save(ctx context.Context, appointment string, st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	ok, err := saveScript.Run(ctx, t.rdb, []string{t.Key(appointment)},
		strconv.FormatInt(st.Rev, 10), strconv.FormatInt(st.Rev+1, 10), b, t.ttl.Milliseconds()).Int()
	if err != nil {
		return err
	}
	if ok != 1 {
		return fmt.Errorf("appointment %s: %w", appointment, ErrConflict)
	}
	return nil
}

// MemoryTracker is a Tracker in process memory, for tests and the embedded demo. The zero
// value is ready to use.
type MemoryTracker struct {
	mu sync.Mutex
	m  map[string]State
}

// Load implements Tracker.
func (t *MemoryTracker) Load(_ context.Context, appointment string) (State, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[appointment], nil
}

// Save implements Tracker.
func (t *MemoryTracker) Save(_ context.Context, appointment string, st State) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]State{}
	}
	if t.m[appointment].Rev != st.Rev {
		return fmt.Errorf("appointment %s: %w", appointment, ErrConflict)
	}
	st.Rev++
	t.m[appointment] = st
	return nil
}
