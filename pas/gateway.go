// Package pas turns what a Patient Administration System says about an appointment (a
// Change, mapped from an HL7 v2 SIU message by package siu or from a FHIR Appointment by
// package fhirin) into appointment.v1 events on Kafka.
//
// HL7 v2 and FHIR carry no booking version, so the Gateway keeps one per appointment (in
// Redis, through a Tracker): a new booking is version 1, and a later message whose booking
// facts differ (start, specialty, clinic, new/follow-up, patient) is the next version. A
// message whose facts are unchanged (a retransmission, or a modification of something the
// scorer does not use) publishes nothing. State is saved only after Kafka acknowledged the
// event, so a message retried after a failure publishes the same event again, never a new
// version.
package pas

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/producer"
)

// Kind is what a PAS message says happened.
type Kind int

// Kinds of change. Book and Modify carry booking facts.
const (
	Book         Kind = iota + 1 // SIU S12, FHIR booked (new)
	Modify                       // SIU S13/S14, FHIR booked (update)
	Cancel                       // SIU S15/S17, FHIR cancelled/entered-in-error
	DidNotAttend                 // SIU S26, FHIR noshow
	Attend                       // FHIR fulfilled
)

func (k Kind) String() string {
	switch k {
	case Book:
		return "book"
	case Modify:
		return "modify"
	case Cancel:
		return "cancel"
	case DidNotAttend:
		return "did_not_attend"
	case Attend:
		return "attend"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Change is one mapped PAS message, before it has a booking version.
type Change struct {
	Kind Kind
	// Source names the message for logs, e.g. "SIU^S12" or "FHIR Appointment"; never data.
	Source string
	// EventID is deterministic (derived from the message's control id or resource version),
	// so a retransmitted message yields the same event id.
	EventID   string
	EventTime time.Time
	// Received is when the gateway received the message: the time EventTime was checked
	// against (events.CheckAhead) and the event's Kafka timestamp, so every reader checks
	// it against the same time. Zero: the time Apply publishes.
	Received      time.Time
	AppointmentID string
	// Patient is the pseudonym; empty when the message named no patient (allowed for
	// cancellations and outcomes of an appointment the gateway already knows).
	Patient     string
	CancelledBy events.CancelledBy // for Cancel
	// Booking holds the booking facts for Book and Modify when the message states them whole
	// (Build is nil); BookedAt is when this version was booked.
	Booking *events.Booking
	// Fields and Build give the booking facts of a message that may leave some out, as HL7 v2
	// updates do (an empty field means no change; "" means delete). Fields are the values the
	// message carried that the mapping reads, by name (Null for a deleted one); Build maps
	// fields to booking facts. For an appointment the gateway knows, Build gets Fields laid
	// over the fields it holds for the appointment (Fields.Over); otherwise Fields alone. The
	// merged fields are kept for the next update. Build's errors say what is missing, in the
	// mapper's own error type.
	Fields Fields
	Build  func(Fields) (*events.Booking, error)
	// Contact is what the message says about reaching Patient, for the contact store; nil
	// if nothing. It is never published or logged.
	Contact *Contact
}

// Facts returns the booking facts of a Book or Modify change laid over the fields held for
// its appointment (nil for one the gateway does not know), and the merged fields to keep.
// Errors wrap ErrRejected.
func (c *Change) Facts(held Fields) (*events.Booking, Fields, error) {
	if c.Build == nil {
		if c.Booking == nil {
			return nil, nil, fmt.Errorf("%w: %s without booking facts", ErrRejected, c.Source)
		}
		return c.Booking, nil, nil
	}
	fields := c.Fields.Over(held)
	b, err := c.Build(fields)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	return b, fields, nil
}

// Fields are the source values of booking facts, by a name the mapper chooses (for HL7 the
// field, "AIL-3"; for facts read from the patient, "age_band", "sms", "opt_out"). They hold no
// patient identifier, name, birth date or telephone number: the gateway keeps them in Redis.
type Fields map[string]string

// Null is the value of a field a message deleted: HL7's explicit null "" (two double quotes).
const Null = `""`

// Over returns f laid over held: each field f carries replaces the held one, a Null in f
// deletes it, and the fields f does not carry keep their held values.
func (f Fields) Over(held Fields) Fields {
	out := make(Fields, len(held)+len(f))
	for k, v := range held {
		out[k] = v
	}
	for k, v := range f {
		if v == Null {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// Result says what the Gateway did with a Change.
type Result struct {
	// Event is the published event, or nil when nothing was published.
	Event *events.Appointment
	// Ignored says why nothing was published (empty when Event is set).
	Ignored string
}

// ErrRejected wraps reasons a Change cannot become an event: sending it again will not help.
var ErrRejected = errors.New("change rejected")

// ErrUnavailable wraps failures of Kafka or Redis: the sender should try again later.
var ErrUnavailable = errors.New("gateway temporarily unavailable")

// Gateway versions Changes and publishes them. It is safe for concurrent use.
type Gateway struct {
	tracker  Tracker
	out      producer.Writer
	contacts Contacts
	log      *slog.Logger
	// locks serialise changes to one appointment within this process (striped by hash), so
	// two connections cannot both make version n+1 of it.
	locks [256]sync.Mutex
}

// NewGateway publishes through out (a stream.NewWriter for the appointments topic) and keeps
// versions in tracker.
func NewGateway(tracker Tracker, out producer.Writer, log *slog.Logger) *Gateway {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Gateway{tracker: tracker, out: out, log: log}
}

// SetContacts makes the gateway write what messages say about reaching the patient (mobile
// number, opt-out) to cs before it publishes their events, so the reminder dispatcher finds
// the number when it plans. Without it the contact store is left to another feed.
func (g *Gateway) SetContacts(cs Contacts) { g.contacts = cs }

func (g *Gateway) lock(appt string) func() {
	h := fnv.New32a()
	h.Write([]byte(appt))
	m := &g.locks[h.Sum32()%uint32(len(g.locks))]
	m.Lock()
	return m.Unlock
}

// Apply turns c into at most one event, publishes it and returns once Kafka acknowledged
// it and the appointment's state is saved. Errors wrap ErrRejected (the change itself is
// wrong) or ErrUnavailable (Kafka or Redis failed; retry).
func (g *Gateway) Apply(ctx context.Context, c Change) (Result, error) {
	if c.AppointmentID == "" {
		return Result{}, fmt.Errorf("%w: no appointment id", ErrRejected)
	}
	defer g.lock(c.AppointmentID)()
	st, err := g.tracker.Load(ctx, c.AppointmentID)
	if err != nil {
		return Result{}, fmt.Errorf("%w: load state of appointment %s: %w", ErrUnavailable, c.AppointmentID, err)
	}
	ev, next, ignored, err := decide(c, st)
	if err != nil {
		return Result{}, err
	}
	if ev != nil {
		if err := ev.Validate(); err != nil {
			return Result{}, fmt.Errorf("%w: %w", ErrRejected, err)
		}
	}
	if err := g.saveContact(ctx, c); err != nil {
		return Result{}, err
	}
	if ev == nil {
		if st.Version > 0 && !maps.Equal(st.Fields, next.Fields) {
			// Nothing the scorer uses changed, but what the next update merges onto did.
			if err := g.tracker.Save(ctx, c.AppointmentID, next); err != nil {
				return Result{}, fmt.Errorf("%w: save state of appointment %s: %w", ErrUnavailable, c.AppointmentID, err)
			}
		}
		g.log.Debug("pas change ignored", "source", c.Source, "appointment_id", c.AppointmentID, "reason", ignored)
		return Result{Ignored: ignored}, nil
	}
	msg, err := producer.Message(ev)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	msg.Time = c.Received
	if msg.Time.IsZero() {
		msg.Time = time.Now()
	}
	if err := g.out.WriteMessages(ctx, msg); err != nil {
		return Result{}, fmt.Errorf("%w: publish %s event for appointment %s: %w", ErrUnavailable, ev.Type, ev.AppointmentID, err)
	}
	if err := g.tracker.Save(ctx, c.AppointmentID, next); err != nil {
		// The event is on Kafka but the state is not saved: a retry publishes the same event
		// (same version and id) again, which every reader deduplicates.
		return Result{}, fmt.Errorf("%w: save state of appointment %s: %w", ErrUnavailable, c.AppointmentID, err)
	}
	g.log.Debug("pas event published", "source", c.Source, "appointment_id", ev.AppointmentID,
		"type", string(ev.Type), "booking_version", ev.Version, "event_id", ev.EventID)
	return Result{Event: ev}, nil
}

// saveContact writes what an accepted message says about reaching its patient, before the
// event is published, so the number is there when the dispatcher plans; a resend after a
// failure writes the same again.
func (g *Gateway) saveContact(ctx context.Context, c Change) error {
	if g.contacts == nil || c.Contact == nil || c.Patient == "" {
		return nil
	}
	if err := g.contacts.SaveContact(ctx, c.Patient, *c.Contact); err != nil {
		return fmt.Errorf("%w: save contact details: %w", ErrUnavailable, err)
	}
	return nil
}

// decide computes the event for c given the appointment's state, and the state to save once
// the event is published. A nil event means nothing to publish, for the reason given.
func decide(c Change, st State) (*events.Appointment, State, string, error) {
	next := st
	patient := c.Patient
	if patient == "" {
		patient = st.Patient
	}
	if patient == "" {
		return nil, st, "", fmt.Errorf("%w: %s names no patient and appointment %s is not known to the gateway", ErrRejected, c.Source, c.AppointmentID)
	}
	ev := &events.Appointment{
		Schema:        events.AppointmentSchema,
		EventID:       c.EventID,
		EventTime:     c.EventTime.UTC(),
		AppointmentID: c.AppointmentID,
		Patient:       patient,
		Version:       max(st.Version, 1),
	}
	next.Patient = patient
	switch c.Kind {
	case Book, Modify:
		if st.Cancelled {
			return nil, st, "appointment already cancelled; a cancelled appointment id is not re-booked", nil
		}
		var held Fields
		if st.Version > 0 {
			held = st.Fields
		}
		booking, fields, err := c.Facts(held)
		if err != nil {
			return nil, st, "", err
		}
		next.Fields = fields
		f := factsOf(patient, booking)
		switch {
		case st.Version == 0:
			ev.Type, ev.Version = events.Booked, 1
		case f == st.Facts:
			return nil, next, "booking facts unchanged (start, specialty, clinic, new/follow-up, patient)", nil
		default:
			ev.Type, ev.Version = events.Rescheduled, st.Version+1
		}
		b := *booking
		b.Start, b.BookedAt = b.Start.UTC(), b.BookedAt.UTC()
		ev.Booking = &b
		next.Version, next.Facts = ev.Version, f
	case Cancel:
		ev.Type, ev.CancelledBy = events.Cancelled, c.CancelledBy
		next.Cancelled = true
	case DidNotAttend:
		ev.Type = events.DidNotAttend
	case Attend:
		ev.Type = events.Attended
	default:
		return nil, st, "", fmt.Errorf("%w: unknown change kind %d", ErrRejected, c.Kind)
	}
	return ev, next, "", nil
}

// Check reports whether c would make a valid event, given what the gateway holds about its
// appointment, without publishing or saving anything. A caller that must accept a set of
// changes all or nothing (a FHIR transaction) checks each one before applying any. A change
// without a patient for an appointment the gateway does not know is checked as if it knew the
// patient; Apply decides that case.
func (g *Gateway) Check(ctx context.Context, c Change) error {
	st, err := g.tracker.Load(ctx, c.AppointmentID)
	if err != nil {
		return fmt.Errorf("%w: load state of appointment %s: %w", ErrUnavailable, c.AppointmentID, err)
	}
	if c.Patient == "" && st.Patient == "" {
		st.Patient = strings.Repeat("0", 64)
	}
	ev, _, _, err := decide(c, st)
	if err != nil || ev == nil {
		return err
	}
	if err := ev.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	return nil
}
