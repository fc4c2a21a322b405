package pas

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/internal/testenv"
)

// testTracker is the contract every Tracker meets.
func testTracker(t *testing.T, tr Tracker) {
	ctx := context.Background()
	st, err := tr.Load(ctx, "APT/1")
	if err != nil || st.Rev != 0 || st.Version != 0 || st.Patient != "" || st.Fields != nil {
		t.Fatalf("unknown appointment: %+v, %v", st, err)
	}
	st.Version, st.Patient, st.Facts = 1, patA, Facts{Patient: patA, Start: 1700000000, Specialty: "110", Clinic: "C", FirstVisit: true}
	st.Fields = Fields{"AIL-3": "ORTHO1^^^RXX01", "age_band": "35-44"}
	if err := tr.Save(ctx, "APT/1", st); err != nil {
		t.Fatal(err)
	}
	got, err := tr.Load(ctx, "APT/1")
	if err != nil || got.Version != 1 || got.Facts != st.Facts || got.Patient != patA || got.Rev != 1 || !maps.Equal(got.Fields, st.Fields) {
		t.Fatalf("reloaded %+v, %v", got, err)
	}
	// A writer that loaded before the save above loses the race.
	if err := tr.Save(ctx, "APT/1", st); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale save: %v, want ErrConflict", err)
	}
	got.Cancelled = true
	if err := tr.Save(ctx, "APT/1", got); err != nil {
		t.Fatal(err)
	}
	if again, _ := tr.Load(ctx, "APT/1"); !again.Cancelled || again.Rev != 2 {
		t.Fatalf("after second save: %+v", again)
	}
}

func TestMemoryTracker(t *testing.T) { testTracker(t, &MemoryTracker{}) }

func TestRedisTrackerRealRedis(t *testing.T) {
	addr := testenv.Redis(t)
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}})
	t.Cleanup(func() { rdb.Close() })
	prefix := fmt.Sprintf("test-pas-%d:", time.Now().UnixNano())
	tr := NewRedisTracker(rdb, prefix, time.Hour)
	t.Cleanup(func() { rdb.Del(context.Background(), tr.Key("APT/1")) })
	testTracker(t, tr)
	if ttl := rdb.PTTL(context.Background(), tr.Key("APT/1")).Val(); ttl <= 0 || ttl > time.Hour {
		t.Fatalf("state key TTL %s, want up to an hour", ttl)
	}
}
