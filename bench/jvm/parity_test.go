package jvm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/stream"
)

// tolerance is the parity bound on probabilities (issue 15.4).
const tolerance = 1e-9

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// peerJar is target/jvm-peer.jar, built here with Maven when it is missing (`make test` builds it first).
func peerJar(t *testing.T, root string) string {
	jar := filepath.Join(root, "bench", "jvm", "target", "jvm-peer.jar")
	if _, err := os.Stat(jar); err == nil {
		return jar
	}
	if _, err := exec.LookPath("mvn"); err != nil {
		if testenv.CI() {
			t.Fatalf("no %s and no mvn to build it", jar)
		}
		t.Skipf("no %s and no mvn to build it (make jvm-peer)", jar)
	}
	cmd := exec.Command("mvn", "-q", "-B", "package", "-DskipTests")
	cmd.Dir = filepath.Join(root, "bench", "jvm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mvn package: %v\n%s", err, out)
	}
	return jar
}

func goBuild(t *testing.T, root, dir, pkg string) string {
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// refused are events both implementations must dead-letter (a few of bench/peer's edge cases).
var refused = []string{
	`not json`,
	`{"schema":"appointment.v1"`,
	`{"schema":"appointment.v2","event_id":"e","type":"attended","event_time":"2025-02-01T09:00:00Z","appointment_id":"X1","booking_version":1,"patient":"` + strings.Repeat("a", 64) + `"}`,
	`{"schema":"appointment.v1","event_id":"e","type":"attended","event_time":"2025-02-01T09:00:00Z","appointment_id":"X2","booking_version":1.0,"patient":"` + strings.Repeat("a", 64) + `"}`,
	`{"schema":"appointment.v1","event_id":"e","type":"attended","event_time":"2025-02-30T09:00:00Z","appointment_id":"X3","booking_version":1,"patient":"` + strings.Repeat("a", 64) + `"}`,
	`{"schema":"appointment.v1","event_id":"e","type":"attended","event_time":"2025-02-01T09:00:00Z","appointment_id":"X4","booking_version":1,"patient":"` + strings.Repeat("a", 64) + `","colour":"red"}`,
}

type goRisk struct {
	Kind   string          `json:"kind"`
	Value  json.RawMessage `json:"value"`
	Offset int64           `json:"offset"`
	Reason string          `json:"reason"`
}

// The JVM peer, run against real Kafka and Redis over simulated events (plus a few refused ones),
// must publish a risk event for exactly the bookings goref (the Go consumer's own code) scores, with
// probabilities within 1e-9, the same band, features, appointment and model, dead-letter the same
// events, and leave byte-identical facts in Redis for every patient.
func TestJVMPeerMatchesGoScorer(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	root := repoRoot(t)
	jar := peerJar(t, root)
	java, err := exec.LookPath("java")
	if err != nil {
		t.Fatal("no java on PATH")
	}
	dir := t.TempDir()
	producer := goBuild(t, root, dir, "./cmd/producer")
	goref := goBuild(t, root, dir, "./bench/peer/goref")

	// Input: the simulator's events (as bench/peer's first parity case), then the refused lines.
	input := filepath.Join(dir, "events.jsonl")
	sim := exec.Command(producer, "--source", "sim", "--seed", "9", "--patients", "500", "--days", "120", "--out", input)
	sim.Env = append(os.Environ(), "DNA_PSEUDONYM_SECRET=jvm-peer-parity-test-secret-0123456789")
	if out, err := sim.CombinedOutput(); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	f, err := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range refused {
		fmt.Fprintln(f, l)
	}
	f.Close()
	lines := readLines(t, input)

	goOut, goHist := filepath.Join(dir, "go.jsonl"), filepath.Join(dir, "go-histories.jsonl")
	ref := exec.Command(goref, "-in", input, "-model", filepath.Join(root, "models", "default"), "-batch", "500", "-out", goOut, "-histories", goHist)
	if out, err := ref.CombinedOutput(); err != nil {
		t.Fatalf("goref: %v\n%s", err, out)
	}
	want := map[string]events.Risk{}
	wantDead := 0
	for _, l := range readLines(t, goOut) {
		var m goRisk
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatal(err)
		}
		if m.Kind == "dead_letter" {
			wantDead++
			continue
		}
		var r events.Risk
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		if _, dup := want[r.SourceEventID]; dup {
			t.Fatalf("goref scored event %s twice; the comparison keys on it", r.SourceEventID)
		}
		want[r.SourceEventID] = r
	}
	if len(want) < 700 || wantDead != len(refused) {
		t.Fatalf("goref: %d bookings scored, %d dead letters; want over 700 and %d", len(want), wantDead, len(refused))
	}

	// The JVM peer over the same events on Kafka: each line keyed as goref keys it.
	in, risk, dlq := testenv.Topic(t, brokers, 2), testenv.Topic(t, brokers, 2), testenv.Topic(t, brokers, 1)
	msgs := make([]kafka.Message, len(lines))
	for i, l := range lines {
		var probe struct {
			Patient any `json:"patient"`
		}
		msgs[i] = kafka.Message{Value: l}
		if json.Unmarshal(l, &probe) == nil {
			if s, ok := probe.Patient.(string); ok {
				msgs[i].Key = []byte(s)
			}
		}
	}
	w := stream.NewWriter(brokers, in)
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	group := fmt.Sprintf("jvm-parity-%d", time.Now().UnixNano())
	prefix := group + ":"
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	t.Cleanup(func() { flushPrefix(rdb, prefix) })

	cmd := exec.Command(java, "-Xmx256m", "-jar", jar, "--brokers", strings.Join(brokers, ","), "--group", group,
		"--topic-in", in, "--topic-risk", risk, "--topic-dlq", dlq, "--redis", redisAddr, "--redis-prefix", prefix,
		"--model-dir", filepath.Join(root, "models", "default"))
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	}()
	// Stop on the count: once the group's committed offsets cover the input, every output is
	// acknowledged and every history saved (the peer commits only after both).
	deadline := time.Now().Add(3 * time.Minute)
	for {
		n, err := committed(t.Context(), brokers, group, in, 2)
		if err == nil && n >= int64(len(lines)) {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("JVM peer exited before committing its input: %v\n%s", err, stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("JVM peer committed %d of %d events within 3 minutes\n%s", n, len(lines), stderr.String())
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("JVM peer: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("JVM peer did not stop within 60s of SIGTERM\n%s", stderr.String())
	}
	t.Logf("JVM peer: %s", strings.TrimSpace(stdout.String()))

	got, err := stream.ReadAll(t.Context(), brokers, risk)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	worst := 0.0
	for _, m := range got {
		var r events.Risk
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatalf("unreadable risk event %s: %v", m.Value, err)
		}
		wr, ok := want[r.SourceEventID]
		switch {
		case !ok:
			t.Errorf("the JVM peer scored event %s (%s v%d); the Go scorer did not", r.SourceEventID, r.AppointmentID, r.Version)
			continue
		case seen[r.SourceEventID]:
			t.Errorf("the JVM peer scored event %s twice in one run", r.SourceEventID)
		}
		seen[r.SourceEventID] = true
		if string(m.Key) != r.Patient {
			t.Errorf("event %s: risk event keyed %q, want the patient", r.SourceEventID, m.Key)
		}
		d := math.Abs(r.Probability - wr.Probability)
		worst = max(worst, d)
		if !(d <= tolerance) {
			t.Errorf("event %s: probability %v, Go %v (|diff| %.3g)", r.SourceEventID, r.Probability, wr.Probability, d)
		}
		if r.Schema != wr.Schema || r.AppointmentID != wr.AppointmentID || r.Version != wr.Version || r.Patient != wr.Patient ||
			r.Band != wr.Band || r.ModelID != wr.ModelID || !r.AppointmentStart.Equal(wr.AppointmentStart) || r.ScoredAt.IsZero() {
			t.Errorf("event %s: risk event %+v, Go %+v", r.SourceEventID, r, wr)
		}
		if fmt.Sprint(r.Features) != fmt.Sprint(wr.Features) {
			t.Errorf("event %s: features %v, Go %v", r.SourceEventID, r.Features, wr.Features)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("the JVM peer scored %d of the %d bookings the Go scorer scored", len(seen), len(want))
	}
	t.Logf("%d bookings compared, max |p_jvm - p_go| = %.3g", len(seen), worst)

	// The same events refused: the dead letters carry the original bytes.
	dead, err := stream.ReadAll(t.Context(), brokers, dlq)
	if err != nil {
		t.Fatal(err)
	}
	refusedSet := map[string]bool{}
	for _, l := range refused {
		refusedSet[l] = true
	}
	for _, m := range dead {
		var d struct {
			Schema     string `json:"schema"`
			ReasonCode string `json:"reason_code"`
			Value      string `json:"value"`
		}
		if err := json.Unmarshal(m.Value, &d); err != nil {
			t.Fatal(err)
		}
		v, _ := base64.StdEncoding.DecodeString(d.Value)
		if d.Schema != "deadletter.v1" || !refusedSet[string(v)] || d.ReasonCode == "" {
			t.Errorf("unexpected dead letter %s", m.Value)
		}
		delete(refusedSet, string(v))
	}
	if len(refusedSet) > 0 {
		t.Errorf("not dead-lettered by the JVM peer: %v", refusedSet)
	}

	// Every patient's facts in Redis, byte for byte (rev differs: goref saves once per batch of
	// 500, the peer once per commit).
	histories := 0
	for _, l := range readLines(t, goHist) {
		var h struct {
			Key      string `json:"key"`
			FactsHex string `json:"facts_hex"`
		}
		if err := json.Unmarshal(l, &h); err != nil {
			t.Fatal(err)
		}
		key := prefix + strings.TrimPrefix(h.Key, "dna:")
		facts, err := rdb.HGet(t.Context(), key, "facts").Bytes()
		if err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		if hex.EncodeToString(facts) != h.FactsHex {
			t.Errorf("%s: facts differ from the Go store's", key)
		}
		histories++
	}
	if n := countKeys(rdb, prefix); n != histories || histories < 300 {
		t.Errorf("%d histories under the peer's prefix, Go left %d", n, histories)
	}
}

func readLines(t *testing.T, path string) [][]byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		out = append(out, bytes.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func committed(ctx context.Context, brokers []string, group, topic string, partitions int) (int64, error) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	parts := make([]int, partitions)
	for i := range parts {
		parts[i] = i
	}
	off, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return 0, err
	}
	var total int64
	for _, p := range off.Topics[topic] {
		total += max(p.CommittedOffset, 0)
	}
	return total, nil
}

func countKeys(rdb *redis.Client, prefix string) int {
	n := 0
	iter := rdb.Scan(context.Background(), 0, prefix+"*", 1000).Iterator()
	for iter.Next(context.Background()) {
		n++
	}
	return n
}

func flushPrefix(rdb *redis.Client, prefix string) {
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Unlink(ctx, iter.Val())
	}
}
