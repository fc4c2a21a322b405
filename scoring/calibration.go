package scoring

import (
	"fmt"
	"math"
	"sort"
)

// Calibration is an optional monotone map from the trees' probability to the served one,
// stored in contract.json. training/train.py fits it on the validation window (isotonic
// regression or Platt scaling) and writes it only when it lowers the calibration error there;
// either way it is served as this piecewise-linear table, so Python evaluates exactly the
// function the Go scorer applies and the parity rows cover it.
//
// The served probability for a tree probability p is numpy.interp(p, X, Y): Y[0] below X[0],
// Y[len-1] above the last knot, linear interpolation in between.
type Calibration struct {
	// Method says how the table was fitted ("isotonic" or "platt"); informational.
	Method string `json:"method"`
	// X are the knots (tree probabilities), strictly ascending in [0, 1].
	X []float64 `json:"x"`
	// Y are the served probabilities at the knots, non-decreasing, strictly inside (0, 1).
	Y []float64 `json:"y"`
}

// maxCalibrationKnots bounds the table: isotonic regression on a validation window gives a
// few hundred knots at most.
const maxCalibrationKnots = 100000

func (c *Calibration) validate() error {
	if len(c.X) < 2 || len(c.X) != len(c.Y) || len(c.X) > maxCalibrationKnots {
		return fmt.Errorf("calibration: %d x and %d y knots, want the same number, 2..%d", len(c.X), len(c.Y), maxCalibrationKnots)
	}
	for i := range c.X {
		x, y := c.X[i], c.Y[i]
		if !(x >= 0 && x <= 1) {
			return fmt.Errorf("calibration: x[%d] = %v outside 0..1", i, x)
		}
		if !(y > 0 && y < 1) {
			return fmt.Errorf("calibration: y[%d] = %v, want a probability strictly between 0 and 1", i, y)
		}
		if i > 0 && !(x > c.X[i-1]) {
			return fmt.Errorf("calibration: x[%d] = %v is not above x[%d] = %v: knots must be strictly ascending", i, x, i-1, c.X[i-1])
		}
		if i > 0 && y < c.Y[i-1] {
			return fmt.Errorf("calibration: y[%d] = %v is below y[%d] = %v: the map must be non-decreasing so it never reorders bookings", i, y, i-1, c.Y[i-1])
		}
	}
	return nil
}

// apply is numpy.interp(p, X, Y) for one value, with numpy's arithmetic
// (slope*(p - x[j]) + y[j], no fused multiply-add), so the result agrees with Python's to
// the last bit or so.
func (c *Calibration) apply(p float64) float64 {
	xs, ys := c.X, c.Y
	n := len(xs)
	switch {
	case math.IsNaN(p):
		return p
	case p <= xs[0]:
		return ys[0]
	case p >= xs[n-1]:
		return ys[n-1]
	}
	// j: the last knot at or below p (xs[0] < p < xs[n-1] here).
	j := sort.SearchFloat64s(xs, p)
	if xs[j] == p {
		return ys[j]
	}
	j--
	slope := (ys[j+1] - ys[j]) / (xs[j+1] - xs[j])
	return float64(slope*(p-xs[j])) + ys[j]
}

func (c *Calibration) clone() *Calibration {
	if c == nil {
		return nil
	}
	return &Calibration{Method: c.Method, X: append([]float64(nil), c.X...), Y: append([]float64(nil), c.Y...)}
}
