package siu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nhsx/dnarisk/pas"
	"github.com/nhsx/dnarisk/pas/hl7"
)

// Applier publishes a change; *pas.Gateway is the implementation. Apply must return only
// once the change's event is acknowledged by Kafka (or there is nothing to publish).
type Applier interface {
	Apply(ctx context.Context, c pas.Change) (pas.Result, error)
}

// Handler answers SIU messages arriving over MLLP (it implements mllp.Handler).
type Handler struct {
	Mapper  *Mapper
	Gateway Applier
	Log     *slog.Logger
	// Now stamps acknowledgements; default time.Now.
	Now func() time.Time
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Handler) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Message implements mllp.Handler: parse, map, publish, acknowledge. AA means the event is
// on Kafka (or the message needs none); AE means the content is wrong; AR means the header
// is unacceptable or Kafka/Redis failed (the text says to retry).
//
// A message that asks for enhanced acknowledgement (MSH-15 or MSH-16 set) gets the replies it
// asks for instead, in order on the connection: an accept acknowledgement (CA once the event
// is on Kafka; CE when Kafka or Redis failed: resend; CR for an unacceptable header), as
// MSH-15 asks (AL always, NE never, ER only on CE/CR, SU only on CA; empty: AL), then the
// application acknowledgement (AA/AE/AR) as MSH-16 asks. An AE that no application
// acknowledgement would report is answered CE with the reason, so the error is never lost.
// Incoming acknowledgements (MSH-9 ACK) are not answered.
func (h *Handler) Message(ctx context.Context, frame []byte) [][]byte {
	msg, err := hl7.Parse(frame)
	if err != nil {
		hdr := header(frame)
		h.log().Warn("hl7 message rejected", "control_id", controlID(hdr), "ack", hl7.AR, "reason", err.Error())
		return [][]byte{hl7.Ack(hdr, hl7.Reject(hl7.CodeSegmentSequence, "", 0, "%s", err.Error()), "", h.now())}
	}
	if strings.EqualFold(msg.Header().Get(9, 1), "ACK") {
		h.log().Info("hl7 acknowledgement received and ignored", "control_id", controlID(msg))
		return nil
	}
	code, text, err := h.handle(ctx, msg)
	accept, app := strings.ToUpper(msg.Header().Get(15, 1)), strings.ToUpper(msg.Header().Get(16, 1))
	if accept == "" && app == "" {
		return [][]byte{hl7.AckAs(msg, code, err, text, h.now(), false)}
	}
	commit := hl7.CA
	switch {
	case code == hl7.AR && errors.Is(err, pas.ErrUnavailable):
		commit = hl7.CE
	case code == hl7.AR:
		commit = hl7.CR
	case code == hl7.AE && !wanted(app, false):
		commit = hl7.CE
	}
	var out [][]byte
	if wanted(accept, commit == hl7.CA) {
		cerr, ctext := err, ""
		if commit == hl7.CA {
			cerr, ctext = nil, "committed"
		}
		out = append(out, hl7.AckAs(msg, commit, cerr, ctext, h.now(), true))
	}
	if commit == hl7.CA && wanted(app, code == hl7.AA) {
		out = append(out, hl7.AckAs(msg, code, err, text, h.now(), true))
	}
	return out
}

// wanted reads an acknowledgement condition (HL7 table 0155) for an outcome.
func wanted(cond string, ok bool) bool {
	switch cond {
	case "NE":
		return false
	case "ER":
		return !ok
	case "SU":
		return ok
	}
	return true // AL, or empty in enhanced mode
}

// handle maps and publishes msg and says how to acknowledge it: the code, the text of an
// acceptance, and the error (which gives the text and ERR of a refusal).
func (h *Handler) handle(ctx context.Context, msg *hl7.Message) (code, text string, err error) {
	log := h.log().With("type", msg.Header().Get(9, 1)+"^"+msg.Header().Get(9, 2), "control_id", controlID(msg))
	change, ignored, err := h.Mapper.Map(msg)
	if err != nil {
		log.Warn("hl7 message refused", "ack", ackCode(err), "reason", err.Error())
		return ackCode(err), "", err
	}
	if change == nil {
		log.Info("hl7 message accepted; nothing to publish", "reason", ignored)
		return hl7.AA, "ignored: " + ignored, nil
	}
	log = log.With("appointment_id", change.AppointmentID)
	res, err := h.Gateway.Apply(ctx, *change)
	switch {
	case errors.Is(err, pas.ErrUnavailable):
		log.Error("hl7 message not accepted: publishing failed; the sender should retry", "ack", hl7.AR, "err", err)
		return hl7.AR, "", &hl7.Error{Ack: hl7.AR, Code: hl7.CodeInternal,
			Text: "temporarily unable to publish the event; send the message again later", Err: err}
	case err != nil:
		he := &hl7.Error{Ack: hl7.AE, Code: hl7.CodeInternal, Text: err.Error(), Err: err}
		// A fact missing from an update the gateway could not fill from what it holds, in
		// the mapper's words and with its location.
		errors.As(err, &he)
		log.Warn("hl7 message refused", "ack", he.Ack, "reason", he.Error())
		return he.Ack, "", he
	case res.Event == nil:
		log.Info("hl7 message accepted; nothing to publish", "reason", res.Ignored)
		return hl7.AA, "ignored: " + res.Ignored, nil
	}
	log.Info("hl7 message accepted", "event_type", string(res.Event.Type), "booking_version", res.Event.Version, "event_id", res.Event.EventID)
	return hl7.AA, fmt.Sprintf("%s version %d published", res.Event.Type, res.Event.Version), nil
}

// TooLarge implements mllp.Handler with an AR naming the message when its header is
// readable.
func (h *Handler) TooLarge(_ context.Context, prefix []byte) []byte {
	hdr := header(prefix)
	h.log().Warn("hl7 message rejected: too large", "control_id", controlID(hdr), "ack", hl7.AR)
	return hl7.Ack(hdr, hl7.Reject(hl7.CodeInternal, "", 0, "message larger than this receiver accepts"), "", h.now())
}

// header parses only the first segment of a frame, so a message whose body is broken (or
// cut off) can still be answered with its control id.
func header(frame []byte) *hl7.Message {
	first := bytes.TrimLeft(frame, "\r\n\t ")
	if i := bytes.IndexAny(first, "\r\n"); i >= 0 {
		first = first[:i]
	}
	m, err := hl7.Parse(first)
	if err != nil {
		return nil
	}
	return m
}

func controlID(m *hl7.Message) string {
	if m == nil {
		return ""
	}
	return m.Header().Get(10, 1)
}

func ackCode(err error) string {
	var he *hl7.Error
	if errors.As(err, &he) {
		return he.Ack
	}
	return hl7.AR
}
