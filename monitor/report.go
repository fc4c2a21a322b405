package monitor

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/nhsx/dnarisk/scoring"
)

// Windows are the rolling windows reported, in days of appointment dates.
var Windows = []int{7, 30, 90}

// Thresholds are the alert rules, the same as deploy/prometheus/alerts.yml.
type Thresholds struct {
	AUCDrop       float64 // alert when the 30-day AUC is this far below the card's [0.05]
	OELow, OEHigh float64 // alert when an O/E CI (95%; 99.9% for a subgroup) lies wholly outside [0.8, 1.25]
	PSI           float64 // alert when any 7-day PSI exceeds this [0.2]
	MissingRise   float64 // alert when a feature's 7-day missing rate exceeds the reference by this [0.20]
	// Minimum evidence before a rule may fire, so a quiet day cannot raise an alert.
	MinOutcomes int     // outcomes in the window for the AUC rule [300]
	MinExpected float64 // expected DNAs in the group for an O/E rule [10]
	MinScored   int     // scored bookings in the window for the PSI and missing rules [300]
}

// DefaultThresholds are the documented alert rules.
var DefaultThresholds = Thresholds{AUCDrop: 0.05, OELow: 0.8, OEHigh: 1.25, PSI: 0.2, MissingRise: 0.20,
	MinOutcomes: 300, MinExpected: 10, MinScored: 300}

// Card is what the model card promised, for the alerts and the page.
type Card struct {
	ModelID string
	AUC     float64
	// ExtraBands get the extra reminder; the reminder effect is measured within them.
	ExtraBands []string
	// Efficacy is the reminder efficacy the card assumed.
	Efficacy float64
}

// Report is the monitor's view of the model's live performance.
type Report struct {
	GeneratedAt time.Time `json:"generated_at"`
	Model       string    `json:"model_id"`
	CardAUC     float64   `json:"card_auc"`
	// LatestDay is the latest appointment date with an outcome: every window ends there, so
	// a paused feed or a replay is measured over its own dates.
	LatestDay  string          `json:"latest_day"`
	Windows    []Window        `json:"windows"`
	Challenger *Challenger     `json:"challenger,omitempty"`
	Reminder   *ReminderEffect `json:"reminder_effect,omitempty"`
	Alerts     []Alert         `json:"alerts"`
}

// Window is one rolling window of appointment dates.
type Window struct {
	Days     int        `json:"days"`
	From     string     `json:"from"`
	To       string     `json:"to"`
	Outcomes int        `json:"outcomes"`
	DNAs     int        `json:"dnas"`
	AUC      *AUCResult `json:"auc,omitempty"`
	// BookingAUC is the AUC of the scores made at booking, on the outcomes that have one:
	// beside AUC (the served, latest scores) it shows what re-scoring adds.
	BookingAUC *AUCResult `json:"booking_auc,omitempty"`
	OE         *OE        `json:"observed_expected,omitempty"`
	Slope      *float64   `json:"calibration_slope,omitempty"`
	Brier      *float64   `json:"brier,omitempty"`
	Bands      []BandRate `json:"bands"`
	Subgroups  []Subgroup `json:"subgroups"`
	// Scored counts bookings of the window's dates scored by the champion; drift is
	// measured on those of the reference's model.
	Scored   int            `json:"scored"`
	PSIScore *float64       `json:"psi_score,omitempty"`
	Features []FeatureDrift `json:"features,omitempty"`
}

// BandRate is the observed DNA rate of one risk band.
type BandRate struct {
	Band     string  `json:"band"`
	Outcomes int     `json:"outcomes"`
	DNAs     int     `json:"dnas"`
	Rate     float64 `json:"dna_rate"`
}

// Subgroup is one subgroup's discrimination and calibration. Its O/E interval is 99.9%
// (z999), not 95%: a report tests every subgroup in two windows.
type Subgroup struct {
	Attribute string     `json:"attribute"`
	Group     string     `json:"group"`
	Outcomes  int        `json:"outcomes"`
	DNAs      int        `json:"dnas"`
	AUC       *AUCResult `json:"auc,omitempty"`
	OE        *OE        `json:"observed_expected,omitempty"`
}

// FeatureDrift is one feature's drift against the training reference.
type FeatureDrift struct {
	Name             string   `json:"name"`
	PSI              *float64 `json:"psi,omitempty"`
	Missing          float64  `json:"missing_rate"`
	ReferenceMissing float64  `json:"reference_missing_rate"`
}

// Challenger compares the shadow challenger with the champion on the same outcomes (the
// 90-day window), the shape cmd/promote reads.
type Challenger struct {
	Model    string `json:"model_id"`
	Champion string `json:"champion_model_id"`
	Outcomes int    `json:"outcomes"`
	// Compared: both AUCs could be computed (a DNA and an attendance among the outcomes);
	// the figures below are 0 until then.
	Compared       bool     `json:"compared"`
	AUCChampion    float64  `json:"auc_champion"`
	AUCChallenger  float64  `json:"auc_challenger"`
	AUCDiff        float64  `json:"auc_diff"`
	AUCDiffCI      Interval `json:"auc_diff_ci95"`
	OEChampion     float64  `json:"oe_champion"`
	OEChallenger   float64  `json:"oe_challenger"`
	WindowDays     int      `json:"window_days"`
	ComparedAtDate string   `json:"compared_to_date"`
}

// ReminderEffect is the measured effect of the extra reminder (90-day window): DNA rates of
// the reminded and held-out arms among bookings served a band that gets it.
type ReminderEffect struct {
	Effect
	Bands           []string `json:"bands"`
	HoldoutShare    float64  `json:"holdout_share"`
	AssumedEfficacy float64  `json:"assumed_efficacy"`
	WindowDays      int      `json:"window_days"`
}

// Alert is one rule that fires.
type Alert struct {
	Name   string  `json:"alert"`
	Window int     `json:"window_days"`
	Detail string  `json:"detail"`
	Value  float64 `json:"value"`
}

// Reporter computes Reports from the store.
type Reporter struct {
	Store      *Store
	Card       Card
	Reference  *scoring.Reference // the champion's training reference; nil: no drift
	Holdout    float64            // the hold-out share the dispatcher uses
	Thresholds Thresholds
	Now        func() time.Time
	// AsOf, when set, ends every window at this appointment date instead of the latest date
	// with an outcome (a report as of a past date; the demo's end of bookings).
	AsOf time.Time
}

// Report reads the windows from the store and computes every figure and alert.
func (r *Reporter) Report(ctx context.Context) (*Report, error) {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	rep := &Report{GeneratedAt: now().UTC(), Model: r.Card.ModelID, CardAUC: r.Card.AUC, Alerts: []Alert{}}
	latest, err := r.Store.LatestDay(ctx)
	if err != nil || latest == "" {
		return rep, err
	}
	if asOf := r.AsOf.In(london).Format(time.DateOnly); !r.AsOf.IsZero() && asOf < latest {
		latest = asOf
	}
	rep.LatestDay = latest
	end, _ := time.Parse(time.DateOnly, latest)
	longest := slices.Max(Windows)
	start := end.AddDate(0, 0, 1-longest)
	var joined []dated[Joined]
	var scored []dated[Scored]
	if err := r.Store.load(ctx, "outcomes", start, end, func(day, _ string, v []byte) error {
		var j Joined
		if err := decode(v, &j); err != nil {
			return err
		}
		joined = append(joined, dated[Joined]{day, j})
		return nil
	}); err != nil {
		return nil, err
	}
	if err := r.Store.load(ctx, "scored", start, end, func(day, _ string, v []byte) error {
		var s Scored
		if err := decode(v, &s); err != nil {
			return err
		}
		scored = append(scored, dated[Scored]{day, s})
		return nil
	}); err != nil {
		return nil, err
	}
	return r.compute(rep, end, joined, scored), nil
}

type dated[T any] struct {
	day string
	rec T
}

func within[T any](recs []dated[T], from string) []T {
	var out []T
	for _, d := range recs {
		if d.day >= from {
			out = append(out, d.rec)
		}
	}
	return out
}

// compute fills rep from the records of the longest window ending at end.
func (r *Reporter) compute(rep *Report, end time.Time, joined []dated[Joined], scored []dated[Scored]) *Report {
	th := r.Thresholds
	if th == (Thresholds{}) {
		th = DefaultThresholds
	}
	for _, days := range Windows {
		from := end.AddDate(0, 0, 1-days).Format(time.DateOnly)
		w := r.window(days, from, end.Format(time.DateOnly), within(joined, from), within(scored, from))
		rep.Windows = append(rep.Windows, w)
	}
	last := within(joined, end.AddDate(0, 0, 1-slices.Max(Windows)).Format(time.DateOnly))
	rep.Challenger = r.challenger(last, slices.Max(Windows), end)
	rep.Reminder = r.reminder(last, slices.Max(Windows))
	rep.Alerts = alerts(rep, r.Card, th)
	return rep
}

func (r *Reporter) window(days int, from, to string, js []Joined, ss []Scored) Window {
	w := Window{Days: days, From: from, To: to, Outcomes: len(js), Bands: []BandRate{}, Subgroups: []Subgroup{}}
	p, y := make([]float64, len(js)), make([]bool, len(js))
	var pb []float64
	var yb []bool
	for i, j := range js {
		p[i], y[i] = j.P, j.DNA
		if j.DNA {
			w.DNAs++
		}
		if j.PBooking != nil {
			pb, yb = append(pb, *j.PBooking), append(yb, j.DNA)
		}
	}
	if a, ok := AUC(p, y); ok {
		w.AUC = &a
	}
	if a, ok := AUC(pb, yb); ok {
		w.BookingAUC = &a
	}
	if oe, ok := ObservedExpected(p, y); ok {
		w.OE = &oe
	}
	if s, ok := CalibrationSlope(p, y); ok && w.DNAs > 0 && w.DNAs < len(js) {
		w.Slope = &s
	}
	if len(js) > 0 {
		b := Brier(p, y)
		w.Brier = &b
	}
	w.Bands = bandRates(js)
	w.Subgroups = subgroups(js)
	r.drift(&w, ss)
	return w
}

func bandRates(js []Joined) []BandRate {
	idx := map[string]int{}
	var out []BandRate
	for _, j := range js {
		i, ok := idx[j.Band]
		if !ok {
			i = len(out)
			idx[j.Band] = i
			out = append(out, BandRate{Band: j.Band})
		}
		out[i].Outcomes++
		if j.DNA {
			out[i].DNAs++
		}
	}
	for i := range out {
		out[i].Rate = float64(out[i].DNAs) / float64(out[i].Outcomes)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Band < out[b].Band })
	return out
}

func subgroups(js []Joined) []Subgroup {
	out := []Subgroup{}
	for a, attr := range SubgroupAttributes {
		by := map[string][]Joined{}
		for _, j := range js {
			by[j.Groups[a]] = append(by[j.Groups[a]], j)
		}
		keys := make([]string, 0, len(by))
		for k := range by {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			g := by[k]
			s := Subgroup{Attribute: attr, Group: k, Outcomes: len(g)}
			p, y := make([]float64, len(g)), make([]bool, len(g))
			for i, j := range g {
				p[i], y[i] = j.P, j.DNA
				if j.DNA {
					s.DNAs++
				}
			}
			if auc, ok := AUC(p, y); ok {
				s.AUC = &auc
			}
			if oe, ok := observedExpected(p, y, z999); ok {
				s.OE = &oe
			}
			out = append(out, s)
		}
	}
	return out
}

// drift measures the window's scored bookings of the reference's model against it.
func (r *Reporter) drift(w *Window, ss []Scored) {
	w.Scored = len(ss)
	ref := r.Reference
	if ref == nil {
		return
	}
	var mine []Scored
	for _, s := range ss {
		if s.Model == ref.ModelID {
			mine = append(mine, s)
		}
	}
	if len(mine) == 0 {
		return
	}
	counts := make([]float64, len(ref.Score.Shares))
	for _, s := range mine {
		if b := ref.Score.Bin(s.P); b < len(counts) {
			counts[b]++
		}
	}
	psi := PSI(ref.Score.Shares, normalise(counts))
	w.PSIScore = &psi
	for fi, f := range ref.Features {
		fc := make([]float64, len(f.Shares))
		missing, present := 0, 0
		for _, s := range mine {
			if fi >= len(s.X) || s.X[fi] == nil {
				missing++
				continue
			}
			present++
			if b := f.Bin(*s.X[fi]); b < len(fc) {
				fc[b]++
			}
		}
		d := FeatureDrift{Name: f.Name, Missing: float64(missing) / float64(len(mine)), ReferenceMissing: f.MissingShare}
		if present > 0 && len(f.Shares) > 0 {
			v := PSI(f.Shares, normalise(fc))
			d.PSI = &v
		}
		w.Features = append(w.Features, d)
	}
}

func normalise(c []float64) []float64 {
	t := 0.0
	for _, v := range c {
		t += v
	}
	out := make([]float64, len(c))
	if t == 0 {
		return out
	}
	for i, v := range c {
		out[i] = v / t
	}
	return out
}

func (r *Reporter) challenger(js []Joined, days int, end time.Time) *Challenger {
	var a, b []float64
	var y []bool
	model := ""
	// The champion side is what was served: the model's scores, or a decision-time model's
	// re-scores (the challenger re-scores with itself), on the same outcomes.
	for _, j := range js {
		if j.Challenger == nil {
			continue
		}
		if model == "" {
			model = j.ChallengerModel
		}
		if j.ChallengerModel != model {
			continue
		}
		a, b, y = append(a, j.P), append(b, *j.Challenger), append(y, j.DNA)
	}
	if model == "" {
		return nil
	}
	c := &Challenger{Model: model, Champion: r.Card.ModelID, Outcomes: len(y), WindowDays: days, ComparedAtDate: end.Format(time.DateOnly)}
	if diff, _, ci, ok := PairedAUC(a, b, y); ok {
		c.Compared, c.AUCDiff, c.AUCDiffCI = true, diff, ci
		ca, _ := AUC(a, y)
		cb, _ := AUC(b, y)
		c.AUCChampion, c.AUCChallenger = ca.AUC, cb.AUC
	}
	if oe, ok := ObservedExpected(a, y); ok {
		c.OEChampion = oe.Ratio
	}
	if oe, ok := ObservedExpected(b, y); ok {
		c.OEChallenger = oe.Ratio
	}
	return c
}

func (r *Reporter) reminder(js []Joined, days int) *ReminderEffect {
	if r.Holdout <= 0 {
		return nil
	}
	var n0, x0, n1, x1 int
	for _, j := range js {
		if j.Arm == nil || !slices.Contains(r.Card.ExtraBands, j.Band) {
			continue
		}
		held := *j.Arm < r.Holdout
		switch {
		case held:
			n0++
			if j.DNA {
				x0++
			}
		default:
			n1++
			if j.DNA {
				x1++
			}
		}
	}
	e, _ := NewEffect(n0, x0, n1, x1)
	return &ReminderEffect{Effect: e, Bands: r.Card.ExtraBands, HoldoutShare: r.Holdout, AssumedEfficacy: r.Card.Efficacy, WindowDays: days}
}

// alerts evaluates the rules of deploy/prometheus/alerts.yml on rep.
func alerts(rep *Report, card Card, th Thresholds) []Alert {
	out := []Alert{}
	for _, w := range rep.Windows {
		if w.Days == 30 && w.AUC != nil && w.Outcomes >= th.MinOutcomes && card.AUC > 0 && card.AUC-w.AUC.AUC > th.AUCDrop {
			out = append(out, Alert{Name: "DnariskModelAUCDrop", Window: w.Days, Value: w.AUC.AUC,
				Detail: fmt.Sprintf("AUC %.3f is %.3f below the card's %.3f", w.AUC.AUC, card.AUC-w.AUC.AUC, card.AUC)})
		}
		if w.Days != 7 && w.Days != 30 && w.Days != 90 {
			continue
		}
		if w.OE != nil && oeOut(w.OE, th) {
			out = append(out, Alert{Name: "DnariskModelCalibration", Window: w.Days, Value: w.OE.Ratio,
				Detail: fmt.Sprintf("O/E %.2f (95%% CI %.2f–%.2f) is outside %.2f–%.2f", w.OE.Ratio, w.OE.CI[0], w.OE.CI[1], th.OELow, th.OEHigh)})
		}
		for _, s := range w.Subgroups {
			if s.OE != nil && oeOut(s.OE, th) {
				out = append(out, Alert{Name: "DnariskModelSubgroupCalibration", Window: w.Days, Value: s.OE.Ratio,
					Detail: fmt.Sprintf("%s %s: O/E %.2f (99.9%% CI %.2f–%.2f) is outside %.2f–%.2f", s.Attribute, s.Group, s.OE.Ratio, s.OE.CI[0], s.OE.CI[1], th.OELow, th.OEHigh)})
			}
		}
		if w.Days != 7 || w.Scored < th.MinScored {
			continue
		}
		if w.PSIScore != nil && *w.PSIScore > th.PSI {
			out = append(out, Alert{Name: "DnariskModelDrift", Window: w.Days, Value: *w.PSIScore, Detail: fmt.Sprintf("score PSI %.3f above %.2f", *w.PSIScore, th.PSI)})
		}
		for _, f := range w.Features {
			if f.PSI != nil && *f.PSI > th.PSI {
				out = append(out, Alert{Name: "DnariskModelDrift", Window: w.Days, Value: *f.PSI, Detail: fmt.Sprintf("%s PSI %.3f above %.2f", f.Name, *f.PSI, th.PSI)})
			}
			if rise := f.Missing - f.ReferenceMissing; rise > th.MissingRise {
				out = append(out, Alert{Name: "DnariskModelMissingInputs", Window: w.Days, Value: f.Missing,
					Detail: fmt.Sprintf("%s missing in %.0f%% of bookings against %.0f%% in training", f.Name, 100*f.Missing, 100*f.ReferenceMissing)})
			}
		}
	}
	return out
}

// oeOut is the calibration rule: enough expected DNAs, and the O/E 95% CI wholly outside
// [OELow, OEHigh], so chance in a small group does not page anyone.
func oeOut(oe *OE, th Thresholds) bool {
	return oe.Expected >= th.MinExpected && (oe.CI[0] > th.OEHigh || oe.CI[1] < th.OELow) && !math.IsNaN(oe.Ratio)
}
