// Package hl7 reads HL7 version 2.x messages in the ER7 ("pipe and hat") encoding: the
// delimiters a message declares in MSH, segments ended by CR (or LF, or CRLF), repetitions,
// components, subcomponents and escape sequences; HL7 date/times; and it writes the
// acknowledgements (ACK with MSA, and ERR on error) a receiver owes the sender.
//
// It is deliberately small: values are read by position (PID-3, SCH-11.4) and unescaped on
// access, with no per-version message structures. MLLP framing is in package mllp; what the
// fields mean for appointments is in package siu.
package hl7

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrMalformed wraps every reason Parse refuses a message.
var ErrMalformed = errors.New("malformed HL7 message")

// MaxSegments bounds the segments of one message, so a hostile frame of empty lines cannot
// make Parse allocate without limit.
const MaxSegments = 10000

// Delimiters are the separators and escape character a message declares in MSH-1 and MSH-2.
// A zero byte means the message does not use that one (old messages may omit the escape or
// subcomponent character).
type Delimiters struct {
	Field, Component, Repetition, Escape, Subcomponent byte
}

// DefaultDelimiters are the ones nearly every sender uses: |^~\&.
var DefaultDelimiters = Delimiters{'|', '^', '~', '\\', '&'}

// encoding returns the MSH-2 text for d.
func (d Delimiters) encoding() string {
	var b strings.Builder
	for _, c := range []byte{d.Component, d.Repetition, d.Escape, d.Subcomponent} {
		if c == 0 {
			break
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Message is a parsed HL7 v2 message. The first segment is MSH.
type Message struct {
	Delims   Delimiters
	Segments []Segment
}

// Segment is one segment: its name and its fields, still escaped.
type Segment struct {
	Name string
	// fields[0] is the name; for MSH, fields[1] is MSH-1 (the field separator itself), so that
	// for every segment fields[n] is field n as the standard numbers it.
	fields []string
	d      *Delimiters
}

// Parse reads one message. It accepts segments ended by CR, LF or CRLF, ignores blank lines,
// and takes the delimiters from MSH. Only the header is checked here; what a receiver
// requires of the other segments is its own business.
func Parse(b []byte) (*Message, error) {
	s := string(b)
	if !utf8.ValidString(s) {
		// Not UTF-8: read it as ISO 8859-1 (MSH-18 "8859/1"), the other character set UK
		// senders use, so text fields keep their accents instead of becoming U+FFFD.
		s = latin1(b)
	}
	s = strings.TrimLeft(s, "\r\n\t ")
	if !strings.HasPrefix(s, "MSH") {
		if strings.HasPrefix(s, "FHS") || strings.HasPrefix(s, "BHS") {
			return nil, fmt.Errorf("%w: batches (FHS/BHS) are not accepted; send one message per frame", ErrMalformed)
		}
		return nil, fmt.Errorf("%w: does not start with an MSH segment", ErrMalformed)
	}
	if len(s) < 8 {
		return nil, fmt.Errorf("%w: MSH segment too short to declare its delimiters", ErrMalformed)
	}
	d := Delimiters{Field: s[3]}
	enc := s[4:]
	if i := strings.IndexByte(enc, d.Field); i >= 0 {
		enc = enc[:i]
	} else {
		return nil, fmt.Errorf("%w: MSH-2 encoding characters are not followed by a field separator", ErrMalformed)
	}
	// 2.7 added a fifth encoding character (truncation, '#'); it is not an escape we act on.
	if len(enc) < 1 || len(enc) > 5 {
		return nil, fmt.Errorf("%w: MSH-2 has %d encoding characters, want 4", ErrMalformed, len(enc))
	}
	slots := []*byte{&d.Component, &d.Repetition, &d.Escape, &d.Subcomponent}
	for i := 0; i < len(enc) && i < len(slots); i++ {
		*slots[i] = enc[i]
	}
	if err := d.check(enc); err != nil {
		return nil, err
	}

	m := &Message{Delims: d}
	for line := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if len(m.Segments) >= MaxSegments {
			return nil, fmt.Errorf("%w: more than %d segments", ErrMalformed, MaxSegments)
		}
		seg, err := m.parseSegment(line)
		if err != nil {
			return nil, fmt.Errorf("%w: segment %d: %v", ErrMalformed, len(m.Segments)+1, err)
		}
		m.Segments = append(m.Segments, seg)
	}
	for _, seg := range m.Segments[1:] {
		if seg.Name == "MSH" {
			return nil, fmt.Errorf("%w: a second MSH segment: send one message per frame", ErrMalformed)
		}
	}
	return m, nil
}

func (d Delimiters) check(enc string) error {
	all := string(d.Field) + enc
	for i := 0; i < len(all); i++ {
		c := all[i]
		if c < 0x21 || c > 0x7e || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') {
			return fmt.Errorf("%w: delimiter %q in MSH-1/MSH-2 is not a printable punctuation character", ErrMalformed, c)
		}
		if strings.IndexByte(all[i+1:], c) >= 0 {
			return fmt.Errorf("%w: delimiter %q declared twice in MSH-1/MSH-2", ErrMalformed, c)
		}
	}
	return nil
}

func (m *Message) parseSegment(line string) (Segment, error) {
	d := &m.Delims
	var fields []string
	if strings.HasPrefix(line, "MSH") {
		if len(line) < 4 || line[3] != d.Field {
			return Segment{}, errors.New("MSH segment with another field separator")
		}
		// MSH-1 is the separator itself and MSH-2 the encoding characters, which must not be
		// split on the delimiters they declare.
		rest := line[4:]
		enc, after, _ := strings.Cut(rest, string(d.Field))
		fields = append([]string{"MSH", string(d.Field), enc}, splitAll(after, d.Field)...)
		if !strings.Contains(rest, string(d.Field)) {
			fields = fields[:3]
		}
	} else {
		fields = splitAll(line, d.Field)
	}
	name := fields[0]
	if !validName(name) {
		return Segment{}, fmt.Errorf("segment name %q is not three upper-case letters or digits", clip(name, 8))
	}
	return Segment{Name: name, fields: fields, d: d}, nil
}

func splitAll(s string, sep byte) []string { return strings.Split(s, string(sep)) }

func validName(n string) bool {
	if len(n) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		c := n[i]
		if !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') {
			return false
		}
	}
	return n[0] >= 'A' && n[0] <= 'Z'
}

// clip shortens s for an error message, keeping it valid UTF-8.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Header returns the MSH segment.
func (m *Message) Header() Segment { return m.Segments[0] }

// Segment returns the first segment named name, and whether there is one.
func (m *Message) Segment(name string) (Segment, bool) {
	for _, s := range m.Segments {
		if s.Name == name {
			return s, true
		}
	}
	return Segment{}, false
}

// All returns every segment named name, in message order.
func (m *Message) All(name string) []Segment {
	var out []Segment
	for _, s := range m.Segments {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// Fields reports the number of fields the segment carries (its highest field number).
func (s Segment) Fields() int { return max(len(s.fields)-1, 0) }

// Field returns field n (1-based, as the standard numbers them: PID-3 is Field(3)). A field
// beyond the end of the segment is empty.
func (s Segment) Field(n int) Field {
	if n < 1 || n >= len(s.fields) {
		return Field{d: s.d}
	}
	if s.Name == "MSH" && n <= 2 {
		// MSH-1 and MSH-2 are delimiters, not data: never split or unescape them.
		return Field{raw: s.fields[n], d: s.d, literal: true}
	}
	return Field{raw: s.fields[n], d: s.d}
}

// Get is shorthand for the text of field n, first repetition, component c (1-based), first
// subcomponent, unescaped: Get(3, 1) is PID-3.1.
func (s Segment) Get(n, c int) string { return s.Field(n).Comp(c).String() }

// Field is one field of a segment with all its repetitions, still escaped.
type Field struct {
	raw     string
	d       *Delimiters
	literal bool
}

// Empty reports whether the field has no value. HL7's explicit null ("") counts as empty.
func (f Field) Empty() bool { return f.raw == "" || f.raw == `""` }

// Reps returns the field's repetitions; an empty field has none.
func (f Field) Reps() []Rep {
	if f.Empty() {
		return nil
	}
	if f.literal || f.d.Repetition == 0 {
		return []Rep{{raw: f.raw, d: f.d, literal: f.literal}}
	}
	parts := splitAll(f.raw, f.d.Repetition)
	out := make([]Rep, len(parts))
	for i, p := range parts {
		out[i] = Rep{raw: p, d: f.d}
	}
	return out
}

// Rep returns repetition i (0-based) or an empty one.
func (f Field) Rep(i int) Rep {
	reps := f.Reps()
	if i < 0 || i >= len(reps) {
		return Rep{d: f.d}
	}
	return reps[i]
}

// Comp is component c (1-based) of the first repetition.
func (f Field) Comp(c int) Component { return f.Rep(0).Comp(c) }

// String is the unescaped text of the first repetition's first component.
func (f Field) String() string { return f.Comp(1).String() }

// Rep is one repetition of a field.
type Rep struct {
	raw     string
	d       *Delimiters
	literal bool
}

// Empty reports whether the repetition has no value.
func (r Rep) Empty() bool { return r.raw == "" || r.raw == `""` }

// Comp returns component c (1-based); a component beyond the end is empty.
func (r Rep) Comp(c int) Component {
	if r.literal {
		if c == 1 {
			return Component{raw: r.raw, d: r.d, literal: true}
		}
		return Component{d: r.d}
	}
	if c < 1 || r.d.Component == 0 && c > 1 {
		return Component{d: r.d}
	}
	if r.d.Component == 0 {
		return Component{raw: r.raw, d: r.d}
	}
	raw := r.raw
	for i := 1; i < c; i++ {
		j := strings.IndexByte(raw, r.d.Component)
		if j < 0 {
			return Component{d: r.d}
		}
		raw = raw[j+1:]
	}
	if j := strings.IndexByte(raw, r.d.Component); j >= 0 {
		raw = raw[:j]
	}
	return Component{raw: raw, d: r.d}
}

// Component is one component of a repetition; it may hold subcomponents.
type Component struct {
	raw     string
	d       *Delimiters
	literal bool
}

// Sub returns the unescaped text of subcomponent s (1-based).
func (c Component) Sub(s int) string {
	if c.literal {
		if s == 1 {
			return c.raw
		}
		return ""
	}
	raw := c.raw
	if c.d.Subcomponent != 0 {
		parts := splitAll(raw, c.d.Subcomponent)
		if s < 1 || s > len(parts) {
			return ""
		}
		raw = parts[s-1]
	} else if s != 1 {
		return ""
	}
	if raw == `""` {
		return ""
	}
	return Unescape(raw, *c.d)
}

// String is the unescaped text of the first subcomponent, as HAPI's terser reads a
// composite at a primitive position.
func (c Component) String() string { return c.Sub(1) }

func latin1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}
