package hl7

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Acknowledgement codes (HL7 table 0008, original mode).
const (
	AA = "AA" // accepted: the message's effects are durable
	AE = "AE" // application error: the content is wrong; sending it again unchanged will fail again
	AR = "AR" // application reject: header unacceptable, or the receiver could not process it now
)

// Accept acknowledgement codes (table 0008, enhanced mode): the receiver has committed the
// message to safe storage (CA), could not (CE: try again), or refuses it (CR).
const (
	CA = "CA"
	CE = "CE"
	CR = "CR"
)

// Error codes of HL7 table 0357 that a receiver reports in ERR.
const (
	CodeSegmentSequence    = 100
	CodeRequiredMissing    = 101
	CodeDataType           = 102
	CodeTableValue         = 103
	CodeUnsupportedType    = 200
	CodeUnsupportedEvent   = 201
	CodeUnsupportedProcID  = 202
	CodeUnsupportedVersion = 203
	CodeUnknownKey         = 204
	CodeInternal           = 207
)

var codeText = map[int]string{
	CodeSegmentSequence:    "Segment sequence error",
	CodeRequiredMissing:    "Required field missing",
	CodeDataType:           "Data type error",
	CodeTableValue:         "Table value not found",
	CodeUnsupportedType:    "Unsupported message type",
	CodeUnsupportedEvent:   "Unsupported event code",
	CodeUnsupportedProcID:  "Unsupported processing id",
	CodeUnsupportedVersion: "Unsupported version id",
	CodeUnknownKey:         "Unknown key identifier",
	CodeInternal:           "Application internal error",
}

// Error is a reason to answer a message with AE or AR. Its text goes back to the sender and
// into logs, so it names fields and never quotes their values.
type Error struct {
	Ack     string // AE or AR
	Code    int    // HL7 table 0357
	Segment string // where, when known: "SCH"
	Field   int    // field number within Segment, when known
	Text    string
	Err     error // wrapped cause, if any
}

func (e *Error) Error() string {
	loc := ""
	if e.Segment != "" {
		loc = e.Segment
		if e.Field > 0 {
			loc += "-" + strconv.Itoa(e.Field)
		}
		loc += ": "
	}
	return loc + e.Text
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with ack code AE (the content is wrong) at segment-field.
func Errorf(code int, segment string, field int, format string, args ...any) *Error {
	return &Error{Ack: AE, Code: code, Segment: segment, Field: field, Text: fmt.Sprintf(format, args...)}
}

// Reject returns an *Error with ack code AR.
func Reject(code int, segment string, field int, format string, args ...any) *Error {
	return &Error{Ack: AR, Code: code, Segment: segment, Field: field, Text: fmt.Sprintf(format, args...)}
}

// ackSeq numbers acknowledgements; seeded from the clock so a restarted receiver does not
// reuse the control ids of its previous run.
var ackSeq atomic.Uint64

func init() { ackSeq.Store(uint64(time.Now().UnixMilli()) * 1000) }

// Ack builds the acknowledgement of msg (which may be nil when the frame could not be
// parsed at all: the sender then gets an AR it cannot correlate, which still beats a
// time-out). err nil means AA with text (which may be empty); otherwise err decides AE or AR,
// and an error that is not an *Error is an AR with code 207 (internal: try again later).
func Ack(msg *Message, err error, text string, now time.Time) []byte {
	return AckAs(msg, "", err, text, now, false)
}

// AckAs is Ack with the acknowledgement code given (an accept code CA, CE or CR, or an
// application code; "" takes it from err as Ack does), for enhanced acknowledgement mode. err,
// if any, still gives the text and the ERR segment. enhanced sets MSH-15 and MSH-16 of the
// reply to NE: an acknowledgement wants no acknowledgement itself.
func AckAs(msg *Message, code string, err error, text string, now time.Time, enhanced bool) []byte {
	d := DefaultDelimiters
	var sendApp, sendFac, recvApp, recvFac, procID, version, trigger, ctrlID string
	if msg != nil {
		h := msg.Header()
		if complete(msg.Delims) {
			d = msg.Delims
		}
		raw := func(n int) string {
			if d == msg.Delims {
				return h.Field(n).raw
			}
			return Escape(h.Field(n).String(), d)
		}
		// The acknowledgement goes back the way the message came: sender and receiver swap.
		sendApp, sendFac, recvApp, recvFac = raw(5), raw(6), raw(3), raw(4)
		procID, version = raw(11), raw(12)
		trigger = Escape(h.Get(9, 2), d)
		ctrlID = raw(10)
	}
	if sendApp == "" {
		sendApp = "DNARISK"
	}
	if procID == "" {
		procID = "P"
	}
	if version == "" {
		version = "2.5"
	}
	given := code
	code, ackText := AA, text
	var he *Error
	if err != nil {
		if !errors.As(err, &he) {
			he = &Error{Ack: AR, Code: CodeInternal, Text: err.Error()}
		}
		code, ackText = he.Ack, he.Error()
	}
	if given != "" {
		code = given
	}
	typ := "ACK"
	if trigger != "" {
		typ += string(d.Component) + trigger
		// The message structure (MSH-9.3) exists from v2.3.1 on; v2.3's MSH-9 has two parts.
		if v, _, _ := strings.Cut(version, string(d.Component)); v != "2.3" && v != "2.3.0" && !before23(v) {
			typ += string(d.Component) + "ACK"
		}
	}
	f := string(d.Field)
	var b strings.Builder
	b.WriteString("MSH" + f + d.encoding())
	fields := []string{sendApp, sendFac, recvApp, recvFac, FormatTime(now), "", typ,
		strconv.FormatUint(ackSeq.Add(1), 10), procID, version}
	if enhanced {
		fields = append(fields, "", "", "NE", "NE")
	}
	for _, v := range fields {
		b.WriteString(f + v)
	}
	b.WriteString("\rMSA" + f + code + f + ctrlID)
	if ackText != "" {
		b.WriteString(f + Escape(ackText, d))
	}
	if he != nil {
		b.WriteString("\r" + errSegment(he, version, d))
	}
	b.WriteString("\r")
	return []byte(b.String())
}

func complete(d Delimiters) bool {
	return d.Component != 0 && d.Repetition != 0 && d.Escape != 0 && d.Subcomponent != 0
}

// errSegment writes ERR in the layout of the message's version: ERR-1 (segment^sequence^
// field^code) before 2.5, ERR-2/3/4/8 (location, code, severity, user message) from 2.5 on.
func errSegment(e *Error, version string, d Delimiters) string {
	f, c, s := string(d.Field), string(d.Component), string(d.Subcomponent)
	name := codeText[e.Code]
	text := Escape(e.Error(), d)
	field := ""
	if e.Field > 0 {
		field = strconv.Itoa(e.Field)
	}
	seq := ""
	if e.Segment != "" {
		seq = "1"
	}
	if before25(version) {
		return "ERR" + f + e.Segment + c + seq + c + field + c + strconv.Itoa(e.Code) + s + Escape(name, d) + s + "HL70357"
	}
	return "ERR" + f + f + e.Segment + c + seq + c + field + f + strconv.Itoa(e.Code) + c + Escape(name, d) + c + "HL70357" +
		f + "E" + f + f + f + f + text
}

func before23(version string) bool {
	major, minor, ok := versionParts(version)
	return ok && (major < 2 || major == 2 && minor < 3)
}

func before25(version string) bool {
	major, minor, ok := versionParts(version)
	return ok && (major < 2 || major == 2 && minor < 5)
}

// versionParts reads "2.5.1" as 2, 5.
func versionParts(v string) (major, minor int, ok bool) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	var err1, err2 error
	major, err1 = strconv.Atoi(parts[0])
	minor, err2 = strconv.Atoi(parts[1])
	return major, minor, err1 == nil && err2 == nil
}

// Version reads MSH-12 ("2.5.1", or "2.4^GBR^…" with an internationalisation code) as
// major and minor numbers.
func (m *Message) Version() (major, minor int, ok bool) {
	return versionParts(m.Header().Get(12, 1))
}
