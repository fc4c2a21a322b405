package featurestore_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/testenv"
)

// newerFormat is a history as a binary one codec version ahead would write it: the codec
// field and the first byte say 2, and the rest is nothing this binary can decode.
var newerFormat = map[string]any{"rev": "7", "codec": "2", "facts": "\x02\x03future-bytes\xff"}

// testUnreadable: one Load over several patients, some of whose stored histories cannot be
// read. The readable ones load; corrupt ones are moved, bytes intact, to a quarantine key in
// the same slot and start again empty; one in a newer format is reported and left untouched,
// and a save over it is refused.
func testUnreadable(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	s := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: uniquePrefix(t), TTL: time.Hour})
	good, garbage, badRev, wrongType, newer, unknown := pat(1), pat(2), pat(3), pat(4), pat(5), pat(6)

	hs, err := s.Load(ctx, []string{good})
	if err != nil {
		t.Fatal(err)
	}
	ev := events.Appointment{Type: events.DidNotAttend, AppointmentID: "A1", Version: 1, EventTime: time.Now()}
	hs[good].Apply(&ev, featurestore.Policy{})
	if err := s.Save(ctx, hs); err != nil {
		t.Fatal(err)
	}
	garbageBytes := "\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01not a history"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(rdb.HSet(ctx, s.Key(garbage), "rev", "3", "facts", garbageBytes).Err())
	must(rdb.Expire(ctx, s.Key(garbage), time.Hour).Err())
	must(rdb.HSet(ctx, s.Key(badRev), "rev", "three", "facts", "").Err())
	must(rdb.Set(ctx, s.Key(wrongType), "a string, not a hash", 0).Err())
	must(rdb.HSet(ctx, s.Key(newer), newerFormat).Err())
	for _, p := range []string{badRev, newer} { // the others get one from the store
		must(rdb.Expire(ctx, s.Key(p), time.Hour).Err())
	}

	before := time.Now().Unix()
	all := []string{good, garbage, badRev, wrongType, newer, unknown}
	got, err := s.Load(ctx, all)
	var u *featurestore.UnreadableError
	if !errors.As(err, &u) {
		t.Fatalf("Load error %v, want an *UnreadableError", err)
	}
	if !errors.Is(err, featurestore.ErrNewerFormat) {
		t.Fatalf("%v does not say a history is in a newer format", err)
	}

	// The readable patients load as usual.
	if h := got[good]; h == nil || h.Rev != 1 || len(h.Facts) != 1 || h.Facts[0].Appointment != "A1" {
		t.Fatalf("good patient loaded %+v", got[good])
	}
	if h := got[unknown]; h == nil || h.Rev != 0 || len(h.Facts) != 0 {
		t.Fatalf("unknown patient loaded %+v", got[unknown])
	}

	// The newer one is reported, absent from the map and untouched.
	if !slices.Equal(u.Newer, []string{newer}) {
		t.Fatalf("Newer = %v, want [%s]", u.Newer, newer)
	}
	if _, ok := got[newer]; ok {
		t.Fatal("a history in a newer format is in the map")
	}
	assertUntouched(t, rdb, s.Key(newer))

	// The corrupt ones are quarantined with their bytes, and start again empty.
	quarantined := map[string]featurestore.Quarantine{}
	for _, q := range u.Quarantined {
		quarantined[q.Patient] = q
	}
	if len(quarantined) != 3 || len(u.Quarantined) != 3 {
		t.Fatalf("quarantined %+v, want garbage, bad rev and wrong type", u.Quarantined)
	}
	for _, p := range []string{garbage, badRev, wrongType} {
		q, ok := quarantined[p]
		if !ok {
			t.Fatalf("patient %s not quarantined", p)
		}
		if h := got[p]; h == nil || h.Rev != 0 || len(h.Facts) != 0 {
			t.Fatalf("quarantined patient %s loaded %+v, want a fresh history", p, got[p])
		}
		prefix := s.Key(p) + ":quarantine:"
		if !strings.HasPrefix(q.Key, prefix) {
			t.Fatalf("quarantine key %q, want %s<unix-ts>", q.Key, prefix)
		}
		if ts, err := strconv.ParseInt(q.Key[len(prefix):], 10, 64); err != nil || ts < before || ts > time.Now().Unix() {
			t.Fatalf("quarantine key %q: want the unix time of the load after %s", q.Key, prefix)
		}
		if n := rdb.Exists(ctx, s.Key(p)).Val(); n != 0 {
			t.Fatalf("history key of quarantined patient %s still exists", p)
		}
		if ttl := rdb.PTTL(ctx, q.Key).Val(); ttl <= 0 || ttl > time.Hour {
			t.Fatalf("quarantine key %s has TTL %v, want (0, 1h]", q.Key, ttl)
		}
		if q.Reason == nil || strings.Contains(q.Reason.Error(), "not a history") || strings.Contains(q.Reason.Error(), "three") {
			t.Fatalf("reason %v: missing or quoting the stored bytes", q.Reason)
		}
	}
	if got := rdb.HGetAll(ctx, quarantined[garbage].Key).Val(); got["facts"] != garbageBytes || got["rev"] != "3" {
		t.Fatalf("quarantined garbage holds %q, want the raw bytes", got)
	}
	if got := rdb.HGet(ctx, quarantined[badRev].Key, "rev").Val(); got != "three" {
		t.Fatalf("quarantined bad rev holds %q", got)
	}
	if got := rdb.Get(ctx, quarantined[wrongType].Key).Val(); got != "a string, not a hash" {
		t.Fatalf("quarantined wrong type holds %q", got)
	}

	// Carry on: the fresh histories save, and the next load is clean for them.
	ev2 := events.Appointment{Type: events.Attended, AppointmentID: "B1", Version: 1, EventTime: time.Now()}
	for _, p := range []string{garbage, badRev, wrongType} {
		got[p].Apply(&ev2, featurestore.Policy{})
	}
	delete(got, good)
	delete(got, unknown)
	if err := s.Save(ctx, got); err != nil {
		t.Fatal(err)
	}
	again, err := s.Load(ctx, []string{garbage, badRev, wrongType})
	if err != nil {
		t.Fatalf("load after quarantine: %v", err)
	}
	for p, h := range again {
		if h.Rev != 1 || len(h.Facts) != 1 || h.Facts[0].Appointment != "B1" {
			t.Fatalf("patient %s after quarantine: %+v", p, h)
		}
	}

	// This binary never overwrites the newer history, even given its rev.
	err = s.Save(ctx, map[string]*featurestore.History{newer: {Rev: 7}})
	if !errors.Is(err, featurestore.ErrNewerFormat) {
		t.Fatalf("save over a newer history: %v, want ErrNewerFormat", err)
	}
	assertUntouched(t, rdb, s.Key(newer))
}

func assertUntouched(t *testing.T, rdb redis.UniversalClient, key string) {
	t.Helper()
	got := rdb.HGetAll(context.Background(), key).Val()
	if len(got) != len(newerFormat) {
		t.Fatalf("newer history at %s is now %q", key, got)
	}
	for k, v := range newerFormat {
		if got[k] != v {
			t.Fatalf("newer history at %s is now %q", key, got)
		}
	}
}

func TestUnreadableHistoriesRealRedis(t *testing.T) {
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{testenv.Redis(t)}})
	t.Cleanup(func() { rdb.Close() })
	testUnreadable(t, rdb)
}

func TestUnreadableHistoriesRealCluster(t *testing.T) {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.RedisCluster(t)})
	t.Cleanup(func() { rdb.Close() })
	testUnreadable(t, rdb)
}

func TestUnreadableHistoriesMiniredis(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	testUnreadable(t, rdb)
}
