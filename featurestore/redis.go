package featurestore

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore keeps histories in Redis (standalone, Sentinel or Cluster through
// redis.UniversalClient). Each patient is one hash, "<prefix>{<pseudonym>}:history", with
// fields rev and facts (compact binary, codec.go); the braces are a Redis Cluster hash tag, so every key of one patient
// lands in one slot. Loads and saves are pipelined: one round trip per batch.
type RedisStore struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	// scriptLoaded is cleared when Redis answers NOSCRIPT (after a restart or failover), so
	// the next Save loads the script again instead of paying a round trip every batch.
	scriptLoaded atomic.Bool
}

// RedisOptions configures a RedisStore.
type RedisOptions struct {
	// Prefix starts every key. Default "dna:".
	Prefix string
	// TTL expires a patient's history this long after its last update; it should be at least
	// Policy.Retention. Default three years.
	TTL time.Duration
}

// NewRedisStore returns a Store over rdb.
func NewRedisStore(rdb redis.UniversalClient, o RedisOptions) *RedisStore {
	if o.Prefix == "" {
		o.Prefix = "dna:"
	}
	if o.TTL <= 0 {
		o.TTL = defaultRetentionDur
	}
	return &RedisStore{rdb: rdb, prefix: o.Prefix, ttl: o.TTL}
}

// Key returns the Redis key of a patient's history.
func (s *RedisStore) Key(patient string) string {
	return s.prefix + "{" + patient + "}:history"
}

// casScript writes the history only if rev is unchanged: KEYS[1] history key; ARGV expected
// rev, new rev, facts JSON, TTL in ms. Returns 1 on success, 0 on conflict.
var casScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'rev')
if (cur or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'facts', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

// Load implements Store with one pipelined HMGET per patient.
func (s *RedisStore) Load(ctx context.Context, patients []string) (map[string]*History, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(patients))
	for i, p := range patients {
		cmds[i] = pipe.HMGet(ctx, s.Key(p), "rev", "facts")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("load %d histories: %w", len(patients), err)
	}
	out := make(map[string]*History, len(patients))
	for i, p := range patients {
		vals := cmds[i].Val()
		h := &History{}
		if rev, ok := vals[0].(string); ok {
			n, err := strconv.ParseInt(rev, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("history %s: bad rev %q", s.Key(p), rev)
			}
			h.Rev = n
		}
		if facts, ok := vals[1].(string); ok {
			var err error
			if h.Facts, err = decodeFacts([]byte(facts)); err != nil {
				return nil, fmt.Errorf("history %s: %w", s.Key(p), err)
			}
		}
		out[p] = h
	}
	return out, nil
}

// Save implements Store with one pipelined compare-and-set script call per patient.
func (s *RedisStore) Save(ctx context.Context, hs map[string]*History) error {
	if len(hs) == 0 {
		return nil
	}
	ttl := strconv.FormatInt(s.ttl.Milliseconds(), 10)
	if !s.scriptLoaded.Load() {
		if err := s.loadScript(ctx); err != nil {
			return err
		}
		s.scriptLoaded.Store(true)
	}
	pipe := s.rdb.Pipeline()
	type pending struct {
		patient string
		h       *History
		cmd     *redis.Cmd
	}
	ps := make([]pending, 0, len(hs))
	for p, h := range hs {
		facts := appendFacts(nil, h.Facts)
		cmd := casScript.EvalSha(ctx, pipe, []string{s.Key(p)},
			strconv.FormatInt(h.Rev, 10), strconv.FormatInt(h.Rev+1, 10), facts, ttl)
		ps = append(ps, pending{p, h, cmd})
	}
	_, _ = pipe.Exec(ctx) // errors are per command, read below
	var conflicts []string
	for _, x := range ps {
		ok, err := x.cmd.Int()
		if err != nil {
			if redis.HasErrorPrefix(err, "NOSCRIPT") {
				s.scriptLoaded.Store(false)
			}
			return fmt.Errorf("save history %s: %w", s.Key(x.patient), err)
		}
		if ok == 1 {
			x.h.Rev++
		} else {
			conflicts = append(conflicts, x.patient)
		}
	}
	if conflicts != nil {
		return &ConflictError{Patients: conflicts}
	}
	return nil
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
