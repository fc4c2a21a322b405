package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync/atomic"
	"time"
	_ "time/tzdata" // appointment dates are UK dates

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/reminders/policy"
)

var london = func() *time.Location {
	l, err := time.LoadLocation("Europe/London")
	if err != nil {
		panic(err)
	}
	return l
}()

// Topics names what the monitor reads.
type Topics struct {
	Appointments string // outcomes; default "appointments"
	Risk         string // the champion's scores; default "risk"
	Shadow       string // the shadow challenger's scores; default "risk.shadow"
}

func (t *Topics) setDefaults() {
	if t.Appointments == "" {
		t.Appointments = "appointments"
	}
	if t.Risk == "" {
		t.Risk = "risk"
	}
	if t.Shadow == "" {
		t.Shadow = "risk.shadow"
	}
}

// Config is what a Monitor needs; Store is required.
type Config struct {
	Store  *Store
	Topics Topics
	// Model is the champion's model id and Features its model inputs in contract order:
	// scored records of that model keep their input values in this order, for drift;
	// records of another model keep none. SetChampion changes them while running.
	Model    string
	Features []string
	// Holdout assigns appointments to the reminded and held-out arms exactly as the
	// dispatcher does (same key, same share). Nil: no reminder-effect estimate.
	Holdout *policy.Holdout
	Log     *slog.Logger
}

// Monitor joins outcomes to served scores, batch by batch (a stream.Handler).
type Monitor struct {
	cfg      Config
	champion atomic.Pointer[champion]
	Stats    Stats
}

type champion struct {
	model    string
	features []string
}

// SetChampion names the model whose inputs scored records keep (a model swap).
func (m *Monitor) SetChampion(model string, features []string) {
	m.champion.Store(&champion{model: model, features: features})
}

// Stats counts what the monitor has read.
type Stats struct {
	Scores   atomic.Int64 // champion risk events recorded
	Shadow   atomic.Int64 // challenger risk events recorded
	Outcomes atomic.Int64 // outcome events recorded
	Ignored  atomic.Int64 // events that are not for the monitor (bookings, cancellations)
	Refused  atomic.Int64 // events the monitor could not read (the scorer dead-letters them)
}

// New returns a Monitor for cfg.
func New(cfg Config) (*Monitor, error) {
	if cfg.Store == nil {
		return nil, errors.New("monitor: Config.Store is required")
	}
	cfg.Topics.setDefaults()
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if err := cfg.Holdout.Validate(); err != nil {
		return nil, err
	}
	m := &Monitor{cfg: cfg}
	m.SetChampion(cfg.Model, cfg.Features)
	return m, nil
}

// scoreRec is a served score as kept on the appointment hash.
type scoreRec struct {
	Version  int                `json:"v"`
	P        float64            `json:"p"`
	Band     string             `json:"b"`
	Model    string             `json:"m"`
	Start    time.Time          `json:"s"`
	Features map[string]float64 `json:"f,omitempty"`
}

// outcomeRec is an outcome as kept on the appointment hash.
type outcomeRec struct {
	DNA bool      `json:"y"`
	At  time.Time `json:"t"`
}

// Scored is one scored booking as filed under its appointment date.
type Scored struct {
	P     float64 `json:"p"`
	Model string  `json:"m"`
	// X holds the model inputs in Config.Features order; null where missing.
	X []*float64 `json:"x,omitempty"`
}

// Joined is one outcome joined to what was served, filed under its appointment date.
type Joined struct {
	DNA   bool    `json:"y"`
	P     float64 `json:"p"` // the champion's served (latest) probability
	Band  string  `json:"b"`
	Model string  `json:"m"`
	// PBooking is the champion's probability at booking, when it was seen.
	PBooking *float64 `json:"pb,omitempty"`
	// Challenger is the shadow challenger's latest probability and its model.
	Challenger      *float64 `json:"c,omitempty"`
	ChallengerModel string   `json:"cm,omitempty"`
	// Arm is policy.Arm of the appointment under the hold-out key, when one is set.
	Arm *float64 `json:"a,omitempty"`
	// Groups are the subgroups the card reports on: age band, deprivation decile, specialty,
	// from the model inputs at booking ("unknown" when the score at booking was not seen).
	Groups [3]string `json:"g"`
}

// SubgroupAttributes names Joined.Groups in order.
var SubgroupAttributes = [3]string{"age band", "deprivation decile", "specialty"}

// Process records one batch. Every write is idempotent, so a failed batch is processed again
// and a batch redelivered after a crash changes nothing.
func (m *Monitor) Process(ctx context.Context, msgs []kafka.Message) error {
	var sides []side
	patientOf := map[string]string{}   // appointment hash → patient
	apptOf := map[string]string{}      // appointment hash → appointment id
	var scores, shadow, outcomes int64 // counted once the batch is stored
	var ignored, refused int64
	for i := range msgs {
		msg := &msgs[i]
		sd, patient, appt, kind, err := m.side(msg)
		switch {
		case err != nil:
			refused++
			m.cfg.Log.Debug("monitor: unreadable event", "topic", msg.Topic, "partition", msg.Partition, "offset", msg.Offset, "err", err)
			continue
		case kind == "":
			ignored++
			continue
		case kind == "c":
			scores++
		case kind == "s":
			shadow++
		case kind == "o":
			outcomes++
		}
		for _, s := range sd {
			patientOf[s.key], apptOf[s.key] = patient, appt
			sides = append(sides, s)
		}
	}
	hashes, err := m.cfg.Store.apply(ctx, sides)
	if err != nil {
		return err
	}
	var fs []filing
	champ := m.champion.Load()
	for key, h := range hashes {
		fs = append(fs, m.filings(champ, key, patientOf[key], apptOf[key], h)...)
	}
	if err := m.cfg.Store.file(ctx, fs); err != nil {
		return err
	}
	m.Stats.Scores.Add(scores)
	m.Stats.Shadow.Add(shadow)
	m.Stats.Outcomes.Add(outcomes)
	m.Stats.Ignored.Add(ignored)
	m.Stats.Refused.Add(refused)
	return nil
}

// side turns one message into the appointment-hash writes it implies; kind is "c" (a
// champion score), "s" (a shadow score), "o" (an outcome) or "" (nothing to record).
func (m *Monitor) side(msg *kafka.Message) (sd []side, patient, appt, kind string, err error) {
	switch msg.Topic {
	case m.cfg.Topics.Appointments:
		ev, err := events.DecodeAppointment(msg.Value)
		if err != nil {
			return nil, "", "", "", err
		}
		if ev.Type != events.Attended && ev.Type != events.DidNotAttend {
			return nil, "", "", "", nil
		}
		v, _ := json.Marshal(outcomeRec{DNA: ev.Type == events.DidNotAttend, At: ev.EventTime.UTC()})
		key := m.cfg.Store.appointmentKey(ev.Patient, ev.AppointmentID)
		return []side{{key: key, field: "o", value: v, version: ev.Version}},
			ev.Patient, ev.AppointmentID, "o", nil
	case m.cfg.Topics.Risk, m.cfg.Topics.Shadow:
		var r events.Risk
		if err := json.Unmarshal(msg.Value, &r); err != nil {
			return nil, "", "", "", fmt.Errorf("risk event: %w", err)
		}
		if r.Schema != events.RiskSchema || r.AppointmentID == "" || r.Patient == "" ||
			!(r.Probability >= 0 && r.Probability <= 1) || r.AppointmentStart.IsZero() {
			return nil, "", "", "", errors.New("risk event: not a complete risk.v1 event")
		}
		rec := scoreRec{Version: r.Version, P: r.Probability, Band: r.Band, Model: r.ModelID, Start: r.AppointmentStart.UTC()}
		key := m.cfg.Store.appointmentKey(r.Patient, r.AppointmentID)
		if msg.Topic == m.cfg.Topics.Shadow {
			v, _ := json.Marshal(rec)
			return []side{{key: key, field: "s", value: v, version: r.Version}}, r.Patient, r.AppointmentID, "s", nil
		}
		v, _ := json.Marshal(rec)
		sd = []side{{key: key, field: "c", value: v, version: r.Version}}
		if r.Reason == "" { // the score made at booking keeps the model inputs, for drift and subgroups
			rec.Features = r.Features
			v, _ := json.Marshal(rec)
			sd = append(sd, side{key: key, field: "b", value: v, version: r.Version})
		}
		return sd, r.Patient, r.AppointmentID, "c", nil
	}
	return nil, "", "", "", nil
}

// filings files an appointment under its date: as scored once the champion scored it, and
// as joined once its outcome is in too.
func (m *Monitor) filings(champ *champion, key, patient, appt string, h map[string]string) []filing {
	var c scoreRec
	if h["c"] == "" || decode([]byte(h["c"]), &c) != nil {
		return nil
	}
	day := c.Start.In(london).Format(time.DateOnly)
	member := memberOf(patient, appt)
	// Drift is measured on the scores and inputs at booking (what the training reference
	// describes), not on re-scores, which a decision-time model may have made.
	var b scoreRec
	atBooking := h["b"] != "" && decode([]byte(h["b"]), &b) == nil && b.Version == c.Version
	sc := Scored{P: c.P, Model: c.Model}
	if atBooking {
		sc = Scored{P: b.P, Model: b.Model}
		if b.Model == champ.model && len(champ.features) > 0 {
			sc.X = make([]*float64, len(champ.features))
			for i, name := range champ.features {
				if v, ok := b.Features[name]; ok {
					sc.X[i] = &v
				}
			}
		}
	}
	rec, _ := json.Marshal(sc)
	out := []filing{{key: key, kind: "scored", mark: "ds", member: member, day: day, old: h["ds"], record: rec}}

	var o outcomeRec
	if h["o"] == "" || decode([]byte(h["o"]), &o) != nil {
		return out
	}
	j := Joined{DNA: o.DNA, P: c.P, Band: c.Band, Model: c.Model, Groups: groups(nil)}
	if atBooking {
		j.PBooking, j.Groups = &b.P, groups(b.Features)
	}
	var s scoreRec
	if h["s"] != "" && decode([]byte(h["s"]), &s) == nil {
		j.Challenger, j.ChallengerModel = &s.P, s.Model
	}
	if m.cfg.Holdout != nil && len(m.cfg.Holdout.Key) > 0 {
		a := policy.Arm(m.cfg.Holdout.Key, appt)
		j.Arm = &a
	}
	jr, _ := json.Marshal(j)
	return append(out, filing{key: key, kind: "outcomes", mark: "dj", member: member, day: day, old: h["dj"], record: jr})
}

// groups reads the card's subgroup attributes from a risk event's model inputs: the age band
// ordinal, the deprivation decile (absent when unknown) and the specialty code.
func groups(f map[string]float64) [3]string {
	g := [3]string{"unknown", "unknown", "unknown"}
	if v, ok := f["age_band"]; ok && v >= 0 && int(v) < len(events.AgeBands) && v == math.Trunc(v) {
		g[0] = events.AgeBands[int(v)]
	}
	if v, ok := f["deprivation_decile"]; ok && v >= 1 && v <= 10 {
		g[1] = strconv.Itoa(int(v))
	}
	if v, ok := f["specialty"]; ok {
		g[2] = strconv.FormatFloat(v, 'f', -1, 64)
	}
	return g
}
