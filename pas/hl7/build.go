package hl7

import "strings"

// Raw returns the field as ER7 text in DefaultDelimiters, escaped as they require: the same
// text whatever delimiters the message declared, so values from messages of different senders
// can be kept and compared. "" for an empty field; HL7's explicit null `""` stays `""`.
func (f Field) Raw() string {
	if f.literal || f.d == nil || *f.d == DefaultDelimiters || f.raw == `""` {
		return f.raw
	}
	d := *f.d
	split := func(s string, sep byte) []string {
		if sep == 0 {
			return []string{s}
		}
		return splitAll(s, sep)
	}
	var b strings.Builder
	for i, rep := range split(f.raw, d.Repetition) {
		if i > 0 {
			b.WriteByte(DefaultDelimiters.Repetition)
		}
		for j, comp := range split(rep, d.Component) {
			if j > 0 {
				b.WriteByte(DefaultDelimiters.Component)
			}
			for k, sub := range split(comp, d.Subcomponent) {
				if k > 0 {
					b.WriteByte(DefaultDelimiters.Subcomponent)
				}
				if sub == `""` {
					b.WriteString(sub)
					continue
				}
				b.WriteString(Escape(Unescape(sub, d), DefaultDelimiters))
			}
		}
	}
	return b.String()
}

// NewSegment returns a segment named name holding the given fields (ER7 text in
// DefaultDelimiters, as Field.Raw returns it, by field number). With NewMessage it rebuilds a
// message from fields kept from several messages, to be read like a parsed one.
func NewSegment(name string, fields map[int]string) Segment {
	n := 0
	for k := range fields {
		n = max(n, k)
	}
	fs := make([]string, n+1)
	fs[0] = name
	for k, v := range fields {
		if k > 0 {
			fs[k] = v
		}
	}
	d := DefaultDelimiters
	return Segment{Name: name, fields: fs, d: &d}
}

// NewMessage returns a message of the given segments in DefaultDelimiters. It need not start
// with MSH; Header must not be called on one that does not.
func NewMessage(segs ...Segment) *Message {
	return &Message{Delims: DefaultDelimiters, Segments: segs}
}
