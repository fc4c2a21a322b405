package ops_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/internal/ops"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/scoring"
)

func get(t *testing.T, srv *httptest.Server, path string) (int, http.Header, string) {
	t.Helper()
	res, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b)
}

func TestHealthReadyAndMetrics(t *testing.T) {
	m := metrics.New()
	redisErr := errors.New("dial tcp 127.0.0.1:6379: connection refused")
	var redisDown bool
	srv := httptest.NewServer(ops.Handler(ops.Config{Registry: m.Registry, CheckTimeout: 200 * time.Millisecond, Checks: []ops.Check{
		{Name: "kafka", Func: func(context.Context) error { return nil }},
		{Name: "redis", Func: func(context.Context) error {
			if redisDown {
				return redisErr
			}
			return nil
		}},
		{Name: "slow", Func: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
	}}))
	defer srv.Close()

	if code, _, body := get(t, srv, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	code, _, body := get(t, srv, "/readyz")
	var rd struct {
		Ready  bool
		Checks map[string]string
	}
	json.Unmarshal([]byte(body), &rd)
	if code != 503 || rd.Ready || rd.Checks["kafka"] != "ok" || !strings.Contains(rd.Checks["slow"], "deadline") {
		t.Fatalf("/readyz with a hanging check = %d %s", code, body)
	}
	m.SetModel("m1")
	if code, _, body := get(t, srv, "/metrics"); code != 200 || !strings.Contains(body, `dnarisk_model_info{model_id="m1"} 1`) || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics = %d\n%s", code, body)
	}
	redisDown = true
	_, _, body = get(t, srv, "/readyz")
	if !strings.Contains(body, "connection refused") {
		t.Fatalf("/readyz does not say why redis is not ready: %s", body)
	}
	if code, _, _ := get(t, srv, "/status"); code != 404 {
		t.Fatalf("/status without a Status = %d, want 404", code)
	}
}

func TestStatusPageShowsWhatMetricsCount(t *testing.T) {
	model, err := scoring.Load("../../models/default")
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	st := ops.NewStatus(ops.StatusConfig{Metrics: m.Registry, Model: func() *scoring.Model { return model }, ModelDir: "../../models/default"})
	obs := scorer.Observers(m, st)
	patient := "0123456789abcdef" + strings.Repeat("9", 48)
	start := time.Date(2025, 6, 2, 9, 30, 0, 0, time.UTC)
	ev := &events.Appointment{Patient: patient, Booking: &events.Booking{Specialty: "110", Clinic: "ORTHO-2", FirstVisit: true, Start: start}}
	obs.BatchDone(&scorer.BatchReport{Source: "appointments", Messages: 4, Published: map[string]int{"risk": 3, "appointments.dlq": 1},
		DeadLettered: map[string]int{scorer.ReasonContract: 1},
		Scores:       []scorer.Score{{Event: ev, Band: "very_high", Probability: 0.61}, {Event: ev, Band: "low", Probability: 0.02}, {Event: ev, Band: "high", Probability: 0.2}}})
	srv := httptest.NewServer(ops.Handler(ops.Config{Registry: m.Registry, Status: st}))
	defer srv.Close()

	code, h, page := get(t, srv, "/status")
	if code != 200 || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("/status = %d, headers %v", code, h)
	}
	for _, want := range []string{`data-k="consumed">4<`, `data-k="risk-events">3<`, `data-k="dead-lettered">1<`,
		`data-k="band-very_high">1<`, `data-k="band-low">1<`, `data-k="band-medium">0<`, "01234567…", "ORTHO-2",
		"reminders: not connected", model.ID()} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, patient[:9]) {
		t.Error("page shows more than 8 characters of a pseudonym")
	}
	_, _, js := get(t, srv, "/status.json")
	var d ops.StatusData
	if err := json.Unmarshal([]byte(js), &d); err != nil {
		t.Fatal(err)
	}
	if d.Consumed != 4 || d.RiskEvents != 3 || len(d.Recent) != 2 || d.Recent[0].Band != "high" || d.Model.AUC == nil {
		t.Fatalf("status.json = %+v", d)
	}
}

// The consumer's status page reads today's reminders from the dispatcher's /metrics.
func TestRemindersFromDispatcherMetrics(t *testing.T) {
	dm := metrics.New()
	dm.Reminders(func() metrics.ReminderCounts {
		return metrics.ReminderCounts{Sent: 42, Failed: 2, Cancelled: 7, Scheduled: 60}
	}, time.UTC)
	dispatcher := httptest.NewServer(ops.Handler(ops.Config{Registry: dm.Registry}))
	defer dispatcher.Close()
	for name, rc := range map[string]ops.ReminderCounter{
		"url":      ops.RemindersFromURL(dispatcher.URL+"/metrics", ""),
		"gatherer": ops.RemindersFrom(dm.Registry),
	} {
		got, err := rc.RemindersToday(context.Background())
		if err != nil || got != (ops.ReminderCounts{Sent: 42, Failed: 2, Cancelled: 7}) {
			t.Errorf("%s: %+v, %v", name, got, err)
		}
	}
	if _, err := ops.RemindersFromURL(dispatcher.URL+"/nope", "").RemindersToday(context.Background()); err == nil {
		t.Error("a missing endpoint gave no error")
	}

	m := metrics.New()
	model, err := scoring.Load("../../models/default")
	if err != nil {
		t.Fatal(err)
	}
	st := ops.NewStatus(ops.StatusConfig{Metrics: m.Registry, Model: func() *scoring.Model { return model },
		Reminders: ops.RemindersFromURL(dispatcher.URL+"/metrics", "")})
	srv := httptest.NewServer(ops.Handler(ops.Config{Registry: m.Registry, Status: st}))
	defer srv.Close()
	_, _, page := get(t, srv, "/status")
	for _, want := range []string{`data-k="reminders-sent">42<`, `data-k="reminders-failed">2<`, `data-k="reminders-cancelled">7<`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}
