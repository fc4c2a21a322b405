package sim

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/nhsx/dnarisk/reminders/policy"
)

// Two optional changes to how outcomes are drawn, for live monitoring to detect and measure
// (docs/simulator.md, "Drift and the reminder effect"). Both are off by default, and off they
// change nothing: not the events, not the truth. Neither draws a random number, so turning
// them on changes only which appointments end in a DNA (and when that outcome event is
// recorded), never the bookings themselves.
//
// For a booking version with booking-time truth p (Truth.PDNA, what a model can know):
//
//	p_drifted = min(p · Drift.Factor, max(0.95, p))   if the drift applies,
//	            else p                                                         (Truth.PDrifted)
//	eligible  = p_drifted >= Reminder.Threshold                                (Truth.Eligible)
//	held_out  = Reminder.Holdout.HeldOut(appointment id)                       (Truth.HeldOut)
//	p_used    = p_drifted · (1 − Reminder.Efficacy)   if eligible and not held out,
//	            else p_drifted                                                 (Truth.PUsed)
//
// and the outcome is drawn with p_used (with Config.DNASinceBooking, a DNA recorded since the
// booking raises p_drifted's log-odds first and the reminder's factor applies after it).

// MaxDriftedP caps a drifted probability.
const MaxDriftedP = 0.95

// DemoDriftSpecialty is the specialty the demo drifts: Ophthalmology (130), the commonest in
// the simulated world, about 15% of outcomes.
const DemoDriftSpecialty = "130"

// DefaultReminderThreshold is cmd/producer's default ReminderEffect.Threshold: about the
// "high" band's lower bound of models/default (0.158), so the eligible bookings are roughly
// those the dispatcher sends the extra reminder to.
const DefaultReminderThreshold = 0.16

// Drift changes the DNA risk of one specialty from a point in time on: the kind of shift
// (a clinic moving, a booking rule changing) a model trained before it cannot know about.
type Drift struct {
	// From: the drift applies to appointments starting at or after this instant.
	From time.Time
	// Specialty is the treatment function code whose appointments drift (e.g. "130").
	Specialty string
	// Factor multiplies the DNA probability the outcome is drawn with, capped at 0.95
	// (MaxDriftedP; a probability already above it is not lowered). 2 doubles the
	// specialty's DNA rate, short of the cap.
	Factor float64
}

// applies reports whether a booking of specialty index spec starting at start drifts.
func (d *Drift) applies(spec int, start time.Time) bool {
	return d != nil && specialties[spec].code == d.Specialty && !start.Before(d.From)
}

// Validate reports a drift the generator cannot apply.
func (d *Drift) Validate() error {
	if d == nil {
		return nil
	}
	var errs []error
	if !slices.ContainsFunc(specialties, func(s specialty) bool { return s.code == d.Specialty }) {
		errs = append(errs, fmt.Errorf("drift specialty %q is not one the simulator books (%v)", d.Specialty, SpecialtyCodes()))
	}
	if !(d.Factor > 0 && d.Factor <= 100) {
		errs = append(errs, fmt.Errorf("drift factor %v out of range (0, 100]", d.Factor))
	}
	if d.From.IsZero() {
		errs = append(errs, errors.New("drift needs a From time (appointments starting at or after it drift)"))
	}
	return errors.Join(errs...)
}

// SpecialtyCodes lists the treatment function codes the simulator books.
func SpecialtyCodes() []string {
	out := make([]string, len(specialties))
	for i, s := range specialties {
		out[i] = s.code
	}
	return out
}

// ReminderEffect gives the dispatcher's extra reminder a true effect: an eligible booking
// that is not held out is drawn with its probability times (1 − Efficacy). Standard
// reminders are part of the ground-truth model already (its no-reminder term); this is the
// extra one only.
type ReminderEffect struct {
	// Efficacy is the relative reduction of the DNA probability by the extra reminder, 0..1.
	Efficacy float64
	// Holdout withholds the extra reminder from a share of appointments, by the same keyed
	// hash of the appointment id as the dispatcher and the monitor (policy.Holdout.HeldOut).
	Holdout policy.Holdout
	// Threshold stands in for the dispatcher's band rule: a booking version is eligible for
	// the extra reminder when its drifted probability (Truth.PDrifted, the true probability
	// before the reminder's effect) is at least Threshold.
	Threshold float64
}

// Validate reports an effect the generator cannot apply.
func (r *ReminderEffect) Validate() error {
	if r == nil {
		return nil
	}
	var errs []error
	if !(r.Efficacy >= 0 && r.Efficacy <= 1) {
		errs = append(errs, fmt.Errorf("reminder efficacy %v out of range 0..1", r.Efficacy))
	}
	if !(r.Threshold >= 0 && r.Threshold <= 1) {
		errs = append(errs, fmt.Errorf("reminder threshold %v out of range 0..1", r.Threshold))
	}
	if err := r.Holdout.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// TrueEffect is the reminder's true effect over a set of appointments: what comparing the
// DNA rates of the reminded and held-out arms of that set estimates.
type TrueEffect struct {
	// N is the number of appointments in the set.
	N int
	// Relative is the relative reduction of the DNA rate, 1 − rate(reminded arm) / rate(held
	// out arm): Efficacy · Σ_{S, eligible} p_drifted / Σ_S p_drifted.
	Relative float64
	// Absolute is the difference of the DNA rates, rate(held out) − rate(reminded):
	// Efficacy · Σ_{S, eligible} p_drifted / |S|.
	Absolute float64
}

// TrueEffect returns the true effect of the extra reminder among the truths for which in
// returns true (all of them when in is nil). Pass one truth per appointment: the version
// whose outcome is counted (the final one). The hold-out assignment depends on the
// appointment id alone, so the two arms of any set chosen without looking at the arm have the
// same expected risk before the reminder; the difference is the effect on the eligible
// bookings of the set. Zero for an empty set or a nil receiver. With Config.DNASinceBooking
// it is exact for appointments whose patient missed nothing since the booking, and close
// otherwise (p_drifted then understates the probability the reminder acts on).
func (r *ReminderEffect) TrueEffect(truths []Truth, in func(Truth) bool) TrueEffect {
	var e TrueEffect
	if r == nil {
		return e
	}
	var all, eligible float64
	for _, t := range truths {
		if in != nil && !in(t) {
			continue
		}
		e.N++
		all += t.PDrifted
		if t.Eligible {
			eligible += t.PDrifted
		}
	}
	if e.N == 0 || all == 0 {
		return e
	}
	e.Relative = r.Efficacy * eligible / all
	e.Absolute = r.Efficacy * eligible / float64(e.N)
	return e
}

// TrueRelativeEffect is r.TrueEffect(truths, in).Relative.
func (r *ReminderEffect) TrueRelativeEffect(truths []Truth, in func(Truth) bool) float64 {
	return r.TrueEffect(truths, in).Relative
}

// drawn sets the drift and reminder fields of appointment a's current version from its
// booking-time probability a.p.
func (g *Generator) drawn(a *appointment) {
	a.pDrifted, a.eligible, a.heldOut = a.p, false, false
	if d := g.cfg.Drift; d.applies(a.facts.specialty, a.facts.start) {
		a.pDrifted = math.Min(a.p*d.Factor, math.Max(MaxDriftedP, a.p))
	}
	a.pUsed = a.pDrifted
	if r := g.cfg.Reminder; r != nil {
		a.eligible = a.pDrifted >= r.Threshold
		a.heldOut = r.Holdout.HeldOut(a.id)
		if a.eligible && !a.heldOut {
			a.pUsed = a.pDrifted * (1 - r.Efficacy)
		}
	}
}
