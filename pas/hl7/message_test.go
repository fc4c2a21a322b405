package hl7

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// s12 is an SIU^S12 as an NHS trust's PAS might send it (v2.5.1), lines ended by \n here and
// by \r on the wire.
const s12 = `MSH|^~\&|PAS|RXX01|DNARISK|RXX01|20250310091500||SIU^S12^SIU_S12|MSG00001|P|2.5.1|||AL|NE||UNICODE UTF-8
SCH|PLC123^CRS|APT100234^PAS|||ORTHO-NEW^Orthopaedic new patient clinic||ROUTINE^Routine^HL70276|NEW^New patient^LOCAL|30|min^minutes^ISO+|^^M30^20250402093000
TQ1|1|||||30^min&minutes&UCUM|20250402093000|20250402100000
PID|1||9434765919^^^NHS^NH~A123456^^^RXX01^MR||SMITH^JANE^^^MRS||19800615|F|||1 HIGH STREET^^LEEDS^^LS1 1AA^GBR||^PRN^PH^^44^113^4960000~^ORN^CP^^44^7700^900123
AIS|1|A|110^Trauma \T\ Orthopaedics^NHSTFC|20250402093000|||30|min
`

func wire(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r")) }

func TestParseSIU(t *testing.T) {
	m, err := Parse(wire(s12))
	if err != nil {
		t.Fatal(err)
	}
	if m.Delims != DefaultDelimiters {
		t.Fatalf("delimiters %+v", m.Delims)
	}
	if len(m.Segments) != 5 {
		t.Fatalf("%d segments", len(m.Segments))
	}
	h := m.Header()
	for _, c := range []struct {
		got, want string
	}{
		{h.Field(1).String(), "|"},
		{h.Field(2).String(), `^~\&`},
		{h.Get(3, 1), "PAS"},
		{h.Get(9, 1), "SIU"},
		{h.Get(9, 2), "S12"},
		{h.Get(9, 3), "SIU_S12"},
		{h.Get(10, 1), "MSG00001"},
		{h.Get(12, 1), "2.5.1"},
		{h.Get(18, 1), "UNICODE UTF-8"},
		{h.Get(99, 1), ""},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	sch, _ := m.Segment("SCH")
	if got := sch.Get(2, 1); got != "APT100234" {
		t.Errorf("SCH-2.1 = %q", got)
	}
	if got := sch.Get(11, 4); got != "20250402093000" {
		t.Errorf("SCH-11.4 = %q", got)
	}
	tq1, _ := m.Segment("TQ1")
	if got := tq1.Field(6).Comp(2).Sub(2); got != "minutes" {
		t.Errorf("TQ1-6.2.2 = %q", got)
	}
	pid, _ := m.Segment("PID")
	reps := pid.Field(3).Reps()
	if len(reps) != 2 || reps[1].Comp(1).String() != "A123456" || reps[1].Comp(5).String() != "MR" {
		t.Errorf("PID-3 repetitions wrong: %d", len(reps))
	}
	if got := pid.Field(13).Rep(1).Comp(3).String(); got != "CP" {
		t.Errorf("PID-13[1].3 = %q", got)
	}
	ais, _ := m.Segment("AIS")
	if got := ais.Get(3, 2); got != "Trauma & Orthopaedics" {
		t.Errorf("escaped AIS-3.2 = %q", got)
	}
	if _, ok := m.Segment("ZZZ"); ok {
		t.Error("found a segment that is not there")
	}
	if n := len(m.All("PID")); n != 1 {
		t.Errorf("All(PID) = %d", n)
	}
}

func TestSegmentEnds(t *testing.T) {
	for name, sep := range map[string]string{"CR": "\r", "LF": "\n", "CRLF": "\r\n", "CR and blank lines": "\r\r\n\r"} {
		t.Run(name, func(t *testing.T) {
			m, err := Parse([]byte(strings.ReplaceAll(s12, "\n", sep)))
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Segments) != 5 {
				t.Fatalf("%d segments", len(m.Segments))
			}
		})
	}
}

func TestDeclaredDelimiters(t *testing.T) {
	// The same header with every delimiter changed: # field, $ component, * repetition,
	// ! escape, @ subcomponent.
	msg := "MSH#$*!@#PAS#RXX01###20250310091500##SIU$S12#C1#P#2.4\rPID#1##111$$$NHS$NH*222$$$X$MR##A!F!B!S!C!T!D!R!E!\r"
	m, err := Parse([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	if m.Delims != (Delimiters{'#', '$', '*', '!', '@'}) {
		t.Fatalf("delimiters %+v", m.Delims)
	}
	pid, _ := m.Segment("PID")
	if got := pid.Field(3).Rep(1).Comp(5).String(); got != "MR" {
		t.Errorf("PID-3[1].5 = %q", got)
	}
	if got := pid.Get(5, 1); got != "A#B$C@D*E!" {
		t.Errorf("unescaped = %q", got)
	}
	if got := m.Header().Get(9, 2); got != "S12" {
		t.Errorf("MSH-9.2 = %q", got)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, c := range []struct{ name, msg, want string }{
		{"empty", "", "does not start with an MSH"},
		{"no MSH", "PID|1||123\rSCH|1\r", "does not start with an MSH"},
		{"batch", "BHS|^~\\&|PAS\rMSH|^~\\&|A\r", "batches"},
		{"short MSH", "MSH|^~", "too short"},
		{"no field after MSH-2", "MSH|^~\\&", "not followed by a field separator"},
		{"duplicate delimiter", "MSH|^^\\&|PAS\r", "declared twice"},
		{"letter delimiter", "MSH|^~a&|PAS\r", "printable punctuation"},
		{"bad segment name", "MSH|^~\\&|PAS\rpid|1\r", "segment name"},
		{"two messages", "MSH|^~\\&|PAS\rMSH|^~\\&|PAS\r", "second MSH"},
		{"too many encoding chars", "MSH|^~\\&#%|PAS\r", "encoding characters"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.msg))
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrMalformed with %q", err, c.want)
			}
		})
	}
}

func TestOldDelimitersWithoutEscape(t *testing.T) {
	// Some old senders declare only ^~ (no escape or subcomponent character).
	m, err := Parse([]byte("MSH|^~|PAS|X|||20250101||SIU^S12|1|P|2.3\rPID|1||12\\34&5^^^NHS^NH\r"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := m.Segment("PID")
	if got := pid.Get(3, 1); got != `12\34&5` {
		t.Errorf("PID-3.1 = %q", got)
	}
}

func TestLatin1(t *testing.T) {
	msg := append([]byte("MSH|^~\\&|PAS|X|||20250101||SIU^S12|1|P|2.4|||||GBR|8859/1\rAIL|1|A|CL1^^^^^^Caf"), 0xe9, '\r')
	m, err := Parse(msg)
	if err != nil {
		t.Fatal(err)
	}
	ail, _ := m.Segment("AIL")
	if got := ail.Get(3, 7); got != "Café" {
		t.Errorf("AIL-3.7 = %q", got)
	}
}

func TestEscapes(t *testing.T) {
	d := DefaultDelimiters
	for _, c := range []struct{ in, want string }{
		{`plain`, "plain"},
		{`a\F\b\S\c\T\d\R\e\E\f`, `a|b^c&d~e\f`},
		{`line\.br\two`, "line\ntwo"},
		{`\H\bold\N\`, "bold"},
		{`\X41424344\`, "ABCD"},
		{`\XZZ\`, `\XZZ\`},     // not hex: kept literally
		{`C:\temp`, `C:\temp`}, // a lone backslash from a sloppy sender
		{`\Q\`, `\Q\`},         // unknown escape kept
		{`\C2842\x\M2442\`, "x"},
		{`\.sp\`, ""},
		{`\\`, `\\`},
	} {
		if got := Unescape(c.in, d); got != c.want {
			t.Errorf("Unescape(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := Escape("a|b^c&d~e\\f\r\ng", d); got != `a\F\b\S\c\T\d\R\e\E\f\.br\g` {
		t.Errorf("Escape = %q", got)
	}
}

func TestExplicitNull(t *testing.T) {
	m, err := Parse([]byte(`MSH|^~\&|PAS|X|||20250101||SIU^S12|1|P|2.5` + "\rPID|1||\"\"|x^\"\"\r"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := m.Segment("PID")
	if !pid.Field(3).Empty() || len(pid.Field(3).Reps()) != 0 || pid.Get(4, 2) != "" {
		t.Error(`"" is HL7's explicit null and reads as empty`)
	}
}

func TestParseTime(t *testing.T) {
	london, _ := time.LoadLocation("Europe/London")
	for _, c := range []struct {
		in   string
		want string
		p    Precision
		bad  bool
	}{
		{in: "2025", want: "2025-01-01T00:00:00Z", p: Year},
		{in: "202507", want: "2025-07-01T00:00:00+01:00", p: Month},
		{in: "20250402", want: "2025-04-02T00:00:00+01:00", p: Day},
		{in: "2025040209", want: "2025-04-02T09:00:00+01:00", p: Hour},
		{in: "202504020930", want: "2025-04-02T09:30:00+01:00", p: Minute},
		{in: "20250310091500", want: "2025-03-10T09:15:00Z", p: Second},
		{in: "20250310091500.1234", want: "2025-03-10T09:15:00.1234Z", p: Second},
		{in: "20250402093000+0100", want: "2025-04-02T09:30:00+01:00", p: Second},
		{in: "20250402093000-0500", want: "2025-04-02T09:30:00-05:00", p: Second},
		{in: " 20250402093000 ", want: "2025-04-02T09:30:00+01:00", p: Second},
		{in: "", bad: true},
		{in: "2025-04-02", bad: true},
		{in: "20251302", bad: true},
		{in: "20250230", bad: true},
		{in: "20250229", bad: true},
		{in: "2025040225", bad: true},
		{in: "202504020960", bad: true},
		{in: "2025040209301", bad: true},
		{in: "20250402093000+01", bad: true},
		{in: "20250402093000+2500", bad: true},
		{in: "202504020930.5", bad: true},
		{in: "20250402093000.", bad: true},
		{in: "yesterday", bad: true},
	} {
		got, p, err := ParseTime(c.in, london)
		if c.bad {
			if err == nil || !errors.Is(err, ErrTime) {
				t.Errorf("ParseTime(%q) = %v, %v; want an error", c.in, got, err)
			}
			continue
		}
		want, _ := time.Parse(time.RFC3339Nano, c.want)
		if err != nil || !got.Equal(want) || p != c.p {
			t.Errorf("ParseTime(%q) = %v %v %v, want %v %v", c.in, got, p, err, want, c.p)
		}
	}
	if got := FormatTime(time.Date(2025, 4, 2, 9, 30, 0, 0, london)); got != "20250402093000+0100" {
		t.Errorf("FormatTime = %q", got)
	}
}

func TestFieldRawAndNewMessage(t *testing.T) {
	// Custom delimiters as some engines are configured: \T\ (written !T!) is their literal @.
	m, err := Parse([]byte("MSH#$*!@#A#B#C#D#20250101120000##SIU$S12#1#P#2.5.1\rSCH#1#APT1###CL!T!1@x#\"\"#FU$Follow*FU2$Again\r"))
	if err != nil {
		t.Fatal(err)
	}
	sch, _ := m.Segment("SCH")
	for _, c := range []struct {
		n    int
		want string
	}{{5, `CL@1&x`}, {6, `""`}, {7, "FU^Follow~FU2^Again"}, {8, ""}, {2, "APT1"}} {
		if got := sch.Field(c.n).Raw(); got != c.want {
			t.Errorf("SCH-%d raw %q, want %q", c.n, got, c.want)
		}
	}
	back := NewMessage(NewSegment("SCH", map[int]string{5: sch.Field(5).Raw(), 7: sch.Field(7).Raw()}))
	s, ok := back.Segment("SCH")
	if !ok || s.Get(5, 1) != "CL@1" || s.Field(5).Comp(1).Sub(2) != "x" || s.Field(7).Rep(1).Comp(2).String() != "Again" || !s.Field(6).Empty() {
		t.Fatalf("rebuilt %q %q %q", s.Get(5, 1), s.Field(5).Comp(1).Sub(2), s.Field(7).Rep(1).Comp(2).String())
	}
}
