package monitor

import (
	"math"
	"math/rand/v2"
	"testing"
)

// bruteDeLong computes AUC and its DeLong variance from the pairwise definition, O(m·n): an
// independent check of the rank-based version.
func bruteDeLong(score []float64, dna []bool) (auc, variance float64) {
	var pos, neg []float64
	for i, s := range score {
		if dna[i] {
			pos = append(pos, s)
		} else {
			neg = append(neg, s)
		}
	}
	psi := func(x, y float64) float64 {
		switch {
		case x > y:
			return 1
		case x == y:
			return 0.5
		}
		return 0
	}
	v10 := make([]float64, len(pos))
	v01 := make([]float64, len(neg))
	for i, x := range pos {
		for j, y := range neg {
			s := psi(x, y)
			v10[i] += s / float64(len(neg))
			v01[j] += s / float64(len(pos))
		}
	}
	auc = mean(v10)
	return auc, covariance(v10, v10)/float64(len(pos)) + covariance(v01, v01)/float64(len(neg))
}

func sample(seed uint64, n int, slope float64) (p []float64, dna []bool) {
	r := rand.New(rand.NewPCG(seed, 1))
	for range n {
		z := r.NormFloat64() - 2
		served := 1 / (1 + math.Exp(-z))
		truth := 1 / (1 + math.Exp(-(-2 + slope*(z+2))))
		p = append(p, math.Round(served*100)/100) // ties, as real scores have
		dna = append(dna, r.Float64() < truth)
	}
	return p, dna
}

func TestAUCMatchesPairwiseDeLong(t *testing.T) {
	p, dna := sample(1, 800, 1)
	got, ok := AUC(p, dna)
	if !ok {
		t.Fatal("AUC not computed")
	}
	auc, v := bruteDeLong(p, dna)
	if math.Abs(got.AUC-auc) > 1e-12 || math.Abs(got.SE-math.Sqrt(v)) > 1e-12 {
		t.Fatalf("AUC %v se %v, pairwise %v se %v", got.AUC, got.SE, auc, math.Sqrt(v))
	}
	if !(got.CI[0] < got.AUC && got.AUC < got.CI[1]) || got.AUC < 0.6 {
		t.Fatalf("implausible %+v", got)
	}
	if _, ok := AUC([]float64{0.1, 0.2}, []bool{false, false}); ok {
		t.Fatal("AUC of one class reported")
	}
}

func TestPairedAUC(t *testing.T) {
	p, dna := sample(2, 1500, 1)
	if d, se, _, ok := PairedAUC(p, p, dna); !ok || d != 0 || se > 1e-9 {
		t.Fatalf("a score against itself: diff %v se %v", d, se)
	}
	// A noisier copy of the score is worse, and the paired CI says so.
	r := rand.New(rand.NewPCG(3, 3))
	noisy := make([]float64, len(p))
	for i := range p {
		noisy[i] = p[i] + r.NormFloat64()*0.3
	}
	d, se, ci, ok := PairedAUC(p, noisy, dna)
	a, _ := AUC(p, dna)
	b, _ := AUC(noisy, dna)
	if !ok || math.Abs(d-(b.AUC-a.AUC)) > 1e-12 || ci[1] >= 0 {
		t.Fatalf("noisy challenger: diff %v se %v ci %v (AUCs %v %v)", d, se, ci, a.AUC, b.AUC)
	}
	// Pairing makes the difference more precise than two independent AUCs would.
	if se >= math.Sqrt(a.SE*a.SE+b.SE*b.SE) {
		t.Fatalf("paired se %v not below the unpaired %v", se, math.Sqrt(a.SE*a.SE+b.SE*b.SE))
	}
}

func TestObservedExpected(t *testing.T) {
	// 100 bookings at 0.1: 10 expected; 20 observed.
	var p []float64
	var dna []bool
	for i := range 100 {
		p = append(p, 0.1)
		dna = append(dna, i%5 == 0)
	}
	oe, ok := ObservedExpected(p, dna)
	if !ok || oe.Observed != 20 || math.Abs(oe.Expected-10) > 1e-9 || math.Abs(oe.Ratio-2) > 1e-9 {
		t.Fatalf("%+v", oe)
	}
	// The exact Poisson 95% interval of 20 is 12.217–30.888 (chi-square quantiles); Byar's
	// approximation is within 1%.
	if math.Abs(oe.CI[0]-1.2217)/1.2217 > 0.01 || math.Abs(oe.CI[1]-3.0888)/3.0888 > 0.01 {
		t.Fatalf("CI %v, want about [1.222, 3.089]", oe.CI)
	}
	if _, ok := ObservedExpected(nil, nil); ok {
		t.Fatal("O/E of nothing reported")
	}
}

func TestCalibrationSlope(t *testing.T) {
	for _, tc := range []struct{ slope, want float64 }{{1, 1}, {0.5, 0.5}, {1.5, 1.5}} {
		p, dna := sample(4, 40000, tc.slope)
		b, ok := CalibrationSlope(p, dna)
		if !ok || math.Abs(b-tc.want) > 0.08 {
			t.Errorf("true slope %v: fitted %v (ok %v)", tc.slope, b, ok)
		}
	}
	if _, ok := CalibrationSlope([]float64{0.2, 0.2, 0.2}, []bool{true, false, true}); ok {
		t.Error("slope fitted with no spread in p")
	}
}

func TestBrierAndPSI(t *testing.T) {
	if b := Brier([]float64{0.2, 0.9}, []bool{false, true}); math.Abs(b-(0.04+0.01)/2) > 1e-12 {
		t.Fatalf("Brier %v", b)
	}
	ref := []float64{0.25, 0.25, 0.25, 0.25}
	if PSI(ref, ref) != 0 {
		t.Fatal("PSI of identical shares is not 0")
	}
	// Hand computed: (0.4−0.25)ln(0.4/0.25) + 3·(0.2−0.25)ln(0.2/0.25) = 0.1040
	if got := PSI(ref, []float64{0.4, 0.2, 0.2, 0.2}); math.Abs(got-0.1040) > 1e-3 {
		t.Fatalf("PSI %v, want 0.1040", got)
	}
}

func TestEffect(t *testing.T) {
	e, ok := NewEffect(1000, 200, 4000, 560)
	if !ok {
		t.Fatal("no effect")
	}
	if math.Abs(e.RiskDifference-0.06) > 1e-12 || math.Abs(e.Relative-0.3) > 1e-12 ||
		math.Abs(e.ContactsPerPrevented-1/0.06) > 1e-9 {
		t.Fatalf("%+v", e)
	}
	if !(e.RelativeCI[0] < 0.3 && 0.3 < e.RelativeCI[1]) || !(e.RiskDifferenceCI[0] > 0) {
		t.Fatalf("CIs %+v", e)
	}
	if _, ok := NewEffect(0, 0, 10, 1); ok {
		t.Fatal("effect with an empty arm")
	}
}
