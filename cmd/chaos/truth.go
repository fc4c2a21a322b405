package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/reminders"
	"github.com/nhsx/dnarisk/reminders/policy"
	"github.com/nhsx/dnarisk/scoring"
)

// simStart is the first simulated booking day, passed to the producer as --start.
const simStart = "2025-01-06"

// simEvents regenerates the producer's input: the simulator is deterministic in its
// configuration and the pseudonymisation secret, so this is the same stream, event for
// event, that cmd/producer publishes.
func simEvents(cfg config, secret []byte) ([]events.Appointment, error) {
	ps, err := pseudo.New(secret)
	if err != nil {
		return nil, err
	}
	start, err := time.ParseInLocation(time.DateOnly, simStart, london)
	if err != nil {
		return nil, err
	}
	g, err := sim.New(sim.Config{Seed: cfg.seed, Patients: cfg.patients, Days: cfg.days, Start: start}, ps)
	if err != nil {
		return nil, err
	}
	var out []events.Appointment
	for ev := range g.All() {
		out = append(out, ev)
	}
	return out, nil
}

var london = func() *time.Location {
	l, err := time.LoadLocation("Europe/London")
	if err != nil {
		panic(err)
	}
	return l
}()

// malformed is one hostile message the suite puts on the appointments topic. Its key is
// unique, so its dead letter can be found by key.
type malformed struct {
	Kind   string `json:"kind"`
	Key    string `json:"-"`
	Value  []byte `json:"-"`
	Reason string `json:"-"` // a fragment the dead letter's reason must contain
}

func randomHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// malformedBurst returns one of each kind of hostile input: what a broken or malicious
// sender can put on the topic. None may crash the scorer; each must be dead-lettered with
// its reason, and none may reach a history or a reminder.
func malformedBurst(burst int) []malformed {
	good := func(patient, appt string) map[string]any {
		return map[string]any{
			"schema": "appointment.v1", "event_id": "chaos-" + appt, "type": "booked",
			"event_time": "2025-03-03T09:00:00Z", "appointment_id": appt, "booking_version": 1, "patient": patient,
			"booking": map[string]any{"specialty": "110", "clinic": "Fracture Clinic", "first_visit": true,
				"start": "2025-04-01T09:00:00Z", "booked_at": "2025-03-03T09:00:00Z", "age_band": "45-54",
				"contact": map[string]any{"sms": true, "opt_out": false}},
		}
	}
	enc := func(v any) []byte { b, _ := json.Marshal(v); return b }
	var out []malformed
	add := func(kind, reason string, value func(patient, appt string) []byte) {
		key := randomHex(64)
		appt := fmt.Sprintf("chaos-bad-%d-%s", burst, kind)
		out = append(out, malformed{Kind: kind, Key: key, Value: value(key, appt), Reason: reason})
	}
	add("invalid_json", "json", func(p, a string) []byte { return bytes.TrimSuffix(enc(good(p, a)), []byte("}")) })
	add("not_json", "json", func(p, a string) []byte { return []byte("\x00\x01binary " + a) })
	add("empty", "json", func(p, a string) []byte { return nil })
	add("oversized", "limit", func(p, a string) []byte {
		e := good(p, a)
		e["booking"].(map[string]any)["clinic"] = strings.Repeat("x", events.MaxEventBytes)
		return enc(e)
	})
	add("wrong_type", "json", func(p, a string) []byte {
		return bytes.Replace(enc(good(p, a)), []byte(`"booking_version":1`), []byte(`"booking_version":"1"`), 1)
	})
	add("unknown_version", "schema", func(p, a string) []byte {
		e := good(p, a)
		e["schema"] = "appointment.v2"
		return enc(e)
	})
	add("unknown_type", "unknown type", func(p, a string) []byte {
		e := good(p, a)
		e["type"] = "arrived"
		return enc(e)
	})
	add("unknown_field", "unknown field", func(p, a string) []byte {
		e := good(p, a)
		e["nhs_number"] = "9434765919"
		return enc(e)
	})
	add("nan", "json", func(p, a string) []byte {
		return bytes.Replace(enc(good(p, a)), []byte(`"age_band":"45-54"`), []byte(`"age_band":"45-54","extra":{"x":NaN}`), 1)
	})
	add("inf", "json", func(p, a string) []byte {
		return bytes.Replace(enc(good(p, a)), []byte(`"age_band":"45-54"`), []byte(`"age_band":"45-54","extra":{"x":1e999}`), 1)
	})
	add("absurd_date", "outside 1990..2100", func(p, a string) []byte {
		e := good(p, a)
		e["event_time"] = "9999-12-31T23:59:59Z"
		return enc(e)
	})
	add("start_before_booking", "before booked_at", func(p, a string) []byte {
		e := good(p, a)
		e["booking"].(map[string]any)["start"] = "2024-01-01T09:00:00Z"
		return enc(e)
	})
	add("invalid_utf8", "UTF-8", func(p, a string) []byte {
		return bytes.Replace(enc(good(p, a)), []byte("Fracture Clinic"), []byte("Fracture \xff\xfe Clinic"), 1)
	})
	add("raw_identifier", "pseudonym", func(p, a string) []byte { return enc(good("9434765919", a)) })
	// A valid event under another patient's key could overtake that patient's events.
	add("key_mismatch", "key", func(p, a string) []byte { return enc(good(randomHex(64), a)) })
	return out
}

func (m malformed) message(topic string) kafka.Message {
	return kafka.Message{Topic: topic, Key: []byte(m.Key), Value: m.Value}
}

// riskKey names one scored booking version.
type riskKey struct {
	appt    string
	version int
}

type expectedRisk struct {
	patient     string
	probability float64
	band        string
}

// reminderWant is one reminder the policy wants sent.
type reminderWant struct {
	appt, slot string
	kind       policy.Kind
}

// truth is what the outputs must show, computed from the input alone.
type truth struct {
	// risk: every booking version the scorer must score, with the probability and band the
	// model gives it from the history known at its booking time.
	risk map[riskKey]expectedRisk
	// latest: every appointment's latest booking version.
	latest map[string]riskKey
	// histories: every patient's history after the whole input.
	histories map[string]*featurestore.History
	// reminders: every reminder the policy wants sent, by reminder id (the Notify reference).
	reminders map[string]reminderWant
	// firstEvent is the earliest event time.
	firstEvent time.Time
	// byType counts the input by event type.
	byType map[string]int
	// outcomes: every appointment's outcome (true: did not attend) and its patient.
	outcomes map[string]outcomeWant
}

// outcomeWant is an appointment's outcome as the input gives it.
type outcomeWant struct {
	patient string
	dna     bool
}

// groundTruth replays the input through the feature code and the model exactly as one
// consumer that never failed would, then plans every appointment's reminders from its final
// state as the dispatcher's policy does.
func groundTruth(evs []events.Appointment, model *scoring.Model, retention time.Duration, reminderSecret []byte, remPolicy *policy.Policy, planAt time.Time) *truth {
	t := &truth{risk: map[riskKey]expectedRisk{}, latest: map[string]riskKey{}, histories: map[string]*featurestore.History{}, reminders: map[string]reminderWant{}, byType: map[string]int{}, outcomes: map[string]outcomeWant{}}
	pol := featurestore.Policy{Retention: retention}
	type state struct {
		patient         string
		version         int
		start, bookedAt time.Time
		sms, cancelled  bool
		band            string
		bandVersion     int
	}
	appts := map[string]*state{}
	var order []string
	var x []float64
	for i := range evs {
		ev := &evs[i]
		t.byType[string(ev.Type)]++
		if t.firstEvent.IsZero() || ev.EventTime.Before(t.firstEvent) {
			t.firstEvent = ev.EventTime
		}
		h := t.histories[ev.Patient]
		if h == nil {
			h = &featurestore.History{}
			t.histories[ev.Patient] = h
		}
		a := appts[ev.AppointmentID]
		if a == nil {
			a = &state{patient: ev.Patient}
			appts[ev.AppointmentID] = a
			order = append(order, ev.AppointmentID)
		}
		switch ev.Type {
		case events.Booked, events.Rescheduled:
			// The scorer's rule (scorer.Processor): not if cancelled or superseded.
			if !h.Cancelled(ev.AppointmentID) && h.LatestVersion(ev.AppointmentID) <= ev.Version {
				x = model.Vector(ev, featurestore.Compute(ev, h), x)
				p := model.Score(x)
				t.risk[riskKey{ev.AppointmentID, ev.Version}] = expectedRisk{patient: ev.Patient, probability: p, band: model.Band(p)}
				if ev.Version >= a.bandVersion {
					a.band, a.bandVersion = model.Band(p), ev.Version
				}
			}
			if ev.Version >= a.version {
				a.version, a.start, a.bookedAt = ev.Version, ev.Booking.Start.UTC(), ev.Booking.BookedAt.UTC()
				a.sms = ev.Booking.Contact.SMS && !ev.Booking.Contact.OptOut
				t.latest[ev.AppointmentID] = riskKey{ev.AppointmentID, ev.Version}
			}
		case events.Cancelled:
			a.cancelled = true
		case events.Attended, events.DidNotAttend:
			t.outcomes[ev.AppointmentID] = outcomeWant{patient: ev.Patient, dna: ev.Type == events.DidNotAttend}
		}
		h.Apply(ev, pol)
	}
	for _, id := range order {
		a := appts[id]
		planned := remPolicy.Plan(policy.Appointment{ID: id, Patient: a.patient, Version: a.version, Start: a.start,
			BookedAt: a.bookedAt, Known: a.version > 0, SMS: a.sms, Band: a.band, BandVersion: a.bandVersion,
			Cancelled: a.cancelled}, planAt)
		for _, p := range planned {
			t.reminders[reminders.ReminderID(reminderSecret, a.patient, id, a.version, p.Slot.Name)] = reminderWant{appt: id, slot: p.Slot.Name, kind: p.Slot.Kind}
		}
	}
	return t
}
