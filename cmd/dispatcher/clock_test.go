package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestClockFileIsValidated(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("yesterday\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{bad, filepath.Join(dir, "missing")} {
		if _, err := parseConfig([]string{"--clock-file", path}, envOf(goodEnv("config.example.json"))); err == nil || !strings.Contains(err.Error(), "--clock-file") {
			t.Errorf("%s: err = %v, want a --clock-file error", path, err)
		}
	}
}

// The file clock moves when the file does, wakes waiters as it passes them, and ignores a
// step back or a half-written file.
func TestFileClockFollowsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clock")
	write := func(s string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	write(t0.Format(time.RFC3339))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := fileClock(ctx, path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Now().Equal(t0) {
		t.Fatalf("now %s, want %s", c.Now(), t0)
	}
	fired := c.After(time.Hour)
	write(t0.Add(2 * time.Hour).Format(time.RFC3339Nano))
	select {
	case got := <-fired:
		if !got.Equal(t0.Add(2 * time.Hour)) {
			t.Fatalf("waiter woke at %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken by the file moving on")
	}
	write(t0.Format(time.RFC3339))
	write("2025-03-")
	time.Sleep(5 * clockPoll)
	if got := c.Now(); !got.Equal(t0.Add(2 * time.Hour)) {
		t.Fatalf("now %s after a step back and a torn write, want %s", got, t0.Add(2*time.Hour))
	}
}
