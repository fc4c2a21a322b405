package featurestore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/testenv"
)

// Open bookings round-trip through a real Redis Cluster: kept in the patient's slot, replaced
// by a newer version, forgotten when closed, expiring with the history.
func TestOpenBookingsOnRedisCluster(t *testing.T) {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.RedisCluster(t)})
	defer rdb.Close()
	ctx := context.Background()
	prefix := fmt.Sprintf("open%d:", time.Now().UnixNano())
	s := featurestore.NewOpenBookings(rdb, featurestore.RedisOptions{Prefix: prefix, TTL: time.Hour})
	p1, p2 := fmt.Sprintf("%064x", 1), fmt.Sprintf("%064x", 2)
	t.Cleanup(func() { rdb.Del(context.Background(), s.Key(p1)); rdb.Del(context.Background(), s.Key(p2)) })
	if err := s.Update(ctx, map[string]map[string][]byte{p1: {"A": []byte("a1"), "B": []byte("b1")}, p2: {"C": []byte("c1")}}, nil); err != nil {
		t.Fatal(err)
	}
	// p2's booking D was made and closed in one batch: nothing to write for it.
	if err := s.Update(ctx, map[string]map[string][]byte{p1: {"A": []byte("a2")}, p2: {}}, map[string][]string{p1: {"B"}, p2: {"C", "D"}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, []string{p1, p2})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || len(got[p1]) != 1 || string(got[p1]["A"]) != "a2" {
		t.Fatalf("open bookings %q, want only p1's A at its second version", got)
	}
	if ttl := rdb.PTTL(ctx, s.Key(p1)).Val(); ttl <= 0 || ttl > time.Hour {
		t.Fatalf("expiry %s, want within the history's hour", ttl)
	}
	if slot, hslot := rdb.ClusterKeySlot(ctx, s.Key(p1)).Val(), rdb.ClusterKeySlot(ctx, featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: prefix}).Key(p1)).Val(); slot != hslot {
		t.Fatalf("open bookings in slot %d, history in %d", slot, hslot)
	}
}
