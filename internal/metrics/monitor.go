package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhsx/dnarisk/monitor"
)

// The monitor's metric names (cmd/monitor; README "Monitoring"). Gauges carry the latest
// report: every monitor instance reads the same Redis state, so they all export the same
// values, and the alert rules take max() over instances.
const (
	MonitorEvents        = Namespace + "_monitor_events_total"
	MonitorOutcomes      = Namespace + "_monitor_outcomes"
	MonitorDNAs          = Namespace + "_monitor_dnas"
	MonitorAUC           = Namespace + "_monitor_auc"
	MonitorAUCLow        = Namespace + "_monitor_auc_ci_low"
	MonitorAUCHigh       = Namespace + "_monitor_auc_ci_high"
	MonitorCardAUC       = Namespace + "_monitor_card_auc"
	MonitorOE            = Namespace + "_monitor_observed_expected"
	MonitorOELow         = Namespace + "_monitor_observed_expected_ci_low"
	MonitorOEHigh        = Namespace + "_monitor_observed_expected_ci_high"
	MonitorExpected      = Namespace + "_monitor_expected_dnas"
	MonitorSlope         = Namespace + "_monitor_calibration_slope"
	MonitorBrier         = Namespace + "_monitor_brier"
	MonitorBandRate      = Namespace + "_monitor_band_dna_rate"
	MonitorSubgroupOE    = Namespace + "_monitor_subgroup_observed_expected"
	MonitorSubgroupOELow = Namespace + "_monitor_subgroup_observed_expected_ci_low"
	MonitorSubgroupOEHi  = Namespace + "_monitor_subgroup_observed_expected_ci_high"
	MonitorSubgroupExp   = Namespace + "_monitor_subgroup_expected_dnas"
	MonitorSubgroupAUC   = Namespace + "_monitor_subgroup_auc"
	MonitorScored        = Namespace + "_monitor_scored_bookings"
	MonitorPSI           = Namespace + "_monitor_psi"
	MonitorMissing       = Namespace + "_monitor_missing_rate"
	MonitorRefMissing    = Namespace + "_monitor_reference_missing_rate"
	MonitorChallenger    = Namespace + "_monitor_challenger_auc_diff"
	MonitorChallengerLow = Namespace + "_monitor_challenger_auc_diff_ci_low"
	MonitorChallengerHi  = Namespace + "_monitor_challenger_auc_diff_ci_high"
	MonitorEffect        = Namespace + "_monitor_reminder_effect"
	MonitorEffectLow     = Namespace + "_monitor_reminder_effect_ci_low"
	MonitorEffectHigh    = Namespace + "_monitor_reminder_effect_ci_high"
	MonitorAlert         = Namespace + "_monitor_alert"
	MonitorReportErrors  = Namespace + "_monitor_report_errors_total"
)

// MonitorCounts are the monitor's running counters.
type MonitorCounts struct {
	Scores, Shadow, Outcomes, Ignored, Refused int64
	ReportErrors                               int64
}

type monitorCollector struct {
	report func() *monitor.Report
	counts func() MonitorCounts
	descs  map[string]*prometheus.Desc
}

var monitorHelp = map[string]struct {
	help   string
	labels []string
}{
	MonitorEvents:        {"Events the monitor recorded, by kind: score (champion), shadow (challenger), outcome, ignored (bookings, cancellations), refused (unreadable).", []string{"kind"}},
	MonitorOutcomes:      {"Outcomes joined to a served score, by window (days of appointment dates ending at the latest date with an outcome).", []string{"window"}},
	MonitorDNAs:          {"DNAs among the joined outcomes, by window.", []string{"window"}},
	MonitorAUC:           {"Live AUC of the served scores, by window.", []string{"window"}},
	MonitorAUCLow:        {"Lower end of the live AUC's DeLong 95% CI.", []string{"window"}},
	MonitorAUCHigh:       {"Upper end of the live AUC's DeLong 95% CI.", []string{"window"}},
	MonitorCardAUC:       {"The test AUC on the model card of the champion.", nil},
	MonitorOE:            {"Observed/expected DNAs (calibration in the large), by window.", []string{"window"}},
	MonitorOELow:         {"Lower end of the O/E 95% CI.", []string{"window"}},
	MonitorOEHigh:        {"Upper end of the O/E 95% CI.", []string{"window"}},
	MonitorExpected:      {"Expected DNAs (sum of served probabilities), by window.", []string{"window"}},
	MonitorSlope:         {"Calibration slope (logistic recalibration of the outcome on the logit of the served score), by window.", []string{"window"}},
	MonitorBrier:         {"Brier score of the served scores, by window.", []string{"window"}},
	MonitorBandRate:      {"Observed DNA rate by served risk band and window.", []string{"window", "band"}},
	MonitorSubgroupOE:    {"O/E by subgroup (age band, deprivation decile, specialty) and window.", []string{"window", "attribute", "group"}},
	MonitorSubgroupOELow: {"Lower end of the subgroup O/E 99.9% CI (Bonferroni for the many subgroups).", []string{"window", "attribute", "group"}},
	MonitorSubgroupOEHi:  {"Upper end of the subgroup O/E 99.9% CI.", []string{"window", "attribute", "group"}},
	MonitorSubgroupExp:   {"Expected DNAs in the subgroup and window.", []string{"window", "attribute", "group"}},
	MonitorSubgroupAUC:   {"AUC by subgroup and window.", []string{"window", "attribute", "group"}},
	MonitorScored:        {"Bookings scored by the champion, by window of appointment dates.", []string{"window"}},
	MonitorPSI:           {"Population stability index against the training reference, of the score (feature=\"score\") and of each model input, by window.", []string{"window", "feature"}},
	MonitorMissing:       {"Share of scored bookings whose model input was missing, by feature and window.", []string{"window", "feature"}},
	MonitorRefMissing:    {"Share of the training reference rows whose model input was missing, by feature.", []string{"feature"}},
	MonitorChallenger:    {"Shadow challenger AUC minus champion AUC on the same outcomes (90-day window).", []string{"challenger"}},
	MonitorChallengerLow: {"Lower end of the paired DeLong 95% CI of the challenger's AUC difference.", []string{"challenger"}},
	MonitorChallengerHi:  {"Upper end of the paired DeLong 95% CI of the challenger's AUC difference.", []string{"challenger"}},
	MonitorEffect:        {"Measured relative reduction of the DNA rate by the extra reminder, reminded against held-out high-risk bookings (90-day window).", nil},
	MonitorEffectLow:     {"Lower end of the reminder effect's 95% CI.", nil},
	MonitorEffectHigh:    {"Upper end of the reminder effect's 95% CI.", nil},
	MonitorAlert:         {"Rules of deploy/prometheus/alerts.yml the monitor itself finds firing (1), by alert and window; the same rules Prometheus evaluates.", []string{"alert", "window"}},
	MonitorReportErrors:  {"Reports that could not be computed (Redis unavailable); the gauges keep the last good report.", nil},
}

// Monitor registers the monitor's metrics: counters from counts and gauges from the latest
// report (nil: none yet).
func (m *Metrics) Monitor(report func() *monitor.Report, counts func() MonitorCounts) {
	c := &monitorCollector{report: report, counts: counts, descs: map[string]*prometheus.Desc{}}
	for name, h := range monitorHelp {
		c.descs[name] = prometheus.NewDesc(name, h.help, h.labels, nil)
	}
	m.Registry.MustRegister(c)
}

func (c *monitorCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *monitorCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.counts()
	for kind, v := range map[string]int64{"score": n.Scores, "shadow": n.Shadow, "outcome": n.Outcomes, "ignored": n.Ignored, "refused": n.Refused} {
		ch <- prometheus.MustNewConstMetric(c.descs[MonitorEvents], prometheus.CounterValue, float64(v), kind)
	}
	ch <- prometheus.MustNewConstMetric(c.descs[MonitorReportErrors], prometheus.CounterValue, float64(n.ReportErrors))
	rep := c.report()
	if rep == nil {
		return
	}
	g := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v, labels...)
	}
	if rep.CardAUC > 0 {
		g(MonitorCardAUC, rep.CardAUC)
	}
	for _, w := range rep.Windows {
		win := strconv.Itoa(w.Days) + "d"
		g(MonitorOutcomes, float64(w.Outcomes), win)
		g(MonitorDNAs, float64(w.DNAs), win)
		g(MonitorScored, float64(w.Scored), win)
		if w.AUC != nil {
			g(MonitorAUC, w.AUC.AUC, win)
			g(MonitorAUCLow, w.AUC.CI[0], win)
			g(MonitorAUCHigh, w.AUC.CI[1], win)
		}
		if w.OE != nil {
			g(MonitorOE, w.OE.Ratio, win)
			g(MonitorOELow, w.OE.CI[0], win)
			g(MonitorOEHigh, w.OE.CI[1], win)
			g(MonitorExpected, w.OE.Expected, win)
		}
		if w.Slope != nil {
			g(MonitorSlope, *w.Slope, win)
		}
		if w.Brier != nil {
			g(MonitorBrier, *w.Brier, win)
		}
		for _, b := range w.Bands {
			g(MonitorBandRate, b.Rate, win, b.Band)
		}
		for _, s := range w.Subgroups {
			if s.OE != nil {
				g(MonitorSubgroupOE, s.OE.Ratio, win, s.Attribute, s.Group)
				g(MonitorSubgroupOELow, s.OE.CI[0], win, s.Attribute, s.Group)
				g(MonitorSubgroupOEHi, s.OE.CI[1], win, s.Attribute, s.Group)
				g(MonitorSubgroupExp, s.OE.Expected, win, s.Attribute, s.Group)
			}
			if s.AUC != nil {
				g(MonitorSubgroupAUC, s.AUC.AUC, win, s.Attribute, s.Group)
			}
		}
		if w.PSIScore != nil {
			g(MonitorPSI, *w.PSIScore, win, "score")
		}
		for _, f := range w.Features {
			if f.PSI != nil {
				g(MonitorPSI, *f.PSI, win, f.Name)
			}
			g(MonitorMissing, f.Missing, win, f.Name)
			if w.Days == monitor.Windows[0] {
				g(MonitorRefMissing, f.ReferenceMissing, f.Name)
			}
		}
	}
	if ch2 := rep.Challenger; ch2 != nil && ch2.Compared {
		g(MonitorChallenger, ch2.AUCDiff, ch2.Model)
		g(MonitorChallengerLow, ch2.AUCDiffCI[0], ch2.Model)
		g(MonitorChallengerHi, ch2.AUCDiffCI[1], ch2.Model)
	}
	if e := rep.Reminder; e != nil && e.Reminded > 0 && e.HeldOut > 0 && e.HeldOutDNAs > 0 {
		g(MonitorEffect, e.Relative)
		g(MonitorEffectLow, e.RelativeCI[0])
		g(MonitorEffectHigh, e.RelativeCI[1])
	}
	seen := map[[2]string]bool{}
	for _, a := range rep.Alerts {
		k := [2]string{a.Name, strconv.Itoa(a.Window) + "d"}
		if !seen[k] {
			seen[k] = true
			g(MonitorAlert, 1, k[0], k[1])
		}
	}
}
