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

// fixture is one input replayed through goref: what the Go scorer published and left in Redis.
type fixture struct {
	root, java, jar string
	brokers         []string
	redisAddr       string
	lines           [][]byte
	want            map[string]events.Risk // by source event id
	wantDead        int
	goHistories     [][]byte // goref -histories lines
}

// newFixture simulates events (cmd/producer --source sim with these flags), appends extra lines,
// and replays them through goref in batches of 500.
func newFixture(t *testing.T, simFlags []string, extra []string) *fixture {
	fx := &fixture{brokers: testenv.Kafka(t), redisAddr: testenv.Redis(t), root: repoRoot(t)}
	fx.jar = peerJar(t, fx.root)
	var err error
	if fx.java, err = exec.LookPath("java"); err != nil {
		t.Fatal("no java on PATH")
	}
	dir := t.TempDir()
	producer := goBuild(t, fx.root, dir, "./cmd/producer")
	goref := goBuild(t, fx.root, dir, "./bench/peer/goref")
	input := filepath.Join(dir, "events.jsonl")
	sim := exec.Command(producer, append([]string{"--source", "sim", "--out", input}, simFlags...)...)
	sim.Env = append(os.Environ(), "DNA_PSEUDONYM_SECRET=jvm-peer-parity-test-secret-0123456789")
	if out, err := sim.CombinedOutput(); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	f, err := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range extra {
		fmt.Fprintln(f, l)
	}
	f.Close()
	fx.lines = readLines(t, input)

	goOut, goHist := filepath.Join(dir, "go.jsonl"), filepath.Join(dir, "go-histories.jsonl")
	ref := exec.Command(goref, "-in", input, "-model", filepath.Join(fx.root, "models", "default"), "-batch", "500", "-out", goOut, "-histories", goHist)
	if out, err := ref.CombinedOutput(); err != nil {
		t.Fatalf("goref: %v\n%s", err, out)
	}
	fx.want = map[string]events.Risk{}
	for _, l := range readLines(t, goOut) {
		var m goRisk
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatal(err)
		}
		if m.Kind == "dead_letter" {
			fx.wantDead++
			continue
		}
		var r events.Risk
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		if _, dup := fx.want[r.SourceEventID]; dup {
			t.Fatalf("goref scored event %s twice; the comparison keys on it", r.SourceEventID)
		}
		fx.want[r.SourceEventID] = r
	}
	fx.goHistories = readLines(t, goHist)
	return fx
}

// run is one JVM peer's topics, group and Redis prefix, with the input published.
type run struct {
	fx                   *fixture
	in, risk, dlq, group string
	prefix               string
	partitions           int
	rdb                  *redis.Client
}

func (fx *fixture) newRun(t *testing.T, partitions int) *run {
	r := &run{fx: fx, partitions: partitions, in: testenv.Topic(t, fx.brokers, partitions),
		risk: testenv.Topic(t, fx.brokers, partitions), dlq: testenv.Topic(t, fx.brokers, 1)}
	r.group = fmt.Sprintf("jvm-parity-%d", time.Now().UnixNano())
	r.prefix = r.group + ":"
	r.rdb = redis.NewClient(&redis.Options{Addr: fx.redisAddr})
	t.Cleanup(func() { flushPrefix(r.rdb, r.prefix); r.rdb.Close() })
	// Each line keyed as goref keys it: its "patient" string, else no key.
	msgs := make([]kafka.Message, len(fx.lines))
	for i, l := range fx.lines {
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
	w := stream.NewWriter(fx.brokers, r.in)
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return r
}

// peer is a running JVM peer process.
type peer struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	exited         chan error
}

func (r *run) start(t *testing.T) *peer {
	fx := r.fx
	p := &peer{exited: make(chan error, 1)}
	p.cmd = exec.Command(fx.java, "-Xmx256m", "-jar", fx.jar, "--brokers", strings.Join(fx.brokers, ","), "--group", r.group,
		"--topic-in", r.in, "--topic-risk", r.risk, "--topic-dlq", r.dlq, "--redis", fx.redisAddr, "--redis-prefix", r.prefix,
		"--model-dir", filepath.Join(fx.root, "models", "default"),
		// The broker's minimum: a killed member's partitions move on within seconds.
		"--session-timeout-ms", "6000")
	p.cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// awaitCommitted waits until the group's committed offsets reach n; it fails the test if the
// peer exits first or 3 minutes pass. It returns what it saw.
func (r *run) awaitCommitted(t *testing.T, p *peer, n int64) int64 {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		got, err := committed(t.Context(), r.fx.brokers, r.group, r.in, r.partitions)
		if err == nil && got >= n {
			return got
		}
		select {
		case err := <-p.exited:
			t.Fatalf("JVM peer exited before committing %d events: %v\n%s", n, err, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("JVM peer committed %d of %d events within 3 minutes\n%s", got, n, p.stderr.String())
		}
	}
}

// stop sends SIGTERM and wants a clean exit.
func (p *peer) stop(t *testing.T) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("JVM peer: %v\n%s", err, p.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("JVM peer did not stop within 60s of SIGTERM\n%s", p.stderr.String())
	}
	t.Logf("JVM peer: %s", strings.TrimSpace(p.stdout.String()))
}

// checkRisks compares the peer's risk events with goref's: every booking Go scored is there, at
// least once (exactly once unless dupOK), each with the same probability within tolerance, band,
// appointment, version, patient, model, start and features, keyed by patient.
func (r *run) checkRisks(t *testing.T, dupOK bool) {
	got, err := stream.ReadAll(t.Context(), r.fx.brokers, r.risk)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	worst := 0.0
	for _, m := range got {
		var e events.Risk
		if err := json.Unmarshal(m.Value, &e); err != nil {
			t.Fatalf("unreadable risk event %s: %v", m.Value, err)
		}
		w, ok := r.fx.want[e.SourceEventID]
		if !ok {
			t.Errorf("the JVM peer scored event %s (%s v%d); the Go scorer did not", e.SourceEventID, e.AppointmentID, e.Version)
			continue
		}
		if seen[e.SourceEventID]++; seen[e.SourceEventID] > 1 && !dupOK {
			t.Errorf("the JVM peer scored event %s twice in one run", e.SourceEventID)
		}
		if string(m.Key) != e.Patient {
			t.Errorf("event %s: risk event keyed %q, want the patient", e.SourceEventID, m.Key)
		}
		d := math.Abs(e.Probability - w.Probability)
		worst = max(worst, d)
		if !(d <= tolerance) {
			t.Errorf("event %s: probability %v, Go %v (|diff| %.3g)", e.SourceEventID, e.Probability, w.Probability, d)
		}
		if e.Schema != w.Schema || e.AppointmentID != w.AppointmentID || e.Version != w.Version || e.Patient != w.Patient ||
			e.Band != w.Band || e.ModelID != w.ModelID || !e.AppointmentStart.Equal(w.AppointmentStart) || e.ScoredAt.IsZero() {
			t.Errorf("event %s: risk event %+v, Go %+v", e.SourceEventID, e, w)
		}
		if fmt.Sprint(e.Features) != fmt.Sprint(w.Features) {
			t.Errorf("event %s: features %v, Go %v", e.SourceEventID, e.Features, w.Features)
		}
	}
	if len(seen) != len(r.fx.want) {
		t.Errorf("the JVM peer scored %d of the %d bookings the Go scorer scored", len(seen), len(r.fx.want))
	}
	t.Logf("%d bookings compared (%d risk events), max |p_jvm - p_go| = %.3g", len(seen), len(got), worst)
}

// checkHistories compares every patient's facts in Redis, byte for byte, with what the Go store
// left (rev differs: goref saves once per batch of 500, the peer once per commit).
func (r *run) checkHistories(t *testing.T) {
	n := 0
	for _, l := range r.fx.goHistories {
		var h struct {
			Key      string `json:"key"`
			FactsHex string `json:"facts_hex"`
		}
		if err := json.Unmarshal(l, &h); err != nil {
			t.Fatal(err)
		}
		key := r.prefix + strings.TrimPrefix(h.Key, "dna:")
		facts, err := r.rdb.HGet(t.Context(), key, "facts").Bytes()
		if err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		if hex.EncodeToString(facts) != h.FactsHex {
			t.Errorf("%s: facts differ from the Go store's", key)
		}
		n++
	}
	if got := countKeys(r.rdb, r.prefix); got != n || n < 300 {
		t.Errorf("%d histories under the peer's prefix, Go left %d", got, n)
	}
}

// The JVM peer, run against real Kafka and Redis over simulated events (bench/peer's first parity
// case) plus a few refused ones, must publish a risk event for exactly the bookings goref (the Go
// consumer's own code) scores, with probabilities within 1e-9 and the same band, features,
// appointment and model, dead-letter the same events, and leave byte-identical facts in Redis.
func TestJVMPeerMatchesGoScorer(t *testing.T) {
	fx := newFixture(t, []string{"--seed", "9", "--patients", "500", "--days", "120"}, refused)
	if len(fx.want) < 700 || fx.wantDead != len(refused) {
		t.Fatalf("goref: %d bookings scored, %d dead letters; want over 700 and %d", len(fx.want), fx.wantDead, len(refused))
	}
	r := fx.newRun(t, 2)
	p := r.start(t)
	// Stop on the count: once the group's committed offsets cover the input, every output is
	// acknowledged and every history saved (the peer commits only after both).
	r.awaitCommitted(t, p, int64(len(fx.lines)))
	p.stop(t)
	r.checkRisks(t, false)

	// The same events refused: the dead letters carry the original bytes.
	dead, err := stream.ReadAll(t.Context(), fx.brokers, r.dlq)
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
	r.checkHistories(t)
}

// Killed with SIGKILL part-way and started again on the same group and Redis, the peer must still
// publish every booking the Go scorer scores (at least once: at-least-once delivery), each with Go's
// probability, and leave exactly Go's facts in Redis: outputs acknowledged and histories saved
// before offsets are committed, and applying an event twice changes nothing.
func TestJVMPeerRecoversFromKill(t *testing.T) {
	fx := newFixture(t, []string{"--seed", "3", "--patients", "2000", "--days", "240"}, nil)
	total := int64(len(fx.lines))
	r := fx.newRun(t, 4)
	p := r.start(t)
	at := r.awaitCommitted(t, p, total/4)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	after, err := committed(t.Context(), fx.brokers, r.group, r.in, r.partitions)
	if err != nil {
		t.Fatal(err)
	}
	if after >= total {
		t.Fatalf("the peer had committed all %d events before it was killed; nothing was tested", total)
	}
	t.Logf("killed at %d of %d events committed (%d seen just before)", after, total, at)
	p2 := r.start(t)
	r.awaitCommitted(t, p2, total)
	p2.stop(t)
	r.checkRisks(t, true)
	r.checkHistories(t)
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
