package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/monitor"
	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

// modelDir is the repository's default model.
const modelDir = "../../models/default"

func getenvOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigRefusesWhatWouldNotWork(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "model")
	if err := os.CopyFS(bad, os.DirFS(modelDir)); err != nil {
		t.Fatal(err)
	}
	ref, err := os.ReadFile(filepath.Join(modelDir, scoring.ReferenceFile))
	if err != nil {
		t.Fatal(err)
	}
	champ, err := scoring.Load(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, scoring.ReferenceFile), []byte(strings.Replace(string(ref), champ.ID(), "someone-else", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "no model directory"},
		{[]string{"--model-dir", t.TempDir()}, nil, "--model-dir"},
		{[]string{"--model-dir", modelDir, "--holdout-share", "0.2"}, nil, "DNA_HOLDOUT_KEY"},
		{[]string{"--model-dir", modelDir, "--holdout-share", "0.9"}, map[string]string{"DNA_HOLDOUT_KEY": "0123456789abcdef0123"}, "out of range"},
		{[]string{"--model-dir", bad}, nil, "is for model someone-else"},
		{[]string{"--model-dir", modelDir, "--metrics-addr", "0.0.0.0:9468"}, nil, "token"},
	} {
		_, err := parseConfig(tc.args, getenvOf(tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one mentioning %q", tc.args, err, tc.want)
		}
	}
	c, err := parseConfig([]string{"--model-dir", modelDir, "--holdout-share", "0.2"}, getenvOf(map[string]string{"DNA_HOLDOUT_KEY": "0123456789abcdef0123"}))
	if err != nil || c.holdout == nil || c.holdout.Share != 0.2 || c.topics.Shadow != "risk.shadow" {
		t.Fatalf("valid config: %+v, %v", c, err)
	}
}

// TestMonitorServesLiveFiguresFromKafka runs the command against real Kafka and Redis: risk
// events and outcomes on their topics come out as windows on /monitor.json and gauges on
// /metrics, and a restart that reads everything again counts nothing twice.
func TestMonitorServesLiveFiguresFromKafka(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	appts, risk := testenv.Topic(t, brokers, 2), testenv.Topic(t, brokers, 2)
	champ, err := loadChampion(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2025, 5, 12, 10, 0, 0, 0, time.UTC)
	var riskMsgs, outcomes []kafka.Message
	const n = 200
	for i := range n {
		s := sha256.Sum256(fmt.Append(nil, "cmd-monitor-", i))
		patient := hex.EncodeToString(s[:])
		p := 0.05 + 0.4*float64(i%5)/4
		at := start.Add(time.Duration(i) * time.Hour)
		r, _ := json.Marshal(events.Risk{Schema: events.RiskSchema, AppointmentID: fmt.Sprint("A", i), Version: 1, Patient: patient,
			SourceEventID: fmt.Sprint("e", i), AppointmentStart: at, Probability: p, Band: champ.model.Band(p), ModelID: champ.model.ID(),
			ScoredAt: at.Add(-48 * time.Hour), Features: map[string]float64{"lead_time_days": 10}})
		riskMsgs = append(riskMsgs, kafka.Message{Key: []byte(patient), Value: r})
		typ := events.Attended
		if i%5 >= 3 && i%3 == 0 || i%17 == 0 {
			typ = events.DidNotAttend
		}
		o, _ := json.Marshal(events.Appointment{Schema: events.AppointmentSchema, EventID: fmt.Sprint("o", i), Type: typ,
			EventTime: at.Add(time.Hour), AppointmentID: fmt.Sprint("A", i), Version: 1, Patient: patient})
		outcomes = append(outcomes, kafka.Message{Key: []byte(patient), Value: o})
	}
	ctx := context.Background()
	for topic, msgs := range map[string][]kafka.Message{risk: riskMsgs, appts: outcomes} {
		w := stream.NewWriter(brokers, topic)
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	prefix := fmt.Sprintf("dnamontest:%d:", time.Now().UnixNano())
	port := testenv.FreePort(t)
	cfg, err := parseConfig([]string{"--model-dir", modelDir, "--brokers", strings.Join(brokers, ","), "--redis", redisAddr,
		"--redis-prefix", prefix, "--topic-appointments", appts, "--topic-risk", risk, "--topic-shadow", "off",
		"--report-interval", "1s", "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port)}, getenvOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for round, group := range []string{"g1-" + prefix, "g2-" + prefix} { // the second reads everything again
		cfg.group = group
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- run(runCtx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
		var rep monitor.Report
		testenv.Eventually(t, 60*time.Second, func() bool {
			code, body := get("/monitor.json")
			if code != http.StatusOK || json.Unmarshal([]byte(body), &rep) != nil || len(rep.Windows) != 3 {
				return false
			}
			return rep.Windows[2].Outcomes == n && rep.Windows[2].Scored == n
		}, fmt.Sprintf("round %d: /monitor.json never showed the %d outcomes", round, n))
		w := rep.Windows[2]
		if w.AUC == nil || w.AUC.AUC < 0.6 || w.OE == nil || rep.CardAUC != champ.card.AUC || rep.Model != champ.model.ID() {
			t.Fatalf("round %d: 90-day window %+v, card AUC %v", round, w, rep.CardAUC)
		}
		code, body := get("/metrics")
		if code != http.StatusOK || !strings.Contains(body, `dnarisk_monitor_outcomes{window="90d"} 200`) ||
			!strings.Contains(body, "dnarisk_monitor_auc{window=\"90d\"}") {
			t.Fatalf("round %d: /metrics %d lacks the monitor's gauges:\n%s", round, code, grep(body, "dnarisk_monitor_"))
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
