package hl7

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParse feeds arbitrary frames to the parser and reads every position of what it
// accepts: nothing may panic, an accepted message starts with MSH, text read back is valid
// UTF-8, and an acknowledgement of it parses again.
func FuzzParse(f *testing.F) {
	f.Add(wire(s12))
	f.Add([]byte("MSH#$*!@#PAS#RXX01###20250310091500##SIU$S12#C1#P#2.4\rPID#1##111$$$NHS$NH*222##A!F!B!X41!\r"))
	f.Add([]byte("MSH|^~|PAS\nPID|1||12\\34&5^^^NHS^NH\n"))
	f.Add([]byte("MSH|^~\\&|P|X|||2025||SIU^S15|1|P|2.3\rSCH|\\X\\|\\.br\\|\\Cxx\\\r"))
	f.Add([]byte("MSH|^~\\&#|A"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		if m.Header().Name != "MSH" {
			t.Fatal("accepted a message that does not start with MSH")
		}
		for _, s := range m.Segments {
			for n := 0; n <= s.Fields()+1; n++ {
				for _, r := range s.Field(n).Reps() {
					for c := 0; c <= 3; c++ {
						comp := r.Comp(c)
						for sc := 0; sc <= 3; sc++ {
							if v := comp.Sub(sc); !utf8.ValidString(v) && utf8.Valid(b) {
								t.Fatalf("%s-%d: invalid UTF-8 from valid input", s.Name, n)
							}
						}
					}
				}
			}
		}
		if _, err := Parse(Ack(m, nil, "ok", time.Unix(0, 0))); err != nil {
			t.Fatalf("ACK of an accepted message does not parse: %v", err)
		}
		if _, err := Parse(Ack(m, Errorf(CodeDataType, "PID", 7, "x|y"), "", time.Unix(0, 0))); err != nil {
			t.Fatalf("AE of an accepted message does not parse: %v", err)
		}
	})
}

// FuzzEscape checks that escaping then unescaping gives the text back (line breaks aside,
// which HL7 turns into \.br\ and reads back as LF).
func FuzzEscape(f *testing.F) {
	f.Add(`a|b^c&d~e\f`)
	f.Add(`\F\ \X41\`)
	f.Fuzz(func(t *testing.T, s string) {
		s = strings.NewReplacer("\r", "", "\n", "").Replace(s)
		if got := Unescape(Escape(s, DefaultDelimiters), DefaultDelimiters); got != s {
			t.Fatalf("round trip of %q gave %q", s, got)
		}
	})
}
