package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/stream"
)

// kcatPath finds Debian's kcat (`make kcat` installs it); without it the test skips, or
// fails under CI=true.
func kcatPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kcat")
	if err != nil {
		if testenv.CI() {
			t.Fatalf("kcat is required under CI=true: %v (make kcat installs Debian's)", err)
		}
		t.Skipf("SKIPPING: kcat not installed (%v); `make kcat` installs Debian's", err)
	}
	return p
}

// kcat runs Debian's kcat against brokers with stdin and returns its stdout.
func kcat(t *testing.T, bin string, brokers []string, stdin []byte, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-b", strings.Join(brokers, ",")}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %v: %v\n%s", args, err, errb.String())
	}
	return out.Bytes()
}

// kcatRecord is one message as `kcat -C -J` prints it.
type kcatRecord struct {
	Partition int      `json:"partition"`
	Key       *string  `json:"key"`
	Payload   *string  `json:"payload"`
	Headers   []string `json:"headers"` // name, value, name, value, …
}

func (r kcatRecord) header(name string) string {
	for i := 0; i+1 < len(r.Headers); i += 2 {
		if r.Headers[i] == name {
			return r.Headers[i+1]
		}
	}
	return ""
}

// kcatRead reads every message of topic with kcat, from the start to the current end.
func kcatRead(t *testing.T, bin string, brokers []string, topic string) []kcatRecord {
	t.Helper()
	out := kcat(t, bin, brokers, nil, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-J")
	var recs []kcatRecord
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r kcatRecord
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("kcat -J line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// Issue 12: Debian's kcat, a client we did not write (librdkafka), is the oracle. It
// produces bookings keyed by pseudonym with the murmur2 partitioner; the real consumer binary
// scores them on real Kafka and Redis; kcat reads the risk events back, and a dead letter with
// its reason code. kcat with murmur2_random puts every key on the partition stream.NewWriter
// puts it on; kcat's default partitioner (CRC32) does not, which is why docs/events.md tells
// non-Go producers to set it.
func TestKcatProducesBookingsAndReadsRiskEvents(t *testing.T) {
	bin := kcatPath(t)
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	const parts = 6
	in, risk, dlq := testenv.Topic(t, brokers, parts), testenv.Topic(t, brokers, 1), testenv.Topic(t, brokers, 1)
	ours, crc := testenv.Topic(t, brokers, parts), testenv.Topic(t, brokers, parts)

	// One booking for each of 20 patients, as `key<TAB>json` lines.
	ps, _ := pseudo.New([]byte("kcat-oracle-secret-0123456789abcdefghijkl"))
	g, err := sim.New(sim.Config{Seed: 21, Patients: 200, Days: 30}, ps)
	if err != nil {
		t.Fatal(err)
	}
	bookings := map[string]events.Appointment{} // by patient
	var lines bytes.Buffer
	var keys []string
	for ev := range g.Events(nil) {
		if ev.Type != events.Booked || bookings[ev.Patient].Patient != "" {
			continue
		}
		bookings[ev.Patient] = ev
		keys = append(keys, ev.Patient)
		b, _ := json.Marshal(ev)
		fmt.Fprintf(&lines, "%s\t%s\n", ev.Patient, b)
		if len(keys) == 20 {
			break
		}
	}
	badKey := strings.Repeat("0", 64)
	fmt.Fprintf(&lines, "%s\t{not json\n", badKey)
	kcat(t, bin, brokers, lines.Bytes(), "-P", "-t", in, "-K", "\t", "-X", "partitioner=murmur2_random")

	// The partition kcat chose for each key is the one our producer chooses.
	kcatPart := map[string]int{}
	for _, r := range kcatRead(t, bin, brokers, in) {
		kcatPart[*r.Key] = r.Partition
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := stream.NewWriter(brokers, ours)
	msgs := make([]kafka.Message, len(keys))
	for i, k := range keys {
		msgs[i] = kafka.Message{Key: []byte(k), Value: []byte("x")}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got, err := stream.ReadAll(ctx, brokers, ours)
	if err != nil {
		t.Fatal(err)
	}
	used := map[int]bool{}
	for _, m := range got {
		if p, ok := kcatPart[string(m.Key)]; !ok || p != m.Partition {
			t.Errorf("key %.12s…: kcat (murmur2_random) chose partition %d (found %v), stream.NewWriter %d", m.Key, p, ok, m.Partition)
		}
		used[m.Partition] = true
	}
	if len(got) != len(keys) || len(used) < 3 {
		t.Fatalf("our producer wrote %d of %d keys over %d partitions", len(got), len(keys), len(used))
	}
	// kcat's default partitioner disagrees for some of the same keys.
	var plain bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&plain, "%s\tx\n", k)
	}
	kcat(t, bin, brokers, plain.Bytes(), "-P", "-t", crc, "-K", "\t")
	differ := 0
	for _, r := range kcatRead(t, bin, brokers, crc) {
		if r.Partition != kcatPart[*r.Key] {
			differ++
		}
	}
	if differ == 0 {
		t.Errorf("kcat's default partitioner chose murmur2's partition for all %d keys: the documented setting would not matter", len(keys))
	}
	t.Logf("kcat default partitioner: %d of %d keys on another partition than murmur2", differ, len(keys))

	// The real consumer scores what kcat produced; kcat reads the risk events back.
	group := fmt.Sprintf("consumer-kcat-%d", time.Now().UnixNano())
	r := startScorer(t, consumerBinary(t), []string{"KAFKA_BROKERS=" + strings.Join(brokers, ","), "REDIS_ADDR=" + redisAddr},
		"--group", group, "--redis-prefix", group+":", "--topic-appointments", in, "--topic-risk", risk, "--topic-dlq", dlq)
	var risks []kcatRecord
	testenv.Eventually(t, 90*time.Second, func() bool {
		risks = kcatRead(t, bin, brokers, risk)
		return len(risks) >= len(keys)
	}, "kcat to read a risk event for every booking")
	scored := map[string]bool{}
	for _, rec := range risks {
		var ev events.Risk
		if rec.Payload == nil || json.Unmarshal([]byte(*rec.Payload), &ev) != nil {
			t.Fatalf("risk event %+v does not decode", rec)
		}
		b, ok := bookings[ev.Patient]
		if !ok || *rec.Key != ev.Patient || ev.AppointmentID != b.AppointmentID || ev.SourceEventID != b.EventID ||
			!(ev.Probability > 0 && ev.Probability < 1) || ev.Band == "" || rec.header("schema") != events.RiskSchema {
			t.Fatalf("risk event %s (key %v, headers %v) does not answer a booking kcat sent", *rec.Payload, *rec.Key, rec.Headers)
		}
		scored[ev.Patient] = true
	}
	if len(scored) != len(keys) {
		t.Fatalf("%d of %d bookings scored", len(scored), len(keys))
	}
	var dead []kcatRecord
	testenv.Eventually(t, 30*time.Second, func() bool { dead = kcatRead(t, bin, brokers, dlq); return len(dead) == 1 }, "one dead letter")
	var d events.DeadLetter
	if err := json.Unmarshal([]byte(*dead[0].Payload), &d); err != nil {
		t.Fatal(err)
	}
	if d.ReasonCode != events.ReasonMalformedJSON || dead[0].header("reason_code") != events.ReasonMalformedJSON ||
		string(d.Value) != "{not json" || *dead[0].Key != badKey || d.Partition != kcatPart[badKey] {
		t.Fatalf("dead letter %s (headers %v): want reason_code %s and the original message", *dead[0].Payload, dead[0].Headers, events.ReasonMalformedJSON)
	}
	r.stop(t)
	t.Logf("kcat: %d bookings on %d partitions scored; dead letter %s: %s", len(keys), len(used), d.ReasonCode, d.Reason)
}
