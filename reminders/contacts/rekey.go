package contacts

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// RekeyReport counts what Rekey found.
type RekeyReport struct {
	Records int // contact records scanned
	Rekeyed int // phones re-encrypted under the current key (or that would be, in a dry run)
	Current int // phones already under the current key
	NoPhone int // records holding only an opt-out
	Changed int // phones a writer replaced while they were being re-keyed (run Rekey again to check them)
	// Failed are phones that decrypt under no key given (their record's key, with the reason);
	// they stay as they are, and the dispatcher treats them as "no contact details".
	Failed []string
}

// rekeyScript replaces the phone only if it still holds what was read, so a number the
// gateway writes meanwhile is never overwritten with an older one.
var rekeyScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'phone') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'phone', ARGV[2])
  return 1
end
return 0`)

// Rekey re-encrypts under the current key every stored phone sealed under a previous one (or
// in the v1 format), while the gateway and dispatchers keep running: each record is replaced
// only if unchanged since it was read. With dryRun it only counts. It scans every primary of
// a Redis Cluster.
func (s *Store) Rekey(ctx context.Context, dryRun bool) (RekeyReport, error) {
	var (
		mu  sync.Mutex // ForEachMaster scans the primaries concurrently
		rep RekeyReport
	)
	match := globEscape(s.prefix) + "{*}:contact"
	scan := func(ctx context.Context, c redis.UniversalClient) error {
		var part RekeyReport
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			rep.add(part)
		}()
		it := c.Scan(ctx, 0, match, 500).Iterator()
		for it.Next(ctx) {
			if err := s.rekeyOne(ctx, it.Val(), dryRun, &part); err != nil {
				return err
			}
		}
		return it.Err()
	}
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, s.rdb)
	}
	return rep, err
}

func (r *RekeyReport) add(o RekeyReport) {
	r.Records += o.Records
	r.Rekeyed += o.Rekeyed
	r.Current += o.Current
	r.NoPhone += o.NoPhone
	r.Changed += o.Changed
	r.Failed = append(r.Failed, o.Failed...)
}

func (s *Store) rekeyOne(ctx context.Context, key string, dryRun bool, rep *RekeyReport) error {
	patient, okPrefix := strings.CutPrefix(key, s.prefix+"{")
	patient, okSuffix := strings.CutSuffix(patient, "}:contact")
	if !okPrefix || !okSuffix {
		return nil
	}
	rep.Records++
	sealed, err := s.rdb.HGet(ctx, key, "phone").Result()
	switch {
	case err == redis.Nil || err == nil && sealed == "":
		rep.NoPhone++
		return nil
	case err != nil:
		return fmt.Errorf("read contact %s: %w", key, err)
	case s.sealedUnderCurrent(sealed):
		rep.Current++
		return nil
	}
	p, err := s.open(patient, sealed)
	if err != nil {
		rep.Failed = append(rep.Failed, fmt.Sprintf("patient %s: %v", patient, err))
		return nil
	}
	if dryRun {
		rep.Rekeyed++
		return nil
	}
	n, err := rekeyScript.Run(ctx, s.rdb, []string{key}, sealed, s.seal(patient, p)).Int()
	if err != nil {
		return fmt.Errorf("re-key contact %s: %w", key, err)
	}
	if n == 1 {
		rep.Rekeyed++
	} else {
		rep.Changed++
	}
	return nil
}

// globEscape quotes the characters SCAN MATCH treats as patterns.
func globEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`, "]", `\]`).Replace(s)
}
