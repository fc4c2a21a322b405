package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders"
	"github.com/nhsx/dnarisk/reminders/contacts"
	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
	"github.com/nhsx/dnarisk/reminders/policy"
	"github.com/nhsx/dnarisk/stream"
)

const (
	apiKey     = "dnarisk_test-26785a09-ab16-4eb0-8407-a37497a57506-3d844edf-8d35-48ac-975b-e847b4f122b0"
	contactKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	stdTpl     = "f33517ff-2a88-4f6e-b855-c550268ce08a"
	extraTpl   = "aa46d7b7-0c3b-4f5c-9b2a-0c2f8d5f7b11"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func goodEnv(cfg string) map[string]string {
	return map[string]string{"DISPATCHER_CONFIG": cfg, "NOTIFY_API_KEY": apiKey,
		"DNA_REMINDER_SECRET": "reminder-secret-0123456789abcdefghijkl", "DNA_CONTACT_KEY": contactKey}
}

func writeJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExampleConfigIsAccepted(t *testing.T) {
	c, err := parseConfig(nil, envOf(goodEnv("config.example.json")))
	if err != nil {
		t.Fatal(err)
	}
	if c.opts.Templates.Extra != extraTpl || len(c.opts.Policy.Standard) != 2 || c.notify.Key.ServiceID != "26785a09-ab16-4eb0-8407-a37497a57506" ||
		c.opts.Budget != (reminders.Budget{PerHour: 1000, PerDay: 5000, PerPatientPerDay: 2, Recheck: policy.Duration(time.Minute)}) {
		t.Fatalf("parsed %+v", c.opts)
	}
}

// The topic settings come from flags or the environment, flag first.
func TestTopicSettings(t *testing.T) {
	env := goodEnv("config.example.json")
	env["CREATE_TOPICS"], env["TOPIC_PARTITIONS"], env["TOPIC_REPLICATION"] = "true", "6", "3"
	c, err := parseConfig([]string{"--topic-partitions", "4"}, envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if !c.createTopics || c.topicSpec != (stream.TopicSpec{Partitions: 4, Replication: 3}) {
		t.Fatalf("create %v, spec %+v; want true, 4 partitions (flag), replication 3", c.createTopics, c.topicSpec)
	}
}

// Invalid configuration is refused at start with a message that names the problem and
// never echoes a secret.
func TestParseConfigRefusesBadConfig(t *testing.T) {
	example, err := os.ReadFile("config.example.json")
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) string {
		var m map[string]any
		if err := json.Unmarshal(example, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		return writeJSON(t, m)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"bad key format", map[string]string{"NOTIFY_API_KEY": "not-a-key-" + strings.Repeat("x", 70)}, nil, "invalid GOV.UK Notify API key"},
		{"short key", map[string]string{"NOTIFY_API_KEY": "abc"}, nil, "invalid GOV.UK Notify API key"},
		{"secret not a uuid", map[string]string{"NOTIFY_API_KEY": apiKey[:len(apiKey)-36] + strings.Repeat("z", 36)}, nil, "secret"},
		{"no key", map[string]string{"NOTIFY_API_KEY": ""}, nil, "no Notify API key"},
		{"missing standard template", map[string]string{"DISPATCHER_CONFIG": edit(func(m map[string]any) {
			delete(m["templates"].(map[string]any), "standard")
		})}, nil, "templates.standard is missing"},
		{"missing extra template", map[string]string{"DISPATCHER_CONFIG": edit(func(m map[string]any) {
			delete(m["templates"].(map[string]any), "extra")
		})}, nil, "templates.extra is missing"},
		{"template not a uuid", map[string]string{"DISPATCHER_CONFIG": edit(func(m map[string]any) {
			m["templates"].(map[string]any)["extra"] = "reminder"
		})}, nil, "is not a UUID"},
		{"unknown field", map[string]string{"DISPATCHER_CONFIG": edit(func(m map[string]any) { m["polcy"] = 1 })}, nil, "unknown field"},
		{"bad duration", map[string]string{"DISPATCHER_CONFIG": edit(func(m map[string]any) {
			m["policy"].(map[string]any)["standard"] = []string{"7 days"}
		})}, nil, "duration"},
		{"bad quiet hours", map[string]string{"DISPATCHER_CONFIG": edit(func(m map[string]any) {
			m["policy"].(map[string]any)["quiet_hours"] = map[string]string{"start": "25:00", "end": "08:00"}
		})}, nil, "quiet_hours.start"},
		{"short lease", map[string]string{"DISPATCHER_CONFIG": edit(func(m map[string]any) {
			m["sending"].(map[string]any)["lease"] = "30s"
		})}, nil, "sending.lease"},
		{"negative budget", map[string]string{"DISPATCHER_CONFIG": edit(func(m map[string]any) {
			m["budget"].(map[string]any)["per_day"] = -1
		})}, nil, "budget caps must be 0"},
		{"hourly budget above daily", map[string]string{"DISPATCHER_CONFIG": edit(func(m map[string]any) {
			m["budget"].(map[string]any)["per_hour"] = 6000
		})}, nil, "budget.per_hour 6000 is above budget.per_day 5000"},
		{"short reminder secret", map[string]string{"DNA_REMINDER_SECRET": "short"}, nil, "reminder secret"},
		{"bad contact key", map[string]string{"DNA_CONTACT_KEY": "abcd"}, nil, "contact key"},
		{"no config", map[string]string{"DISPATCHER_CONFIG": ""}, nil, "no config file"},
		{"bad notify url", nil, []string{"--notify-url", "ftp://x"}, "not an http(s) URL"},
		{"bad partitions variable", map[string]string{"TOPIC_PARTITIONS": "many"}, nil, "TOPIC_PARTITIONS"},
		{"replication out of range", nil, []string{"--topic-replication", "99"}, "--topic-replication"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := goodEnv("config.example.json")
			for k, v := range tc.env {
				env[k] = v
			}
			_, err := parseConfig(tc.args, envOf(env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "3d844edf") || strings.Contains(err.Error(), contactKey) {
				t.Fatalf("error leaks a secret: %v", err)
			}
		})
	}
}

func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dispatcher")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// The binary refuses a bad key with one line and exit status 2.
func TestBinaryExitsTwoOnBadKey(t *testing.T) {
	cmd := exec.Command(build(t), "--config", "config.example.json")
	cmd.Env = append(os.Environ(), "NOTIFY_API_KEY=wrong", "DNA_REMINDER_SECRET=reminder-secret-0123456789abcdefghijkl", "DNA_CONTACT_KEY="+contactKey)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want status 2\n%s", err, out)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "invalid GOV.UK Notify API key") {
		t.Fatalf("output %q, want one line naming the key problem", out)
	}
}

// A dispatcher started before one of its topics exists is not ready, naming it, and stops
// cleanly while waiting.
func TestBinaryWaitsForMissingTopic(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	appts, riskT := testenv.Topic(t, brokers, 1), testenv.Topic(t, brokers, 1)
	failedT := fmt.Sprintf("test.later.failed.%d", time.Now().UnixNano())
	opsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cmd := exec.Command(build(t), "--config", "config.example.json", "--topic-appointments", appts, "--topic-risk", riskT,
		"--topic-failed", failedT, "--metrics-addr", opsAddr)
	cmd.Env = append(os.Environ(), "KAFKA_BROKERS="+strings.Join(brokers, ","), "REDIS_ADDR="+redisAddr,
		"NOTIFY_API_KEY="+apiKey, "DNA_REMINDER_SECRET=reminder-secret-0123456789abcdefghijkl", "DNA_CONTACT_KEY="+contactKey)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var body string
	testenv.Eventually(t, 30*time.Second, func() bool {
		res, err := http.Get("http://" + opsAddr + "/readyz")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		body = string(b)
		return res.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, "do not exist")
	}, "/readyz to answer 503 naming the missing topic")
	if !strings.Contains(body, failedT) || strings.Contains(body, appts) {
		t.Fatalf("/readyz %s: want the missing %s named, and only it", body, failedT)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(logs.String(), "dispatcher stopped cleanly") {
		t.Fatalf("exit after SIGTERM while waiting: %v\n%s", err, logs.String())
	}
}

// The real binary against real Kafka and Redis and the Notify stub: it sends what is due,
// stops cleanly on SIGTERM, and after a restart and a replay of every event sends nothing
// twice.
func TestBinarySendsOnceAcrossRestartAndReplay(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	appts, riskT, failedT := testenv.Topic(t, brokers, 2), testenv.Topic(t, brokers, 2), testenv.Topic(t, brokers, 1)
	prefix := fmt.Sprintf("disp%d:", time.Now().UnixNano())
	group := strings.TrimSuffix(prefix, ":")

	key, _ := notify.ParseKey(apiKey)
	stub, err := notifystub.New(notifystub.Config{Key: key, Templates: map[string][]string{
		stdTpl: {"appointment_date", "appointment_time"}, extraTpl: {"appointment_date", "appointment_time"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(stub)
	defer srv.Close()

	// No quiet hours, so that the test passes at any time of day.
	var cfg map[string]any
	example, _ := os.ReadFile("config.example.json")
	_ = json.Unmarshal(example, &cfg)
	delete(cfg["policy"].(map[string]any), "quiet_hours")
	cfgPath := writeJSON(t, cfg)

	// Two patients whose 2-day reminder fell due a minute ago; one is high risk, so its
	// day-before reminder is pending too; a third appointment is cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	ck, _ := contacts.ParseKey(contactKey)
	store, _ := contacts.NewStore(rdb, prefix, ck)
	now := time.Now().UTC().Truncate(time.Second)
	start := now.Add(2*24*time.Hour - time.Minute)
	var evs []kafka.Message
	add := func(topic, patient string, v any) {
		b, _ := json.Marshal(v)
		evs = append(evs, kafka.Message{Topic: topic, Key: []byte(patient), Value: b})
	}
	for i, band := range []string{"low", "high", "low"} {
		p := fmt.Sprintf("%064x", 1000+i)
		if err := store.Put(ctx, p, contacts.Contact{Phone: contacts.Drama(i)}); err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("BIN-%d", i)
		add(appts, p, events.Appointment{Schema: events.AppointmentSchema, EventID: id, Type: events.Booked, EventTime: now.Add(-time.Hour),
			AppointmentID: id, Version: 1, Patient: p, Booking: &events.Booking{Specialty: "110", Clinic: "C", Start: start,
				BookedAt: now.Add(-time.Hour), AgeBand: "45-54", Contact: events.Contact{SMS: true}}})
		add(riskT, p, events.Risk{Schema: events.RiskSchema, AppointmentID: id, Version: 1, Patient: p, AppointmentStart: start,
			Probability: 0.3, Band: band, ModelID: "m", ScoredAt: now})
		if i == 2 {
			add(appts, p, events.Appointment{Schema: events.AppointmentSchema, EventID: id + "-x", Type: events.Cancelled,
				EventTime: now.Add(-time.Minute), AppointmentID: id, Version: 1, Patient: p, CancelledBy: events.ByHospital})
		}
	}
	publish := func() {
		w := stream.NewWriter(brokers, "")
		defer w.Close()
		if err := w.WriteMessages(ctx, evs...); err != nil {
			t.Fatal(err)
		}
	}
	publish()

	bin := build(t)
	start1 := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(bin, "--config", cfgPath, "--group", group, "--topic-appointments", appts, "--topic-risk", riskT,
			"--topic-failed", failedT, "--redis-prefix", prefix, "--notify-url", srv.URL)
		cmd.Env = append(os.Environ(), "KAFKA_BROKERS="+strings.Join(brokers, ","), "REDIS_ADDR="+redisAddr, "METRICS_ADDR=127.0.0.1:0",
			"NOTIFY_API_KEY="+apiKey, "DNA_REMINDER_SECRET=reminder-secret-0123456789abcdefghijkl", "DNA_CONTACT_KEY="+contactKey)
		var logs bytes.Buffer
		cmd.Stderr = &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		return cmd, &logs
	}
	stopClean := func(cmd *exec.Cmd, logs *bytes.Buffer) {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v\n%s", err, logs)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no exit within 30s of SIGTERM\n%s", logs)
		}
		if !strings.Contains(logs.String(), "dispatcher stopped cleanly") {
			t.Fatalf("no clean stop:\n%s", logs)
		}
		if strings.Contains(logs.String(), "07700") {
			t.Fatalf("a phone number reached the logs:\n%s", logs)
		}
	}

	cmd, logs := start1()
	testenv.Eventually(t, 60*time.Second, func() bool { return len(stub.Messages()) >= 2 }, "the two due reminders to be sent")
	stopClean(cmd, logs)

	publish() // every event again, as after a producer retry
	cmd, logs = start1()
	committed := func() int64 {
		client := &kafka.Client{Addr: kafka.TCP(brokers...)}
		res, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{appts: {0, 1}, riskT: {0, 1}}})
		if err != nil {
			return -1
		}
		var n int64
		for _, ps := range res.Topics {
			for _, p := range ps {
				n += max(p.CommittedOffset, 0)
			}
		}
		return n
	}
	testenv.Eventually(t, 60*time.Second, func() bool { return committed() == int64(2*len(evs)) },
		"the restarted dispatcher to consume and commit the replayed events")
	stopClean(cmd, logs)

	if got := len(stub.Messages()); got != 2 {
		t.Fatalf("%d messages, want 2 (one per live appointment, none for the cancelled one)", got)
	}
	// The high-risk appointment still has its day-before reminder pending; the low one none.
	n, err := rdb.ZCard(ctx, prefix+"reminders:due").Result()
	if err != nil || n != 1 {
		t.Fatalf("%d pending reminders (%v), want 1", n, err)
	}
}
