package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis layout. Every write is a hash field set to a value computed from the events
// alone, so a batch processed again after a crash writes exactly what it wrote before and no
// outcome is ever counted twice.
//
//	<prefix>{<patient>}:<appointment>  one hash per appointment: the served champion score
//	    ("c"), the score at booking ("b"), the shadow challenger's ("s"), the outcome ("o"),
//	    each with its booking version ("vc", "vb", "vs", "vo"), and the days the appointment
//	    is filed under ("ds", "dj"), so a reschedule to another day moves it
//	<prefix>scored:<YYYY-MM-DD>         appointments scored for that appointment date
//	<prefix>outcomes:<YYYY-MM-DD>       appointments of that date joined to their outcome
//	<prefix>days                        the appointment dates with any record (sorted set)
//
// Appointment hashes share the patient's hash tag, like the feature store's keys; the day
// hashes are one key each, so windows read at most a few hundred keys.

// applyScript sets one side of an appointment unless the stored one is for a later booking
// version, refreshes the expiry and returns the whole hash, atomically: whichever of a
// score and its outcome arrives second sees the other, even when two monitors handle them.
var applyScript = redis.NewScript(`
local v = tonumber(ARGV[3])
local cur = tonumber(redis.call('HGET', KEYS[1], 'v' .. ARGV[1]) or '-1')
if v >= cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], 'v' .. ARGV[1], ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('HGETALL', KEYS[1])
`)

// Store keeps the monitor's state in Redis.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	// retain is how long records are kept after they were last written: the 90-day window
	// and some slack.
	retain time.Duration
}

// DefaultPrefix starts every monitor key.
const DefaultPrefix = "dnamon:"

// DefaultRetain keeps records 100 days after they were last written.
const DefaultRetain = 100 * 24 * time.Hour

// NewStore returns a Store over rdb; an empty prefix takes DefaultPrefix.
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{rdb: rdb, prefix: prefix, retain: DefaultRetain}
}

// side is one fact about an appointment: a field of its hash and the booking version it
// belongs to.
type side struct {
	key     string // appointment hash
	field   string
	value   []byte
	version int
}

// apply writes the sides in order (pipelined) and returns, per appointment hash, the hash
// as it stood after that appointment's last write.
func (s *Store) apply(ctx context.Context, sides []side) (map[string]map[string]string, error) {
	if len(sides) == 0 {
		return nil, nil
	}
	if err := applyScript.Load(ctx, s.rdb).Err(); err != nil {
		return nil, fmt.Errorf("load monitor script: %w", err)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(sides))
	for i, sd := range sides {
		cmds[i] = applyScript.EvalSha(ctx, pipe, []string{sd.key}, sd.field, sd.value, sd.version, s.retain.Milliseconds())
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("monitor: record %d facts: %w", len(sides), err)
	}
	out := make(map[string]map[string]string, len(sides))
	for i, sd := range sides {
		vals, err := cmds[i].StringSlice()
		if err != nil {
			return nil, fmt.Errorf("monitor: record %s: %w", sd.field, err)
		}
		h := make(map[string]string, len(vals)/2)
		for j := 0; j+1 < len(vals); j += 2 {
			h[vals[j]] = vals[j+1]
		}
		out[sd.key] = h
	}
	return out, nil
}

// filing puts an appointment's record under its day, and takes it from the day it was filed
// under before when that differs.
type filing struct {
	key    string // appointment hash
	kind   string // "scored" or "outcomes"
	mark   string // the appointment hash field that remembers the day: "ds" or "dj"
	member string // the appointment's field in the day hash
	day    string
	old    string
	record []byte
}

func (s *Store) dayKey(kind, day string) string { return s.prefix + kind + ":" + day }

// file writes the filings in one round trip.
func (s *Store) file(ctx context.Context, fs []filing) error {
	if len(fs) == 0 {
		return nil
	}
	pipe := s.rdb.Pipeline()
	days := map[string]bool{}
	for _, f := range fs {
		if f.old != "" && f.old != f.day {
			pipe.HDel(ctx, s.dayKey(f.kind, f.old), f.member)
		}
		k := s.dayKey(f.kind, f.day)
		pipe.HSet(ctx, k, f.member, f.record)
		pipe.HSet(ctx, f.key, f.mark, f.day)
		if !days[k] {
			days[k] = true
			d, _ := time.Parse(time.DateOnly, f.day)
			// Relative to now, not to the day: a replay of last year's feed must not file
			// records under keys that expire at once.
			pipe.Expire(ctx, k, s.retain)
			pipe.ZAdd(ctx, s.prefix+"days", redis.Z{Score: float64(d.Unix() / 86400), Member: f.day})
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("monitor: file %d records: %w", len(fs), err)
	}
	return nil
}

// LatestDay returns the latest appointment date with an outcome, or "" when none.
func (s *Store) LatestDay(ctx context.Context) (string, error) {
	days, err := s.rdb.ZRevRange(ctx, s.prefix+"days", 0, -1).Result()
	if err != nil {
		return "", fmt.Errorf("monitor: read days: %w", err)
	}
	for _, d := range days {
		n, err := s.rdb.Exists(ctx, s.dayKey("outcomes", d)).Result()
		if err != nil {
			return "", fmt.Errorf("monitor: read days: %w", err)
		}
		if n > 0 {
			return d, nil
		}
	}
	return "", nil
}

// load reads the records of kind for the days from..to (inclusive, YYYY-MM-DD), decoding
// each with fn, day by day, in one round trip.
func (s *Store) load(ctx context.Context, kind string, from, to time.Time, fn func(day string, member string, v []byte) error) error {
	pipe := s.rdb.Pipeline()
	var days []string
	var cmds []*redis.MapStringStringCmd
	for d := from; !d.After(to); d = d.AddDate(0, 0, 1) {
		day := d.Format(time.DateOnly)
		days = append(days, day)
		cmds = append(cmds, pipe.HGetAll(ctx, s.dayKey(kind, day)))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("monitor: read %s records: %w", kind, err)
	}
	for i, c := range cmds {
		for member, v := range c.Val() {
			if err := fn(days[i], member, []byte(v)); err != nil {
				return fmt.Errorf("monitor: %s record %s of %s: %w", kind, member, days[i], err)
			}
		}
	}
	return nil
}

// decode is json.Unmarshal for stored records, which this package wrote.
func decode(v []byte, into any) error { return json.Unmarshal(v, into) }

// appointmentKey is the hash of one appointment, in its patient's slot.
func (s *Store) appointmentKey(patient, appointment string) string {
	return s.prefix + "{" + patient + "}:" + appointment
}

// memberOf names an appointment in a day hash: patient pseudonym and appointment id (ids are
// unique per PAS, not across patients of a merged feed).
func memberOf(patient, appointment string) string {
	return patient[:min(len(patient), 16)] + ":" + strings.ReplaceAll(appointment, "\n", " ")
}
