package featurestore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore keeps histories in Redis (standalone, Sentinel or Cluster through
// redis.UniversalClient). Each patient is one hash, "<prefix>{<pseudonym>}:history", with
// fields rev, facts (compact binary, codec.go) and codec (its format version); the braces are a Redis Cluster hash tag, so every key of one patient
// lands in one slot. Loads and saves are pipelined: one round trip per batch.
type RedisStore struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	ttlArg string // ttl in ms, as casScript takes it
	// scriptLoaded is cleared when Redis answers NOSCRIPT (after a restart or failover), so
	// the next Save loads the script again instead of paying a round trip every batch.
	scriptLoaded atomic.Bool
	// perKey is set when one address answered CROSSSLOT to a many-key save: a proxy in front
	// of a cluster (as some managed Redis services are) that enforces its slots. From then on
	// every save call carries one history, as on a Cluster.
	perKey atomic.Bool
}

// RedisOptions configures a RedisStore.
type RedisOptions struct {
	// Prefix starts every key. Default "dna:".
	Prefix string
	// TTL expires a patient's history this long after its last update; it should be at least
	// Policy.Retention. Default three years.
	TTL time.Duration
}

func (o RedisOptions) withDefaults() RedisOptions {
	if o.Prefix == "" {
		o.Prefix = "dna:"
	}
	if o.TTL <= 0 {
		o.TTL = defaultRetentionDur
	}
	return o
}

// NewRedisStore returns a Store over rdb.
func NewRedisStore(rdb redis.UniversalClient, o RedisOptions) *RedisStore {
	o = o.withDefaults()
	return &RedisStore{rdb: rdb, prefix: o.Prefix, ttl: o.TTL, ttlArg: strconv.FormatInt(o.TTL.Milliseconds(), 10)}
}

// Key returns the Redis key of a patient's history.
func (s *RedisStore) Key(patient string) string {
	return s.prefix + "{" + patient + "}:history"
}

// casScript writes each history only if its rev is unchanged: KEYS the history keys; ARGV[1]
// TTL in ms, ARGV[2] format version of the facts, then three per key: expected rev, new rev,
// facts (binary). Returns one result per key: 1 saved, 0 conflict (rev changed), -1 the stored
// history is in a newer format than ARGV[2]: an older binary never overwrites what a newer one
// wrote, even if it somehow saw the same rev. Each key is its own compare-and-set, exactly as
// if it were alone; a call carries many keys only to pay Lua's per-call cost once (Save). The
// codec field is kept only for versions above 1 (absent means 1), so reading version 1 costs
// no more.
var casScript = redis.NewScript(`
local ttl, ver = ARGV[1], ARGV[2]
local nver = tonumber(ver)
local out = {}
for i, key in ipairs(KEYS) do
  local a = 3 * i
  local cur = redis.call('HMGET', key, 'rev', 'codec')
  local v = tonumber(cur[2] or '1')
  if (cur[1] or '0') ~= ARGV[a] then
    out[i] = 0
  elseif v ~= nil and v > nver then
    out[i] = -1
  else
    redis.call('HSET', key, 'rev', ARGV[a + 1], 'facts', ARGV[a + 2])
    if ver ~= '1' then redis.call('HSET', key, 'codec', ver) elseif cur[2] then redis.call('HDEL', key, 'codec') end
    redis.call('PEXPIRE', key, ttl)
    out[i] = 1
  end
end
return out
`)

// saveChunk is the most histories one casScript call saves: enough that Lua's per-call cost
// is spread thin, few enough that one call holds Redis for well under a millisecond.
const saveChunk = 128

// quarantineScript moves an unreadable history aside, if it is still what was read: KEYS[1]
// history key, KEYS[2] quarantine key (same hash tag, so the same Cluster slot); ARGV[1] "hash"
// if a hash was read (else the key held another type), ARGV[2..4] rev, facts and codec as read
// ("" for none), ARGV[5] TTL in ms for a value that had none. Returns 1 when moved, 0 if the
// history changed since it was read (or is gone), -1 if KEYS[2] exists. RENAME keeps the
// value's bytes and its expiry, so a quarantined history is kept no longer than it would
// have been.
var quarantineScript = redis.NewScript(`
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return 0 end
if ARGV[1] == 'hash' then
  if t ~= 'hash' then return 0 end
  local cur = redis.call('HMGET', KEYS[1], 'rev', 'facts', 'codec')
  if (cur[1] or '') ~= ARGV[2] or (cur[2] or '') ~= ARGV[3] or (cur[3] or '') ~= ARGV[4] then return 0 end
elseif t == 'hash' then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('RENAME', KEYS[1], KEYS[2])
if redis.call('PTTL', KEYS[2]) < 0 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
return 1
`)

// Quarantine is a stored history that could not be read and was moved aside, bytes intact,
// so that its patient's history starts again empty and the scorer carries on.
type Quarantine struct {
	// Patient is the pseudonym.
	Patient string
	// Key is where the unreadable value now is:
	// "<prefix>{<pseudonym>}:history:quarantine:<unix seconds>" (".N" appended if taken).
	Key string
	// Reason says what was wrong with it; it never quotes the stored bytes.
	Reason error
}

// UnreadableError is what Load returns, together with a usable map, when some patients'
// stored histories could not be read. Quarantined histories were corrupt: they were moved
// aside (Quarantine) and the map holds a fresh, empty history for each. Newer histories were
// written in a format version this binary does not read (ErrNewerFormat): they are left
// untouched and are absent from the map; their patients' events must wait for a binary that
// reads them. Every other patient asked for is in the map as usual.
type UnreadableError struct {
	Quarantined []Quarantine
	Newer       []string
}

func (e *UnreadableError) Error() string {
	return fmt.Sprintf("unreadable histories: %d quarantined, %d in a newer format", len(e.Quarantined), len(e.Newer))
}

// Unwrap makes errors.Is(err, ErrNewerFormat) true when some history is in a newer format.
func (e *UnreadableError) Unwrap() error {
	if len(e.Newer) > 0 {
		return ErrNewerFormat
	}
	return nil
}

// QuarantineKey returns the key an unreadable history of patient moves to at time at.
func (s *RedisStore) QuarantineKey(patient string, at time.Time) string {
	return s.Key(patient) + ":quarantine:" + strconv.FormatInt(at.Unix(), 10)
}

// The fields of a history hash, as HMGET arguments.
var fieldRev, fieldFacts, fieldCodec any = "rev", "facts", "codec"

// maxQuarantineRereads bounds how often Load reads a patient again because its unreadable
// history changed between the read and the move aside.
const maxQuarantineRereads = 3

// Load implements Store with one pipelined HMGET per patient. A history that cannot be read
// does not fail the load: see UnreadableError.
func (s *RedisStore) Load(ctx context.Context, patients []string) (map[string]*History, error) {
	out := make(map[string]*History, len(patients))
	var unreadable UnreadableError
	todo := patients
	for attempt := 0; len(todo) > 0; attempt++ {
		if attempt > maxQuarantineRereads {
			return nil, fmt.Errorf("history %s: unreadable and changing while being quarantined", s.Key(todo[0]))
		}
		bad, err := s.load(ctx, todo, out, &unreadable)
		if err != nil {
			return nil, err
		}
		todo = nil
		for _, b := range bad {
			key, moved, err := s.quarantine(ctx, b)
			if err != nil {
				return nil, err
			}
			if !moved { // changed since read: read it again
				todo = append(todo, b.patient)
				continue
			}
			out[b.patient] = &History{}
			unreadable.Quarantined = append(unreadable.Quarantined, Quarantine{Patient: b.patient, Key: key, Reason: b.reason})
		}
	}
	if unreadable.Quarantined != nil || unreadable.Newer != nil {
		return out, &unreadable
	}
	return out, nil
}

// unreadable is a history that could not be read, as it was read.
type unreadable struct {
	patient          string
	hash             bool // false: the key holds another Redis type
	rev, facts, code string
	reason           error
}

// load reads patients into out, adding those in a newer format to u.Newer and returning the
// corrupt ones.
func (s *RedisStore) load(ctx context.Context, patients []string, out map[string]*History, u *UnreadableError) ([]unreadable, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(patients))
	for i, p := range patients {
		// HMGET built by hand with the field names boxed once: reading the codec field adds
		// no allocation per patient (BenchmarkStageRedisLoad).
		cmds[i] = redis.NewSliceCmd(ctx, "hmget", s.Key(p), fieldRev, fieldFacts, fieldCodec)
		_ = pipe.Process(ctx, cmds[i]) // queued; errors come from Exec and the command
	}
	if _, err := pipe.Exec(ctx); err != nil {
		// A key of another type fails only its own command; anything else fails the load.
		wrongType := false
		for _, c := range cmds {
			switch e := c.Err(); {
			case e == nil:
			case redis.HasErrorPrefix(e, "WRONGTYPE"):
				wrongType = true
			default:
				return nil, fmt.Errorf("load %d histories: %w", len(patients), e)
			}
		}
		if !wrongType {
			return nil, fmt.Errorf("load %d histories: %w", len(patients), err)
		}
	}
	var bad []unreadable
	for i, p := range patients {
		if err := cmds[i].Err(); err != nil {
			bad = append(bad, unreadable{patient: p, reason: fmt.Errorf("%w: key is not a hash", errCorrupt)})
			continue
		}
		vals := cmds[i].Val()
		h, err := decodeHistory(vals)
		switch {
		case errors.Is(err, ErrNewerFormat):
			u.Newer = append(u.Newer, p)
		case err != nil:
			rev, _ := vals[0].(string)
			facts, _ := vals[1].(string)
			code, _ := vals[2].(string)
			bad = append(bad, unreadable{patient: p, hash: true, rev: rev, facts: facts, code: code, reason: err})
		default:
			out[p] = h
		}
	}
	return bad, nil
}

// decodeHistory decodes the rev, facts and codec fields of a stored history.
func decodeHistory(vals []any) (*History, error) {
	h := &History{}
	v, err := formatVersion(vals[2])
	if err != nil {
		return nil, err
	}
	if rev, ok := vals[0].(string); ok {
		n, err := strconv.ParseInt(rev, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: rev is not a count", errCorrupt)
		}
		h.Rev = n
	}
	if facts, ok := vals[1].(string); ok {
		if len(facts) > 0 && int(facts[0]) != v {
			return nil, fmt.Errorf("%w: facts in format %d, codec field says %d", errCorrupt, facts[0], v)
		}
		if h.Facts, err = decodeFacts(facts); err != nil {
			return nil, err
		}
		h.enc, h.encN = facts, len(h.Facts)
	}
	return h, nil
}

// quarantine moves b's history aside, reporting where, or moved false if it changed since it
// was read.
func (s *RedisStore) quarantine(ctx context.Context, b unreadable) (key string, moved bool, err error) {
	kind := "other"
	if b.hash {
		kind = "hash"
	}
	base := s.QuarantineKey(b.patient, time.Now())
	key = base
	for n := 1; ; n++ {
		r, err := quarantineScript.Run(ctx, s.rdb, []string{s.Key(b.patient), key}, kind, b.rev, b.facts, b.code, s.ttl.Milliseconds()).Int()
		if err != nil {
			return "", false, fmt.Errorf("quarantine history %s: %w", s.Key(b.patient), err)
		}
		if r != -1 {
			return key, r == 1, nil
		}
		key = base + "." + strconv.Itoa(n)
	}
}

// Save implements Store with one pipelined round trip of compare-and-set script calls. On
// one Redis (standalone, or a Sentinel-managed primary) a call saves up to saveChunk
// histories, so Redis runs the script a few times a batch instead of once a patient (a
// third less Redis CPU per history, BenchmarkStageRedisSave). A Cluster cannot run one
// script over keys in different slots, and a batch's patients are in as many slots as
// there are patients, so there each call saves one history; so does a single address that
// turns out to enforce slots (it answers CROSSSLOT, before running anything, and the
// histories of those calls are saved again one a call).
func (s *RedisStore) Save(ctx context.Context, hs map[string]*History) error {
	if len(hs) == 0 {
		return nil
	}
	if !s.scriptLoaded.Load() {
		if err := s.loadScript(ctx); err != nil {
			return err
		}
		s.scriptLoaded.Store(true)
	}
	chunk := saveChunk
	if _, single := s.rdb.(*redis.Client); !single || s.perKey.Load() {
		chunk = 1
	}
	type call struct {
		patients []string
		cmd      *redis.Cmd
	}
	var (
		pipe  = s.rdb.Pipeline()
		arena = getArena()
		calls = make([]call, 0, (len(hs)+chunk-1)/chunk)
		order = make([]string, 0, len(hs))
		keys  []string
		args  []any
	)
	flush := func() {
		calls = append(calls, call{order[len(order)-len(keys):], casScript.EvalSha(ctx, pipe, keys, args...)})
		keys, args = nil, nil
	}
	for p, h := range hs {
		if keys == nil {
			keys = make([]string, 0, min(chunk, len(hs)-len(order)))
			args = make([]any, 2, 2+3*cap(keys))
			args[0], args[1] = s.ttlArg, codecVersion
		}
		order = append(order, p)
		keys = append(keys, s.Key(p))
		start := len(*arena)
		*arena = h.appendEncoding(*arena)
		args = append(args, strconv.FormatInt(h.Rev, 10), strconv.FormatInt(h.Rev+1, 10), (*arena)[start:len(*arena):len(*arena)])
		if len(keys) == chunk {
			flush()
		}
	}
	if keys != nil {
		flush()
	}
	_, _ = pipe.Exec(ctx) // errors are per command, read below
	putArena(arena)       // the calls' arguments are written: the encodings are no longer read
	var (
		conflicts []string
		again     map[string]*History // refused with CROSSSLOT: nothing of theirs was written
	)
	for _, c := range calls {
		rs, err := c.cmd.Int64Slice()
		if err == nil && len(rs) != len(c.patients) {
			err = fmt.Errorf("redis answered %d results for %d histories", len(rs), len(c.patients))
		}
		if len(c.patients) > 1 && redis.HasErrorPrefix(err, "CROSSSLOT") {
			s.perKey.Store(true)
			if again == nil {
				again = make(map[string]*History)
			}
			for _, p := range c.patients {
				again[p] = hs[p]
			}
			continue
		}
		if err != nil {
			if redis.HasErrorPrefix(err, "NOSCRIPT") {
				s.scriptLoaded.Store(false)
			}
			return fmt.Errorf("save history %s: %w", s.Key(c.patients[0]), err)
		}
		for i, r := range rs {
			p := c.patients[i]
			switch r {
			case 1:
				hs[p].Rev++
			case -1:
				return fmt.Errorf("save history %s: %w: not overwritten", s.Key(p), ErrNewerFormat)
			default:
				conflicts = append(conflicts, p)
			}
		}
	}
	if again != nil {
		var ce *ConflictError
		if err := s.Save(ctx, again); err != nil && !errors.As(err, &ce) {
			return err
		} else if ce != nil {
			conflicts = append(conflicts, ce.Patients...)
		}
	}
	if conflicts != nil {
		return &ConflictError{Patients: conflicts}
	}
	return nil
}

// arenas holds the buffers Save encodes a batch's histories into, one after the other, so a
// batch costs one buffer, reused by the batches after it, instead of one allocation per
// history (the encodings were an eighth of the bytes the consumer allocated,
// docs/performance.md).
var arenas sync.Pool

// maxArena is the largest buffer kept for reuse; a larger one (a huge batch) is left to the
// collector.
const maxArena = 8 << 20

func getArena() *[]byte {
	if b, ok := arenas.Get().(*[]byte); ok {
		*b = (*b)[:0]
		return b
	}
	return new([]byte)
}

func putArena(b *[]byte) {
	if cap(*b) <= maxArena {
		arenas.Put(b)
	}
}

func (s *RedisStore) loadScript(ctx context.Context) error {
	var err error
	if c, ok := s.rdb.(*redis.ClusterClient); ok {
		err = c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
			return casScript.Load(ctx, n).Err()
		})
	} else {
		err = casScript.Load(ctx, s.rdb).Err()
	}
	if err != nil {
		return fmt.Errorf("load history script into redis: %w", err)
	}
	return nil
}
