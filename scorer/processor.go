package scorer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/stream"
)

// Scorer turns a booking and its point-in-time features into a probability. It must be safe
// for concurrent use. scoring.Model is the implementation.
type Scorer interface {
	// ID names the model; it is stamped on every risk event.
	ID() string
	// Vector builds the model input for ev from the computed features, reusing dst.
	Vector(ev *events.Appointment, v featurestore.Vector, dst []float64) []float64
	// Score returns the probability of non-attendance for one model input.
	Score(x []float64) float64
	// Band maps a probability to a risk band name.
	Band(p float64) string
	// FeatureMap names the values of a model input, leaving out missing (NaN) ones.
	FeatureMap(x []float64) map[string]float64
	// FeatureNames names the model inputs, in order.
	FeatureNames() []string
	// CountMissing adds one to counts[i] for each missing input i of x (what FeatureMap
	// leaves out).
	CountMissing(x []float64, counts []int)
}

// Output is where a processed batch goes. WriteMessages must return only once every message
// is durably acknowledged (kafka-go's Writer with RequireAll does).
type Output interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Topics names the topics the processor writes.
type Topics struct {
	Risk       string // risk events; default "risk"
	DeadLetter string // refused input; default "appointments.dlq"
	// Shadow receives the challenger's risk events (Config.Challenger); default
	// "risk.shadow". Nothing downstream acts on them: they are for comparing models.
	Shadow string
}

func (t *Topics) setDefaults() {
	if t.Risk == "" {
		t.Risk = "risk"
	}
	if t.DeadLetter == "" {
		t.DeadLetter = "appointments.dlq"
	}
	if t.Shadow == "" {
		t.Shadow = "risk.shadow"
	}
}

// Stats counts what a processor has done. Fields are read with the Load methods.
type Stats struct {
	Consumed     atomic.Int64
	Scored       atomic.Int64
	DeadLettered atomic.Int64
	Applied      atomic.Int64 // history facts that changed a history
	Skipped      atomic.Int64 // bookings not scored: cancelled or superseded
	Conflicts    atomic.Int64 // history saves retried after a concurrent write
	Quarantined  atomic.Int64 // unreadable histories moved aside and started again (even if the batch then failed)
	Rescored     atomic.Int64 // risk events of open bookings scored again after a history change (Config.Rescore)
	Shadow       atomic.Int64 // challenger risk events published to Topics.Shadow (not counted in Scored)
	mu           sync.Mutex
	bands        map[string]int64
}

// Bands returns a copy of the count of risk events per band.
func (s *Stats) Bands() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.bands))
	for k, v := range s.bands {
		out[k] = v
	}
	return out
}

// Config is everything a Processor needs. Store, Output and Model are required; every other
// field has the default its comment gives. Validate reports what is missing.
type Config struct {
	// Store holds patient histories (Redis in production).
	Store featurestore.Store
	// Output receives risk events and dead letters; WriteMessages must return only once every
	// message is durably acknowledged.
	Output Output
	// Model scores bookings; SetModel swaps it later.
	Model Scorer
	// Topics the processor writes. Default: "risk" and "appointments.dlq".
	Topics Topics
	// Policy is the feature store's retention policy. Default: featurestore.Policy{}.
	Policy featurestore.Policy
	// MaxAhead refuses (dead-letters) events dated further than this past the time they were
	// published (events.CheckAhead: the Kafka timestamp, else Now).
	// 0: DefaultMaxAhead; negative: no limit (for replaying a simulated future).
	MaxAhead time.Duration
	// Observer hears about every batch. Default: nobody.
	Observer Observer
	// Log receives warnings. Default: slog.Default().
	Log *slog.Logger
	// Now is the clock MaxAhead is measured against. Default: time.Now.
	Now func() time.Time
	// Rescore, when set, scores a patient's open bookings again when an outcome or a
	// cancellation changes their history (see Rescore). Default: nil, each booking version
	// is scored once, at booking.
	Rescore *Rescore
	// Challenger, when set, scores every booking the model scores (at booking and on
	// re-score), from the same features in the same batch, and its risk events go to
	// Topics.Shadow in the same write as the batch's risk events. SetChallenger swaps or
	// removes it later. Default: nil, no shadow events.
	Challenger Scorer
	// HistoryOnly rebuilds histories and nothing else (a backfill from the topic): no
	// booking is scored and nothing is published, not even dead letters (the input was
	// dead-lettered when first consumed); events are refused and histories saved by the same
	// rules as otherwise. Model may then be nil; Rescore and Challenger must be.
	HistoryOnly bool
}

// Validate reports the first required field that is missing.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("scorer: Config.Store is required")
	case c.Output == nil:
		return errors.New("scorer: Config.Output is required")
	case c.HistoryOnly && (c.Rescore != nil || c.Challenger != nil):
		return errors.New("scorer: Config.HistoryOnly scores nothing: no Rescore or Challenger")
	case c.Model == nil && !c.HistoryOnly:
		return errors.New("scorer: Config.Model is required")
	case c.Rescore != nil && c.Rescore.Open == nil:
		return errors.New("scorer: Config.Rescore.Open is required to re-score open bookings")
	case c.Rescore != nil && c.Rescore.DecisionLead < 0:
		return errors.New("scorer: Config.Rescore.DecisionLead must not be negative")
	}
	return nil
}

func (c *Config) setDefaults() {
	c.Topics.setDefaults()
	if c.MaxAhead == 0 {
		c.MaxAhead = DefaultMaxAhead
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rescore != nil && c.Rescore.DecisionLead == 0 {
		c.Rescore.DecisionLead = DefaultDecisionLead
	}
}

// Processor scores batches of appointment events; it is safe for concurrent use, so several
// consumer loops (group members, each owning its partitions) can share one, and the model can
// be swapped while they run.
type Processor struct {
	cfg        Config
	model      atomic.Pointer[scorerBox]
	challenger atomic.Pointer[scorerBox] // nil: no challenger
	// Stats counts batches that completed; a batch that failed and is retried counts once.
	Stats Stats
	// unreported counts histories quarantined by batches that then failed: the quarantine
	// stands (the retry finds fresh histories), so the next completed batch reports it.
	unreported atomic.Int64
}

type scorerBox struct{ Scorer }

// New returns a Processor for cfg, with defaults filled in, or the error of cfg.Validate.
func New(cfg Config) (*Processor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	p := &Processor{cfg: cfg}
	p.SetModel(cfg.Model)
	p.SetChallenger(cfg.Challenger)
	return p, nil
}

// SetModel swaps the model used for the next batch. A batch in flight finishes with the
// model it started with, so every risk event names the model that produced it.
func (p *Processor) SetModel(m Scorer) { p.model.Store(&scorerBox{m}) }

// Model returns the model in use.
func (p *Processor) Model() Scorer { return p.model.Load().Scorer }

// SetChallenger swaps the challenger used from the next batch on; nil removes it. Like
// SetModel, a batch in flight finishes with the challenger it started with.
func (p *Processor) SetChallenger(m Scorer) {
	if m == nil {
		p.challenger.Store(nil)
		return
	}
	p.challenger.Store(&scorerBox{m})
}

// Challenger returns the challenger in use, or nil.
func (p *Processor) Challenger() Scorer {
	if b := p.challenger.Load(); b != nil {
		return b.Scorer
	}
	return nil
}

// DefaultMaxAhead is how far past its publication an event may be dated. History is pruned
// relative to the newest fact, so one event mis-dated decades ahead would otherwise erase the
// patient's history. It is events.DefaultMaxAhead, which the gateway and dispatcher share.
const DefaultMaxAhead = events.DefaultMaxAhead

// maxConflictRetries bounds how often a batch re-applies history after losing a
// compare-and-set race; more than a couple means two live consumers own one partition.
const maxConflictRetries = 5

// Process handles one batch of messages from the appointments topic. It returns only when
// every risk event and dead letter is acknowledged and every history update is saved, or with
// an error, in which case nothing may be committed and the batch must be processed again
// (everything it does is idempotent).
//
// Bookings are scored against the history as loaded before the batch's own events are
// applied, in message order, so a patient's booking sees exactly the facts that preceded it.
func (p *Processor) Process(ctx context.Context, msgs []kafka.Message) error {
	b, err := p.prepare(ctx, msgs, nil)
	if err != nil {
		p.failed(b, err)
		return err
	}
	return b.Finish(ctx)
}

// failed reports a batch that failed: its quarantines stand, so the next completed batch
// reports them.
func (p *Processor) failed(b *Prepared, err error) {
	p.unreported.Add(int64(b.rep.Quarantined))
	p.cfg.Observer.BatchFailed(len(b.msgs), b.rep.Load+b.rep.Score+b.rep.Publish+b.rep.Save, err)
}

// Prepared is a batch decoded, scored and applied to its patients' histories in memory,
// waiting for Finish to publish its messages and save the histories (see Prepare).
type Prepared struct {
	p                              *Processor
	msgs                           []kafka.Message
	rep                            *BatchReport
	out                            []kafka.Message
	scoredAt                       []time.Time // Kafka timestamp of each scored booking, as rep.Scores
	dirty                          map[string]*featurestore.History
	evs                            []events.Appointment
	rs                             *rescoring
	bands                          map[string]int64
	applied, skipped, deadLettered int64
	rescores                       int
	// after holds a copy of every history this batch changed, as it will be once saved
	// (Rev one on), for the batch prepared next to read instead of the store.
	after map[string]*featurestore.History
	// exact is set by Finish when every history saved was exactly what Prepare computed.
	exact bool
}

// Prepare does everything Process does to a batch short of its writes: decode, load the
// histories, score, apply the events to the histories in memory. Finish then publishes and
// saves. ahead is the batch prepared before (nil if none or if it is finished): Prepare
// reads the histories ahead changed from ahead itself, as they will be once it is saved, so
// this batch can be prepared while ahead's Finish is in flight, a patient's booking here
// seeing the outcome recorded there. That holds only if ahead's Finish succeeds and is Exact;
// otherwise this batch must be prepared again once ahead is done (stream.Run does).
// Prepare has no effect a retry would not repeat (beyond quarantining unreadable
// histories, which stands either way), so a Prepared may be thrown away. It cannot be used
// with Config.Rescore, whose open bookings are read from the store: Prepare refuses.
func (p *Processor) Prepare(ctx context.Context, msgs []kafka.Message, ahead stream.Prepared) (stream.Prepared, error) {
	if p.cfg.Rescore != nil {
		return nil, errors.New("scorer: batches cannot be pipelined with Config.Rescore (its open bookings are read from the store)")
	}
	var prev *Prepared
	if a, ok := ahead.(*Prepared); ok && a != nil {
		prev = a
	}
	b, err := p.prepare(ctx, msgs, prev)
	if err != nil {
		p.failed(b, err)
		return nil, err
	}
	return b, nil
}

// Exact reports whether Finish saved exactly the histories Prepare computed (no
// compare-and-set conflict, no history quarantined while saving), so a batch prepared on
// top of this one stands.
func (b *Prepared) Exact() bool { return b.exact }

// Finish publishes the batch's risk events and dead letters and saves its histories. It
// returns only when every message is acknowledged and every history saved, or with an
// error, in which case nothing may be committed and the batch must be processed again.
func (b *Prepared) Finish(ctx context.Context) error {
	p := b.p
	err := p.finish(ctx, b)
	rep := b.rep
	rep.Took = rep.Load + rep.Score + rep.Publish + rep.Save
	if err != nil {
		p.failed(b, err)
		return err
	}
	rep.Quarantined += int(p.unreported.Swap(0))
	p.cfg.Observer.BatchDone(rep)
	return nil
}

// prepare is Prepare; prev is the batch whose histories stand for the store's (nil: none).
// The returned batch is never nil (it carries the report of what failed).
func (p *Processor) prepare(ctx context.Context, msgs []kafka.Message, prev *Prepared) (*Prepared, error) {
	started := time.Now()
	rep := &BatchReport{Source: sourceTopic(msgs), Messages: len(msgs)}
	b := &Prepared{p: p, msgs: msgs, rep: rep}
	err := p.prepareInto(ctx, b, prev)
	rep.Score = time.Since(started) - rep.Load
	return b, err
}

func (p *Processor) prepareInto(ctx context.Context, b *Prepared, prev *Prepared) error {
	msgs, rep := b.msgs, b.rep
	model, chal := p.Model(), p.Challenger()
	evs := make([]events.Appointment, 0, len(msgs))
	sent := make([]time.Time, 0, len(msgs)) // Kafka timestamp of each valid event
	src := make([]int, 0, len(msgs))        // index in msgs of each valid event
	var out []kafka.Message
	var patients []string
	seen := make(map[string]bool, len(msgs))
	bookings := 0 // each scored at most once, and again by the challenger
	for i := range msgs {
		m := &msgs[i]
		ev, err := events.DecodeAppointment(m.Value)
		if err == nil && string(m.Key) != ev.Patient {
			err = fmt.Errorf("%w: %w", events.ErrInvalid, errKeyMismatch)
		}
		if err == nil {
			// The one rule for event times, against the Kafka timestamp: the gateway refused
			// at entry what this would refuse, and the dispatcher skips the same events.
			if ferr := events.CheckAhead(ev.EventTime, events.Reference(m.Time, p.cfg.Now()), p.cfg.MaxAhead); ferr != nil {
				err = fmt.Errorf("%w: %w", events.ErrInvalid, ferr)
			}
		}
		if err != nil {
			out = p.refuse(out, m, err, rep)
			continue
		}
		if ev.Type == events.Booked || ev.Type == events.Rescheduled {
			bookings++
		}
		evs = append(evs, ev)
		sent = append(sent, m.Time)
		src = append(src, i)
		if !seen[ev.Patient] {
			seen[ev.Patient] = true
			patients = append(patients, ev.Patient)
		}
	}

	if !p.cfg.HistoryOnly {
		perBooking := 1
		if chal != nil {
			perBooking = 2
		}
		out = slices.Grow(out, bookings*perBooking)
		if bookings > 0 {
			rep.Scores = make([]Score, 0, bookings)
		}
	}
	t := time.Now()
	hist, err := p.load(ctx, patients, prev)
	var unreadable *featurestore.UnreadableError
	if errors.As(err, &unreadable) {
		p.quarantined(unreadable, rep)
		if len(unreadable.Newer) > 0 {
			evs, sent, out = p.holdNewer(msgs, unreadable.Newer, evs, sent, src, out, rep)
		}
	} else if err != nil {
		return fmt.Errorf("load %d histories: %w", len(patients), err)
	}
	rep.Load = time.Since(t)
	deadLettered := len(out)
	if p.cfg.HistoryOnly {
		deadLettered = 0
		for _, n := range rep.DeadLettered {
			deadLettered += n
		}
	}
	scoredAt := make([]time.Time, 0, bookings) // Kafka timestamp of each scored booking, as rep.Scores
	dirty := map[string]*featurestore.History{}
	bands := map[string]int64{}
	var x, cx []float64 // model inputs of the model and the challenger, reused
	var missing []int
	if model != nil {
		missing = make([]int, len(model.FeatureNames()))
	}
	var applied, skipped int64
	var rs *rescoring
	if p.cfg.Rescore != nil {
		rs = newRescoring()
	}
	for i := range evs {
		ev := &evs[i]
		h := hist[ev.Patient]
		scored := false
		if (ev.Type == events.Booked || ev.Type == events.Rescheduled) && !p.cfg.HistoryOnly {
			if h.Cancelled(ev.AppointmentID) || h.LatestVersion(ev.AppointmentID) > ev.Version {
				skipped++
			} else {
				v := featurestore.Compute(ev, h)
				x = model.Vector(ev, v, x)
				model.CountMissing(x, missing)
				now := p.cfg.Now().UTC()
				m, band, prob := p.risk(model, ev, x, time.Time{}, now, p.cfg.Topics.Risk)
				out = append(out, m)
				bands[band]++
				rep.Scores = append(rep.Scores, Score{Event: ev, Probability: prob, Band: band, ModelID: model.ID()})
				scoredAt = append(scoredAt, sent[i])
				scored = true
				if chal != nil {
					var s Score
					m, s, cx = p.shadow(chal, ev, v, cx, time.Time{}, now)
					out = append(out, m)
					rep.Shadow = append(rep.Shadow, s)
				}
			}
		}
		changed := h.Apply(ev, p.cfg.Policy)
		if changed {
			applied++
			dirty[ev.Patient] = h
		}
		if rs != nil {
			if err := rs.note(ev, scored, changed); err != nil {
				return err
			}
		}
	}
	var rescores int
	if rs != nil {
		again, err := p.rescore(ctx, rs, hist, model, chal)
		if err != nil {
			return fmt.Errorf("re-score open bookings: %w", err)
		}
		out = append(out, again.msgs...)
		rep.Scores = append(rep.Scores, again.scores...)
		rep.Shadow = append(rep.Shadow, again.shadow...)
		scoredAt = append(scoredAt, make([]time.Time, len(again.scores))...)
		for b, n := range again.bands {
			bands[b] += n
		}
		rescores = len(again.scores)
	}

	if len(rep.Scores) > 0 {
		rep.Missing = make(map[string]int, len(missing))
		for i, name := range model.FeatureNames() {
			rep.Missing[name] = missing[i]
		}
	}
	b.out, b.scoredAt, b.dirty, b.evs, b.rs, b.bands = out, scoredAt, dirty, evs, rs, bands
	b.applied, b.skipped, b.deadLettered, b.rescores = applied, skipped, int64(deadLettered), rescores
	b.after = make(map[string]*featurestore.History, len(dirty))
	for pt, h := range dirty {
		// Shared, not copied: nothing changes h once prepared (Finish only encodes it), and
		// load copies what the next batch takes from here before changing it.
		next := *h // with what it knows of its stored encoding
		next.Rev++
		b.after[pt] = &next
	}
	return nil
}

// load loads the histories of patients, those prev changed from prev (as they will be once
// prev is saved: copies, since prev's own are being saved), the others from the store.
func (p *Processor) load(ctx context.Context, patients []string, prev *Prepared) (map[string]*featurestore.History, error) {
	if prev == nil || len(prev.after) == 0 {
		return p.cfg.Store.Load(ctx, patients)
	}
	var rest []string
	for _, pt := range patients {
		if _, ok := prev.after[pt]; !ok {
			rest = append(rest, pt)
		}
	}
	hist := map[string]*featurestore.History{}
	var err error
	if len(rest) > 0 {
		hist, err = p.cfg.Store.Load(ctx, rest)
		var unreadable *featurestore.UnreadableError
		if err != nil && !errors.As(err, &unreadable) {
			return nil, err
		}
	}
	for _, pt := range patients {
		if h, ok := prev.after[pt]; ok {
			hist[pt] = h.Clone()
		}
	}
	return hist, err
}

// finish publishes and saves a prepared batch and counts it.
func (p *Processor) finish(ctx context.Context, b *Prepared) error {
	rep, out, scoredAt, rs := b.rep, b.out, b.scoredAt, b.rs
	var t time.Time
	if len(out) > 0 {
		t = time.Now()
		if err := p.cfg.Output.WriteMessages(ctx, out...); err != nil {
			return fmt.Errorf("publish %d messages: %w", len(out), err)
		}
		acked := time.Now()
		rep.Publish = acked.Sub(t)
		rep.Published = map[string]int{}
		for i := range out {
			rep.Published[out[i].Topic]++
		}
		for i := range rep.Scores {
			if !scoredAt[i].IsZero() {
				rep.Scores[i].Delay = acked.Sub(scoredAt[i])
			}
		}
	}
	t = time.Now()
	conflicts, quarantined := p.Stats.Conflicts.Load(), rep.Quarantined
	if err := p.save(ctx, b.dirty, b.evs, rep); err != nil {
		return err
	}
	// A conflict here may be another batch's, but then re-preparing the next is only slower.
	b.exact = p.Stats.Conflicts.Load() == conflicts && rep.Quarantined == quarantined
	if rs != nil {
		if err := p.cfg.Rescore.Open.Update(ctx, rs.put, rs.closed); err != nil {
			return err
		}
	}
	rep.Save = time.Since(t)
	p.Stats.Rescored.Add(int64(b.rescores))
	p.Stats.Consumed.Add(int64(len(b.msgs)))
	p.Stats.DeadLettered.Add(b.deadLettered)
	if !p.cfg.HistoryOnly {
		p.Stats.Scored.Add(int64(len(out)) - b.deadLettered - int64(len(rep.Shadow)))
	}
	p.Stats.Shadow.Add(int64(len(rep.Shadow)))
	p.Stats.Applied.Add(b.applied)
	p.Stats.Skipped.Add(b.skipped)
	p.Stats.mu.Lock()
	if p.Stats.bands == nil {
		p.Stats.bands = map[string]int64{}
	}
	for band, n := range b.bands {
		p.Stats.bands[band] += n
	}
	p.Stats.mu.Unlock()
	return nil
}

// risk scores x and encodes the risk event of booking ev for topic, scored at now; asOf is
// set on a re-score (then ev carries it as its event time), zero on the score made at booking.
func (p *Processor) risk(model Scorer, ev *events.Appointment, x []float64, asOf, now time.Time, topic string) (kafka.Message, string, float64) {
	prob := model.Score(x)
	r := events.Risk{
		Schema:           events.RiskSchema,
		AppointmentID:    ev.AppointmentID,
		Version:          ev.Version,
		Patient:          ev.Patient,
		SourceEventID:    ev.EventID,
		AppointmentStart: ev.Booking.Start,
		Probability:      prob,
		Band:             model.Band(prob),
		ModelID:          model.ID(),
		ScoredAt:         now,
	}
	fb := featureBufs.Get().(*featureBuf)
	if fa, ok := model.(featureAppender); ok {
		r.FeatureNames, r.FeatureValues = fa.AppendFeatures(x, fb.names[:0], fb.values[:0])
		fb.names, fb.values = r.FeatureNames, r.FeatureValues
	} else {
		r.Features = model.FeatureMap(x)
	}
	if !asOf.IsZero() {
		r.ScoredAsOf, r.Reason = asOf.UTC(), events.RescoreHistoryChanged
	}
	fb.json = r.AppendJSON(fb.json[:0])
	// One allocation of the event's own size for its key and value together (the value was
	// encoded into a 1 kB buffer of its own: 6% of the bytes the consumer allocated).
	kv := make([]byte, 0, len(ev.Patient)+len(fb.json))
	kv = append(append(kv, ev.Patient...), fb.json...)
	featureBufs.Put(fb)
	m := kafka.Message{
		Topic:   topic,
		Key:     kv[:len(ev.Patient):len(ev.Patient)],
		Value:   kv[len(ev.Patient):],
		Headers: riskHeaders,
	}
	return m, r.Band, prob
}

// riskHeaders are every risk event's headers; kafka-go only reads them.
var riskHeaders = []kafka.Header{{Key: "schema", Value: []byte(events.RiskSchema)}}

// featureAppender is a Scorer that lists the features FeatureMap would hold as two slices
// in name order (scoring.Model does), so a risk event needs no map (events.Risk.FeatureNames).
type featureAppender interface {
	AppendFeatures(x []float64, names []string, values []float64) ([]string, []float64)
}

// featureBuf is the scratch of one risk event: its feature names and values and its
// encoding, reused.
type featureBuf struct {
	names  []string
	values []float64
	json   []byte // the risk event, encoded
}

var featureBufs = sync.Pool{New: func() any { return &featureBuf{} }}

// shadow scores booking ev with the challenger from the same features v the model used, and
// encodes its risk event for Topics.Shadow with the same scored_at (now) and as-of time as
// the model's. cx is the challenger's input buffer, returned for reuse: its contract may
// differ from the model's (fewer features, other extras), so it builds its own input.
func (p *Processor) shadow(chal Scorer, ev *events.Appointment, v featurestore.Vector, cx []float64, asOf, now time.Time) (kafka.Message, Score, []float64) {
	cx = chal.Vector(ev, v, cx)
	m, band, prob := p.risk(chal, ev, cx, asOf, now, p.cfg.Topics.Shadow)
	return m, Score{Event: ev, Probability: prob, Band: band, ModelID: chal.ID(), Rescore: !asOf.IsZero()}, cx
}

// save writes the changed histories. A patient whose history another writer changed since it
// was loaded (possible for a moment during a rebalance) is reloaded and this batch's events
// re-applied; Apply is idempotent, so facts the other writer already recorded count once.
//
// A history that became unreadable meanwhile is quarantined as Load does; one now in a newer
// format fails the batch, whose retry then holds that patient's events back (holdNewer).
func (p *Processor) save(ctx context.Context, dirty map[string]*featurestore.History, evs []events.Appointment, rep *BatchReport) error {
	for attempt := 0; len(dirty) > 0; attempt++ {
		err := p.cfg.Store.Save(ctx, dirty)
		var conflict *featurestore.ConflictError
		if !errors.As(err, &conflict) {
			if err != nil {
				return fmt.Errorf("save %d histories: %w", len(dirty), err)
			}
			return nil
		}
		if attempt == maxConflictRetries {
			return fmt.Errorf("save histories: %w after %d retries", err, attempt)
		}
		p.Stats.Conflicts.Add(int64(len(conflict.Patients)))
		fresh, err := p.cfg.Store.Load(ctx, conflict.Patients)
		var unreadable *featurestore.UnreadableError
		if errors.As(err, &unreadable) && len(unreadable.Newer) == 0 {
			p.quarantined(unreadable, rep)
		} else if err != nil {
			return fmt.Errorf("reload %d histories after conflict: %w", len(conflict.Patients), err)
		}
		dirty = map[string]*featurestore.History{}
		for i := range evs {
			if h, ok := fresh[evs[i].Patient]; ok && h.Apply(&evs[i], p.cfg.Policy) {
				dirty[evs[i].Patient] = h
			}
		}
	}
	return nil
}

// quarantined reports the histories Load moved aside: logged by pseudonym and key (never the
// bytes) and counted at once in Stats and in the batch report (in the next completed batch's
// if this one fails: the quarantine stands either way).
func (p *Processor) quarantined(u *featurestore.UnreadableError, rep *BatchReport) {
	for _, q := range u.Quarantined {
		rep.Quarantined++
		p.Stats.Quarantined.Add(1)
		p.cfg.Log.Error("unreadable patient history quarantined; the patient's history starts again empty until rebuilt from the topic",
			"patient", q.Patient, "quarantine_key", q.Key, "reason", q.Reason.Error())
	}
}

// holdNewer takes the events of patients whose history is in a newer format than this binary
// reads (a newer binary wrote it: a rolling upgrade, or a rollback) out of the batch and
// dead-letters them with reason history_newer_format, so that the other patients proceed and
// the newer history is neither read nor overwritten. The dead letters keep the original bytes
// for a redrive once every consumer reads that format (README, Operations).
func (p *Processor) holdNewer(msgs []kafka.Message, newer []string, evs []events.Appointment, sent []time.Time, src []int,
	out []kafka.Message, rep *BatchReport) ([]events.Appointment, []time.Time, []kafka.Message) {
	held := make(map[string]bool, len(newer))
	for _, pt := range newer {
		held[pt] = true
		p.cfg.Log.Warn("patient history is in a newer format than this binary reads; its events are dead-lettered for redrive",
			"patient", pt, "reason", ReasonHistoryNewer)
	}
	keepEvs, keepSent := evs[:0], sent[:0]
	for i := range evs {
		if held[evs[i].Patient] {
			out = p.refuse(out, &msgs[src[i]], fmt.Errorf("%w; redrive once every consumer reads it", featurestore.ErrNewerFormat), rep)
			continue
		}
		keepEvs = append(keepEvs, evs[i])
		keepSent = append(keepSent, sent[i])
	}
	return keepEvs, keepSent, out
}

// refuse appends m's dead letter to out, or with Config.HistoryOnly only counts it in the
// report (the input was dead-lettered when first consumed).
func (p *Processor) refuse(out []kafka.Message, m *kafka.Message, reason error, rep *BatchReport) []kafka.Message {
	if !p.cfg.HistoryOnly {
		return append(out, p.deadLetter(m, reason, rep))
	}
	if rep.DeadLettered == nil {
		rep.DeadLettered = map[string]int{}
	}
	rep.DeadLettered[DeadLetterReason(m.Value, reason)]++
	return out
}

// deadLetter wraps a refused message with the reason (its code and the full text) and where
// it came from. The log line carries the text with digit runs masked: a decode error can
// quote a field's value.
func (p *Processor) deadLetter(m *kafka.Message, reason error, rep *BatchReport) kafka.Message {
	code := DeadLetterReason(m.Value, reason)
	d := events.DeadLetter{
		Schema:     events.DeadLetterSchema,
		ReasonCode: code,
		Reason:     reason.Error(),
		Topic:      m.Topic,
		Partition:  m.Partition,
		Offset:     m.Offset,
		Key:        m.Key,
		Value:      m.Value,
		FailedAt:   p.cfg.Now().UTC(),
	}
	b, _ := json.Marshal(d) // only []byte, strings, ints and a time: cannot fail
	if rep.DeadLettered == nil {
		rep.DeadLettered = map[string]int{}
	}
	rep.DeadLettered[code]++
	p.cfg.Log.Warn("dead-lettered appointment event", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset,
		"reason", code, "detail", redactDigits(reason.Error()))
	return kafka.Message{
		Topic:   p.cfg.Topics.DeadLetter,
		Key:     m.Key,
		Value:   b,
		Headers: []kafka.Header{{Key: "schema", Value: []byte(events.DeadLetterSchema)}, {Key: "reason_code", Value: []byte(code)}},
	}
}
