// Package events defines the versioned JSON contracts that cross Kafka: appointment events
// from the PAS, risk events from the scorer and dead-letter records for input we refuse.
// Decoding is strict: an event that does not satisfy its contract is an error naming the
// field, so the consumer can dead-letter it with that reason. The JSON Schemas under
// schemas/ and docs/events.md describe the same contracts for other languages.
package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
)

// Schema identifiers carried in every event so a reader can refuse a version it does not know.
const (
	AppointmentSchema = "appointment.v1"
	RiskSchema        = "risk.v1"
	DeadLetterSchema  = "deadletter.v1"
)

// MaxEventBytes bounds an appointment event; anything larger is refused before parsing.
const MaxEventBytes = 64 << 10

// Type is what happened to an appointment.
type Type string

// Appointment event types. Booked and Rescheduled carry the full booking facts.
const (
	Booked       Type = "booked"
	Rescheduled  Type = "rescheduled"
	Cancelled    Type = "cancelled"
	Attended     Type = "attended"
	DidNotAttend Type = "did_not_attend"
)

// CancelledBy says who cancelled; patient cancellations predict later non-attendance,
// hospital cancellations do not in the same way, so the two are kept apart.
type CancelledBy string

// Who cancelled an appointment.
const (
	ByPatient  CancelledBy = "patient"
	ByHospital CancelledBy = "hospital"
)

// Appointment is one PAS appointment event (schema appointment.v1). It is keyed on Kafka by
// Patient so that one partition carries one patient's events in order.
type Appointment struct {
	Schema        string      `json:"schema"`
	EventID       string      `json:"event_id"`
	Type          Type        `json:"type"`
	EventTime     time.Time   `json:"event_time"`
	AppointmentID string      `json:"appointment_id"`
	Version       int         `json:"booking_version"`
	Patient       string      `json:"patient"`
	CancelledBy   CancelledBy `json:"cancelled_by,omitempty"`
	// Booking holds what the PAS knows at booking time; required for booked and rescheduled.
	Booking *Booking `json:"booking,omitempty"`
}

// Booking is the set of facts a PAS knows when an appointment is booked.
type Booking struct {
	Specialty  string    `json:"specialty"` // NHS treatment function code, e.g. "110"
	Clinic     string    `json:"clinic"`
	FirstVisit bool      `json:"first_visit"` // new (true) vs follow-up (false)
	Start      time.Time `json:"start"`
	BookedAt   time.Time `json:"booked_at"`
	AgeBand    string    `json:"age_band"`
	// Deprivation is the IMD decile (1 most deprived … 10 least); nil when not known.
	Deprivation *int    `json:"deprivation_decile,omitempty"`
	Contact     Contact `json:"contact"`
	Extra       Extra   `json:"extra,omitempty"`
}

// Extra carries optional trust-specific numeric facts (for example from a CSV replay); the
// feature contract decides which of them a model uses.
type Extra map[string]float64

// Contact records the patient's reminder preferences; the phone number itself never travels
// in events (see docs/events.md).
type Contact struct {
	SMS    bool `json:"sms"`
	OptOut bool `json:"opt_out"`
}

// AgeBands are the accepted values of Booking.AgeBand, in order.
var AgeBands = []string{"0-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75-84", "85+"}

// AgeBandIndex returns the ordinal of an age band, or -1 if it is not one of AgeBands.
func AgeBandIndex(band string) int {
	for i, b := range AgeBands {
		if b == band {
			return i
		}
	}
	return -1
}

// Risk is the scorer's output (schema risk.v1), keyed on Kafka by Patient.
type Risk struct {
	Schema           string    `json:"schema"`
	AppointmentID    string    `json:"appointment_id"`
	Version          int       `json:"booking_version"`
	Patient          string    `json:"patient"`
	SourceEventID    string    `json:"source_event_id"`
	AppointmentStart time.Time `json:"appointment_start"`
	Probability      float64   `json:"probability"`
	Band             string    `json:"risk_band"`
	ModelID          string    `json:"model_id"`
	ScoredAt         time.Time `json:"scored_at"`
	// ScoredAsOf is, on a re-score, the moment the features are as of: the later of the
	// history change that caused it and the decision point (the start less the consumer's
	// decision lead). Absent (zero) on the score made at booking, which is as of the
	// booking's event time.
	ScoredAsOf time.Time `json:"scored_as_of,omitzero"`
	// Reason is RescoreHistoryChanged on a re-score; absent on the score made at booking.
	Reason   string             `json:"reason,omitempty"`
	Features map[string]float64 `json:"features"`
	// FeatureNames and FeatureValues stand for Features without a map, for AppendJSON only
	// (encoding/json ignores them): when Features is nil and FeatureNames is not, AppendJSON
	// writes "features" from them, names in ascending byte order and distinct, as
	// json.Marshal writes the equivalent map. The scorer builds one risk event per booking.
	FeatureNames  []string  `json:"-"`
	FeatureValues []float64 `json:"-"`
}

// RescoreHistoryChanged is the Reason of a risk event made because an outcome or a
// cancellation changed the patient's history after the booking was scored.
const RescoreHistoryChanged = "history_changed"

// DeadLetter records an input the consumer refused, with the bytes exactly as received.
type DeadLetter struct {
	Schema string `json:"schema"`
	// ReasonCode is one of DeadLetterReasons: fixed, for alerting and counting (the
	// consumer's dead-letter metric has the same values as its reason label).
	ReasonCode string `json:"reason_code"`
	// Reason says what exactly was wrong, for a person; its wording may change.
	Reason    string    `json:"reason"`
	Topic     string    `json:"topic"`
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	Key       []byte    `json:"key"`
	Value     []byte    `json:"value"` // base64 in JSON
	FailedAt  time.Time `json:"failed_at"`
}

// Why an input was dead-lettered: the values of DeadLetter.ReasonCode.
const (
	ReasonTooLarge      = "too_large"          // over MaxEventBytes
	ReasonNotUTF8       = "not_utf8"           // not valid UTF-8
	ReasonMalformedJSON = "malformed_json"     // not one JSON value
	ReasonUnknownSchema = "unknown_schema"     // no "schema", or not appointment.v1
	ReasonContract      = "contract_violation" // appointment.v1 that breaks the contract
	ReasonKeyMismatch   = "key_mismatch"       // Kafka key is not the event's patient
	ReasonFuture        = "future_event_time"  // event_time too far past the consumer's clock
	// The patient's stored history is in a newer format than this consumer reads: the event
	// is valid and waits here for a redrive once every consumer reads that format.
	ReasonHistoryNewer = "history_newer_format"
)

// DeadLetterReasons lists every reason code, as schemas/deadletter.v1.schema.json does.
var DeadLetterReasons = []string{ReasonTooLarge, ReasonNotUTF8, ReasonMalformedJSON, ReasonUnknownSchema,
	ReasonContract, ReasonKeyMismatch, ReasonFuture, ReasonHistoryNewer}

// ErrInvalid wraps every contract violation found by DecodeAppointment.
var ErrInvalid = errors.New("invalid appointment event")

var (
	// Dates outside this window are almost certainly corrupt (epoch zero, year 9999).
	minTime = time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

// IsPseudonym reports whether s has the shape of a patient pseudonym: 64 lower-case hex
// digits (what ^[0-9a-f]{64}$ matches, without a regular expression on the hot path).
func IsPseudonym(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// DecodeAppointment parses and validates one appointment event. Unknown fields, unknown
// schema versions and events that break the contract return an error wrapping ErrInvalid.
func DecodeAppointment(b []byte) (Appointment, error) {
	var a Appointment
	if len(b) > MaxEventBytes {
		return a, invalid("event is %d bytes, limit %d", len(b), MaxEventBytes)
	}
	if !utf8.Valid(b) {
		return a, invalid("event is not valid UTF-8")
	}
	if decodeFast(b, &a) {
		return a, a.Validate()
	}
	return decodeStd(b)
}

// decodeStd is DecodeAppointment's definition: encoding/json, strict. decodeFast takes the
// common case faster, and hands everything else here.
func decodeStd(b []byte) (Appointment, error) {
	var a Appointment
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return a, invalid("%s", jsonError(err))
	}
	if dec.More() {
		return a, invalid("trailing data after the event")
	}
	return a, a.Validate()
}

// jsonError says what encoding/json found wrong, once: its own messages start "json: ",
// and a type error names the Go struct, not the JSON field.
func jsonError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("json: field %s: want %s, got %s", te.Field, jsonKind(te.Type.Kind()), te.Value)
	}
	return "json: " + strings.TrimPrefix(err.Error(), "json: ")
}

// jsonKind names the JSON value a Go kind decodes from.
func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	default:
		return "a number"
	}
}

// Validate checks the contract of an appointment event.
func (a *Appointment) Validate() error {
	switch {
	case a.Schema != AppointmentSchema:
		return invalid("schema %q, want %q", a.Schema, AppointmentSchema)
	case a.EventID == "" || len(a.EventID) > 128:
		return invalid("event_id missing or longer than 128")
	case a.AppointmentID == "" || len(a.AppointmentID) > 128:
		return invalid("appointment_id missing or longer than 128")
	case !IsPseudonym(a.Patient):
		return invalid("patient must be a 64-hex-digit pseudonym")
	case a.Version < 1 || a.Version > 10000:
		return invalid("booking_version %d out of range 1..10000", a.Version)
	}
	if err := checkTime("event_time", a.EventTime); err != nil {
		return err
	}
	switch a.Type {
	case Booked, Rescheduled:
		if a.Booking == nil {
			return invalid("%s event without booking facts", a.Type)
		}
		if a.Type == Booked && a.Version != 1 {
			return invalid("booked event with booking_version %d, want 1", a.Version)
		}
		return a.Booking.validate()
	case Cancelled:
		if a.CancelledBy != ByPatient && a.CancelledBy != ByHospital {
			return invalid("cancelled_by %q, want patient or hospital", a.CancelledBy)
		}
	case Attended, DidNotAttend:
	default:
		return invalid("unknown type %q", a.Type)
	}
	if a.Booking != nil {
		return a.Booking.validate()
	}
	return nil
}

func (b *Booking) validate() error {
	if b.Specialty == "" || len(b.Specialty) > 16 {
		return invalid("booking.specialty missing or longer than 16")
	}
	if len(b.Clinic) > 64 {
		return invalid("booking.clinic longer than 64")
	}
	if err := checkTime("booking.start", b.Start); err != nil {
		return err
	}
	if err := checkTime("booking.booked_at", b.BookedAt); err != nil {
		return err
	}
	if b.Start.Before(b.BookedAt.Add(-24 * time.Hour)) {
		return invalid("booking.start %s is before booked_at %s", b.Start.Format(time.RFC3339), b.BookedAt.Format(time.RFC3339))
	}
	if b.Start.Sub(b.BookedAt) > 3*365*24*time.Hour {
		return invalid("booking lead time over three years")
	}
	if AgeBandIndex(b.AgeBand) < 0 {
		return invalid("booking.age_band %q not one of %v", b.AgeBand, AgeBands)
	}
	if b.Deprivation != nil && (*b.Deprivation < 1 || *b.Deprivation > 10) {
		return invalid("booking.deprivation_decile %d out of range 1..10", *b.Deprivation)
	}
	if len(b.Extra) > 64 {
		return invalid("booking.extra has %d entries, limit 64", len(b.Extra))
	}
	for k, v := range b.Extra {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return invalid("booking.extra[%q] is not a finite number", k)
		}
	}
	return nil
}

func checkTime(field string, t time.Time) error {
	if t.Before(minTime) || !t.Before(maxTime) {
		return invalid("%s %s outside 1990..2100", field, t.Format(time.RFC3339))
	}
	return nil
}
