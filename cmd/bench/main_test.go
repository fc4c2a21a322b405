package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/stream"
)

// TestMain lets the test binary stand in for the peer (see fakePeer).
func TestMain(m *testing.M) {
	if os.Getenv("BENCH_FAKE_PEER") != "" {
		if err := fakePeer(); err != nil {
			fmt.Fprintln(os.Stderr, "fake peer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakePeer does what the Python peer does at --max-events, at its quickest: it reads its
// events in a consumer group, writes a risk event, commits the offsets of the first
// BENCH_FAKE_COMMIT of them and exits at once, without even leaving the group, so the
// harness has no chance to see the commit before the exit.
func fakePeer() error {
	env := func(k string) string { return os.Getenv("BENCH_FAKE_" + k) }
	brokers := strings.Split(env("BROKERS"), ",")
	n, _ := strconv.Atoi(env("EVENTS"))
	commit, _ := strconv.Atoi(env("COMMIT"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := stream.NewReader(brokers, env("GROUP"), env("IN"))
	msgs := make([]kafka.Message, 0, n)
	for len(msgs) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	w := stream.NewWriter(brokers, env("RISK"))
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte(`{}`)}); err != nil {
		return err
	}
	return r.CommitMessages(ctx, msgs[:commit]...)
}

// A peer that stops at its event count exits right after its last commit, usually between
// two of the harness's polls: the run must count (issue 15: `make bench` failed from a fresh
// clone with "peer exited before consuming its input"). One that exits short of its count
// must fail, saying how far it got.
func TestThroughputRunCountsAPeerThatExitsAtItsLastCommit(t *testing.T) {
	brokers := testenv.Kafka(t)
	const events = 50
	for _, tc := range []struct {
		name    string
		commit  int
		wantErr string
	}{
		{"all committed", events, ""},
		{"short of its input", events - 5, fmt.Sprintf("committed %d of its %d events", events-5, events)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config{brokers: brokers, partitions: 1}
			a := implArgs{group: fmt.Sprintf("bench-test-%d", time.Now().UnixNano()), in: testenv.Topic(t, brokers, 1),
				risk: testenv.Topic(t, brokers, 1), maxEvents: events}
			in := make([]kafka.Message, events)
			for i := range in {
				in[i] = kafka.Message{Key: []byte(strconv.Itoa(i)), Value: []byte(`{}`)}
			}
			if err := publish(t.Context(), brokers, a.in, in); err != nil {
				t.Fatal(err)
			}
			peer := impl{name: "fake peer", start: func(a implArgs) *exec.Cmd {
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				// GORACE: under -race the runtime waits a second at exit by default; a peer is quicker.
				cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", "BENCH_FAKE_PEER=1", "BENCH_FAKE_BROKERS="+strings.Join(brokers, ","),
					"BENCH_FAKE_GROUP="+a.group, "BENCH_FAKE_IN="+a.in, "BENCH_FAKE_RISK="+a.risk,
					"BENCH_FAKE_EVENTS="+strconv.Itoa(a.maxEvents), "BENCH_FAKE_COMMIT="+strconv.Itoa(tc.commit))
				return cmd
			}}
			eps, rss, cpu, _, err := throughputRun(t.Context(), c, slog.New(slog.NewTextHandler(testWriter{t}, nil)), nil, peer, a, events)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("throughputRun = %v, want an error with %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("throughputRun: %v", err)
			case !(eps > 0) || math.IsInf(eps, 0) || !(rss > 0) || !(cpu > 0):
				t.Fatalf("events/s %v, RSS %v MB, CPU %v s: want each finite and above 0", eps, rss, cpu)
			default:
				t.Logf("%.0f events/s, RSS %.1f MB, CPU %.2f s", eps, rss, cpu)
			}
		})
	}
}

// testWriter sends the harness's log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The machine split reads Redis's CPU from INFO cpu and divides each share by the window.
func TestCoresBetween(t *testing.T) {
	info := "# CPU\r\nused_cpu_sys:1.50\r\nused_cpu_user:10.25\r\nused_cpu_sys_children:0.000000\r\n"
	if got := redisCPU(info); got != 11.75 {
		t.Fatalf("redisCPU = %v, want 11.75", got)
	}
	if got := redisCPU("# CPU\r\nused_cpu_user:10.25\r\n"); !math.IsNaN(got) {
		t.Fatalf("redisCPU without used_cpu_sys = %v, want NaN", got)
	}
	t0 := time.Unix(1000, 0)
	a := cpuSnapshot{at: t0, busy: 100, idle: 50, redis: 11.75, process: 3}
	b := cpuSnapshot{at: t0.Add(10 * time.Second), busy: 117, idle: 53, redis: 17.75, process: 11}
	want := Cores{Process: 0.8, Redis: 0.6, Other: 0.3, Idle: 0.3}
	if got := coresBetween(a, b); got == nil || *got != want {
		t.Fatalf("coresBetween = %+v, want %+v", got, want)
	}
	a.redis, b.redis = math.NaN(), math.NaN()
	want = Cores{Process: 0.8, Redis: 0, Other: 0.9, Idle: 0.3}
	if got := coresBetween(a, b); got == nil || *got != want {
		t.Fatalf("coresBetween without Redis = %+v, want %+v", got, want)
	}
	if got := medianCores([]Cores{{Process: 1}, {Process: 3}, {Process: 2, Idle: 1}}); got.Process != 2 || got.Idle != 0 {
		t.Fatalf("medianCores = %+v, want process 2, idle 0", got)
	}
}

// TestNewBookings: the latency run offers the first n new bookings of the input and nothing
// else (an outcome or a cancellation produces no risk event to wait for).
func TestNewBookings(t *testing.T) {
	var input []kafka.Message
	for i, typ := range []string{"booked", "attended", "booked", "cancelled", "booked", "booked"} {
		input = append(input, kafka.Message{Value: fmt.Appendf(nil, `{"event_id":"e%d","type":%q}`, i, typ)})
	}
	var ids []string
	for _, m := range newBookings(input, 3) {
		ids = append(ids, eventID(m.Value))
	}
	if got := strings.Join(ids, ","); got != "e0,e2,e4" {
		t.Fatalf("newBookings(input, 3) = %s, want e0,e2,e4", got)
	}
	if got := len(newBookings(input, 10)); got != 4 {
		t.Fatalf("newBookings(input, 10) has %d bookings, want all 4", got)
	}
}
