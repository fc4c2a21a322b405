package monitor

import (
	"math"
	"slices"
	"sort"
)

// z95 is the two-sided 95% normal quantile.
const z95 = 1.959963984540054

// z999 is the two-sided 99.9% normal quantile: subgroup O/E intervals use it, a Bonferroni
// correction for the ~50 subgroup-and-window tests each report makes, so a model that is
// fine does not raise a subgroup alert by chance.
const z999 = 3.2905267314918945

// Interval is a 95% confidence interval.
type Interval [2]float64

// AUCResult is an area under the ROC curve with its DeLong standard error.
type AUCResult struct {
	AUC float64  `json:"auc"`
	SE  float64  `json:"se"`
	CI  Interval `json:"ci95"`
}

// delong holds the structural components of DeLong et al. (1988) for one score: v10 per
// positive (DNA) and v01 per negative (attended), computed from midranks as in Sun and Xu
// (2014), O(n log n).
type delong struct {
	auc      float64
	v10, v01 []float64
}

// midranks returns the 1-based ranks of x with ties given their mean rank.
func midranks(x []float64) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return x[idx[a]] < x[idx[b]] })
	r := make([]float64, len(x))
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && x[idx[j]] == x[idx[i]] {
			j++
		}
		mid := float64(i+j+1) / 2 // mean of ranks i+1..j
		for k := i; k < j; k++ {
			r[idx[k]] = mid
		}
		i = j
	}
	return r
}

func newDelong(score []float64, dna []bool) (delong, bool) {
	var pos, neg []float64
	for i, s := range score {
		if dna[i] {
			pos = append(pos, s)
		} else {
			neg = append(neg, s)
		}
	}
	m, n := len(pos), len(neg)
	if m == 0 || n == 0 {
		return delong{}, false
	}
	all := append(slices.Clone(pos), neg...)
	rAll, rPos, rNeg := midranks(all), midranks(pos), midranks(neg)
	d := delong{v10: make([]float64, m), v01: make([]float64, n)}
	sum := 0.0
	for i := range pos {
		d.v10[i] = (rAll[i] - rPos[i]) / float64(n)
		sum += d.v10[i]
	}
	for j := range neg {
		d.v01[j] = 1 - (rAll[m+j]-rNeg[j])/float64(m)
	}
	d.auc = sum / float64(m)
	return d, true
}

func covariance(a, b []float64) float64 {
	if len(a) < 2 {
		return 0
	}
	ma, mb := mean(a), mean(b)
	s := 0.0
	for i := range a {
		s += (a[i] - ma) * (b[i] - mb)
	}
	return s / float64(len(a)-1)
}

func mean(a []float64) float64 {
	s := 0.0
	for _, v := range a {
		s += v
	}
	return s / float64(len(a))
}

// AUC returns the area under the ROC curve of score for the outcomes dna, with its DeLong
// standard error and a normal 95% CI clipped to [0, 1]. ok is false without at least one
// DNA and one attendance.
func AUC(score []float64, dna []bool) (AUCResult, bool) {
	d, ok := newDelong(score, dna)
	if !ok {
		return AUCResult{}, false
	}
	se := math.Sqrt(covariance(d.v10, d.v10)/float64(len(d.v10)) + covariance(d.v01, d.v01)/float64(len(d.v01)))
	return AUCResult{AUC: d.auc, SE: se, CI: Interval{max(0, d.auc-z95*se), min(1, d.auc+z95*se)}}, true
}

// PairedAUC compares two scores of the same cases: the AUC difference b − a with the
// DeLong standard error of the difference, which accounts for the two scores' correlation.
func PairedAUC(a, b []float64, dna []bool) (diff float64, se float64, ci Interval, ok bool) {
	da, okA := newDelong(a, dna)
	db, okB := newDelong(b, dna)
	if !okA || !okB {
		return 0, 0, Interval{}, false
	}
	m, n := float64(len(da.v10)), float64(len(da.v01))
	v := (covariance(da.v10, da.v10)+covariance(db.v10, db.v10)-2*covariance(da.v10, db.v10))/m +
		(covariance(da.v01, da.v01)+covariance(db.v01, db.v01)-2*covariance(da.v01, db.v01))/n
	se = math.Sqrt(max(0, v))
	diff = db.auc - da.auc
	return diff, se, Interval{diff - z95*se, diff + z95*se}, true
}

// OE is observed/expected: DNAs seen over the sum of the served probabilities (calibration
// in the large), with a 95% CI from the Poisson interval of the observed count (Byar's
// approximation), the expected count taken as fixed.
type OE struct {
	Observed int      `json:"observed"`
	Expected float64  `json:"expected"`
	Ratio    float64  `json:"ratio"`
	CI       Interval `json:"ci95"`
}

// ObservedExpected returns O/E for probabilities p and outcomes dna; ok is false when
// nothing is expected.
func ObservedExpected(p []float64, dna []bool) (OE, bool) { return observedExpected(p, dna, z95) }

// observedExpected is ObservedExpected with a CI at the two-sided normal quantile z.
func observedExpected(p []float64, dna []bool, z float64) (OE, bool) {
	o, e := 0, 0.0
	for i := range p {
		e += p[i]
		if dna[i] {
			o++
		}
	}
	if e <= 0 {
		return OE{}, false
	}
	lo, hi := poissonCI(o, z)
	return OE{Observed: o, Expected: e, Ratio: float64(o) / e, CI: Interval{lo / e, hi / e}}, true
}

// poissonCI is Byar's approximation to the exact interval of a Poisson count at the
// two-sided normal quantile z.
func poissonCI(o int, z float64) (lo, hi float64) {
	x := float64(o)
	if o > 0 {
		lo = x * math.Pow(1-1/(9*x)-z/(3*math.Sqrt(x)), 3)
	}
	x1 := x + 1
	hi = x1 * math.Pow(1-1/(9*x1)+z/(3*math.Sqrt(x1)), 3)
	return max(0, lo), hi
}

// Brier is the mean squared difference between probability and outcome.
func Brier(p []float64, dna []bool) float64 {
	if len(p) == 0 {
		return math.NaN()
	}
	s := 0.0
	for i := range p {
		y := 0.0
		if dna[i] {
			y = 1
		}
		s += (p[i] - y) * (p[i] - y)
	}
	return s / float64(len(p))
}

// CalibrationSlope fits logit P(DNA) = a + b·logit(p) by maximum likelihood (Newton–Raphson)
// and returns b: 1 for a model whose spread of risk is right, below 1 when its predictions are
// too extreme (overfitted), above 1 when too timid. ok is false when the fit does not exist
// (one class only, or no spread in p).
func CalibrationSlope(p []float64, dna []bool) (float64, bool) {
	x := make([]float64, len(p))
	for i, v := range p {
		v = min(max(v, 1e-9), 1-1e-9)
		x[i] = math.Log(v / (1 - v))
	}
	a, b := 0.0, 1.0
	for range 50 {
		var g0, g1, h00, h01, h11 float64
		for i := range x {
			q := 1 / (1 + math.Exp(-(a + b*x[i])))
			y := 0.0
			if dna[i] {
				y = 1
			}
			r, w := y-q, q*(1-q)
			g0 += r
			g1 += r * x[i]
			h00 += w
			h01 += w * x[i]
			h11 += w * x[i] * x[i]
		}
		det := h00*h11 - h01*h01
		if det <= 1e-12 || math.IsNaN(det) {
			return 0, false
		}
		da := (h11*g0 - h01*g1) / det
		db := (h00*g1 - h01*g0) / det
		a, b = a+da, b+db
		if math.Abs(da)+math.Abs(db) < 1e-10 {
			return b, !math.IsNaN(b) && !math.IsInf(b, 0)
		}
	}
	return b, !math.IsNaN(b) && !math.IsInf(b, 0) && math.Abs(b) < 1e6
}

// psiFloor keeps an empty bin from making the PSI infinite (the usual 0.0001 floor).
const psiFloor = 1e-4

// PSI is the population stability index of the live shares against the reference shares,
// bin by bin: Σ (live − ref) · ln(live / ref). Below 0.1 is stable; above 0.2 is the
// conventional threshold for a shift worth acting on.
func PSI(ref, live []float64) float64 {
	s := 0.0
	for i := range ref {
		r, l := max(ref[i], psiFloor), max(live[i], psiFloor)
		s += (l - r) * math.Log(l/r)
	}
	return s
}

// Effect compares the DNA rate of two arms: held out (control) and reminded (treated).
type Effect struct {
	HeldOut        int     `json:"held_out"`
	HeldOutDNAs    int     `json:"held_out_dnas"`
	Reminded       int     `json:"reminded"`
	RemindedDNAs   int     `json:"reminded_dnas"`
	RateHeldOut    float64 `json:"dna_rate_held_out"`
	RateReminded   float64 `json:"dna_rate_reminded"`
	RiskDifference float64 `json:"risk_difference"` // held out − reminded: DNAs prevented per reminded booking
	// RiskDifferenceCI is the Wald 95% CI of the risk difference.
	RiskDifferenceCI Interval `json:"risk_difference_ci95"`
	// Relative is the relative reduction 1 − rate_reminded/rate_held_out, the efficacy the
	// model card assumes, with the 95% CI of Katz's log risk ratio.
	Relative   float64  `json:"relative_reduction"`
	RelativeCI Interval `json:"relative_reduction_ci95"`
	// ContactsPerPrevented is 1/RiskDifference: extra reminders sent per DNA prevented;
	// its CI is the inverse of the risk difference's, unbounded (0) when that includes 0.
	ContactsPerPrevented   float64  `json:"contacts_per_prevented_dna"`
	ContactsPerPreventedCI Interval `json:"contacts_per_prevented_dna_ci95"`
}

// NewEffect estimates the effect of the reminder from counts of each arm; ok is false when
// either arm is empty or the held-out arm has no DNA.
func NewEffect(n0, x0, n1, x1 int) (Effect, bool) {
	e := Effect{HeldOut: n0, HeldOutDNAs: x0, Reminded: n1, RemindedDNAs: x1}
	if n0 == 0 || n1 == 0 || x0 == 0 {
		return e, false
	}
	p0, p1 := float64(x0)/float64(n0), float64(x1)/float64(n1)
	e.RateHeldOut, e.RateReminded = p0, p1
	e.RiskDifference = p0 - p1
	se := math.Sqrt(p0*(1-p0)/float64(n0) + p1*(1-p1)/float64(n1))
	e.RiskDifferenceCI = Interval{e.RiskDifference - z95*se, e.RiskDifference + z95*se}
	// Katz: var(log RR) = 1/x1 − 1/n1 + 1/x0 − 1/n0; a zero count in the reminded arm takes
	// the usual half added to each cell.
	fx1, fn1, fx0, fn0 := float64(x1), float64(n1), float64(x0), float64(n0)
	if x1 == 0 {
		fx1, fn1, fx0, fn0 = fx1+0.5, fn1+0.5, fx0+0.5, fn0+0.5
	}
	lrr := math.Log((fx1 / fn1) / (fx0 / fn0))
	sl := math.Sqrt(1/fx1 - 1/fn1 + 1/fx0 - 1/fn0)
	e.Relative = 1 - p1/p0
	e.RelativeCI = Interval{1 - math.Exp(lrr+z95*sl), 1 - math.Exp(lrr-z95*sl)}
	if e.RiskDifference > 0 {
		e.ContactsPerPrevented = 1 / e.RiskDifference
	}
	if lo := e.RiskDifferenceCI[0]; lo > 0 {
		e.ContactsPerPreventedCI = Interval{1 / e.RiskDifferenceCI[1], 1 / lo}
	} else if hi := e.RiskDifferenceCI[1]; hi > 0 {
		e.ContactsPerPreventedCI = Interval{1 / hi, 0}
	}
	return e, true
}
