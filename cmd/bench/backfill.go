package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// backfillRun times cmd/consumer --backfill (built as bin) rebuilding the histories from the
// whole input topic into an empty key prefix of Redis, and returns its events/s as it
// reports them (from its start reading to its last save; the process start is not counted).
func backfillRun(ctx context.Context, c config, rdb *redis.Client, bin, inTopic string, n int) (float64, error) {
	prefix := fmt.Sprintf("bench-backfill-%d:", time.Now().UnixNano())
	defer rdbFlushPrefix(ctx, rdb, prefix)
	defer settle()()
	cmd := exec.CommandContext(ctx, bin, "--backfill", "--brokers", strings.Join(c.brokers, ","), "--redis", c.redisAddr,
		"--topic-appointments", inTopic, "--redis-prefix", prefix, "--batch-size", "2000", "--metrics-addr", "off")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("backfill: %v\n%s", err, tail(stderr.String()))
	}
	var s struct {
		Events       int     `json:"events"`
		EventsPerSec float64 `json:"events_per_s"`
	}
	if err := json.Unmarshal(out, &s); err != nil {
		return 0, fmt.Errorf("backfill summary %q: %w", out, err)
	}
	if s.Events != n {
		return 0, fmt.Errorf("backfill read %d events, the input has %d", s.Events, n)
	}
	return round(s.EventsPerSec, 0), nil
}
