package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders/contacts"
	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
	"github.com/nhsx/dnarisk/stream"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testenv.Buffer

var listenRE = regexp.MustCompile(`"msg":"operations endpoint listening","addr":"([^"]+)"`)

// metric returns the value of one sample line of a /metrics page, or -1.
func metric(page, sample string) float64 {
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// The real binary holds reminders above its daily cap (metrics and logs say so), keeps
// holding them at each recheck, sends them once SIGHUP brings a higher cap from the config
// file, and keeps the caps in force when a reload finds a bad budget.
func TestBinaryBudgetHoldsAndReloads(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	// The daily count starts again at London midnight; keep clear of it.
	if now := time.Now().In(london); now.Hour() == 23 && now.Minute() >= 58 {
		time.Sleep(time.Until(time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 5, 0, london)))
	}
	appts, riskT, failedT := testenv.Topic(t, brokers, 1), testenv.Topic(t, brokers, 1), testenv.Topic(t, brokers, 1)
	prefix := fmt.Sprintf("budget%d:", time.Now().UnixNano())

	key, _ := notify.ParseKey(apiKey)
	stub, err := notifystub.New(notifystub.Config{Key: key, Templates: map[string][]string{
		stdTpl: {"appointment_date", "appointment_time"}, extraTpl: {"appointment_date", "appointment_time"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(stub)
	defer srv.Close()

	var cfg map[string]any
	example, _ := os.ReadFile("config.example.json")
	_ = json.Unmarshal(example, &cfg)
	delete(cfg["policy"].(map[string]any), "quiet_hours")
	cfgPath := writeJSON(t, cfg)
	setBudget := func(b map[string]any) {
		cfg["budget"] = b
		raw, _ := json.Marshal(cfg)
		if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setBudget(map[string]any{"per_day": 1, "recheck": "1s"})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	ck, _ := contacts.ParseKey(contactKey)
	store, _ := contacts.NewStore(rdb, prefix, ck)
	now := time.Now().UTC().Truncate(time.Second)
	start := now.Add(2*24*time.Hour - time.Minute) // the 2-day reminder fell due a minute ago
	var evs []kafka.Message
	for i := range 3 {
		p := fmt.Sprintf("%064x", 2000+i)
		if err := store.Put(ctx, p, contacts.Contact{Phone: contacts.Drama(i)}); err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("BUD-%d", i)
		b, _ := json.Marshal(events.Appointment{Schema: events.AppointmentSchema, EventID: id, Type: events.Booked,
			EventTime: now.Add(-time.Hour), AppointmentID: id, Version: 1, Patient: p, Booking: &events.Booking{Specialty: "110",
				Clinic: "C", Start: start, BookedAt: now.Add(-time.Hour), AgeBand: "45-54", Contact: events.Contact{SMS: true}}})
		evs = append(evs, kafka.Message{Topic: appts, Key: []byte(p), Value: b})
	}
	w := stream.NewWriter(brokers, "")
	if err := w.WriteMessages(ctx, evs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	cmd := exec.Command(build(t), "--config", cfgPath, "--group", strings.TrimSuffix(prefix, ":"), "--topic-appointments", appts,
		"--topic-risk", riskT, "--topic-failed", failedT, "--redis-prefix", prefix, "--notify-url", srv.URL)
	cmd.Env = append(os.Environ(), "KAFKA_BROKERS="+strings.Join(brokers, ","), "REDIS_ADDR="+redisAddr, "METRICS_ADDR=127.0.0.1:0",
		"NOTIFY_API_KEY="+apiKey, "DNA_REMINDER_SECRET=reminder-secret-0123456789abcdefghijkl", "DNA_CONTACT_KEY="+contactKey)
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	var metricsURL string
	testenv.Eventually(t, 30*time.Second, func() bool {
		m := listenRE.FindStringSubmatch(logs.String())
		if m != nil {
			metricsURL = "http://" + m[1] + "/metrics"
		}
		return m != nil
	}, "the operations endpoint")
	scrape := func() string {
		resp, err := http.Get(metricsURL)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	page := ""
	testenv.Eventually(t, 60*time.Second, func() bool {
		page = scrape()
		return metric(page, `dnarisk_sms_budget_held_total{cap="day"}`) >= 6 // both held, three rechecks each
	}, "the two reminders over the cap to be held and rechecked")
	if n := len(stub.Messages()); n != 1 {
		t.Fatalf("%d messages under a daily cap of 1", n)
	}
	for sample, want := range map[string]float64{`dnarisk_sms_budget_limit{window="day"}`: 1, `dnarisk_sms_budget_sent{window="day"}`: 1,
		`dnarisk_reminders_total{outcome="failed"}`: 0, `dnarisk_reminders_total{outcome="cancelled"}`: 0} {
		if got := metric(page, sample); got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
	if !strings.Contains(logs.String(), "SMS budget reached") {
		t.Fatalf("no log line says the budget was reached:\n%s", logs)
	}

	// A bad budget on reload is refused; the caps in force stay.
	setBudget(map[string]any{"per_day": -1})
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "budget not reloaded") },
		"the bad reload to be refused")
	// The operator raises the cap and sends SIGHUP: the held reminders go out.
	setBudget(map[string]any{"per_day": 100, "recheck": "1s"})
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(stub.Messages()) == 3 }, "the held reminders to be sent after the reload")
	if got := metric(scrape(), `dnarisk_sms_budget_limit{window="day"}`); got != 100 {
		t.Fatalf("day limit %v after the reload, want 100", got)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logs)
	}
	if len(stub.Messages()) != 3 || len(stub.Messages()) != len(uniqueRefs(stub.Messages())) {
		t.Fatalf("%d messages, want 3 with distinct references", len(stub.Messages()))
	}
	if strings.Contains(logs.String(), "07700") {
		t.Fatalf("a phone number reached the logs:\n%s", logs)
	}
}

func uniqueRefs(ms []notifystub.Message) map[string]bool {
	out := map[string]bool{}
	for _, m := range ms {
		out[m.Reference] = true
	}
	return out
}
