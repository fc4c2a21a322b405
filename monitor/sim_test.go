package monitor

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/reminders/policy"
	"github.com/nhsx/dnarisk/scoring"
)

// The simulator's world scored by the real model, as the scorer would score it: every
// booking version against the patient's history at its event time.

const defaultModelDir = "../models/default"

// simRun is one simulated world after scoring.
type simRun struct {
	msgs    []kafka.Message // risk events (right after their booking) and appointment events, in order
	appts   map[string]*simAppt
	outcome []string // appointment ids in the order their outcome happened
}

type simAppt struct {
	patient string
	start   time.Time
	p       float64
	band    string
	f       map[string]float64
	truth   sim.Truth // of the version scored last
	dna     *bool     // the outcome, once known
}

func simulate(t testing.TB, cfg sim.Config, model *scoring.Model, withMsgs bool) *simRun {
	t.Helper()
	ps, err := pseudo.New([]byte("monitor-sim-test-secret-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := sim.New(cfg, ps)
	if err != nil {
		t.Fatal(err)
	}
	run := &simRun{appts: map[string]*simAppt{}}
	hist := map[string]*featurestore.History{}
	var x []float64
	for ev, tr := range g.All() {
		h := hist[ev.Patient]
		if h == nil {
			h = &featurestore.History{}
			hist[ev.Patient] = h
		}
		if withMsgs {
			b, _ := json.Marshal(ev)
			run.msgs = append(run.msgs, kafka.Message{Topic: "appointments", Key: []byte(ev.Patient), Value: b})
		}
		switch ev.Type {
		case events.Booked, events.Rescheduled:
			x = model.Vector(&ev, featurestore.Compute(&ev, h), x)
			p := model.Score(x)
			a := &simAppt{patient: ev.Patient, start: ev.Booking.Start, p: p, band: model.Band(p), f: model.FeatureMap(x)}
			if tr != nil {
				a.truth = *tr
			}
			run.appts[ev.AppointmentID] = a
			if withMsgs {
				r, _ := json.Marshal(events.Risk{Schema: events.RiskSchema, AppointmentID: ev.AppointmentID, Version: ev.Version,
					Patient: ev.Patient, SourceEventID: ev.EventID, AppointmentStart: ev.Booking.Start, Probability: p,
					Band: a.band, ModelID: model.ID(), ScoredAt: ev.EventTime, Features: a.f})
				run.msgs = append(run.msgs, kafka.Message{Topic: "risk", Key: []byte(ev.Patient), Value: r})
			}
		case events.Attended, events.DidNotAttend:
			if a := run.appts[ev.AppointmentID]; a != nil {
				dna := ev.Type == events.DidNotAttend
				a.dna = &dna
				run.outcome = append(run.outcome, ev.AppointmentID)
			}
		}
		h.Apply(&ev, featurestore.Policy{})
	}
	return run
}

// TestReminderEffectCICoversTheTruth: on 20 fixed simulator seeds with a true effect of the
// extra reminder, the monitor's 95% CI of the relative reduction (reminded against held-out
// bookings served a high or very high band) covers the true effect in that set at least 18
// times.
func TestReminderEffectCICoversTheTruth(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates 20 worlds")
	}
	model, err := scoring.Load(defaultModelDir)
	if err != nil {
		t.Fatal(err)
	}
	bands := []string{"high", "very_high"}
	key := []byte("monitor-test-holdout-key-0123456789")
	covered := 0
	for seed := int64(1); seed <= 20; seed++ {
		eff := &sim.ReminderEffect{Efficacy: 0.3, Holdout: policy.Holdout{Share: 0.3, Key: key}, Threshold: sim.DefaultReminderThreshold}
		run := simulate(t, sim.Config{Seed: seed, Patients: 6000, Days: 150, Reminder: eff}, model, false)
		var js []Joined
		var truths []sim.Truth
		for _, id := range run.outcome {
			a := run.appts[id]
			arm := policy.Arm(key, id)
			js = append(js, Joined{DNA: *a.dna, P: a.p, Band: a.band, Model: model.ID(), Arm: &arm})
			truths = append(truths, a.truth)
		}
		r := &Reporter{Card: Card{ModelID: model.ID(), ExtraBands: bands}, Holdout: 0.3}
		est := r.reminder(js, 90)
		truth := eff.TrueEffect(truths, func(tr sim.Truth) bool {
			a := run.appts[tr.AppointmentID]
			return a.band == "high" || a.band == "very_high"
		})
		in := est.RelativeCI[0] <= truth.Relative && truth.Relative <= est.RelativeCI[1]
		if in {
			covered++
		}
		t.Logf("seed %2d: %d reminded, %d held out; relative reduction %.3f (95%% CI %.3f to %.3f), true %.3f, covered %v",
			seed, est.Reminded, est.HeldOut, est.Relative, est.RelativeCI[0], est.RelativeCI[1], truth.Relative, in)
		if est.HeldOut < 100 || est.Reminded < 100 {
			t.Fatalf("seed %d: too few bookings in an arm to mean anything: %+v", seed, est.Effect)
		}
	}
	if covered < 18 {
		t.Fatalf("the CI covered the true effect in %d of 20 seeds, want at least 18", covered)
	}
}

// driftWorld is the training world's shape (make model: the simulator's defaults, a year
// of bookings from 2025-01-06), smaller, so the live data look like the reference.
func driftWorld(drift *sim.Drift) sim.Config {
	return sim.Config{Seed: 2024, Patients: 12000, Days: 365, Drift: drift}
}

// driftFrom is when the injected drift starts: well into the year, when every window is full.
var driftFrom = time.Date(2025, 11, 3, 0, 0, 0, 0, time.UTC)

// The rules are evaluated on appointment dates inside the reference's window (the training
// world's test window, 2025-10-06 to 2026-01-04), once a 7-day window fits in it. Before it,
// the simulated histories are still filling up from the world's empty start (history
// features then have a PSI near 0.3 against the reference: a real difference the monitor
// rightly reports); after it, the end of the booking window leaves only long-lead bookings
// (lead time PSI above 0.5), the truncated extract the training side also leaves out.
var (
	evalFrom = time.Date(2025, 10, 20, 0, 0, 0, 0, time.UTC)
	evalTo   = time.Date(2026, 1, 4, 0, 0, 0, 0, time.UTC)
)

// maxOutcomesToAlert is the stated detection delay: the drift alert must fire within this
// many outcomes (all specialties) after the shift. Measured: 3,866 (about 600 of them in the
// drifted specialty, under four weeks at this hospital's volume), when the 30-day O/E of specialty
// 130 is 1.84 with its 99.9% CI 1.28–2.56 wholly above 1.25.
const maxOutcomesToAlert = 5000

// TestDriftAlertFiresAfterShiftAndNotWithout feeds a year of the simulated hospital, scored
// by the default model, through the monitor on real Redis and evaluates the alert rules
// every few days of appointments from October on. With one specialty's DNA rate doubled
// from driftFrom, an alert must fire within maxOutcomesToAlert outcomes of the shift; the
// same world without the drift must raise no alert at all.
func TestDriftAlertFiresAfterShiftAndNotWithout(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates a year twice")
	}
	model, err := scoring.Load(defaultModelDir)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := scoring.LoadReference(defaultModelDir)
	if err != nil || ref == nil {
		t.Fatalf("reference: %v", err)
	}
	card := Card{ModelID: model.ID(), AUC: cardAUC(t, defaultModelDir), ExtraBands: []string{"high", "very_high"}}
	for _, drifted := range []bool{false, true} {
		var d *sim.Drift
		if drifted {
			d = &sim.Drift{From: driftFrom, Specialty: sim.DemoDriftSpecialty, Factor: 2}
		}
		run := simulate(t, driftWorld(d), model, true)
		// Appointments dated before the longest window of the first evaluation can never be
		// in a window, and the monitor ignores bookings and cancellations: leave them out, to
		// keep the test quick.
		cut := evalFrom.AddDate(0, 0, -slices.Max(Windows)-1)
		run.msgs = slices.DeleteFunc(run.msgs, func(m kafka.Message) bool {
			var v struct {
				Type  events.Type `json:"type"`
				Start time.Time   `json:"appointment_start"`
				At    time.Time   `json:"event_time"`
			}
			if err := json.Unmarshal(m.Value, &v); err != nil {
				t.Fatal(err)
			}
			if m.Topic == "risk" {
				return v.Start.Before(cut)
			}
			return (v.Type != events.Attended && v.Type != events.DidNotAttend) || v.At.Before(cut)
		})
		st := newTestStore(t)
		mon, err := New(Config{Store: st, Model: model.ID(), Features: model.FeatureNames()})
		if err != nil {
			t.Fatal(err)
		}
		rep := &Reporter{Store: st, Card: card, Reference: ref}
		ctx := context.Background()
		next := evalFrom
		outcomesAfter, firedAfter := 0, -1
		var fired []Alert
		for i := 0; i < len(run.msgs); i += 2000 {
			batch := run.msgs[i:min(i+2000, len(run.msgs))]
			if err := mon.Process(ctx, batch); err != nil {
				t.Fatal(err)
			}
			last := eventTime(t, batch[len(batch)-1])
			for _, m := range batch {
				if m.Topic == "appointments" && isOutcome(m) && !eventTime(t, m).Before(driftFrom) {
					outcomesAfter++
				}
			}
			if last.Before(next) || last.After(evalTo) {
				continue
			}
			next = last.AddDate(0, 0, 3)
			r, err := rep.Report(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Alerts) > 0 && fired == nil {
				fired, firedAfter = r.Alerts, outcomesAfter
			}
		}
		switch {
		case !drifted && fired != nil:
			t.Errorf("without drift, alerts fired (latest day %s): %+v", next.Format(time.DateOnly), fired)
		case drifted && fired == nil:
			t.Errorf("the drift of specialty %s from %s raised no alert", sim.DemoDriftSpecialty, driftFrom.Format(time.DateOnly))
		case drifted && firedAfter > maxOutcomesToAlert:
			t.Errorf("the drift alert fired %d outcomes after the shift, more than the stated %d: %+v", firedAfter, maxOutcomesToAlert, fired)
		case drifted:
			t.Logf("drift alert after %d outcomes past the shift: %+v", firedAfter, fired)
		}
	}
}

func eventTime(t testing.TB, m kafka.Message) time.Time {
	var v struct {
		EventTime time.Time `json:"event_time"`
		ScoredAt  time.Time `json:"scored_at"`
	}
	if err := json.Unmarshal(m.Value, &v); err != nil {
		t.Fatal(err)
	}
	if v.EventTime.IsZero() {
		return v.ScoredAt
	}
	return v.EventTime
}

func isOutcome(m kafka.Message) bool {
	var v struct {
		Type events.Type `json:"type"`
	}
	_ = json.Unmarshal(m.Value, &v)
	return v.Type == events.Attended || v.Type == events.DidNotAttend
}

func cardAUC(t testing.TB, dir string) float64 {
	t.Helper()
	var c struct {
		AUC float64 `json:"auc"`
	}
	b, err := os.ReadFile(dir + "/card.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &c); err != nil || c.AUC == 0 {
		t.Fatalf("card AUC: %v", err)
	}
	return c.AUC
}
