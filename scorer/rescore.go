package scorer

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
)

// Rescore keeps scores current until the reminders go out. A booking is scored when it is
// made, but its extra reminder goes out the day before the appointment; if the patient
// misses or cancels other appointments meanwhile, that score is stale. With Rescore set,
// when an outcome or a cancellation changes a patient's history, the processor scores each
// of the patient's open bookings again, with the features as of the later of that change
// and the decision point (the start less DecisionLead), and publishes a risk event for the
// same booking version with scored_as_of and reason history_changed. Readers keep the
// latest event of a version (the reminder dispatcher does).
type Rescore struct {
	// Open keeps each patient's open bookings (featurestore.OpenBookings). Required.
	Open OpenStore
	// DecisionLead: re-scores are as of no earlier than the appointment start less this, the
	// moment the decision-time model's training rows are taken [24h].
	DecisionLead time.Duration
	// Model scores the re-scores: a decision-time model trained on rows as of the decision
	// point. Default: the processor's model.
	Model Scorer
}

// OpenStore keeps the latest booking event of each patient's open appointments.
type OpenStore interface {
	Load(ctx context.Context, patients []string) (map[string]map[string][]byte, error)
	Update(ctx context.Context, put map[string]map[string][]byte, closed map[string][]string) error
}

// DefaultDecisionLead is Rescore.DecisionLead's default: the extra reminder's offset.
const DefaultDecisionLead = 24 * time.Hour

// rescoring is what one batch changed for re-scoring: bookings scored (now open), closed
// appointments, and the patients whose history an outcome or cancellation changed, with the
// latest such event's time.
type rescoring struct {
	put     map[string]map[string][]byte
	closed  map[string][]string
	changed map[string]time.Time
}

func newRescoring() *rescoring {
	return &rescoring{put: map[string]map[string][]byte{}, closed: map[string][]string{}, changed: map[string]time.Time{}}
}

// note records ev: a booking scored now is open; a cancellation or an outcome closes its
// appointment and, when it changed the history (applied), asks for the patient's re-score.
func (rs *rescoring) note(ev *events.Appointment, scored, applied bool) error {
	switch ev.Type {
	case events.Booked, events.Rescheduled:
		if !scored {
			return nil
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("keep open booking: %w", err)
		}
		if rs.put[ev.Patient] == nil {
			rs.put[ev.Patient] = map[string][]byte{}
		}
		rs.put[ev.Patient][ev.AppointmentID] = b
	case events.Cancelled, events.Attended, events.DidNotAttend:
		rs.closed[ev.Patient] = append(rs.closed[ev.Patient], ev.AppointmentID)
		delete(rs.put[ev.Patient], ev.AppointmentID)
		if applied && ev.EventTime.After(rs.changed[ev.Patient]) {
			rs.changed[ev.Patient] = ev.EventTime
		}
	}
	return nil
}

// rescored is one re-score's output.
type rescored struct {
	msgs   []kafka.Message // risk events, and the challenger's shadow events if any
	scores []Score
	shadow []Score // the challenger's, when there is one
	bands  map[string]int64
}

// rescore scores again the open bookings of every patient whose history changed in this
// batch, against the histories as this batch leaves them; chal, if not nil, scores each
// again too, for the shadow topic.
func (p *Processor) rescore(ctx context.Context, rs *rescoring, hist map[string]*featurestore.History, model, chal Scorer) (rescored, error) {
	out := rescored{bands: map[string]int64{}}
	if len(rs.changed) == 0 {
		return out, nil
	}
	cfg := p.cfg.Rescore
	if cfg.Model != nil {
		model = cfg.Model
	}
	patients := slices.Sorted(maps.Keys(rs.changed))
	open, err := cfg.Open.Load(ctx, patients)
	if err != nil {
		return out, err
	}
	var x, cx []float64
	for _, patient := range patients {
		bookings := maps.Clone(open[patient])
		if bookings == nil {
			bookings = map[string][]byte{}
		}
		maps.Copy(bookings, rs.put[patient])
		for _, appt := range rs.closed[patient] {
			delete(bookings, appt)
		}
		for _, appt := range slices.Sorted(maps.Keys(bookings)) {
			ev, ok := p.dueForRescore(bookings[appt], hist[patient], rs.changed[patient], cfg.DecisionLead)
			if !ok {
				continue
			}
			v := featurestore.Compute(ev, hist[patient])
			x = model.Vector(ev, v, x)
			now := p.cfg.Now().UTC()
			m, band, prob := p.risk(model, ev, x, ev.EventTime, now, p.cfg.Topics.Risk)
			out.msgs = append(out.msgs, m)
			out.bands[band]++
			out.scores = append(out.scores, Score{Event: ev, Probability: prob, Band: band, ModelID: model.ID(), Rescore: true})
			if chal != nil {
				var s Score
				m, s, cx = p.shadow(chal, ev, v, cx, ev.EventTime, now)
				out.msgs = append(out.msgs, m)
				out.shadow = append(out.shadow, s)
			}
		}
	}
	return out, nil
}

// dueForRescore decodes a kept booking and returns it as of its re-score time, the later of
// changed and the decision point, if it is still the appointment's current booking and both
// the booking and the appointment lie on either side of that time.
func (p *Processor) dueForRescore(raw []byte, h *featurestore.History, changed time.Time, lead time.Duration) (*events.Appointment, bool) {
	ev, err := events.DecodeAppointment(raw)
	if err != nil {
		p.cfg.Log.Warn("an open booking kept for re-scoring does not decode; skipped", "err", err)
		return nil, false
	}
	if h.Cancelled(ev.AppointmentID) || h.LatestVersion(ev.AppointmentID) > ev.Version {
		return nil, false
	}
	asOf := changed
	if d := ev.Booking.Start.Add(-lead); d.After(asOf) {
		asOf = d
	}
	if !asOf.After(ev.EventTime) || !ev.Booking.Start.After(asOf) {
		return nil, false // scored at booking after the change, or the appointment has begun
	}
	ev.EventTime = asOf.UTC()
	return &ev, true
}
