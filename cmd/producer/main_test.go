package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/reminders/policy"
	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

const testSecret = "producer-cmd-test-secret-0123456789abcdef"

// clearEnv keeps the caller's environment from changing flag defaults.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, v := range envFallback {
		t.Setenv(v, "")
	}
	t.Setenv("DNA_PSEUDONYM_SECRET_FILE", "")
	t.Setenv("DNA_PSEUDONYM_SECRET", testSecret)
}

func runCmd(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func expected(t *testing.T, cfg sim.Config) ([]events.Appointment, []sim.Truth) {
	t.Helper()
	ps, err := pseudo.New([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	g, err := sim.New(cfg, ps)
	if err != nil {
		t.Fatal(err)
	}
	var truth []sim.Truth
	evs := slices.Collect(g.Events(func(tr sim.Truth) { truth = append(truth, tr) }))
	return evs, truth
}

func TestPublishSimulationToKafka(t *testing.T) {
	const topic = "appointments"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	publishAndReadBack(t, c.ListenAddrs(), topic)
}

// TestPublishSimulationToRealKafka is the same check against the real Kafka that `make test`
// starts (KAFKA_BROKERS); it skips loudly without one, and fails under CI=true.
func TestPublishSimulationToRealKafka(t *testing.T) {
	brokers := testenv.Kafka(t)
	publishAndReadBack(t, brokers, testenv.Topic(t, brokers, 4))
}

// publishAndReadBack runs the command against brokers and checks the topic and truth file.
func publishAndReadBack(t *testing.T, brokers []string, topic string) {
	clearEnv(t)
	truthPath := filepath.Join(t.TempDir(), "truth.csv")
	// Brokers come from the environment fallback, the rest from flags.
	t.Setenv("KAFKA_BROKERS", strings.Join(brokers, ","))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	code, _, stderr := runCmd(t, ctx, "--topic", topic, "--seed", "3", "--patients", "300", "--days", "60",
		"--start", "2024-06-03", "--truth", truthPath)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want, wantTruth := expected(t, sim.Config{Seed: 3, Patients: 300, Days: 60, Start: time.Date(2024, 6, 3, 0, 0, 0, 0, london)})
	if !strings.Contains(stderr, "producer: events="+strconv.Itoa(len(want))+" ") {
		t.Errorf("summary does not report %d events: %s", len(want), stderr)
	}

	msgs, err := stream.ReadAll(ctx, brokers, topic)
	if err != nil {
		t.Fatal(err)
	}
	checkKafka(t, want, msgs)

	f, err := os.Open(truthPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	truth, err := sim.ReadTruth(f)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(truth, wantTruth) {
		t.Errorf("truth file holds %d records, want the simulator's %d", len(truth), len(wantTruth))
	}
}

// checkKafka checks that msgs are exactly want, keyed by patient pseudonym, each patient's
// events on one partition in the order they were produced.
func checkKafka(t *testing.T, want []events.Appointment, msgs []kafka.Message) {
	t.Helper()
	if len(msgs) != len(want) {
		t.Fatalf("read back %d messages, want %d", len(msgs), len(want))
	}
	pos := map[string]int{}
	for i, ev := range want {
		pos[ev.EventID] = i
	}
	partition := map[string]int{}
	last := map[string]int{}
	used := map[int]bool{}
	for _, m := range msgs {
		ev, err := events.DecodeAppointment(m.Value)
		if err != nil {
			t.Fatalf("partition %d offset %d: %v", m.Partition, m.Offset, err)
		}
		if string(m.Key) != ev.Patient {
			t.Fatalf("key %q is not the patient pseudonym %q", m.Key, ev.Patient)
		}
		i, ok := pos[ev.EventID]
		if !ok {
			t.Fatalf("unexpected or duplicate event %s", ev.EventID)
		}
		delete(pos, ev.EventID)
		if p, seen := partition[ev.Patient]; seen && p != m.Partition {
			t.Fatalf("one patient's events on partitions %d and %d", p, m.Partition)
		}
		partition[ev.Patient] = m.Partition
		used[m.Partition] = true
		if j, seen := last[ev.Patient]; seen && i < j {
			t.Fatalf("a patient's event %d was read after its event %d", i, j)
		}
		last[ev.Patient] = i
	}
	if len(used) < 2 {
		t.Errorf("%d patients all on one partition", len(partition))
	}
}

// With --create-topics the producer makes its topic (on a cluster that does not
// auto-create), with --topic-partitions.
func TestCreatesTopic(t *testing.T) {
	clearEnv(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Setenv("TOPIC_PARTITIONS", "3")
	code, _, stderr := runCmd(t, ctx, "--brokers", strings.Join(c.ListenAddrs(), ","), "--topic", "fresh", "--create-topics",
		"--patients", "30", "--days", "30")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want, _ := expected(t, sim.Config{Seed: 1, Patients: 30, Days: 30})
	msgs, err := stream.ReadAll(ctx, c.ListenAddrs(), "fresh")
	if err != nil {
		t.Fatal(err)
	}
	checkKafka(t, want, msgs)
	parts := map[int]bool{}
	for _, m := range msgs {
		parts[m.Partition] = true
	}
	if len(parts) != 3 {
		t.Fatalf("events on %d partitions, want 3 (TOPIC_PARTITIONS)", len(parts))
	}
}

// Without --create-topics the producer waits for its topic, not ready and naming it, and
// publishes once someone creates it.
func TestWaitsForTopic(t *testing.T) {
	clearEnv(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan int, 1)
	go func() {
		code, _, _ := runCmd(t, ctx, "--brokers", strings.Join(brokers, ","), "--topic", "later", "--patients", "30", "--days", "30",
			"--metrics-addr", addr)
		done <- code
	}()
	var body string
	testenv.Eventually(t, 30*time.Second, func() bool {
		res, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		body = string(b)
		return res.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, "do not exist: later")
	}, "/readyz to name the missing topic")
	select {
	case code := <-done:
		t.Fatalf("exited %d without its topic", code)
	default:
	}
	admin := stream.NewAdmin(brokers)
	defer admin.Close()
	if err := admin.CreateTopics(ctx, stream.TopicSpec{Partitions: 2, Replication: 1}, "later"); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 0 {
		t.Fatalf("exit %d after the topic was created", code)
	}
	want, _ := expected(t, sim.Config{Seed: 1, Patients: 30, Days: 30})
	msgs, err := stream.ReadAll(ctx, brokers, "later")
	if err != nil {
		t.Fatal(err)
	}
	checkKafka(t, want, msgs)
}

func TestReplayCSVToStdout(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DNA_PSEUDONYM_SECRET", "")
	t.Setenv("DNA_PSEUDONYM_SECRET_FILE", secretFile)
	csvPath := filepath.Join(dir, "in.csv")
	sample, err := os.ReadFile("../../testdata/appointments_sample.csv")
	if err != nil {
		t.Fatal(err)
	}
	bad := "9990001014,BAD-1,not a time,2024-04-15 09:00,attended,110,Fracture Clinic,true,45-54,3,true,,12.4,0\n"
	if err := os.WriteFile(csvPath, append(sample, bad...), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, context.Background(), "--source", "csv", "--csv", csvPath, "--out", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		if _, err := events.DecodeAppointment(sc.Bytes()); err != nil {
			t.Fatalf("line %d: %v", n+1, err)
		}
		n++
	}
	if n != 37 {
		t.Errorf("%d events on stdout, want 37 (20 bookings, 17 ends)", n)
	}
	if !strings.Contains(stderr, `"msg":"csv row skipped","line":22`) || !strings.Contains(stderr, `"bad":1`) {
		t.Errorf("bad row not reported with its line: %s", stderr)
	}
	if strings.Contains(stderr, "9990001014") {
		t.Error("logs carry a patient identifier")
	}
}

// The CSV's time zone and the time of a date-only day are settings: the same rows read in UTC
// with appointments at 08:30, against the defaults (Europe/London, 23:59).
func TestCSVTimeSettings(t *testing.T) {
	clearEnv(t)
	csvPath := filepath.Join(t.TempDir(), "in.csv")
	body := "patient_id,appointment_id,booked_at,appointment_start,outcome,age,sex\n" +
		"9990001014,T1,2024-06-03 10:00,2024-06-10,attended,40,F\n"
	if err := os.WriteFile(csvPath, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	read := func(args ...string) []events.Appointment {
		t.Helper()
		code, stdout, stderr := runCmd(t, context.Background(), append([]string{"--source", "csv", "--csv", csvPath, "--out", "-"}, args...)...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var evs []events.Appointment
		for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
			ev, err := events.DecodeAppointment([]byte(l))
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, ev)
		}
		if len(evs) != 2 || !strings.Contains(stderr, `"text_columns":["sex"]`) {
			t.Fatalf("events %v, stderr %s", evs, stderr)
		}
		return evs
	}
	def := read()
	if b := def[0].Booking; !b.BookedAt.Equal(time.Date(2024, 6, 3, 9, 0, 0, 0, time.UTC)) || !b.Start.Equal(time.Date(2024, 6, 10, 22, 59, 0, 0, time.UTC)) {
		t.Errorf("defaults: booked %s, start %s; want 09:00Z (10:00 BST) and 22:59Z (23:59 BST)", b.BookedAt, b.Start)
	}
	t.Setenv("PRODUCER_CSV_TIMEZONE", "UTC")
	utc := read("--csv-date-only-time", "08:30")
	if b := utc[0].Booking; !b.BookedAt.Equal(time.Date(2024, 6, 3, 10, 0, 0, 0, time.UTC)) || !b.Start.Equal(time.Date(2024, 6, 10, 8, 30, 0, 0, time.UTC)) {
		t.Errorf("UTC, 08:30: booked %s, start %s", b.BookedAt, b.Start)
	}
	if def[0].Booking.Extra["sex"] != scoring.TextCode("F") {
		t.Errorf("sex F carried as %v, want scoring.TextCode(F)", def[0].Booking.Extra["sex"])
	}
}

// The drift and reminder flags (and their environment fallbacks) give the simulator's drift
// and reminder effect, and the truth file its full layout; without them the file keeps the
// short layout training reads (publishAndReadBack).
func TestSimulatedDriftAndReminderEffect(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	out, truthPath := filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "truth.csv")
	key := "producer-test-holdout-key"
	t.Setenv("DNA_HOLDOUT_KEY", key)
	t.Setenv("SIM_HOLDOUT_SHARE", "0.3")
	code, stdout, stderr := runCmd(t, context.Background(), "--seed", "5", "--patients", "400", "--days", "90", "--out", out, "--truth", truthPath,
		"--drift-specialty", "130", "--drift-factor", "3", "--reminder-efficacy", "0.4", "--reminder-threshold", "0.12")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, stdout, stderr)
	}
	start := time.Date(2025, 1, 6, 0, 0, 0, 0, london)
	want, wantTruth := expected(t, sim.Config{Seed: 5, Patients: 400, Days: 90,
		Drift:    &sim.Drift{From: start.AddDate(0, 0, 45), Specialty: "130", Factor: 3},
		Reminder: &sim.ReminderEffect{Efficacy: 0.4, Threshold: 0.12, Holdout: policy.Holdout{Share: 0.3, Key: []byte(key)}}})
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d events, want %d", len(lines), len(want))
	}
	for i, l := range lines {
		ev, err := events.DecodeAppointment([]byte(l))
		if err != nil || ev.EventID != want[i].EventID || ev.Type != want[i].Type {
			t.Fatalf("event %d: %v %+v, want %+v", i, err, ev, want[i])
		}
	}
	f, err := os.Open(truthPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head, _ := bufio.NewReader(f).ReadString('\n')
	if head != "appointment_id,booking_version,p_dna,p_drifted,eligible,held_out,p_used\n" {
		t.Errorf("truth header %q, want the full layout", head)
	}
	f.Seek(0, io.SeekStart)
	truth, err := sim.ReadTruth(f)
	if err != nil {
		t.Fatal(err)
	}
	drifted, reminded := 0, 0
	for _, tr := range truth {
		if tr.PDrifted != tr.PDNA {
			drifted++
		}
		if tr.PUsed != tr.PDrifted {
			reminded++
		}
	}
	if !slices.Equal(truth, wantTruth) || drifted == 0 || reminded == 0 {
		t.Errorf("truth file: %d records (%d drifted, %d reminded), want the simulator's %d", len(truth), drifted, reminded, len(wantTruth))
	}
	for _, w := range []string{`"msg":"simulating drift","specialty":"130","factor":3,"from":"2025-02-20"`, `"efficacy":0.4,"threshold":0.12,"holdout_share":0.3`} {
		if !strings.Contains(stderr, w) {
			t.Errorf("log lacks %s: %s", w, stderr)
		}
	}
	if strings.Contains(stderr, key) {
		t.Error("the hold-out key is in the log")
	}
}

func TestStopsCleanlyOnSignal(t *testing.T) {
	clearEnv(t)
	out := filepath.Join(t.TempDir(), "events.jsonl")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(400*time.Millisecond, cancel)
	code, _, stderr := runCmd(t, ctx, "--out", out, "--rate", "500")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Count(string(b), "\n")
	if lines == 0 || lines > 400 {
		t.Errorf("%d events written in 0.4 s at 500/s", lines)
	}
	if !strings.Contains(stderr, "stopped by signal") || !strings.Contains(stderr, "producer: events="+strconv.Itoa(lines)+" ") {
		t.Errorf("summary does not match the %d events in the file: %s", lines, stderr)
	}
}

func TestInvalidSettings(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown source", nil, []string{"--source", "hl7"}, "want sim or csv"},
		{"csv without a path", nil, []string{"--source", "csv"}, "needs --csv"},
		{"truth for a csv", nil, []string{"--source", "csv", "--csv", "x.csv", "--truth", "t.csv"}, "--truth needs --source sim"},
		{"missing csv file", nil, []string{"--source", "csv", "--csv", "/nonexistent.csv", "--out", "-"}, "--csv"},
		{"bad start", nil, []string{"--start", "06/01/2025", "--out", "-"}, "--start"},
		{"bad csv time zone", nil, []string{"--source", "csv", "--csv", "x.csv", "--csv-timezone", "Mars/Olympus"}, `--csv-timezone / --csv-date-only-time: time zone "Mars/Olympus"`},
		{"bad date-only time", map[string]string{"PRODUCER_CSV_DATE_ONLY_TIME": "25:00"}, []string{"--source", "csv", "--csv", "x.csv"}, `date-only time "25:00": want HH:MM`},
		{"no patients", nil, []string{"--patients", "0"}, "--patients 0"},
		{"negative rate", nil, []string{"--rate", "-1"}, "--rate"},
		{"bad env value", map[string]string{"PRODUCER_RATE": "fast"}, nil, "invalid PRODUCER_RATE"},
		{"no secret", map[string]string{"DNA_PSEUDONYM_SECRET": ""}, []string{"--out", "-"}, "no pseudonym secret"},
		{"short secret", map[string]string{"DNA_PSEUDONYM_SECRET": "short"}, []string{"--out", "-"}, "need at least 32"},
		{"unknown flag", nil, []string{"--nope"}, "flag provided but not defined"},
		{"drift of an unknown specialty", nil, []string{"--drift-specialty", "999", "--out", "-"}, `drift specialty "999" is not one the simulator books`},
		{"bad drift factor", map[string]string{"SIM_DRIFT_FACTOR": "-2"}, []string{"--drift-specialty", "130", "--out", "-"}, "drift factor -2 out of range"},
		{"bad drift date", nil, []string{"--drift-specialty", "130", "--drift-from", "1 May", "--out", "-"}, `--drift-from "1 May"`},
		{"drift date without a specialty", nil, []string{"--drift-from", "2025-03-01", "--out", "-"}, "--drift-from needs --drift-specialty"},
		{"drift of a csv", nil, []string{"--source", "csv", "--csv", "x.csv", "--drift-specialty", "130"}, "need --source sim"},
		{"efficacy above 1", nil, []string{"--reminder-efficacy", "1.5"}, "--reminder-efficacy 1.5"},
		{"hold-out share too big", nil, []string{"--holdout-share", "0.8"}, "--holdout-share 0.8: want 0..0.5"},
		{"hold-out without a key", map[string]string{"DNA_HOLDOUT_KEY": ""}, []string{"--holdout-share", "0.2", "--reminder-efficacy", "0.3", "--out", "-"}, "DNA_HOLDOUT_KEY"},
		{"stray argument", nil, []string{"extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			code, _, stderr := runCmd(t, context.Background(), tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tt.want)
			}
		})
	}
}

// Against a broker that speaks only TLS with SASL/SCRAM, configured by environment as a
// container would be, the producer publishes and its /metrics counts what it published.
func TestPublishesOverTLSAndSCRAMWithMetrics(t *testing.T) {
	clearEnv(t)
	certs := testenv.NewCerts(t)
	const topic, user, pw = "appointments", "producer", "producer-password-0123456789"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, topic), kfake.TLS(certs.Server),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", user, pw))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte(pw), 0o600)
	t.Setenv("KAFKA_CA_FILE", certs.CAFile)
	t.Setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
	t.Setenv("KAFKA_SASL_USERNAME", user)
	t.Setenv("KAFKA_SASL_PASSWORD_FILE", pwFile)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	type result struct {
		code   int
		stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, _, stderr := runCmd(t, runCtx, "--brokers", strings.Join(c.ListenAddrs(), ","), "--topic", topic,
			"--patients", "200", "--days", "60", "--rate", "200", "--metrics-addr", addr)
		done <- result{code, stderr}
	}()
	var published int
	testenv.Eventually(t, 30*time.Second, func() bool {
		res, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		m := regexp.MustCompile(`dnarisk_events_published_total\{topic="appointments"\} (\d+)`).FindSubmatch(b)
		if m == nil {
			return false
		}
		published, _ = strconv.Atoi(string(m[1]))
		return published > 0
	}, "the producer's /metrics to count published events")
	if res, err := http.Get("http://" + addr + "/readyz"); err != nil || res.StatusCode != 200 {
		t.Fatalf("/readyz: %v %v", res, err)
	}
	stop()
	r := <-done
	if r.code != 0 || strings.Contains(r.stderr, pw) {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	got, err := stream.ReadAll(ctx, c.ListenAddrs(), topic, withSecureKafka(t, certs, user, pw)...)
	if err != nil || len(got) < published {
		t.Fatalf("read back %d events over TLS+SCRAM (metrics said %d): %v", len(got), published, err)
	}
}

func withSecureKafka(t *testing.T, certs *testenv.Certs, user, pw string) []stream.Option {
	t.Helper()
	mech, err := scram.Mechanism(scram.SHA512, user, pw)
	if err != nil {
		t.Fatal(err)
	}
	return []stream.Option{stream.WithTLS(&tls.Config{RootCAs: certs.Pool}), stream.WithSASL(mech)}
}

// The operations endpoint off loopback needs a token file or mutual TLS, or
// --insecure-listeners: otherwise a setting error (exit status 2).
func TestOperationsEndpointOffLoopback(t *testing.T) {
	_, err := parseFlags([]string{"--metrics-addr", ":9465"}, io.Discard)
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--metrics-token-file") {
		t.Fatalf("open endpoint: %v", err)
	}
	if _, err := parseFlags([]string{"--metrics-addr", ":9465", "--insecure-listeners"}, io.Discard); err != nil {
		t.Fatalf("with --insecure-listeners: %v", err)
	}
	if _, err := parseFlags([]string{"--metrics-addr", "127.0.0.1:9465"}, io.Discard); err != nil {
		t.Fatalf("on loopback: %v", err)
	}
}
