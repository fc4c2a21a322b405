package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nhsx/dnarisk/reminders/clock"
)

// clockPoll is how often --clock-file is read.
const clockPoll = 10 * time.Millisecond

// readClockFile reads the time --clock-file holds: one RFC 3339 timestamp.
func readClockFile(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, fmt.Errorf("--clock-file: %w", err)
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		return time.Time{}, fmt.Errorf("--clock-file %s: want one RFC 3339 time: %w", path, err)
	}
	return t, nil
}

// fileClock is a planning clock that another process moves by rewriting a file: a
// simulation or the chaos suite (cmd/chaos) replays months of appointments and lets each
// reminder fall due in turn. It never goes backwards. Leases and Notify tokens stay on the
// wall clock.
func fileClock(ctx context.Context, path string, log *slog.Logger) (clock.Clock, error) {
	t, err := readClockFile(path)
	if err != nil {
		return nil, err
	}
	c := clock.NewManual(t)
	go func() {
		tick := time.NewTicker(clockPoll)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// A file caught half-written fails to parse and is read again on the next tick.
			if t, err := readClockFile(path); err == nil {
				c.Set(t)
			}
		}
	}()
	log.Warn("planning clock follows a file, not the system clock: for simulations and tests only", "clock_file", path, "now", t)
	return c, nil
}
