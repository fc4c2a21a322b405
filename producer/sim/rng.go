package sim

import (
	"math"
	"math/rand/v2"
)

// rng is a PCG stream with the few distributions the simulator needs, written out here
// rather than taken from math/rand/v2's Rand methods so that a seed keeps producing the same
// world across Go releases (only the PCG algorithm itself is specified).
type rng struct{ src rand.PCG }

func newRNG(seed int64, stream uint64) rng {
	return rng{src: *rand.NewPCG(uint64(seed), mix64(stream^0x9e3779b97f4a7c15))}
}

// float returns a uniform value in [0, 1).
func (r *rng) float() float64 { return float64(r.src.Uint64()>>11) * 0x1p-53 }

// uniform returns a uniform value in [lo, hi).
func (r *rng) uniform(lo, hi float64) float64 { return lo + (hi-lo)*r.float() }

// intn returns a uniform integer in [0, n).
func (r *rng) intn(n int) int { return int(r.float() * float64(n)) }

// exp returns an exponential variate with mean 1.
func (r *rng) exp() float64 { return -math.Log(1 - r.float()) }

// normal returns a standard normal variate (Box–Muller, one of the pair).
func (r *rng) normal() float64 {
	u1 := 1 - r.float() // (0, 1]
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*r.float())
}

// lognormal returns a log-normal variate with the given median and log-scale sigma.
func (r *rng) lognormal(median, sigma float64) float64 {
	return median * math.Exp(sigma*r.normal())
}

// pick returns an index drawn with probability proportional to cumulative weights cum
// (cum[i] is the sum of the first i+1 weights).
func (r *rng) pick(cum []float64) int {
	x := r.float() * cum[len(cum)-1]
	for i, c := range cum {
		if x < c {
			return i
		}
	}
	return len(cum) - 1
}

// mix64 is the SplitMix64 finaliser: a cheap, well-spread bijection on uint64.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func cumulative(w []float64) []float64 {
	c := make([]float64, len(w))
	s := 0.0
	for i, v := range w {
		s += v
		c[i] = s
	}
	return c
}
