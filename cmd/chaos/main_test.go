package main

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/testenv"
)

// Every hostile message is refused by the decoder, or (key_mismatch) is valid but keyed by
// another patient: the suite's dead-letter check depends on it.
func TestMalformedBurstIsAllRefused(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range malformedBurst(1) {
		seen[m.Kind] = true
		ev, err := events.DecodeAppointment(m.Value)
		switch {
		case m.Kind == "key_mismatch":
			if err != nil || ev.Patient == m.Key {
				t.Errorf("key_mismatch: %v (patient = key: %v)", err, ev.Patient == m.Key)
			}
		case !errors.Is(err, events.ErrInvalid):
			t.Errorf("%s accepted (err %v)", m.Kind, err)
		case !bytes.Contains([]byte(err.Error()), []byte(m.Reason)):
			t.Errorf("%s refused for %q, want a reason with %q", m.Kind, err, m.Reason)
		}
	}
	for _, k := range []string{"oversized", "wrong_type", "unknown_version", "nan", "inf", "absurd_date", "invalid_utf8"} {
		if !seen[k] {
			t.Errorf("no %s message", k)
		}
	}
}

func TestStepEndStaysOutOfQuietHours(t *testing.T) {
	for _, tc := range []struct{ due, want string }{
		{"2025-03-03T09:15:00Z", "2025-03-03T13:15:00Z"},
		{"2025-03-03T17:30:00Z", "2025-03-03T19:59:59Z"},     // GMT: the evening starts at 20:00 UTC
		{"2025-07-07T17:30:00Z", "2025-07-07T18:59:59Z"},     // BST: 20:00 London is 19:00 UTC
		{"2025-03-03T21:05:00Z", "2025-03-04T01:05:00Z"},     // already in quiet hours
		{"2025-03-03T19:59:59.500Z", "2025-03-03T23:59:00Z"}, // the last moment of the day
	} {
		due, _ := time.Parse(time.RFC3339Nano, tc.due)
		want, _ := time.Parse(time.RFC3339, tc.want)
		if got := stepEnd(due); !got.Equal(want) {
			t.Errorf("stepEnd(%s) = %s, want %s", tc.due, got.Format(time.RFC3339), tc.want)
		}
	}
}

// The sweep never moves the clock over a late creation in one step: it stops just before
// it, then on it, so rechecks due before the creation look before it happens.
func TestStepStopsBeforeEachLateCreation(t *testing.T) {
	c := time.Date(2025, 3, 3, 9, 0, 0, 0, time.UTC)
	target := c.Add(4 * time.Hour)
	for _, tc := range []struct {
		name string
		next time.Time
		ok   bool
		want time.Time
	}{
		{"none pending", time.Time{}, false, target},
		{"after the target", target.Add(time.Second), true, target},
		{"on the target", target, true, target.Add(-time.Millisecond)},
		{"inside the step", c.Add(30 * time.Second), true, c.Add(30*time.Second - time.Millisecond)},
		{"a millisecond on", c.Add(time.Millisecond), true, c.Add(time.Millisecond)},
		{"already past (run by the last move)", c, true, target},
	} {
		if got := stepBefore(c, target, tc.next, tc.ok); !got.Equal(tc.want) {
			t.Errorf("%s: stepBefore = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// The short chaos run: the whole pipeline against its own real Kafka and Redis, about
// 12,000 events, every fault kind at least once; the same program and checks as `make
// chaos`. It needs Java and the Kafka jars (or Maven to fetch them) and redis-server; without
// them it skips loudly, and fails under CI=true. CHAOS_KAFKA_PORT and CHAOS_REDIS_PORT move
// its services (defaults 31392 and 31579: below the ephemeral port range, 32768 and up, so no
// outgoing connection of another test can hold them).
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos run takes minutes; skipped with -short")
	}
	requireTools(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	cfg, err := parseConfig([]string{"--profile", "ci", "--root", root, "--work", work, "--out", filepath.Join(work, "chaos.json"),
		"--kafka-port", portFromEnv("CHAOS_KAFKA_PORT", 31392), "--redis-port", portFromEnv("CHAOS_REDIS_PORT", 31579), "--timeout", "8m"})
	if err != nil {
		t.Fatal(err)
	}
	runShort(t, cfg)
}

// The short run on a three-node KRaft cluster (replication factor 3, min.insync.replicas 2,
// acks=all): the leader of the busiest partition and then the active controller are killed
// with kill -9 mid-stream, each back on its data after 5 s; the same checks.
func TestChaosCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos run takes minutes; skipped with -short")
	}
	requireTools(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	cfg, err := parseConfig([]string{"--profile", "ci", "--kafka-nodes", "3", "--root", root, "--work", work, "--out", filepath.Join(work, "chaos.json"),
		"--kafka-port", portFromEnv("CHAOS_CLUSTER_KAFKA_PORT", 31492), "--redis-port", portFromEnv("CHAOS_CLUSTER_REDIS_PORT", 31679), "--timeout", "10m"})
	if err != nil {
		t.Fatal(err)
	}
	runShort(t, cfg)
}

func requireTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"java", "redis-server", "redis-cli"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.CI() {
				t.Fatalf("%s is required under CI=true: %v", tool, err)
			}
			t.Skipf("SKIPPING THE CHAOS RUN: %s not installed (%v)", tool, err)
		}
	}
}

// runShort runs the pipeline with cfg and fails the test on any violation.
func runShort(t *testing.T, cfg config) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	start := time.Now()
	rep, err := runPipeline(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(cfg.out)
	t.Logf("chaos run in %s:\n%s", time.Since(start).Round(time.Second), b)
	if !rep.OK {
		t.Fatalf("violations: %v", rep.Violations)
	}
}

// The SMS budget under faults (--scenario budget, ci size): 200 reminders due in one hour
// under a cap of 80 an hour, two dispatchers, one killed mid-send, Redis restarted, Notify
// failing; at most 80 a clock hour and every reminder once in the end.
func TestChaosBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("the budget run takes a minute; skipped with -short")
	}
	requireTools(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	cfg, err := parseConfig([]string{"--scenario", "budget", "--profile", "ci", "--root", root, "--work", work, "--out", filepath.Join(work, "budget.json"),
		"--kafka-port", portFromEnv("CHAOS_BUDGET_KAFKA_PORT", 31692), "--redis-port", portFromEnv("CHAOS_BUDGET_REDIS_PORT", 31879), "--timeout", "5m"})
	if err != nil {
		t.Fatal(err)
	}
	ok, err := runBudget(t.Context(), cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	b, _ := os.ReadFile(cfg.out)
	t.Logf("budget run:\n%s", b)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatal("violations: see the report above")
	}
}

func portFromEnv(name string, def int) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return strconv.Itoa(def)
}

// testWriter sends the run's progress to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
