package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/stream"
)

// consumerBinary builds this command once per test.
func consumerBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "consumer")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// scorerRun is one run of the real binary against a test's topics, Redis and group.
type scorerRun struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

func startScorer(t *testing.T, bin string, env []string, args ...string) *scorerRun {
	t.Helper()
	r := &scorerRun{cmd: exec.Command(bin, append([]string{"--model-dir", "../../models/default", "--model-poll", "0", "--metrics-addr", "off"}, args...)...),
		logs: &syncBuffer{}, done: make(chan error, 1)}
	r.cmd.Env = append(os.Environ(), env...)
	r.cmd.Stderr = r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			_ = r.cmd.Process.Kill()
		}
	})
	return r
}

// stop sends SIGTERM and requires a clean exit (status 0, "consumer stopped cleanly").
func (r *scorerRun) stop(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, r.logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit within 30s of SIGTERM\n%s", r.logs.String())
	}
	if !strings.Contains(r.logs.String(), "consumer stopped cleanly") {
		t.Fatalf("no clean-stop log line:\n%s", r.logs.String())
	}
}

// committedOffsets returns the group's committed offset per partition of topic.
func committedOffsets(t *testing.T, brokers []string, group, topic string, partitions int) map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	parts := make([]int, partitions)
	for i := range parts {
		parts[i] = i
	}
	res, err := (&kafka.Client{Addr: kafka.TCP(brokers...)}).OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range res.Topics[topic] {
		out[p.Partition] = max(p.CommittedOffset, 0)
	}
	return out
}

// riskCounts reads the risk topic: how many risk events per (appointment, version).
func riskCounts(t *testing.T, brokers []string, topic string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := stream.ReadAll(ctx, brokers, topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range msgs {
		var r events.Risk
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("%s/%d", r.AppointmentID, r.Version)]++
	}
	return out
}

// simStream is a simulated PAS's events as Kafka messages, and what a consumer that never
// failed would make of them: the booking versions it scores and each patient's history.
type simStream struct {
	msgs      []kafka.Message
	scored    []string // appointment/version, in input order
	scores    map[string]bool
	histories map[string]*featurestore.History
}

func newSimStream(t *testing.T, seed int64, patients, days int) simStream {
	t.Helper()
	ps, _ := pseudo.New([]byte("shutdown-test-secret-0123456789abcdefghij"))
	g, err := sim.New(sim.Config{Seed: seed, Patients: patients, Days: days}, ps)
	if err != nil {
		t.Fatal(err)
	}
	s := simStream{histories: map[string]*featurestore.History{}, scores: map[string]bool{}}
	for ev := range g.All() {
		b, _ := json.Marshal(ev)
		s.msgs = append(s.msgs, kafka.Message{Key: []byte(ev.Patient), Value: b})
		h := s.histories[ev.Patient]
		if h == nil {
			h = &featurestore.History{}
			s.histories[ev.Patient] = h
		}
		if (ev.Type == events.Booked || ev.Type == events.Rescheduled) && !h.Cancelled(ev.AppointmentID) && h.LatestVersion(ev.AppointmentID) <= ev.Version {
			k := fmt.Sprintf("%s/%d", ev.AppointmentID, ev.Version)
			s.scored = append(s.scored, k)
			s.scores[k] = true
		}
		h.Apply(&ev, featurestore.Policy{})
	}
	return s
}

// checkHistories compares every patient's history in Redis with what the input implies.
func (s simStream) checkHistories(t *testing.T, redisAddr, prefix string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, DisableIdentity: true})
	defer rdb.Close()
	store := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: prefix})
	var patients []string
	for p := range s.histories {
		patients = append(patients, p)
	}
	got, err := store.Load(context.Background(), patients)
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, p := range patients {
		if !slices.Equal(got[p].Facts, s.histories[p].Facts) {
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d patient histories in Redis differ from the input's", bad, len(patients))
	}
}

// SIGTERM while events are still arriving and batches are in flight: the binary finishes
// the batch in hand, commits it and exits 0, having published a risk event for every booking
// below its committed offsets and for nothing beyond them. A restart carries on from there:
// every booking is scored exactly once in all, and every history is exactly the input's.
func TestBinarySIGTERMMidStreamLosesNothing(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	const parts = 4
	in := testenv.Topic(t, brokers, parts)
	risk := testenv.Topic(t, brokers, 1)
	dlq := testenv.Topic(t, brokers, 1)
	group := fmt.Sprintf("consumer-sigterm-%d", time.Now().UnixNano())
	prefix := group + ":"
	bin := consumerBinary(t)
	s := newSimStream(t, 9, 5000, 60)

	// The PAS keeps publishing, in small batches, while the scorer runs.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := stream.NewWriter(brokers, in)
	defer w.Close()
	var published sync.WaitGroup
	published.Add(1)
	pubErr := make(chan error, 1)
	go func() {
		defer published.Done()
		for i := 0; i < len(s.msgs); i += 100 {
			if err := w.WriteMessages(ctx, s.msgs[i:min(i+100, len(s.msgs))]...); err != nil {
				pubErr <- err
				return
			}
			time.Sleep(100 * time.Millisecond) // about 1,000 events a second
		}
	}()
	env := []string{"KAFKA_BROKERS=" + strings.Join(brokers, ","), "REDIS_ADDR=" + redisAddr}
	args := []string{"--group", group, "--topic-appointments", in, "--topic-risk", risk, "--topic-dlq", dlq,
		"--redis-prefix", prefix, "--batch-size", "100"}
	first := startScorer(t, bin, env, args...)

	// Stop it once it has scored some, with events still coming.
	testenv.Eventually(t, time.Minute, func() bool {
		n, err := endOffsets(ctx, brokers, risk)
		return err == nil && n >= int64(len(s.scored)/5)
	}, "the scorer to score a fifth of the bookings")
	first.stop(t)
	committed := committedOffsets(t, brokers, group, in, parts)
	var total int64
	for _, c := range committed {
		total += c
	}
	arrived, _ := endOffsets(ctx, brokers, in)
	t.Logf("SIGTERM after %d of %d events had arrived; %d committed", arrived, len(s.msgs), total)
	if total == 0 || total >= int64(len(s.msgs)) {
		t.Fatalf("committed %d of %d events: not a stop in mid-stream", total, len(s.msgs))
	}

	// Exactly the bookings below the committed offsets were scored, each once.
	all, err := stream.ReadAll(ctx, brokers, in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, m := range all {
		if m.Offset >= committed[m.Partition] {
			continue
		}
		ev, err := events.DecodeAppointment(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == events.Booked || ev.Type == events.Rescheduled {
			want[fmt.Sprintf("%s/%d", ev.AppointmentID, ev.Version)] = true
		}
	}
	got := riskCounts(t, brokers, risk)
	for k := range want {
		if got[k] == 0 && s.scores[k] {
			t.Errorf("booking %s below the committed offsets was never scored", k)
		}
	}
	for k, n := range got {
		if !want[k] {
			t.Errorf("booking %s was scored but not committed: it will be scored again", k)
		}
		if n > 1 {
			t.Errorf("booking %s scored %d times", k, n)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// A restart carries on where the first run committed.
	published.Wait()
	select {
	case err := <-pubErr:
		t.Fatal(err)
	default:
	}
	second := startScorer(t, bin, env, args...)
	// Wait for the whole input to be committed, not only for the last risk event: outcomes
	// after the last booking change histories without publishing anything.
	testenv.Eventually(t, 2*time.Minute, func() bool {
		var n int64
		for _, c := range committedOffsets(t, brokers, group, in, parts) {
			n += c
		}
		return n == int64(len(s.msgs))
	}, "the restarted scorer to commit the whole input")
	second.stop(t)
	got = riskCounts(t, brokers, risk)
	for _, k := range s.scored {
		if got[k] != 1 {
			t.Errorf("booking %s has %d risk events, want 1", k, got[k])
		}
	}
	if len(got) != len(s.scored) {
		t.Errorf("%d booking versions scored, want %d", len(got), len(s.scored))
	}
	s.checkHistories(t, redisAddr, prefix)
}

// endOffsets sums a topic's end offsets: how many messages it holds.
func endOffsets(ctx context.Context, brokers []string, topic string) (int64, error) {
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return 0, err
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return 0, err
	}
	reqs := make([]kafka.OffsetRequest, len(parts))
	for i, p := range parts {
		reqs[i] = kafka.LastOffsetOf(p.ID)
	}
	res, err := (&kafka.Client{Addr: kafka.TCP(brokers...)}).ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, err
	}
	var n int64
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return 0, p.Error
		}
		n += p.LastOffset
	}
	if n < 0 {
		return 0, errors.New("negative offsets")
	}
	return n, nil
}
