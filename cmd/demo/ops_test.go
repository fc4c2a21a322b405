package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/producer/sim"
)

// chromium finds Debian's chromium (make test installs it). Missing, the test skips, or
// fails under CI=true.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testenv.CI() {
		t.Fatal("chromium is required under CI=true (apt-get install chromium; make test installs it)")
	}
	t.Skip("SKIPPING BROWSER TEST: no chromium on PATH (apt-get install chromium)")
	return ""
}

// browser starts a headless Chromium with a fresh profile and nothing that phones home.
func browser(t *testing.T, ctx context.Context) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1100),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// shown returns the text of every element with a data-k attribute on the status page.
func shown(ctx context.Context, url string) (map[string]string, error) {
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`[data-k="consumed"]`))); err != nil {
		return nil, err
	}
	return chromedp.Run(ctx, chromedp.Evaluate[map[string]string](
		`Object.fromEntries([...document.querySelectorAll('[data-k]')].map(e => [e.dataset.k, e.textContent.trim()]))`))
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value sums a family's series whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) int64 {
	var sum float64
	for _, m := range fams[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			ok = ok && labels[want[i]] == want[i+1]
		}
		if ok {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return int64(sum)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testenv.Buffer

// A demo run seen through its status page in a real browser: the page loads while the
// scorer is working, and once the run is done every number it shows is the number
// /metrics reports. The screenshot goes to out/status.png for a person to look at.
func TestStatusPageInBrowserMatchesMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bctx := browser(t, ctx)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	base := "http://" + addr

	// While the demo runs (paced, so there is a "while"), load the page once it shows work.
	midRun := loadPageMidRun(ctx, bctx, base)
	var held bool
	var logs syncBuffer
	_, err := run(ctx, options{
		sim: simEffects(sim.Config{Seed: 11, Patients: 300, Days: 30}), malformed: len(badEvents), modelDir: "../../models/default",
		monitor: true, challengerModelDir: "../../models/challenger",
		rate: 1500, metricsAddr: addr, logs: &logs,
		hold: func(ctx context.Context, opsURL string) {
			held = true
			if opsURL != base {
				t.Errorf("served on %s, asked for %s", opsURL, base)
			}
			if err := <-midRun; err != nil {
				t.Errorf("loading the page during the run: %v", err)
			}
			checkPageMatchesMetrics(t, bctx, base)
			screenshot(t, bctx)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !held {
		t.Fatal("the demo never held its endpoint open")
	}
	scanForPersonalData(t, "the demo's JSON logs", logs.String())
}

// loadPageMidRun polls /status.json until the scorer has consumed something, then loads the
// status page in the browser, which must show a non-zero count too. The error (nil: it did)
// arrives on the channel.
func loadPageMidRun(ctx, bctx context.Context, base string) <-chan error {
	midRun := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
			res, err := http.Get(base + "/status.json")
			if err != nil {
				continue
			}
			var d struct {
				Consumed int64 `json:"events_consumed"`
			}
			json.NewDecoder(res.Body).Decode(&d)
			res.Body.Close()
			if d.Consumed == 0 {
				continue
			}
			got, err := shown(bctx, base+"/status")
			if err == nil {
				if n, _ := strconv.Atoi(got["consumed"]); n == 0 {
					err = fmt.Errorf("page shows %q events while /status.json said %d", got["consumed"], d.Consumed)
				}
			}
			midRun <- err
			return
		}
		midRun <- ctx.Err()
	}()
	return midRun
}

// checkPageMatchesMetrics loads the status page and /metrics after the run: every count the
// page shows is the one /metrics reports, and the model shown is the one serving and the one
// in models/default/card.json.
func checkPageMatchesMetrics(t *testing.T, bctx context.Context, base string) {
	t.Helper()
	got, err := shown(bctx, base+"/status")
	if err != nil {
		t.Fatalf("load status page: %v", err)
	}
	fams := scrape(t, base+"/metrics")
	want := map[string]int64{
		"consumed":            value(fams, "dnarisk_events_consumed_total"),
		"risk-events":         value(fams, "dnarisk_risk_events_total"),
		"dead-lettered":       value(fams, "dnarisk_events_dead_lettered_total"),
		"batch-failures":      value(fams, "dnarisk_batch_failures_total"),
		"reminders-sent":      value(fams, "dnarisk_reminders_today", "outcome", "sent"),
		"reminders-failed":    value(fams, "dnarisk_reminders_today", "outcome", "failed"),
		"reminders-cancelled": value(fams, "dnarisk_reminders_today", "outcome", "cancelled"),
		"lag":                 value(fams, "dnarisk_consumer_lag_messages"),
	}
	for _, band := range []string{"low", "medium", "high", "very_high"} {
		want["band-"+band] = value(fams, "dnarisk_risk_events_total", "band", band)
	}
	for k, n := range want {
		if got[k] != strconv.FormatInt(n, 10) {
			t.Errorf("page shows %s = %q, /metrics says %d", k, got[k], n)
		}
	}
	if want["consumed"] == 0 || want["risk-events"] == 0 || want["dead-lettered"] != int64(len(badEvents)) || want["reminders-sent"] == 0 {
		t.Errorf("a run that did little: %v", want)
	}
	if e := value(fams, "dnarisk_consumer_lag_errors_total"); e > 0 || fams["dnarisk_consumer_lag_messages"] == nil {
		t.Errorf("consumer lag not measured (%d failed measurements)", e)
	}
	// The live performance panel shows the monitor's report, as its gauges do.
	outcomes90 := value(fams, "dnarisk_monitor_outcomes", "window", "90d")
	if outcomes90 == 0 || got["live-outcomes-90"] != strconv.FormatInt(outcomes90, 10) {
		t.Errorf("live panel shows %q outcomes over 90 days, /metrics says %d", got["live-outcomes-90"], outcomes90)
	}
	for _, m := range fams["dnarisk_monitor_auc"].GetMetric() {
		if w := m.GetLabel()[0].GetValue(); w == "90d" && !strings.HasPrefix(got["live-auc-90"], fmt.Sprintf("%.3f", m.GetGauge().GetValue())) {
			t.Errorf("live panel shows AUC %q over 90 days, /metrics says %v", got["live-auc-90"], m.GetGauge().GetValue())
		}
	}
	if got["live-challenger"] == "" {
		t.Errorf("live panel shows no challenger: %v", got)
	}
	var modelID string
	for _, m := range fams["dnarisk_model_info"].GetMetric() {
		modelID = m.GetLabel()[0].GetValue()
	}
	var card struct {
		ModelID   string  `json:"model_id"`
		TrainedAt string  `json:"trained_at"`
		AUC       float64 `json:"auc"`
	}
	b, _ := os.ReadFile("../../models/default/card.json")
	json.Unmarshal(b, &card)
	if got["model-id"] != modelID || got["card-model-id"] != modelID || card.ModelID != modelID ||
		got["card-auc"] != fmt.Sprintf("%.3f", card.AUC) || got["card-trained-at"] != card.TrainedAt {
		t.Errorf("model shown %q/%q auc %q trained %q; metrics say %q, card.json %+v",
			got["model-id"], got["card-model-id"], got["card-auc"], got["card-trained-at"], modelID, card)
	}
}

// screenshot saves the page as out/status.png.
func screenshot(t *testing.T, bctx context.Context) {
	t.Helper()
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	os.MkdirAll("../../out", 0o755)
	shot := filepath.Join("..", "..", "out", "status.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("status page screenshot: out/status.png (%d bytes)", len(png))
}

// Identifiers that must never reach a log: NHS numbers (ten digits, or 3-3-4 with spaces or
// dashes) and UK phone numbers (07xxx or +44 7xxx, with or without spaces), not inside a
// longer run of digits or letters (a hex pseudonym) or a decimal fraction.
var personalData = []struct {
	what string
	re   *regexp.Regexp
}{
	{"NHS number", regexp.MustCompile(`(?:^|[^0-9A-Za-z.])(\d{10}|\d{3}[ -]\d{3}[ -]\d{4})(?:[^0-9A-Za-z]|$)`)},
	{"phone number", regexp.MustCompile(`(?:^|[^0-9A-Za-z.])((?:\+44\s?|0)7\d{3}\s?\d{6})(?:[^0-9A-Za-z]|$)`)},
}

func scanForPersonalData(t *testing.T, what, text string) {
	t.Helper()
	for _, p := range personalData {
		if m := p.re.FindStringSubmatch(text); m != nil {
			t.Errorf("%s carry a %s: %q", what, p.what, m[1])
		}
	}
}

// The scanner itself: it finds what it looks for and ignores timestamps, offsets, hashes
// and durations.
func TestPersonalDataScanner(t *testing.T) {
	for _, s := range []string{`"detail":"parsing time \"943 476 5919\""`, `nhs=9434765919`, `"phone":"07700 900123"`,
		`to +44 7700 900123.`, `+447700900123`, `943-476-5919`} {
		found := false
		for _, p := range personalData {
			found = found || p.re.MatchString(s)
		}
		if !found {
			t.Errorf("scanner misses %q", s)
		}
	}
	for _, s := range []string{`"time":"2026-11-26T18:04:00.123456789Z"`, `"offset":1234567`, `"elapsed_s":0.1234567890`,
		`"patient":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"`, `"took_ns":12345678901`, `"detail":"[digits]"`} {
		for _, p := range personalData {
			if p.re.MatchString(s) {
				t.Errorf("scanner flags %q as a %s", s, p.what)
			}
		}
	}
}

// Every log line of a demo run, including the one for an event that quotes an NHS number and
// carries a phone number, is free of both, and the progress lines too; the dead letter is
// still logged, with its reason.
func TestDemoLogsCarryNoPersonalData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var logs, out syncBuffer
	progress = io.MultiWriter(&out, os.Stderr)
	defer func() { progress = os.Stderr }()
	if _, err := run(ctx, options{sim: sim.Config{Seed: 5, Patients: 300, Days: 30}, malformed: len(badEvents),
		modelDir: "../../models/default", logs: &logs}); err != nil {
		t.Fatal(err)
	}
	text := logs.String()
	scanForPersonalData(t, "the demo's JSON logs", text)
	scanForPersonalData(t, "the demo's progress lines", out.String())
	var deadLetters int
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k]; !ok {
				t.Fatalf("log line without %q: %s", k, line)
			}
		}
		if rec["msg"] == "dead-lettered appointment event" {
			deadLetters++
			if rec["reason"] == nil || rec["offset"] == nil {
				t.Errorf("dead-letter log line without reason or offset: %s", line)
			}
		}
	}
	if deadLetters != len(badEvents) || !strings.Contains(text, "[digits]") {
		t.Fatalf("%d dead-letter log lines for %d malformed events; redacted detail present: %v",
			deadLetters, len(badEvents), strings.Contains(text, "[digits]"))
	}
}
