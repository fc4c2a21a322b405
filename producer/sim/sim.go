// Package sim is a synthetic Patient Administration System: from a seed it builds a patient
// population and plays out their outpatient appointments (bookings, reschedules,
// cancellations, attendances and DNAs) as appointment.v1 events in global event-time order.
// Whether a patient attends is drawn from a documented ground-truth model (model.go,
// docs/simulator.md) that uses only what is known at booking time, so the ground-truth
// probability of every booking is available as a Truth record, kept apart from the events.
// Optionally (effects.go) one specialty's risk drifts from a date on, and the dispatcher's
// extra reminder has a true effect with a keyed hold-out, so live monitoring can be checked
// against a known shift and a known effect.
//
// Generation streams: patients are independent worlds merged by a heap on their next event
// time, so memory grows with the number of patients, not the number of events.
package sim

import (
	"errors"
	"fmt"
	"iter"
	"math"
	"slices"
	"strconv"
	"time"
	_ "time/tzdata" // clinic hours are UK local; images may lack a zoneinfo database

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
)

// MaxPatients is the largest population: the NHS 999 test range holds about 909,000 numbers
// with a valid check digit.
const MaxPatients = 900_000

// Config describes the simulated world. The zero value, with a Seed, is the default demo:
// 2,000 patients booking over 120 days from Monday 6 January 2025.
type Config struct {
	Seed int64
	// Patients is the population size. Default 2,000. Patients who book nothing in the
	// window produce no events.
	Patients int
	// Start is the first day of the booking window (its UK calendar date is used).
	// Default 2025-01-06.
	Start time.Time
	// Days is the length of the booking window in days. Bookings are made inside it; every
	// appointment is then played out to its end, so events run past the window by up to the
	// longest lead time. Default 120.
	Days int
	// BookingsPerYear is the mean number of bookings per patient per year; patients vary
	// around it (gamma, shape 2). Default 5.
	BookingsPerYear float64
	// DNASinceBooking, when set, lets the patient's DNAs recorded after a booking (and before
	// its appointment starts) raise that appointment's risk: each adds dnaSinceBooking to
	// the log-odds its outcome is drawn with, up to maxDNASinceBooking of them (model.go).
	// The Truth records stay the booking-time probabilities. Off by default, so the default
	// world (and models/default) are unchanged; the decision-time model is trained with it on
	// (docs/simulator.md).
	DNASinceBooking bool
	// Drift, when set, multiplies the DNA probability of one specialty's appointments from a
	// point in time on (effects.go). Nil: no drift.
	Drift *Drift
	// Reminder, when set, gives the extra reminder a true effect on eligible bookings that
	// are not held out (effects.go). Nil: no effect.
	Reminder *ReminderEffect
}

func (c *Config) setDefaults() {
	if c.Patients == 0 {
		c.Patients = 2000
	}
	if c.Start.IsZero() {
		c.Start = time.Date(2025, 1, 6, 0, 0, 0, 0, london)
	}
	if c.Days == 0 {
		c.Days = 120
	}
	if c.BookingsPerYear == 0 {
		c.BookingsPerYear = 5
	}
}

// Validate reports a configuration the generator cannot run.
func (c Config) Validate() error {
	var errs []error
	if c.Patients < 0 || c.Patients > MaxPatients {
		errs = append(errs, fmt.Errorf("patients %d out of range 1..%d", c.Patients, MaxPatients))
	}
	if c.Days < 0 || c.Days > 3650 {
		errs = append(errs, fmt.Errorf("days %d out of range 1..3650", c.Days))
	}
	if c.BookingsPerYear < 0 || c.BookingsPerYear > 365 || math.IsNaN(c.BookingsPerYear) {
		errs = append(errs, fmt.Errorf("bookings per year %v out of range 0..365", c.BookingsPerYear))
	}
	if !c.Start.IsZero() && (c.Start.Year() < 1995 || c.Start.Year() > 2090) {
		errs = append(errs, fmt.Errorf("start %s out of range 1995..2090", c.Start.Format(time.DateOnly)))
	}
	if err := c.Drift.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Reminder.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Truth is the ground-truth probability that one version of an appointment ends in a DNA,
// computed from what was known when that version was booked. There is one per booked and
// rescheduled event; the outcome event of an appointment names the version whose
// probability was used to draw it.
type Truth struct {
	AppointmentID string
	Version       int
	// PDNA is the booking-time ground truth: what a model can know (model.go). Training and
	// the Bayes AUC use it.
	PDNA float64
	// PDrifted is PDNA after Config.Drift (multiplied by its Factor when the drift applies,
	// capped at 0.95): the true probability before the extra reminder's effect. PDNA without
	// a drift.
	PDrifted float64
	// Eligible: Config.Reminder is set and PDrifted is at least its Threshold.
	Eligible bool
	// HeldOut: Config.Reminder is set and its Holdout holds this appointment out.
	HeldOut bool
	// PUsed is the probability the outcome is drawn with: PDrifted · (1 − Efficacy) when
	// Eligible and not HeldOut, else PDrifted. With Config.DNASinceBooking a DNA recorded
	// after the booking raises it further when the outcome is drawn (not recorded here).
	PUsed float64
}

// Generator produces the events of one simulated world. It is not safe for concurrent use.
type Generator struct {
	cfg      Config
	ps       *pseudo.Pseudonymiser
	base     time.Time // local midnight of the first booking day
	runTag   string
	patients []patient
	heap     []*patient // min-heap on each patient's next event
}

// New returns a Generator for cfg whose patient identifiers are pseudonymised with ps.
func New(cfg Config, ps *pseudo.Pseudonymiser) (*Generator, error) {
	if ps == nil {
		return nil, errors.New("sim: nil pseudonymiser")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sim config: %w", err)
	}
	cfg.setDefaults()
	// Own copies: the caller may reuse its Config.
	if cfg.Drift != nil {
		d := *cfg.Drift
		cfg.Drift = &d
	}
	if cfg.Reminder != nil {
		r := *cfg.Reminder
		r.Holdout.Key = slices.Clone(r.Holdout.Key)
		cfg.Reminder = &r
	}
	s := cfg.Start.In(london)
	g := &Generator{
		cfg:    cfg,
		ps:     ps,
		base:   time.Date(s.Year(), s.Month(), s.Day(), 0, 0, 0, 0, london),
		runTag: fmt.Sprintf("%06X", mix64(uint64(cfg.Seed))>>40),
	}
	g.populate()
	return g, nil
}

// Next returns the next event in event-time order and, for booked and rescheduled events,
// the ground truth of that booking version. ok is false when the world has run out.
func (g *Generator) Next() (ev events.Appointment, truth *Truth, ok bool) {
	if len(g.heap) == 0 {
		return ev, nil, false
	}
	p := g.heap[0]
	ev, truth = g.step(p)
	if len(p.pending) > 0 {
		g.down(0)
	} else {
		last := len(g.heap) - 1
		g.heap[0] = g.heap[last]
		g.heap = g.heap[:last]
		g.down(0)
	}
	return ev, truth, true
}

// All yields every remaining event with its truth (nil for cancellations and outcomes).
func (g *Generator) All() iter.Seq2[events.Appointment, *Truth] {
	return func(yield func(events.Appointment, *Truth) bool) {
		for {
			ev, tr, ok := g.Next()
			if !ok || !yield(ev, tr) {
				return
			}
		}
	}
}

// Events yields every remaining event, handing each booking's truth to onTruth (if not nil)
// before the booking event itself is yielded.
func (g *Generator) Events(onTruth func(Truth)) iter.Seq[events.Appointment] {
	return func(yield func(events.Appointment) bool) {
		for ev, tr := range g.All() {
			if tr != nil && onTruth != nil {
				onTruth(*tr)
			}
			if !yield(ev) {
				return
			}
		}
	}
}

// Probabilities of what happens to a booking version; see docs/simulator.md.
const (
	pFirstVisit     = 0.30
	pReschedule     = 0.08 // per version, so ~8% of appointments are rescheduled at least once
	maxVersions     = 4
	pPatientCancel  = 0.05
	pHospitalCancel = 0.04
	pSMS            = 0.85
	pOptOut         = 0.03
	pNoDeprivation  = 0.05
	pMainSpecialty  = 0.80 // share of a patient's bookings in their main specialty
)

type kind uint8

const (
	kindArrival kind = iota // the patient books a new appointment
	kindReschedule
	kindPatientCancel
	kindHospitalCancel
	kindOutcome
)

type pending struct {
	at   int64 // unix seconds
	kind kind
	appt *appointment
}

type appointment struct {
	id      string
	version int
	facts   facts
	clinic  string
	p       float64 // ground truth of the current version
	// The current version's drift and reminder effect (effects.go); pUsed == p when off.
	pDrifted, pUsed   float64
	eligible, heldOut bool
	u                 float64 // the outcome draw: DNA when u < p
	// dnaAtBooking is the patient's DNA count when the current version was booked.
	dnaAtBooking int
}

type patient struct {
	idx        int
	nhs        string
	pseudonym  string
	r          rng
	ageBand    int
	dep        int
	sms        bool
	optOut     bool
	main       int
	perDay     float64 // booking rate
	day        float64 // day offset of the latest arrival
	lastBooked int64
	appts      int
	events     uint32
	hist       history
	dnaTimes   []int64   // Config.DNASinceBooking: when each DNA was recorded, in order
	pending    []pending // sorted by time, ties in insertion order; short
}

func (g *Generator) populate() {
	n := g.cfg.Patients
	g.patients = make([]patient, 0, n) // patients who never book are left out
	// Walk the six-digit NHS number bodies in a seed-dependent order (an affine bijection mod
	// 10^6), keeping those with a valid check digit, so patients are unique within a run.
	offset := int(mix64(uint64(g.cfg.Seed)^0xa5a5) % 1_000_000)
	k := 0
	for i := 0; i < n; i++ {
		nhs, ok := nhsNumber((7919*k + offset) % 1_000_000)
		for ; !ok; nhs, ok = nhsNumber((7919*k + offset) % 1_000_000) {
			k++
		}
		k++
		p := patient{idx: i, nhs: nhs, r: newRNG(g.cfg.Seed, uint64(i))}
		g.initPatient(&p)
		if len(p.pending) > 0 {
			g.patients = append(g.patients, p)
		}
	}
	g.heap = make([]*patient, len(g.patients))
	for i := range g.patients {
		g.heap[i] = &g.patients[i]
	}
	for i := len(g.heap)/2 - 1; i >= 0; i-- {
		g.down(i)
	}
}

func (g *Generator) initPatient(p *patient) {
	r := &p.r
	p.ageBand = r.pick(ageBandCum)
	if p.ageBand == 0 {
		p.main = r.pick(childSpecialtyCum)
	} else {
		p.main = r.pick(adultSpecialtyCum)
	}
	if r.float() >= pNoDeprivation {
		p.dep = 1 + r.intn(10) // IMD deciles are equal population tenths
	}
	p.sms = r.float() < pSMS
	p.optOut = r.float() < pOptOut
	p.perDay = g.cfg.BookingsPerYear / 365 * (r.exp() + r.exp()) / 2
	if p.perDay <= 0 {
		return
	}
	p.day = r.exp() / p.perDay
	if p.day < float64(g.cfg.Days) {
		g.push(p, pending{at: g.bookingInstant(p), kind: kindArrival})
	}
}

// bookingInstant turns the patient's current arrival day into a booking time: office hours,
// weekdays (bookings falling on a weekend mostly wait for Monday), never before the
// patient's previous booking.
func (g *Generator) bookingInstant(p *patient) int64 {
	r := &p.r
	d := g.base.AddDate(0, 0, int(p.day))
	switch d.Weekday() {
	case time.Saturday:
		if r.float() < 0.9 {
			d = d.AddDate(0, 0, 2)
		}
	case time.Sunday:
		if r.float() < 0.9 {
			d = d.AddDate(0, 0, 1)
		}
	}
	minute := 8*60 + r.intn(10*60)
	t := time.Date(d.Year(), d.Month(), d.Day(), minute/60, minute%60, r.intn(60), 0, london).Unix()
	if t <= p.lastBooked {
		t = p.lastBooked + 60
	}
	p.lastBooked = t
	return t
}

// leadDays draws a lead time: new referrals are a mix of urgent, two-week-wait and routine
// waits; follow-ups are mostly booked months ahead.
func leadDays(r *rng, first bool) float64 {
	u := r.float()
	if first {
		switch {
		case u < 0.08:
			return r.uniform(0, 2)
		case u < 0.33:
			return r.uniform(2, 14)
		}
		return min(max(r.lognormal(42, 0.6), 2), 300)
	}
	if u < 0.05 {
		return r.uniform(0, 7)
	}
	return min(max(r.lognormal(75, 0.55), 7), 365)
}

// slot places an appointment about lead days after booked: a clinic slot between 08:00 and
// 17:30 UK time on a weekday (a few Saturday clinics), at least 30 minutes after booking.
func slot(r *rng, booked int64, lead float64) int64 {
	b := time.Unix(booked, 0).In(london)
	d := time.Date(b.Year(), b.Month(), b.Day(), 12, 0, 0, 0, london).AddDate(0, 0, int(lead))
	earliest := booked + 30*60
	const slots = 39 // 08:00, 08:15, ... 17:30
	for {
		switch d.Weekday() {
		case time.Saturday:
			if r.float() < 0.95 {
				d = d.AddDate(0, 0, 2)
			}
		case time.Sunday:
			d = d.AddDate(0, 0, 1)
		}
		day0 := time.Date(d.Year(), d.Month(), d.Day(), 8, 0, 0, 0, london).Unix()
		first := 0
		if earliest > day0 {
			first = int((earliest - day0 + 15*60 - 1) / (15 * 60))
		}
		if first < slots {
			k := first + r.intn(slots-first)
			return time.Date(d.Year(), d.Month(), d.Day(), 8+k/4, 15*(k%4), 0, 0, london).Unix()
		}
		d = d.AddDate(0, 0, 1)
	}
}

// step processes p's next pending item and returns its event.
func (g *Generator) step(p *patient) (events.Appointment, *Truth) {
	it := p.pending[0]
	p.pending = p.pending[1:]
	if p.pseudonym == "" {
		p.pseudonym = g.ps.Pseudonym(p.nhs)
	}
	r := &p.r
	ev := events.Appointment{
		Schema:    events.AppointmentSchema,
		EventID:   g.eventID(p),
		EventTime: time.Unix(it.at, 0).UTC(),
		Patient:   p.pseudonym,
	}
	a := it.appt
	switch it.kind {
	case kindArrival:
		a = g.newAppointment(p, it.at)
		ev.Type = events.Booked
		p.day += r.exp() / p.perDay
		if p.day < float64(g.cfg.Days) {
			g.push(p, pending{at: g.bookingInstant(p), kind: kindArrival})
		}
	case kindReschedule:
		a.version++
		a.facts.bookedAt = time.Unix(it.at, 0).UTC()
		lead := max(r.lognormal(28, 0.6), 1)
		a.facts.start = time.Unix(slot(r, it.at, lead), 0).UTC()
		ev.Type = events.Rescheduled
	case kindPatientCancel, kindHospitalCancel:
		ev.Type, ev.CancelledBy = events.Cancelled, events.ByHospital
		if it.kind == kindPatientCancel {
			ev.CancelledBy = events.ByPatient
			p.hist.patientCancels++
		}
	case kindOutcome:
		ev.Type = events.Attended
		if a.u < g.outcomeP(p, a) {
			ev.Type = events.DidNotAttend
			p.hist.dna++
			p.hist.lastDNA = it.at
			if g.cfg.DNASinceBooking {
				p.dnaTimes = append(p.dnaTimes, it.at)
			}
		} else {
			p.hist.attended++
		}
	}
	ev.AppointmentID, ev.Version = a.id, a.version
	if ev.Type != events.Booked && ev.Type != events.Rescheduled {
		return ev, nil
	}
	a.p = pDNA(a.facts, p.hist)
	g.drawn(a)
	a.dnaAtBooking = p.hist.dna
	ev.Booking = g.booking(p, a)
	g.plan(p, a, it.at)
	return ev, &Truth{AppointmentID: a.id, Version: a.version, PDNA: a.p, PDrifted: a.pDrifted, Eligible: a.eligible, HeldOut: a.heldOut, PUsed: a.pUsed}
}

// outcomeP is the probability a's outcome is drawn with: its booking-time truth after drift
// and the extra reminder's effect (a.pUsed), with Config.DNASinceBooking raised by the
// patient's DNAs recorded since the booking and before the start (on the drifted
// probability; the reminder's factor applies after the raise).
func (g *Generator) outcomeP(p *patient, a *appointment) float64 {
	if !g.cfg.DNASinceBooking {
		return a.pUsed
	}
	start := a.facts.start.Unix()
	n := 0
	for _, t := range p.dnaTimes[a.dnaAtBooking:] {
		if t < start {
			n++
		}
	}
	if n == 0 {
		return a.pUsed
	}
	q := sinceBookingP(a.pDrifted, n)
	if r := g.cfg.Reminder; r != nil && a.eligible && !a.heldOut {
		q *= 1 - r.Efficacy
	}
	return q
}

func (g *Generator) newAppointment(p *patient, at int64) *appointment {
	r := &p.r
	p.appts++
	spec := p.main
	if r.float() >= pMainSpecialty {
		if p.ageBand == 0 {
			spec = r.pick(childSpecialtyCum)
		} else {
			spec = r.pick(adultSpecialtyCum)
		}
	}
	first := r.float() < pFirstVisit
	clinics := specialties[spec].clinics
	a := &appointment{
		id:      g.runTag + "-" + strconv.Itoa(p.idx) + "-" + strconv.Itoa(p.appts),
		version: 1,
		clinic:  clinics[r.intn(len(clinics))],
		facts: facts{
			specialty:   spec,
			firstVisit:  first,
			ageBand:     p.ageBand,
			deprivation: p.dep,
			reminders:   p.sms && !p.optOut,
			bookedAt:    time.Unix(at, 0).UTC(),
		},
	}
	a.facts.start = time.Unix(slot(r, at, leadDays(r, first)), 0).UTC()
	return a
}

// plan decides what happens next to the version of a booked at now: another reschedule, a
// cancellation, or an outcome at its start.
func (g *Generator) plan(p *patient, a *appointment, now int64) {
	r := &p.r
	start := a.facts.start.Unix()
	window := float64(start - now)
	if a.version < maxVersions && window > 3600 && r.float() < pReschedule {
		g.push(p, pending{at: now + int64(window*r.uniform(0.1, 0.95)), kind: kindReschedule, appt: a})
		return
	}
	switch u := r.float(); {
	case u < pPatientCancel && window > 60:
		g.push(p, pending{at: now + int64(window*r.uniform(0.05, 0.98)), kind: kindPatientCancel, appt: a})
	case u < pPatientCancel+pHospitalCancel && window > 60:
		g.push(p, pending{at: now + int64(window*r.uniform(0.05, 0.98)), kind: kindHospitalCancel, appt: a})
	default:
		a.u = r.float()
		// The clinic records an attendance during the session; a DNA once the slot has passed.
		delay := r.uniform(5, 45)
		if a.u < a.pUsed {
			delay = r.uniform(30, 150)
		}
		g.push(p, pending{at: start + int64(delay*60), kind: kindOutcome, appt: a})
	}
}

func (g *Generator) booking(p *patient, a *appointment) *events.Booking {
	b := &events.Booking{
		Specialty:  specialties[a.facts.specialty].code,
		Clinic:     a.clinic,
		FirstVisit: a.facts.firstVisit,
		Start:      a.facts.start,
		BookedAt:   a.facts.bookedAt,
		AgeBand:    events.AgeBands[p.ageBand],
		Contact:    events.Contact{SMS: p.sms, OptOut: p.optOut},
	}
	if p.dep != 0 {
		d := p.dep
		b.Deprivation = &d
	}
	return b
}

// eventID is a UUID-shaped (version 8, RFC 9562) identifier derived from the seed, the
// patient and the patient's event counter: unique within a run and the same on every run.
func (g *Generator) eventID(p *patient) string {
	p.events++
	k := uint64(p.idx)<<32 | uint64(p.events)
	hi := mix64(uint64(g.cfg.Seed) ^ mix64(k))
	lo := mix64(hi ^ uint64(g.cfg.Seed)*0x9e3779b97f4a7c15 ^ k)
	hi = hi&^0xf000 | 0x8000
	lo = lo&^(0xc<<60) | 0x8<<60
	const hex = "0123456789abcdef"
	var b [36]byte
	j := 0
	for i := 0; i < 32; i++ {
		if i == 8 || i == 12 || i == 16 || i == 20 {
			b[j] = '-'
			j++
		}
		var nib uint64
		if i < 16 {
			nib = hi >> (60 - 4*i) & 0xf
		} else {
			nib = lo >> (60 - 4*(i-16)) & 0xf
		}
		b[j] = hex[nib]
		j++
	}
	return string(b[:])
}

// push adds an item to p's pending list, keeping it sorted by time then insertion order.
func (g *Generator) push(p *patient, it pending) {
	i := len(p.pending)
	p.pending = append(p.pending, it)
	for i > 0 && p.pending[i-1].at > it.at {
		p.pending[i] = p.pending[i-1]
		i--
	}
	p.pending[i] = it
}

func less(a, b *patient) bool {
	x, y := a.pending[0], b.pending[0]
	if x.at != y.at {
		return x.at < y.at
	}
	return a.idx < b.idx
}

func (g *Generator) down(i int) {
	h := g.heap
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && less(h[r], h[l]) {
			m = r
		}
		if !less(h[m], h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

var london = mustLoad("Europe/London")

func mustLoad(name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return l
}
