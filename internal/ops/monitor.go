package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nhsx/dnarisk/internal/authn"
	"github.com/nhsx/dnarisk/monitor"
)

// MonitorSource gives the model monitor's latest report (cmd/monitor's /monitor.json).
type MonitorSource interface {
	Report(ctx context.Context) (*monitor.Report, error)
}

// MonitorFunc adapts a function (an in-process monitor) to a MonitorSource.
type MonitorFunc func(ctx context.Context) (*monitor.Report, error)

// Report implements MonitorSource.
func (f MonitorFunc) Report(ctx context.Context) (*monitor.Report, error) { return f(ctx) }

// MonitorFromURL reads the report from the monitor's /monitor.json at url, sending the first
// token of tokenFile as a bearer token when tokenFile is set (read on every call).
func MonitorFromURL(url, tokenFile string) MonitorSource {
	c := &http.Client{Timeout: 2 * time.Second}
	return MonitorFunc(func(ctx context.Context) (*monitor.Report, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		if tokenFile != "" {
			tok, err := authn.ReadToken(tokenFile)
			if err != nil {
				return nil, fmt.Errorf("monitor token: %w", err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := c.Do(req)
		if err != nil {
			return nil, fmt.Errorf("monitor: %w", err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("monitor: %s", res.Status)
		}
		var rep monitor.Report
		if err := json.NewDecoder(io.LimitReader(res.Body, 8<<20)).Decode(&rep); err != nil {
			return nil, fmt.Errorf("monitor: %w", err)
		}
		return &rep, nil
	})
}

// LiveModel is the status page's live performance panel.
type LiveModel struct {
	LatestDay string          `json:"latest_day"`
	Windows   []LiveWindow    `json:"windows"`
	PSIMax    *float64        `json:"psi_max,omitempty"` // the largest 7-day PSI, score or feature
	PSIWhat   string          `json:"psi_max_of,omitempty"`
	Alerts    []monitor.Alert `json:"alerts"`
	// Challenger and Reminder are as the monitor reports them.
	Challenger *monitor.Challenger     `json:"challenger,omitempty"`
	Reminder   *monitor.ReminderEffect `json:"reminder_effect,omitempty"`
}

// LiveWindow is one rolling window's headline figures.
type LiveWindow struct {
	Days     int                `json:"days"`
	Outcomes int                `json:"outcomes"`
	AUC      *monitor.AUCResult `json:"auc,omitempty"`
	OE       *monitor.OE        `json:"observed_expected,omitempty"`
	Slope    *float64           `json:"calibration_slope,omitempty"`
	Brier    *float64           `json:"brier,omitempty"`
}

// liveModel summarises a report for the page.
func liveModel(rep *monitor.Report) *LiveModel {
	lm := &LiveModel{LatestDay: rep.LatestDay, Alerts: rep.Alerts, Challenger: rep.Challenger, Reminder: rep.Reminder}
	for _, w := range rep.Windows {
		lm.Windows = append(lm.Windows, LiveWindow{Days: w.Days, Outcomes: w.Outcomes, AUC: w.AUC, OE: w.OE, Slope: w.Slope, Brier: w.Brier})
		if w.Days != monitor.Windows[0] {
			continue
		}
		consider := func(v *float64, what string) {
			if v != nil && (lm.PSIMax == nil || *v > *lm.PSIMax) {
				lm.PSIMax, lm.PSIWhat = v, what
			}
		}
		consider(w.PSIScore, "score")
		for _, f := range w.Features {
			consider(f.PSI, f.Name)
		}
	}
	return lm
}
