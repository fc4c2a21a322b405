package sim

import (
	"math"
	"time"
)

// The ground-truth model. A booking's probability of ending in a DNA is
//
//	p = 1 / (1 + exp(-z))
//
// where z is the sum of the terms below, every one of them computed from what the PAS knows
// at the moment the booking (or reschedule) is made: the booking facts and the patient's
// outcomes and cancellations recorded before that moment. There is no hidden per-patient
// trait; patients who did not attend before are riskier only through their recorded history.
// docs/simulator.md lists the same coefficients; keep the two in step.
const (
	// intercept is tuned so that about 7.5% of appointments reaching an outcome are DNAs at
	// the default settings.
	intercept = -4.95
	// leadPerLogDay multiplies ln(1 + lead time in days): the strongest booking-fact effect.
	leadPerLogDay = 0.45
	// priorRate multiplies (r - priorMean), r = (dna + priorMean*priorWeight) / (dna +
	// attended + priorWeight): the patient's DNA rate shrunk towards the population mean, so
	// one DNA out of one appointment counts for less than five out of five.
	priorRate   = 4.0
	priorMean   = 0.075
	priorWeight = 2.0
	// recentDNA is added in full just after a DNA and decays with time constant
	// recentDNADays.
	recentDNA     = 0.8
	recentDNADays = 120.0
	// perAttended is added for each earlier attendance, up to maxAttended: patients in
	// regular contact with a service keep coming. It also keeps the population DNA rate from
	// drifting upwards as histories grow.
	perAttended = -0.06
	maxAttended = 8
	// perPatientCancel is added for each earlier patient cancellation, up to maxCancels.
	perPatientCancel = 0.20
	maxCancels       = 2
	// followUp is added for follow-up (not first) appointments; see docs/simulator.md.
	followUp = 0.10
	// noReminder is added when the patient has no SMS contact or has opted out of reminders.
	noReminder = 0.30
	// deprivationPerDecile is added per decile below the least deprived (decile 10), so
	// decile 1 adds 9 times this; missingDeprivation is added when the decile is not known.
	deprivationPerDecile = 0.07
	missingDeprivation   = 0.30
	// Day-of-week and clock effects on the appointment's UK local start.
	monday       = 0.10
	friday       = 0.12
	saturday     = 0.20
	earlyMorning = 0.15 // start before 09:30
)

// dnaSinceBooking is added to the log-odds an outcome is drawn with for each DNA of the
// patient recorded after the booking and before the appointment's start, up to
// maxDNASinceBooking, when Config.DNASinceBooking is set: a patient who has just missed
// another appointment is more likely to miss this one, and only a score computed after the
// booking can know it. Odds times 3.3 for one, 11 for two or more.
const (
	dnaSinceBooking    = 1.2
	maxDNASinceBooking = 2
)

// sinceBookingP is p raised by n DNAs recorded since the booking.
func sinceBookingP(p float64, n int) float64 {
	if n == 0 {
		return p
	}
	z := math.Log(p/(1-p)) + dnaSinceBooking*float64(min(n, maxDNASinceBooking))
	return 1 / (1 + math.Exp(-z))
}

// ageEffect is added per events.AgeBands entry: young adults miss most, older adults least,
// the very old a little more again (frailty, transport).
var ageEffect = [...]float64{0.15, 0.55, 0.45, 0.20, 0, -0.20, -0.35, -0.25, 0}

// history is what the PAS has recorded about a patient's earlier appointments.
type history struct {
	dna, attended, patientCancels int
	lastDNA                       int64 // unix seconds; valid when dna > 0
}

// facts are the booking facts the ground truth uses.
type facts struct {
	specialty   int
	firstVisit  bool
	ageBand     int
	deprivation int // 1..10, 0 when not known
	reminders   bool
	start       time.Time // UTC
	bookedAt    time.Time // UTC
}

// logOdds is the ground-truth DNA log-odds of a booking made at f.bookedAt given h.
func logOdds(f facts, h history) float64 {
	lead := f.start.Sub(f.bookedAt).Hours() / 24
	z := intercept + leadPerLogDay*math.Log1p(max(lead, 0))

	r := (float64(h.dna) + priorMean*priorWeight) / (float64(h.dna+h.attended) + priorWeight)
	z += priorRate * (r - priorMean)
	if h.dna > 0 {
		days := float64(f.bookedAt.Unix()-h.lastDNA) / 86400
		z += recentDNA * math.Exp(-max(days, 0)/recentDNADays)
	}
	z += perAttended * float64(min(h.attended, maxAttended))
	z += perPatientCancel * float64(min(h.patientCancels, maxCancels))

	z += specialties[f.specialty].effect
	z += ageEffect[f.ageBand]
	if f.deprivation == 0 {
		z += missingDeprivation
	} else {
		z += deprivationPerDecile * float64(10-f.deprivation)
	}
	if !f.firstVisit {
		z += followUp
	}
	if !f.reminders {
		z += noReminder
	}
	local := f.start.In(london)
	switch local.Weekday() {
	case time.Monday:
		z += monday
	case time.Friday:
		z += friday
	case time.Saturday:
		z += saturday
	}
	if local.Hour()*60+local.Minute() < 9*60+30 {
		z += earlyMorning
	}
	return z
}

// pDNA is the ground-truth probability that the booking ends in a DNA.
func pDNA(f facts, h history) float64 { return 1 / (1 + math.Exp(-logOdds(f, h))) }
