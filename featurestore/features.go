package featurestore

import (
	"encoding/binary"
	"math"
	"strconv"
	"sync"
	"time"
	_ "time/tzdata" // appointment clock times are UK local; images may lack a zoneinfo database

	"github.com/nhsx/dnarisk/events"
)

// Names are the model features computed here, in vector order. A model's feature contract
// names a subset of these (and optionally "extra.<name>" booking extras); see scoring.
var Names = []string{
	"lead_time_days",
	"first_visit",
	"specialty",
	"age_band",
	"deprivation_decile",
	"weekday",
	"hour",
	"booking_version",
	"prior_appointments",
	"prior_dna",
	"prior_attended",
	"prior_dna_rate",
	"dna_last_365d",
	"days_since_last_dna",
	"days_since_last_attended",
	"prior_patient_cancellations",
	"prior_hospital_cancellations",
	"prior_reschedules",
	"open_bookings",
}

// Categorical lists the features a model should treat as categories rather than numbers.
var Categorical = map[string]bool{"specialty": true}

// NumFeatures is len(Names).
const NumFeatures = 19

// Vector holds one row of features in Names order. Missing values are NaN, which LightGBM
// and leaves both treat as missing.
type Vector [NumFeatures]float64

var london = mustLoad("Europe/London")

func mustLoad(name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return l
}

const day = 24 * 3600

// Compute returns the features of booking event ev (booked or rescheduled, with Booking set)
// given the patient's history, using only facts recorded before ev.EventTime's second and
// excluding facts about ev's own appointment. It is the one definition used by the live scorer and by
// training-set replay.
func Compute(ev *events.Appointment, h *History) Vector {
	var v Vector
	b := ev.Booking
	asOf := ev.EventTime.Unix()

	v[0] = b.Start.Sub(b.BookedAt).Hours() / 24
	if v[0] < 0 {
		v[0] = 0
	}
	v[1] = boolf(b.FirstVisit)
	v[2] = math.NaN()
	if code, err := strconv.Atoi(b.Specialty); err == nil && code >= 0 && code < 1<<20 {
		v[2] = float64(code)
	}
	v[3] = float64(events.AgeBandIndex(b.AgeBand))
	v[4] = math.NaN()
	if b.Deprivation != nil {
		v[4] = float64(*b.Deprivation)
	}
	local := b.Start.In(london)
	v[5] = float64((int(local.Weekday()) + 6) % 7) // Monday = 0
	v[6] = float64(local.Hour())
	v[7] = float64(ev.Version)

	var dna, att, dna365, pc, hc, resched int
	lastDNA, lastAtt := int64(math.MinInt64), int64(math.MinInt64)
	// One entry per other appointment known at asOf, in a slice rather than maps: a patient
	// has a few dozen facts, and map allocation dominated this function's cost. The slice is
	// reused from call to call (apptScratch).
	scratch := apptScratch.Get().(*[]apptState)
	appts := (*scratch)[:0]
	defer func() {
		clear(appts) // drop the ids, which point into the history
		*scratch = appts[:0]
		apptScratch.Put(scratch)
	}()
	if h != nil {
		self := idKey(ev.AppointmentID)
		for _, f := range h.Facts {
			// Facts stamped in the booking's own second are left out too: times are whole
			// seconds, so "at or after" is the only test a replay answers the same way.
			if f.At >= asOf {
				continue
			}
			k := idKey(f.Appointment)
			if k == self && f.Appointment == ev.AppointmentID {
				continue
			}
			var a *apptState
			appts, a = stateOf(appts, f.Appointment, k)
			switch f.Kind {
			case KindAttended, KindDidNotAttend:
				// The latest outcome known at asOf wins (a PAS may correct a DNA to attended).
				a.outcome, a.outcomeAt = f.Kind, f.At
			case KindPatientCancel:
				pc++
				a.cancelled = true
			case KindHospitalCancel:
				hc++
				a.cancelled = true
			case KindRescheduled, KindBooked:
				if f.Kind == KindRescheduled {
					resched++
				}
				// A late, superseded version must not move the appointment.
				if f.Version >= a.version {
					a.version, a.start = f.Version, f.Start
				}
			}
		}
	}
	open := 0
	for i := range appts {
		a := &appts[i]
		switch a.outcome {
		case KindDidNotAttend:
			dna++
			if a.outcomeAt > asOf-365*day {
				dna365++
			}
			lastDNA = max(lastDNA, a.outcomeAt)
		case KindAttended:
			att++
			lastAtt = max(lastAtt, a.outcomeAt)
		default:
			if a.version > 0 && !a.cancelled && a.start > asOf {
				open++
			}
		}
	}

	v[8] = float64(dna + att)
	v[9] = float64(dna)
	v[10] = float64(att)
	v[11] = math.NaN()
	if dna+att > 0 {
		v[11] = float64(dna) / float64(dna+att)
	}
	v[12] = float64(dna365)
	v[13] = daysSince(asOf, lastDNA)
	v[14] = daysSince(asOf, lastAtt)
	v[15] = float64(pc)
	v[16] = float64(hc)
	v[17] = float64(resched)
	v[18] = float64(open)
	return v
}

func daysSince(now, then int64) float64 {
	if then == math.MinInt64 {
		return math.NaN()
	}
	return float64(now-then) / day
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// apptScratch holds the slices Compute keeps its apptStates in. A stack array of 32 spilled to
// the heap for every booking whose patient had more appointments than that: 6% of the bytes
// the consumer allocated on make bench's input (docs/performance.md), and a trust's three
// years of history hold more.
var apptScratch = sync.Pool{New: func() any { s := make([]apptState, 0, 64); return &s }}

// apptState is what Compute knows about one other appointment of the patient.
type apptState struct {
	id        string
	key       uint64 // idKey(id)
	outcome   Kind   // 0 when none
	outcomeAt int64
	cancelled bool
	version   int32 // highest booking version seen, 0 if none
	start     int64 // its start
}

// stateOf returns the entry for id, whose idKey is k, adding one if needed. Recent facts tend
// to be about recent appointments, so the search runs from the end.
func stateOf(appts []apptState, id string, k uint64) ([]apptState, *apptState) {
	for i := len(appts) - 1; i >= 0; i-- {
		if appts[i].key == k && appts[i].id == id {
			return appts, &appts[i]
		}
	}
	appts = append(appts, apptState{id: id, key: k})
	return appts, &appts[len(appts)-1]
}

// idKey is the last eight bytes of an appointment id (all of a shorter one). One patient's
// ids tend to share a prefix and differ at the end, so comparing keys first settles most
// mismatches in one integer compare instead of a byte-wise one over the shared prefix
// (memeqbody was 2.7% of the consumer's CPU). Equal ids have equal keys; equal keys say
// nothing, so the ids are compared after.
func idKey(id string) uint64 {
	if len(id) >= 8 {
		return binary.LittleEndian.Uint64(unsafeBytes(id[len(id)-8:]))
	}
	var k uint64
	for i := 0; i < len(id); i++ {
		k = k<<8 | uint64(id[i])
	}
	return k
}
