// Package featurestore keeps each patient's appointment history and turns it, together with a
// booking, into the model's features. History is a small log of facts (booked, rescheduled,
// cancelled, attended, did not attend), each stamped with the time it became known. Features
// are computed "as of" the booking's event time, so a live score, a replayed score and a
// training row built by replaying history all see exactly the facts known at booking time:
// one code path for training and serving, and no future leakage.
//
// Applying a fact is idempotent (a fact is identified by appointment, kind and version), so
// replayed Kafka events change nothing. The same History type lives in Redis (RedisStore,
// cluster-safe hash-tagged keys, compare-and-set saves) or in memory (MemoryStore, for
// replaying history into training sets and for tests).
package featurestore

import (
	"slices"
	"time"

	"github.com/nhsx/dnarisk/events"
)

// Kind is the kind of a history fact.
type Kind byte

// Fact kinds, one per appointment event type (cancellations split by who cancelled).
const (
	KindBooked          Kind = 'b'
	KindRescheduled     Kind = 'r'
	KindPatientCancel   Kind = 'p'
	KindHospitalCancel  Kind = 'h'
	KindAttended        Kind = 'a'
	KindDidNotAttend    Kind = 'd'
	defaultMaxFacts          = 1000
	defaultRetentionDur      = 3 * 365 * 24 * time.Hour
)

// Fact is one thing known about one of the patient's appointments, and when it became known.
type Fact struct {
	Appointment string `json:"a"`
	Kind        Kind   `json:"k"`
	// Version is the booking version (events.Appointment.Version, 1..10000); 32 bits, so that
	// with Kind it fills one word: a Fact is 40 bytes, not 48, and decoded facts were a third
	// of the bytes the consumer allocated (docs/performance.md).
	Version int32 `json:"v"`
	At      int64 `json:"t"` // unix seconds of the event time
	// Start is the appointment start (unix seconds) for booked and rescheduled facts.
	Start int64 `json:"s,omitempty"`
}

// History is one patient's facts in the order they were applied. Rev counts saves and is
// used by stores for compare-and-set; it is not part of the features.
type History struct {
	Rev   int64  `json:"rev"`
	Facts []Fact `json:"facts"`

	// enc is the stored encoding (codec.go) of Facts[:encN], as RedisStore read it, so that
	// saving a history that only grew encodes just its new facts. Apply keeps it while it only
	// appends; a prune drops it. Code that changes Facts otherwise must use a new History
	// (Clone copies both).
	enc  string
	encN int
}

// Clone returns a copy of h that shares nothing it can change.
func (h *History) Clone() *History {
	c := *h
	c.Facts = slices.Clone(h.Facts)
	return &c
}

// Policy bounds how much history is kept per patient.
type Policy struct {
	// Retention drops facts older than this, measured from the newest event applied.
	// Default three years.
	Retention time.Duration
	// MaxFacts keeps at most this many facts, dropping the oldest. Default 1000.
	MaxFacts int
}

func (p Policy) withDefaults() Policy {
	if p.Retention <= 0 {
		p.Retention = defaultRetentionDur
	}
	if p.MaxFacts <= 0 {
		p.MaxFacts = defaultMaxFacts
	}
	return p
}

// FactOf maps an appointment event to the fact it records.
func FactOf(ev *events.Appointment) Fact {
	f := Fact{Appointment: ev.AppointmentID, Version: int32(ev.Version), At: ev.EventTime.Unix()}
	switch ev.Type {
	case events.Booked:
		f.Kind = KindBooked
	case events.Rescheduled:
		f.Kind = KindRescheduled
	case events.Cancelled:
		f.Kind = KindHospitalCancel
		if ev.CancelledBy == events.ByPatient {
			f.Kind = KindPatientCancel
		}
	case events.Attended:
		f.Kind = KindAttended
	case events.DidNotAttend:
		f.Kind = KindDidNotAttend
	}
	if ev.Booking != nil && (f.Kind == KindBooked || f.Kind == KindRescheduled) {
		f.Start = ev.Booking.Start.Unix()
	}
	return f
}

func (f Fact) isOutcome() bool { return f.Kind == KindAttended || f.Kind == KindDidNotAttend }

// latestOutcome is the newest outcome recorded for appointment id, whose idKey is k.
func (h *History) latestOutcome(id string, k uint64) (Fact, bool) {
	latest := -1
	for i := range h.Facts {
		g := &h.Facts[i]
		if g.isOutcome() && idKey(g.Appointment) == k && g.Appointment == id && (latest < 0 || g.At >= h.Facts[latest].At) {
			latest = i
		}
	}
	if latest < 0 {
		return Fact{}, false
	}
	return h.Facts[latest], true
}

// same reports whether two facts record the same thing. Bookings are distinct per version;
// a cancellation is one per appointment and kind, whatever version it names.
func (f Fact) same(g Fact) bool {
	if f.Kind != g.Kind || f.Appointment != g.Appointment { // kinds first: a byte, not a string
		return false
	}
	if f.Kind == KindBooked || f.Kind == KindRescheduled {
		return f.Version == g.Version
	}
	return true
}

// Apply records ev in h and reports whether h changed. Applying the same event again, or
// another event that records the same fact, is a no-op. An outcome that corrects an earlier
// one (did not attend, then attended) is recorded; an outcome no newer than the appointment's
// latest one is a replay and is not.
func (h *History) Apply(ev *events.Appointment, p Policy) bool {
	f := FactOf(ev)
	k := idKey(f.Appointment)
	if f.isOutcome() {
		if g, ok := h.latestOutcome(f.Appointment, k); ok && (g.At >= f.At || g.Kind == f.Kind) {
			return false
		}
	} else {
		for i := range h.Facts {
			if g := &h.Facts[i]; g.Kind == f.Kind && idKey(g.Appointment) == k && g.same(f) {
				return false
			}
		}
	}
	h.Facts = append(h.Facts, f)
	h.prune(f.At, p.withDefaults())
	return true
}

func (h *History) prune(now int64, p Policy) {
	cutoff := now - int64(p.Retention/time.Second)
	if len(h.Facts) <= p.MaxFacts && !h.anyBefore(cutoff) {
		return // the common case, read only: rewriting every fact cost a write barrier each
	}
	keep := h.Facts[:0]
	for _, f := range h.Facts {
		if f.At >= cutoff {
			keep = append(keep, f)
		}
	}
	if over := len(keep) - p.MaxFacts; over > 0 {
		keep = keep[over:]
	}
	if len(keep) != len(h.Facts) {
		h.enc, h.encN = "", 0
	}
	h.Facts = keep
}

// anyBefore reports whether a fact is older than cutoff.
func (h *History) anyBefore(cutoff int64) bool {
	for i := range h.Facts {
		if h.Facts[i].At < cutoff {
			return true
		}
	}
	return false
}

// Cancelled reports whether appointment id is known to be cancelled.
func (h *History) Cancelled(id string) bool {
	k := idKey(id)
	for i := range h.Facts {
		if f := &h.Facts[i]; (f.Kind == KindPatientCancel || f.Kind == KindHospitalCancel) && idKey(f.Appointment) == k && f.Appointment == id {
			return true
		}
	}
	return false
}

// LatestVersion is the highest booking version recorded for appointment id (0 if none).
func (h *History) LatestVersion(id string) int {
	v, k := 0, idKey(id)
	for i := range h.Facts {
		if f := &h.Facts[i]; (f.Kind == KindBooked || f.Kind == KindRescheduled) && int(f.Version) > v && idKey(f.Appointment) == k && f.Appointment == id {
			v = int(f.Version)
		}
	}
	return v
}
