package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/stream"
)

func TestParseConfigRefusesNonsense(t *testing.T) {
	for _, args := range [][]string{
		{"--brokers", " , "},
		{"--redis", ""},
		{"--batch-size", "0"},
		{"--history-retention", "1h"},
		{"--topic-risk", ""},
		{"--no-such-flag"},
	} {
		if _, err := parseConfig(args); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	c, err := parseConfig([]string{"--redis", "a:1, b:2,c:3", "--brokers", "k:9092"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.redisAddrs) != 3 || c.brokers[0] != "k:9092" || c.topics.Risk != "risk" {
		t.Fatalf("parsed %+v", c)
	}
}

// The real binary against the real Kafka and Redis: it scores what is on the topic, and on
// SIGTERM finishes, commits and exits 0, so a restart starts after the last event.
func TestBinaryScoresAndStopsCleanlyOnSIGTERM(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	in := testenv.Topic(t, brokers, 4)
	risk := testenv.Topic(t, brokers, 1)
	dlq := testenv.Topic(t, brokers, 1)
	group := fmt.Sprintf("consumer-bin-%d", time.Now().UnixNano())

	bin := filepath.Join(t.TempDir(), "consumer")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	ps, _ := pseudo.New([]byte("binary-test-secret-0123456789abcdefghij"))
	g, err := sim.New(sim.Config{Seed: 3, Patients: 300, Days: 30}, ps)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []kafka.Message
	bookings := 0
	for ev := range g.All() {
		b, _ := json.Marshal(ev)
		msgs = append(msgs, kafka.Message{Key: []byte(ev.Patient), Value: b})
		if ev.Type == events.Booked || ev.Type == events.Rescheduled {
			bookings++
		}
	}
	w := stream.NewWriter(brokers, in)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	opsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cmd := exec.Command(bin, "--model-dir", "../../models/default", "--group", group, "--metrics-addr", opsAddr, "--lag-interval", "1s",
		"--topic-appointments", in, "--topic-risk", risk, "--topic-dlq", dlq, "--redis-prefix", group+":")
	cmd.Env = append(os.Environ(), "KAFKA_BROKERS="+strings.Join(brokers, ","), "REDIS_ADDR="+redisAddr)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	testenv.Eventually(t, 60*time.Second, func() bool {
		got, err := stream.ReadAll(ctx, brokers, risk)
		return err == nil && len(got) >= bookings
	}, "the binary to score every booking")
	// The operations endpoint of the real binary against real Kafka and Redis: ready, and
	// its metrics count what it did.
	testenv.Eventually(t, 30*time.Second, func() bool {
		body := httpGet(t, "http://"+opsAddr+"/metrics")
		return strings.Contains(body, fmt.Sprintf("dnarisk_events_consumed_total{topic=%q} %d", in, len(msgs))) &&
			strings.Contains(body, fmt.Sprintf("dnarisk_consumer_lag_messages{partition=\"0\",topic=%q} 0", in))
	}, "/metrics to count every event and zero lag")
	if body := httpGet(t, "http://"+opsAddr+"/readyz"); !strings.Contains(body, `"ready":true`) {
		t.Fatalf("/readyz: %s", body)
	}
	body := httpGet(t, "http://"+opsAddr+"/metrics")
	for _, want := range []string{fmt.Sprintf("dnarisk_events_published_total{topic=%q} %d", risk, bookings), `dnarisk_model_info{model_id="`,
		`dnarisk_redis_command_duration_seconds_count{command="pipeline"}`, "dnarisk_risk_probability_bucket"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit within 30s of SIGTERM\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "consumer stopped cleanly") {
		t.Fatalf("no clean-stop log line:\n%s", logs.String())
	}

	// Offsets were committed up to the end of every partition.
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	parts := map[string][]int{in: {0, 1, 2, 3}}
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: parts})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, p := range committed.Topics[in] {
		total += p.CommittedOffset
	}
	if total != int64(len(msgs)) {
		t.Fatalf("committed offsets add up to %d, want %d", total, len(msgs))
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// Bad settings, from flags or from the environment, are refused in one line that names the
// setting and never repeats a secret; the binary exits 2.
func TestInvalidConfigurationIsOneLineAndExit2(t *testing.T) {
	const secret = "s3cret-redis-password-value"
	env := func(kv ...string) func(string) (string, bool) {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	for _, tt := range []struct {
		args   []string
		lookup func(string) (string, bool)
		want   string
	}{
		{nil, env("BATCH_WAIT", "soon"), "BATCH_WAIT"},
		{nil, env("STATUS_PAGE", "perhaps"), "STATUS_PAGE"},
		{[]string{"--metrics-addr", "9464"}, env(), "--metrics-addr"},
		{[]string{"--log-level", "loud"}, env(), "--log-level"},
		{[]string{"--lag-interval", "10ms"}, env(), "--lag-interval"},
		{[]string{"--redis-username", "scorer"}, env(), "has no password"},
		{nil, env("REDIS_PASSWORD", secret, "REDIS_PASSWORD_FILE", "/run/secrets/x"), "use one"},
		{nil, env("REDIS_CA_FILE", "/nonexistent/ca.pem", "REDIS_PASSWORD", secret), "CA file"},
		{nil, env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256", "KAFKA_SASL_USERNAME", "u", "KAFKA_SASL_PASSWORD", secret), "without TLS"},
		{[]string{"extra"}, env(), "unexpected arguments"},
	} {
		_, err := parseConfigEnv(tt.args, tt.lookup, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), secret) {
			t.Errorf("%v: err = %v, want one line naming %q without the secret", tt.args, err, tt.want)
		}
	}
	c, err := parseConfigEnv(nil, env("METRICS_ADDR", "off", "REDIS_USERNAME", "scorer", "REDIS_PASSWORD", secret, "BATCH_SIZE", "50"), io.Discard)
	if err != nil || c.metricsAddr != "" || c.redisOpts.Username != "scorer" || c.redisOpts.Password != secret || c.batch.MaxMessages != 50 {
		t.Fatalf("env settings not applied: %v %+v", err, c.batch)
	}

	bin := filepath.Join(t.TempDir(), "consumer")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "BATCH_SIZE=lots")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || strings.Count(stderr.String(), "\n") != 1 {
		t.Fatalf("exit %v, stderr %q; want status 2 and one line", err, stderr.String())
	}
	help, _ := exec.Command(bin, "--help").CombinedOutput()
	for _, want := range []string{"(env KAFKA_SASL_MECHANISM)", "(env REDIS_PASSWORD_FILE)", "(env METRICS_ADDR)", "(env MODEL_POLL)"} {
		if !bytes.Contains(help, []byte(want)) {
			t.Errorf("--help lacks %s", want)
		}
	}
}
