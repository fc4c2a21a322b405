package events

import (
	"strconv"
	"time"
)

// decodeFast decodes the common shape of an appointment event without reflection: one JSON
// object with the contract's field names spelled exactly, each at most once, no null, no
// escape in any string, numbers that parse. It reports false on anything else, and then
// DecodeAppointment decodes with encoding/json, which also writes every error message: so
// what is accepted, what is refused and why, and every value, are encoding/json's
// (FuzzDecodeAppointment checks the two paths against each other on every input).
//
// Where it accepts, it builds the values with the same functions encoding/json calls:
// time.Time.UnmarshalJSON on the quoted text, strconv.ParseInt and strconv.ParseFloat on the
// number literal. The input must be valid UTF-8 (DecodeAppointment checks first).
func decodeFast(b []byte, a *Appointment) bool {
	p := fastParser{b: b}
	p.ws()
	if !p.object(func(key []byte) bool { return p.appointmentField(key, a) }) {
		return false
	}
	p.ws()
	return p.i == len(p.b)
}

type fastParser struct {
	b    []byte
	i    int
	seen uint64 // fields of the object being read, by bit, to refuse duplicates
}

// Field bits, for duplicate detection: the appointment's, the booking's and the contact's
// fields never share an object, so their bits may overlap across objects but each object
// saves and restores seen around its nested objects.
const (
	fSchema = 1 << iota
	fEventID
	fType
	fEventTime
	fAppointmentID
	fVersion
	fPatient
	fCancelledBy
	fBooking
)

const (
	fSpecialty = 1 << iota
	fClinic
	fFirstVisit
	fStart
	fBookedAt
	fAgeBand
	fDeprivation
	fContact
	fExtra
)

const (
	fSMS = 1 << iota
	fOptOut
)

func (p *fastParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// object reads {"key": value, ...} calling field for each key with the parser at the value;
// field reads the value. It restores seen afterwards, for nested objects.
func (p *fastParser) object(field func(key []byte) bool) bool {
	outer := p.seen
	p.seen = 0
	defer func() { p.seen = outer }()
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		return false
	}
	p.i++
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return true
	}
	for {
		key, ok := p.rawString()
		if !ok {
			return false
		}
		p.ws()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return false
		}
		p.i++
		p.ws()
		if !field(key) {
			return false
		}
		p.ws()
		if p.i >= len(p.b) {
			return false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.ws()
		case '}':
			p.i++
			return true
		default:
			return false
		}
	}
}

// once marks bit seen in the current object, false if it already was.
func (p *fastParser) once(bit uint64) bool {
	if p.seen&bit != 0 {
		return false
	}
	p.seen |= bit
	return true
}

// rawString reads a string without escapes or control characters and returns its contents.
func (p *fastParser) rawString() ([]byte, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false
	}
	start := p.i + 1
	for j := start; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			p.i = j + 1
			return p.b[start:j], true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// str reads a string value into *dst, sharing the constant's memory when it is one of known.
func (p *fastParser) str(dst *string, known ...string) bool {
	s, ok := p.rawString()
	if !ok {
		return false
	}
	for _, k := range known {
		if string(s) == k {
			*dst = k
			return true
		}
	}
	*dst = string(s)
	return true
}

// timeValue reads a quoted time with time.Time's own UnmarshalJSON, as encoding/json does.
func (p *fastParser) timeValue(dst *time.Time) bool {
	start := p.i
	if _, ok := p.rawString(); !ok {
		return false
	}
	return dst.UnmarshalJSON(p.b[start:p.i]) == nil
}

// number reads a JSON number literal (RFC 8259 grammar) and returns its text.
func (p *fastParser) number() ([]byte, bool) {
	start := p.i
	b := p.b
	i := p.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return nil, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return nil, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return nil, false
		}
	}
	p.i = i
	return b[start:i], true
}

// intValue reads a number into an int as encoding/json does (strconv.ParseInt: no fraction,
// no exponent, in range).
func (p *fastParser) intValue(dst *int) bool {
	lit, ok := p.number()
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(string(lit), 10, 64)
	if err != nil {
		return false
	}
	*dst = int(n)
	return true
}

func (p *fastParser) boolValue(dst *bool) bool {
	switch {
	case len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "true":
		*dst = true
		p.i += 4
	case len(p.b)-p.i >= 5 && string(p.b[p.i:p.i+5]) == "false":
		*dst = false
		p.i += 5
	default:
		return false
	}
	return true
}

func (p *fastParser) appointmentField(key []byte, a *Appointment) bool {
	switch string(key) {
	case "schema":
		return p.once(fSchema) && p.str(&a.Schema, AppointmentSchema)
	case "event_id":
		return p.once(fEventID) && p.str(&a.EventID)
	case "type":
		var s string
		ok := p.once(fType) && p.str(&s, string(Booked), string(Rescheduled), string(Cancelled), string(Attended), string(DidNotAttend))
		a.Type = Type(s)
		return ok
	case "event_time":
		return p.once(fEventTime) && p.timeValue(&a.EventTime)
	case "appointment_id":
		return p.once(fAppointmentID) && p.str(&a.AppointmentID)
	case "booking_version":
		return p.once(fVersion) && p.intValue(&a.Version)
	case "patient":
		return p.once(fPatient) && p.str(&a.Patient)
	case "cancelled_by":
		var s string
		ok := p.once(fCancelledBy) && p.str(&s, string(ByPatient), string(ByHospital))
		a.CancelledBy = CancelledBy(s)
		return ok
	case "booking":
		if !p.once(fBooking) {
			return false
		}
		bk := &Booking{}
		a.Booking = bk
		return p.object(func(k []byte) bool { return p.bookingField(k, bk) })
	}
	return false
}

func (p *fastParser) bookingField(key []byte, bk *Booking) bool {
	switch string(key) {
	case "specialty":
		return p.once(fSpecialty) && p.str(&bk.Specialty)
	case "clinic":
		return p.once(fClinic) && p.str(&bk.Clinic)
	case "first_visit":
		return p.once(fFirstVisit) && p.boolValue(&bk.FirstVisit)
	case "start":
		return p.once(fStart) && p.timeValue(&bk.Start)
	case "booked_at":
		return p.once(fBookedAt) && p.timeValue(&bk.BookedAt)
	case "age_band":
		return p.once(fAgeBand) && p.str(&bk.AgeBand, AgeBands...)
	case "deprivation_decile":
		if !p.once(fDeprivation) {
			return false
		}
		var n int
		if !p.intValue(&n) {
			return false
		}
		bk.Deprivation = &n
		return true
	case "contact":
		if !p.once(fContact) {
			return false
		}
		c := &bk.Contact
		return p.object(func(k []byte) bool {
			switch string(k) {
			case "sms":
				return p.once(fSMS) && p.boolValue(&c.SMS)
			case "opt_out":
				return p.once(fOptOut) && p.boolValue(&c.OptOut)
			}
			return false
		})
	case "extra":
		if !p.once(fExtra) {
			return false
		}
		bk.Extra = Extra{}
		return p.object(func(k []byte) bool {
			name := string(k)
			if _, dup := bk.Extra[name]; dup {
				return false
			}
			lit, ok := p.number()
			if !ok {
				return false
			}
			v, err := strconv.ParseFloat(string(lit), 64)
			if err != nil {
				return false
			}
			bk.Extra[name] = v
			return true
		})
	}
	return false
}
