package scorer

import (
	"encoding/json"
	"errors"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
)

// Observer is told what a Processor did, so metrics and the status page can follow it
// without the processor knowing about either. Methods are called from the goroutine running
// Process, once a batch's outcome is known; they must return quickly, must not keep the
// report or anything it points to after returning, and must be safe for concurrent use if
// one Observer serves several processors.
type Observer interface {
	// BatchDone reports a batch whose outputs were all acknowledged and whose history
	// updates were all saved.
	BatchDone(r *BatchReport)
	// BatchFailed reports a batch that failed; nothing of it was committed and it will be
	// processed again.
	BatchFailed(messages int, took time.Duration, err error)
}

// BatchReport describes one completed batch.
type BatchReport struct {
	// Source is the topic the batch was read from.
	Source string
	// Messages is the number of input messages, valid or not.
	Messages int
	// Took is the whole of Process; Load, Publish and Save are its round trips to the
	// feature store and Kafka (Save includes conflict retries); Score is the rest: decoding,
	// features, the model and encoding (with Config.Rescore, also its lookups of open
	// bookings).
	Took, Load, Score, Publish, Save time.Duration
	// Published counts the messages written, by topic (risk events and dead letters).
	Published map[string]int
	// DeadLettered counts refused input messages by reason (see DeadLetterReason).
	DeadLettered map[string]int
	// Scores holds one entry per risk event published, in input order.
	Scores []Score
	// Shadow holds one entry per challenger risk event published to the shadow topic
	// (Config.Challenger), in input order; nil without a challenger. Scores does not
	// include them.
	Shadow []Score
	// Quarantined counts patient histories that could not be read (corrupt) and were moved
	// aside to a quarantine key, each patient's history starting again empty: by this batch,
	// and by batches of the same Processor that failed since the last completed one (a
	// quarantine is not undone when its batch fails).
	Quarantined int
	// Missing counts, for every model feature by contract name, the scored bookings whose
	// input was missing (not known at booking time, or a booking extra the feed did not
	// carry). Nil when nothing was scored.
	Missing map[string]int
}

// Score is one risk event as the processor published it.
type Score struct {
	// Event is the booking that was scored.
	Event       *events.Appointment
	Probability float64
	Band        string
	ModelID     string
	// Delay runs from the booking message's Kafka timestamp to the moment its risk event was
	// acknowledged: queueing in Kafka plus processing. Zero on a re-score.
	Delay time.Duration
	// Rescore marks a booking scored again after a history change (Config.Rescore); Event
	// then carries the re-score's as-of time as its event time.
	Rescore bool
}

// Reasons an input message is dead-lettered, as reported to an Observer: the reason codes of
// the dead-letter contract (events.DeadLetterReasons), which every dead-letter record carries
// in reason_code beside the full reason. They are few and fixed, so they can label a metric.
const (
	ReasonTooLarge      = events.ReasonTooLarge
	ReasonNotUTF8       = events.ReasonNotUTF8
	ReasonMalformedJSON = events.ReasonMalformedJSON
	ReasonUnknownSchema = events.ReasonUnknownSchema
	ReasonContract      = events.ReasonContract
	ReasonKeyMismatch   = events.ReasonKeyMismatch
	ReasonFuture        = events.ReasonFuture
	ReasonHistoryNewer  = events.ReasonHistoryNewer
)

// errKeyMismatch marks a valid event whose Kafka key is not its patient pseudonym.
var errKeyMismatch = errors.New("message key is not the event's patient pseudonym (per-patient order depends on it)")

// errFuture marks a valid event dated too far past its publication (events.CheckAhead).
var errFuture = events.ErrFuture

// DeadLetterReason classifies why value was refused. It looks at the bytes again rather than
// at the error text, which may change wording.
func DeadLetterReason(value []byte, err error) string {
	switch {
	case errors.Is(err, featurestore.ErrNewerFormat):
		return ReasonHistoryNewer
	case errors.Is(err, errKeyMismatch):
		return ReasonKeyMismatch
	case errors.Is(err, errFuture):
		return ReasonFuture
	case len(value) > events.MaxEventBytes:
		return ReasonTooLarge
	case !utf8.Valid(value):
		return ReasonNotUTF8
	case !json.Valid(value):
		return ReasonMalformedJSON
	}
	var head struct {
		Schema string `json:"schema"`
	}
	if json.Unmarshal(value, &head) != nil || head.Schema != events.AppointmentSchema {
		return ReasonUnknownSchema
	}
	return ReasonContract
}

// digitRun is a run of six or more digits, possibly split by single spaces or led by "+":
// the shape of an NHS number ("943 476 5919") or a phone number ("+44 7700 900123"). A
// decode error can quote a field's value (a time that does not parse, for instance), and
// logs must never carry either.
var digitRun = regexp.MustCompile(`\+?\d(?: ?\d){5,}`)

// redactDigits replaces digit runs that could identify a person, for log lines.
func redactDigits(s string) string { return digitRun.ReplaceAllString(s, "[digits]") }

// nopObserver is the default Observer.
type nopObserver struct{}

func (nopObserver) BatchDone(*BatchReport)                {}
func (nopObserver) BatchFailed(int, time.Duration, error) {}

// sourceTopic is the topic a batch came from (every message of a batch has the same one).
func sourceTopic(msgs []kafka.Message) string {
	if len(msgs) == 0 {
		return ""
	}
	return msgs[0].Topic
}

// Observers returns an Observer that tells each of obs in turn.
func Observers(obs ...Observer) Observer { return observers(obs) }

type observers []Observer

func (os observers) BatchDone(r *BatchReport) {
	for _, o := range os {
		o.BatchDone(r)
	}
}

func (os observers) BatchFailed(n int, took time.Duration, err error) {
	for _, o := range os {
		o.BatchFailed(n, took, err)
	}
}
