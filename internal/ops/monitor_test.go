package ops_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/internal/ops"
	"github.com/nhsx/dnarisk/monitor"
	"github.com/nhsx/dnarisk/scoring"
)

// The status page's live panel shows the monitor's report, read from its /monitor.json with
// the bearer token, and says why when it cannot.
func TestStatusPageShowsLivePerformance(t *testing.T) {
	model, err := scoring.Load("../../models/default")
	if err != nil {
		t.Fatal(err)
	}
	psi := 0.31
	rep := monitor.Report{LatestDay: "2025-06-30", Windows: []monitor.Window{
		{Days: 7, Outcomes: 420, AUC: &monitor.AUCResult{AUC: 0.712, CI: monitor.Interval{0.65, 0.77}},
			OE: &monitor.OE{Ratio: 1.42, CI: monitor.Interval{1.3, 1.6}}, PSIScore: &psi},
		{Days: 30, Outcomes: 1800}, {Days: 90, Outcomes: 5000}},
		Challenger: &monitor.Challenger{Model: "dna-gbm-challenger", Compared: true, AUCDiff: -0.021, AUCDiffCI: monitor.Interval{-0.04, -0.002}, Outcomes: 5000},
		Reminder:   &monitor.ReminderEffect{Effect: monitor.Effect{HeldOut: 100, Relative: 0.28, RelativeCI: monitor.Interval{0.1, 0.42}}, AssumedEfficacy: 0.3},
		Alerts:     []monitor.Alert{{Name: "DnariskModelCalibration", Window: 7, Detail: "O/E 1.42 (95% CI 1.30–1.60) is outside 0.80–1.25"}}}
	mon := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret-token" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(rep)
	}))
	defer mon.Close()
	tok := t.TempDir() + "/token"
	for _, tc := range []struct {
		name  string
		src   ops.MonitorSource
		token string
		want  []string
	}{
		{"connected", ops.MonitorFromURL(mon.URL, tok), "s3cret-token\n", []string{`data-k="live-auc-7">0.712`, `data-k="live-oe-7">1.42`,
			`data-k="live-outcomes-90">5000<`, "largest PSI 0.310", "dna-gbm-challenger", "AUC -0.021", "28.0% fewer", "card assumed 30.0%", "O/E 1.42 (95% CI 1.30–1.60)"}},
		{"refused", ops.MonitorFromURL(mon.URL, tok), "wrong", []string{"live performance: unavailable: monitor: 401 Unauthorized"}},
		{"none", nil, "", []string{"live performance: not connected"}},
		{"empty", ops.MonitorFunc(func(context.Context) (*monitor.Report, error) { return &monitor.Report{}, nil }), "", []string{"no outcomes joined to scores yet"}},
	} {
		if tc.token != "" {
			if err := writeFile(tok, tc.token); err != nil {
				t.Fatal(err)
			}
		}
		m := metrics.New()
		st := ops.NewStatus(ops.StatusConfig{Metrics: m.Registry, Model: func() *scoring.Model { return model }, Monitor: tc.src})
		srv := httptest.NewServer(ops.Handler(ops.Config{Registry: m.Registry, Status: st}))
		_, _, page := get(t, srv, "/status")
		srv.Close()
		for _, w := range tc.want {
			if !strings.Contains(page, w) {
				t.Errorf("%s: page lacks %q", tc.name, w)
			}
		}
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
