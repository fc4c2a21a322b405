package featurestore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/testenv"
)

// testStore is the contract every Store must pass.
func testStore(t *testing.T, newStore func(t *testing.T) featurestore.Store) {
	ctx := context.Background()
	at := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	ev := func(appt string, typ events.Type, i int) events.Appointment {
		return events.Appointment{Schema: events.AppointmentSchema, EventID: fmt.Sprint(appt, typ),
			Type: typ, EventTime: at.Add(time.Duration(i) * time.Hour), AppointmentID: appt, Version: 1}
	}

	t.Run("unknown patients load empty", func(t *testing.T) {
		s := newStore(t)
		hs, err := s.Load(ctx, []string{pat(1), pat(2)})
		if err != nil {
			t.Fatal(err)
		}
		if len(hs) != 2 || hs[pat(1)].Rev != 0 || len(hs[pat(2)].Facts) != 0 {
			t.Fatalf("got %+v", hs)
		}
	})

	t.Run("round trip of a batch", func(t *testing.T) {
		s := newStore(t)
		var ids []string
		for i := 0; i < 200; i++ {
			ids = append(ids, pat(i))
		}
		hs, err := s.Load(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			for j := 0; j <= i%3; j++ {
				e := ev(fmt.Sprint("appt", j), events.DidNotAttend, j)
				hs[id].Apply(&e, featurestore.Policy{})
			}
		}
		if err := s.Save(ctx, hs); err != nil {
			t.Fatal(err)
		}
		got, err := s.Load(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			if got[id].Rev != 1 || len(got[id].Facts) != i%3+1 {
				t.Fatalf("patient %d: rev %d, %d facts, want 1 and %d", i, got[id].Rev, len(got[id].Facts), i%3+1)
			}
		}
	})

	t.Run("stale save is refused", func(t *testing.T) {
		s := newStore(t)
		a, _ := s.Load(ctx, []string{pat(7), pat(8)})
		b, _ := s.Load(ctx, []string{pat(7)})
		e := ev("A", events.Attended, 0)
		a[pat(7)].Apply(&e, featurestore.Policy{})
		a[pat(8)].Apply(&e, featurestore.Policy{})
		if err := s.Save(ctx, a); err != nil {
			t.Fatal(err)
		}
		e2 := ev("B", events.DidNotAttend, 1)
		b[pat(7)].Apply(&e2, featurestore.Policy{})
		var ce *featurestore.ConflictError
		if err := s.Save(ctx, b); !errors.As(err, &ce) || len(ce.Patients) != 1 || ce.Patients[0] != pat(7) {
			t.Fatalf("stale save: %v", err)
		}
		got, _ := s.Load(ctx, []string{pat(7)})
		if len(got[pat(7)].Facts) != 1 || got[pat(7)].Facts[0].Appointment != "A" {
			t.Fatalf("stale save overwrote history: %+v", got[pat(7)])
		}
	})

	t.Run("a batch with stale histories saves the rest", func(t *testing.T) {
		// More patients than one script call carries (RedisStore saves up to 128 a call),
		// stale ones spread over every call: each history is its own compare-and-set.
		s := newStore(t)
		var ids, stale []string
		for i := 0; i < 300; i++ {
			ids = append(ids, pat(2000+i))
		}
		hs, _ := s.Load(ctx, ids)
		if err := s.Save(ctx, hs); err != nil {
			t.Fatal(err)
		}
		a, _ := s.Load(ctx, ids)
		b := map[string]*featurestore.History{}
		for i, id := range ids {
			if i%7 == 3 {
				h, _ := s.Load(ctx, []string{id})
				b[id] = h[id]
				stale = append(stale, id)
			}
		}
		eb := ev("other", events.Attended, 0)
		for _, h := range b {
			h.Apply(&eb, featurestore.Policy{})
		}
		if err := s.Save(ctx, b); err != nil {
			t.Fatal(err)
		}
		ea := ev("mine", events.DidNotAttend, 1)
		for _, h := range a {
			h.Apply(&ea, featurestore.Policy{})
		}
		var ce *featurestore.ConflictError
		if err := s.Save(ctx, a); !errors.As(err, &ce) {
			t.Fatalf("save with %d stale histories: %v, want a ConflictError", len(stale), err)
		}
		slices.Sort(ce.Patients)
		if !slices.Equal(ce.Patients, stale) {
			t.Fatalf("conflicts %d patients, want the %d stale ones", len(ce.Patients), len(stale))
		}
		got, _ := s.Load(ctx, ids)
		for i, id := range ids {
			// Saved: the store and the saved map are at rev 2 with this save's fact. Stale:
			// the store keeps the other writer's, and the map stays at the rev it loaded.
			want, mapRev := "mine", int64(2)
			if i%7 == 3 {
				want, mapRev = "other", 1
			}
			if g := got[id]; g.Rev != 2 || len(g.Facts) != 1 || g.Facts[0].Appointment != want {
				t.Fatalf("patient %d: rev %d, facts %+v; want rev 2 and only %q's fact", i, g.Rev, g.Facts, want)
			}
			if a[id].Rev != mapRev {
				t.Fatalf("patient %d: the saved map says rev %d, want %d", i, a[id].Rev, mapRev)
			}
		}
	})

	t.Run("concurrent writers lose no fact", func(t *testing.T) {
		s := newStore(t)
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < 10; i++ {
					e := ev(fmt.Sprintf("w%d-%d", w, i), events.Attended, i)
					for {
						hs, err := s.Load(ctx, []string{pat(99)})
						if err != nil {
							t.Error(err)
							return
						}
						hs[pat(99)].Apply(&e, featurestore.Policy{})
						err = s.Save(ctx, hs)
						if err == nil {
							break
						}
						if !errors.Is(err, featurestore.ErrConflict) {
							t.Error(err)
							return
						}
					}
				}
			}(w)
		}
		wg.Wait()
		got, _ := s.Load(ctx, []string{pat(99)})
		if len(got[pat(99)].Facts) != 40 {
			t.Fatalf("%d facts after 40 concurrent applies", len(got[pat(99)].Facts))
		}
	})
}

func pat(i int) string { return fmt.Sprintf("%064x", i) }

func TestMemoryStore(t *testing.T) {
	testStore(t, func(*testing.T) featurestore.Store { return &featurestore.MemoryStore{} })
}

func TestRedisStoreMiniredis(t *testing.T) {
	testStore(t, func(t *testing.T) featurestore.Store {
		m := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
		t.Cleanup(func() { rdb.Close() })
		return featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: uniquePrefix(t)})
	})
}

func TestRedisStoreRealRedis(t *testing.T) {
	addr := testenv.Redis(t)
	testStore(t, func(t *testing.T) featurestore.Store {
		rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}})
		t.Cleanup(func() { rdb.Close() })
		return featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: uniquePrefix(t), TTL: time.Hour})
	})
}

func TestRedisStoreRealCluster(t *testing.T) {
	addrs := testenv.RedisCluster(t)
	testStore(t, func(t *testing.T) featurestore.Store {
		rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs})
		if _, ok := rdb.(*redis.ClusterClient); !ok {
			t.Fatalf("%d addresses gave a %T, want a cluster client", len(addrs), rdb)
		}
		t.Cleanup(func() { rdb.Close() })
		return featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: uniquePrefix(t), TTL: time.Hour})
	})
	// The keys really are spread over the cluster's nodes and carry a TTL.
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer rdb.Close()
	ctx := context.Background()
	s := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: uniquePrefix(t), TTL: time.Hour})
	var ids []string
	for i := 0; i < 64; i++ {
		ids = append(ids, pat(1000+i))
	}
	hs, err := s.Load(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	e := events.Appointment{Type: events.Attended, AppointmentID: "A", Version: 1, EventTime: time.Now()}
	for _, h := range hs {
		h.Apply(&e, featurestore.Policy{})
	}
	if err := s.Save(ctx, hs); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]bool{}
	for _, id := range ids {
		n, err := rdb.MasterForKey(ctx, s.Key(id))
		if err != nil {
			t.Fatal(err)
		}
		nodes[n.Options().Addr] = true
		if ttl := rdb.PTTL(ctx, s.Key(id)).Val(); ttl <= 0 || ttl > time.Hour {
			t.Fatalf("key %s has TTL %v, want (0, 1h]", s.Key(id), ttl)
		}
	}
	if len(nodes) < 2 {
		t.Fatalf("64 patients landed on %d node(s); keys are not spread", len(nodes))
	}
}

func uniquePrefix(t *testing.T) string {
	return fmt.Sprintf("test:%d:", time.Now().UnixNano())
}

// TestRedisStoreSingleAddressEnforcingSlots is a store given one address that enforces
// Cluster slots, as a proxy in front of a cluster does: here a real cluster node, saving only
// patients whose slots it serves. Its first many-key save call is refused with CROSSSLOT
// (before anything runs), and the store saves those histories one a call from then on.
func TestRedisStoreSingleAddressEnforcingSlots(t *testing.T) {
	addrs := testenv.RedisCluster(t)
	ctx := context.Background()
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer cluster.Close()
	prefix := uniquePrefix(t)
	probe := featurestore.NewRedisStore(cluster, featurestore.RedisOptions{Prefix: prefix})
	node, err := cluster.MasterForKey(ctx, probe.Key(pat(0)))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 0; len(ids) < 300; i++ {
		n, err := cluster.MasterForKey(ctx, probe.Key(pat(i)))
		if err != nil {
			t.Fatal(err)
		}
		if n.Options().Addr == node.Options().Addr {
			ids = append(ids, pat(i))
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: node.Options().Addr})
	defer rdb.Close()
	s := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: prefix, TTL: time.Hour})
	at := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	for round := 1; round <= 2; round++ { // the second round starts one a call
		hs, err := s.Load(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		e := events.Appointment{Type: events.Attended, AppointmentID: fmt.Sprint("A", round), Version: 1, EventTime: at}
		for _, h := range hs {
			h.Apply(&e, featurestore.Policy{})
		}
		if err := s.Save(ctx, hs); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		got, _ := s.Load(ctx, ids)
		for _, id := range ids {
			if g := got[id]; g.Rev != int64(round) || len(g.Facts) != round || hs[id].Rev != int64(round) {
				t.Fatalf("round %d, patient %s: stored rev %d with %d facts, map rev %d", round, id, g.Rev, len(g.Facts), hs[id].Rev)
			}
		}
	}
}
