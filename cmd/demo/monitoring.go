package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/monitor"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/reminders/policy"
	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

// The demo's live monitoring (issue 14): a shadow challenger, a 20% hold-out from the extra
// reminder with a true effect in the simulated world, one specialty's DNA rate doubled
// half-way, and the monitor (the code cmd/monitor runs) joining every outcome to what was
// served.

const (
	shadowTopic = "risk.shadow"
	// demoHoldoutKey keys the hold-out assignment; it protects nothing (no real patients).
	demoHoldoutKey = "demo-holdout-key-not-a-secret-0123456789"
	// demoHoldoutShare of the extra reminders is withheld, to measure their effect.
	demoHoldoutShare = 0.2
	// demoEfficacy is the simulated world's true effect of the extra reminder.
	demoEfficacy = 0.3
	// demoDriftFactor multiplies specialty 130's DNA rate from half-way. The demo's hospital
	// is small (2,000 patients: about 100 of that specialty's outcomes a month), so a
	// doubling would not clear the subgroup rule's 99.9% interval within the run; the monitor
	// test shows a doubling caught at 12,000 patients (docs/monitoring.md).
	demoDriftFactor = 4
)

// Monitoring is the summary's monitoring part.
type Monitoring struct {
	// LatestDay: the windows end at this appointment date.
	LatestDay string  `json:"monitor_latest_day,omitempty"`
	LiveAUC   float64 `json:"live_auc"`
	LiveOE    float64 `json:"live_oe"`
	// PSIMax is the largest 7-day PSI, of the score or an input (PSIMaxOf).
	PSIMax   float64  `json:"psi_max"`
	PSIMaxOf string   `json:"psi_max_of,omitempty"`
	Alerts   []string `json:"drift_alerts"`
	// DriftFrom: from then on, specialty DriftSpecialty's DNA rate is doubled.
	DriftFrom      string `json:"drift_injected_from,omitempty"`
	DriftSpecialty string `json:"drift_injected_specialty,omitempty"`
	// DriftOE is the drifted specialty's O/E over the 90-day window, with its 99.9% CI.
	DriftOE        *float64   `json:"drift_specialty_oe_90d,omitempty"`
	DriftOECI      [2]float64 `json:"drift_specialty_oe_90d_ci999"`
	ChallengerID   string     `json:"challenger_model_id,omitempty"`
	ChallengerDiff *float64   `json:"challenger_auc_diff,omitempty"`
	ChallengerCI   [2]float64 `json:"challenger_auc_diff_ci95"`
	Reminder       *Effect    `json:"reminder_effect,omitempty"`
}

// Effect is the measured relative reduction of DNAs by the extra reminder and its truth.
type Effect struct {
	Estimate float64 `json:"estimate"`
	CILow    float64 `json:"ci_low"`
	CIHigh   float64 `json:"ci_high"`
	True     float64 `json:"true"`
	HeldOut  int     `json:"held_out"`
	Reminded int     `json:"reminded"`
}

// holdout is the dispatcher's, the monitor's and the simulated world's hold-out.
func holdout() policy.Holdout {
	return policy.Holdout{Share: demoHoldoutShare, Key: []byte(demoHoldoutKey)}
}

// simEffects adds the demo's drift and true reminder effect to the simulated world: the drift
// from half-way through the booking window.
func simEffects(c sim.Config) sim.Config {
	start := c.Start
	if start.IsZero() {
		start = time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC)
	}
	days := c.Days
	if days == 0 {
		days = 120
	}
	c.Drift = &sim.Drift{From: start.AddDate(0, 0, days/2), Specialty: sim.DemoDriftSpecialty, Factor: demoDriftFactor}
	c.Reminder = &sim.ReminderEffect{Efficacy: demoEfficacy, Holdout: holdout(), Threshold: sim.DefaultReminderThreshold}
	return c
}

// monitoring is the in-process monitor.
type monitoring struct {
	mon       *monitor.Monitor
	reporter  *monitor.Reporter
	reader    *kafka.Reader
	done      chan error
	stop      context.CancelFunc
	latestSet func(*monitor.Report)
}

// newMonitoring builds the monitor on the demo's Redis for the champion in modelDir, with its
// card and training reference, and registers its metrics.
func newMonitoring(d *demo) (*monitoring, error) {
	ref, err := scoring.LoadReference(d.o.modelDir)
	if err != nil {
		return nil, err
	}
	card := monitor.Card{ModelID: d.model.ID(), ExtraBands: policy.DefaultPolicy().ExtraBands}
	if b, err := os.ReadFile(filepath.Join(d.o.modelDir, "card.json")); err == nil {
		var c struct {
			AUC      float64 `json:"auc"`
			Efficacy float64 `json:"reminder_efficacy"`
		}
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("card.json: %w", err)
		}
		card.AUC, card.Efficacy = c.AUC, c.Efficacy
	}
	store := monitor.NewStore(d.rdb, "")
	h := holdout()
	mon, err := monitor.New(monitor.Config{Store: store, Topics: monitor.Topics{Appointments: apptTopic, Risk: riskTopic, Shadow: shadowTopic},
		Model: d.model.ID(), Features: d.model.FeatureNames(), Holdout: &h, Log: d.log})
	if err != nil {
		return nil, err
	}
	// Windows end with the booking window: after it the simulated feed holds only the
	// long-lead bookings still to come, a tail unlike any real week.
	asOf := d.o.sim.Start
	if asOf.IsZero() {
		asOf = time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC)
	}
	days := d.o.sim.Days
	if days == 0 {
		days = 120
	}
	m := &monitoring{mon: mon, reporter: &monitor.Reporter{Store: store, Card: card, Reference: ref, Holdout: h.Share, AsOf: asOf.AddDate(0, 0, days)}}
	var latest atomic.Pointer[monitor.Report]
	d.m.Monitor(latest.Load, func() metrics.MonitorCounts {
		s := &mon.Stats
		return metrics.MonitorCounts{Scores: s.Scores.Load(), Shadow: s.Shadow.Load(), Outcomes: s.Outcomes.Load(), Ignored: s.Ignored.Load(), Refused: s.Refused.Load()}
	})
	m.latestSet = latest.Store
	return m, nil
}

// run starts the monitor's consumer group over the three topics.
func (m *monitoring) run(ctx context.Context, d *demo) {
	m.reader = stream.NewGroupReader(d.brokers, "dna-monitor", []string{apptTopic, riskTopic, shadowTopic})
	d.onClose(func() { m.reader.Close() })
	ctx, m.stop = context.WithCancel(ctx)
	m.done = make(chan error, 1)
	go func() { m.done <- stream.Run(ctx, m.reader, m.mon, stream.Batching{}, d.log) }()
}

// finish waits until the monitor has read every message of the three topics, stops it and
// computes the report into sum.
func (m *monitoring) finish(ctx context.Context, d *demo, pub *published, riskMsgs []kafka.Message) error {
	shadow, err := stream.ReadAll(ctx, d.brokers, shadowTopic)
	if err != nil {
		return err
	}
	total := pub.total + int64(len(riskMsgs)+len(shadow))
	s := &m.mon.Stats
	read := func() int64 {
		return s.Scores.Load() + s.Shadow.Load() + s.Outcomes.Load() + s.Ignored.Load() + s.Refused.Load()
	}
	for read() < total && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	m.stop()
	if err := <-m.done; err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("the monitor read %d of %d messages before the time limit", read(), total)
	}
	rep, err := m.reporter.Report(ctx)
	if err != nil {
		return err
	}
	m.latestSet(rep)
	d.sum.Monitoring = summarise(rep, pub, riskMsgs, d)
	say("monitor joined %d outcomes to the scores served (%d shadow scores): live AUC %.3f, O/E %.2f over the 90 days to %s; %d alerts",
		s.Outcomes.Load(), s.Shadow.Load(), d.sum.LiveAUC, d.sum.LiveOE, rep.LatestDay, len(rep.Alerts))
	return nil
}

// summarise turns the report into the summary's figures, with the true reminder effect among
// the same bookings the monitor measured it on.
func summarise(rep *monitor.Report, pub *published, riskMsgs []kafka.Message, d *demo) Monitoring {
	out := Monitoring{LatestDay: rep.LatestDay, Alerts: []string{}}
	if dr := d.o.sim.Drift; dr != nil {
		out.DriftFrom, out.DriftSpecialty = dr.From.Format(time.DateOnly), dr.Specialty
	}
	var w90 *monitor.Window
	for i, w := range rep.Windows {
		if w.Days == slices.Max(monitor.Windows) {
			w90 = &rep.Windows[i]
		}
		for _, g := range w.Subgroups {
			if w.Days == 90 && g.Attribute == "specialty" && g.Group == out.DriftSpecialty && g.OE != nil {
				v := round(g.OE.Ratio, 2)
				out.DriftOE, out.DriftOECI = &v, [2]float64{round(g.OE.CI[0], 2), round(g.OE.CI[1], 2)}
			}
		}
		if w.Days != monitor.Windows[0] {
			continue
		}
		consider := func(v *float64, what string) {
			if v != nil && *v > out.PSIMax {
				out.PSIMax, out.PSIMaxOf = round(*v, 3), what
			}
		}
		consider(w.PSIScore, "score")
		for _, f := range w.Features {
			consider(f.PSI, f.Name)
		}
	}
	if w90 != nil && w90.AUC != nil && w90.OE != nil {
		out.LiveAUC, out.LiveOE = round(w90.AUC.AUC, 4), round(w90.OE.Ratio, 3)
	}
	for _, a := range rep.Alerts {
		out.Alerts = append(out.Alerts, fmt.Sprintf("%s (%d days): %s", a.Name, a.Window, a.Detail))
	}
	if c := rep.Challenger; c != nil && c.Compared {
		diff := round(c.AUCDiff, 4)
		out.ChallengerID, out.ChallengerDiff = c.Model, &diff
		out.ChallengerCI = [2]float64{round(c.AUCDiffCI[0], 4), round(c.AUCDiffCI[1], 4)}
	}
	if e := rep.Reminder; e != nil && e.HeldOut > 0 && e.Reminded > 0 {
		out.Reminder = &Effect{Estimate: round(e.Relative, 3), CILow: round(e.RelativeCI[0], 3), CIHigh: round(e.RelativeCI[1], 3),
			HeldOut: e.HeldOut, Reminded: e.Reminded, True: round(trueEffect(rep, pub, riskMsgs, d), 3)}
	}
	return out
}

// trueEffect is the simulated world's effect of the extra reminder among the bookings the
// monitor compared: outcomes in its 90-day window whose served band gets the extra reminder.
func trueEffect(rep *monitor.Report, pub *published, riskMsgs []kafka.Message, d *demo) float64 {
	eff := d.o.sim.Reminder
	if eff == nil {
		return 0
	}
	// The served band of each appointment: its latest risk event of the latest version.
	type served struct {
		version int
		band    string
		start   time.Time
	}
	band := map[string]served{}
	for _, m := range riskMsgs {
		var r events.Risk
		if json.Unmarshal(m.Value, &r) != nil {
			continue
		}
		if s, ok := band[r.AppointmentID]; !ok || r.Version >= s.version {
			band[r.AppointmentID] = served{r.Version, r.Band, r.AppointmentStart}
		}
	}
	var from string
	for _, w := range rep.Windows {
		if w.Days == slices.Max(monitor.Windows) {
			from = w.From
		}
	}
	var truths []sim.Truth
	for appt := range pub.outcome {
		s, ok := band[appt]
		day := s.start.In(monitorZone).Format(time.DateOnly)
		if !ok || day < from || day > rep.LatestDay || !slices.Contains(policy.DefaultPolicy().ExtraBands, s.band) {
			continue
		}
		if tr, ok := pub.truths[key(appt, pub.finalVersion[appt])]; ok {
			truths = append(truths, tr)
		}
	}
	return eff.TrueEffect(truths, nil).Relative
}

// monitorZone is the zone of appointment dates (the monitor files by UK date).
var monitorZone = func() *time.Location {
	l, err := time.LoadLocation("Europe/London")
	if err != nil {
		panic(err)
	}
	return l
}()
