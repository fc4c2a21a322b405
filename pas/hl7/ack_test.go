package hl7

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func segments(b []byte) []string { return strings.Split(strings.TrimSuffix(string(b), "\r"), "\r") }

func TestAckAccepted(t *testing.T) {
	m, err := Parse(wire(s12))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 3, 10, 9, 15, 1, 0, time.UTC)
	segs := segments(Ack(m, nil, "booked version 1 published", now))
	if len(segs) != 2 {
		t.Fatalf("segments %q", segs)
	}
	ack, err := Parse([]byte(strings.Join(segs, "\r")))
	if err != nil {
		t.Fatalf("our own ACK does not parse: %v", err)
	}
	h := ack.Header()
	// Sender and receiver swap; version and processing id are kept.
	for _, c := range [][2]string{
		{h.Get(3, 1), "DNARISK"}, {h.Get(4, 1), "RXX01"}, {h.Get(5, 1), "PAS"}, {h.Get(6, 1), "RXX01"},
		{h.Get(7, 1), "20250310091501+0000"}, {h.Get(9, 1), "ACK"}, {h.Get(9, 2), "S12"}, {h.Get(9, 3), "ACK"},
		{h.Get(11, 1), "P"}, {h.Get(12, 1), "2.5.1"},
	} {
		if c[0] != c[1] {
			t.Errorf("ACK MSH: got %q, want %q", c[0], c[1])
		}
	}
	if h.Get(10, 1) == "" || h.Get(10, 1) == "MSG00001" {
		t.Errorf("ACK needs its own control id, got %q", h.Get(10, 1))
	}
	msa, _ := ack.Segment("MSA")
	if msa.Get(1, 1) != AA || msa.Get(2, 1) != "MSG00001" || msa.Get(3, 1) != "booked version 1 published" {
		t.Errorf("MSA = %q", segs[1])
	}
}

func TestAckErrors(t *testing.T) {
	m, _ := Parse(wire(s12))
	now := time.Now()
	ack, _ := Parse(Ack(m, Errorf(CodeDataType, "PID", 7, "date of birth is not a valid date"), "", now))
	msa, _ := ack.Segment("MSA")
	if msa.Get(1, 1) != AE || msa.Get(3, 1) != "PID-7: date of birth is not a valid date" {
		t.Errorf("MSA %v %v", msa.Get(1, 1), msa.Get(3, 1))
	}
	errSeg, ok := ack.Segment("ERR")
	if !ok {
		t.Fatal("no ERR segment")
	}
	// v2.5 layout: ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 user message.
	if errSeg.Get(2, 1) != "PID" || errSeg.Get(2, 3) != "7" || errSeg.Get(3, 1) != "102" ||
		errSeg.Get(3, 3) != "HL70357" || errSeg.Get(4, 1) != "E" || !strings.Contains(errSeg.Get(8, 1), "date of birth") {
		t.Errorf("ERR = %+v", errSeg)
	}

	// A plain error is an internal one: AR, retry.
	ack, _ = Parse(Ack(m, errors.New("kafka down"), "", now))
	msa, _ = ack.Segment("MSA")
	if msa.Get(1, 1) != AR {
		t.Errorf("plain error acked %s, want AR", msa.Get(1, 1))
	}
	if e, _ := ack.Segment("ERR"); e.Get(3, 1) != "207" {
		t.Errorf("plain error code %s, want 207", e.Get(3, 1))
	}
}

func TestAckV23UsesERR1(t *testing.T) {
	m, err := Parse([]byte("MSH|^~\\&|PAS|X|DNA|Y|20250101120000||SIU^S15|C9|P|2.3\r"))
	if err != nil {
		t.Fatal(err)
	}
	ack, _ := Parse(Ack(m, Reject(CodeUnsupportedEvent, "MSH", 9, "no"), "", time.Now()))
	e, _ := ack.Segment("ERR")
	if e.Get(1, 1) != "MSH" || e.Get(1, 3) != "9" || e.Field(1).Comp(4).Sub(1) != "201" {
		t.Errorf("v2.3 ERR-1 = %q", e.Field(1).Rep(0).raw)
	}
}

func TestAckWithoutMessage(t *testing.T) {
	ack, err := Parse(Ack(nil, Reject(CodeSegmentSequence, "", 0, "does not start with an MSH segment"), "", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	msa, _ := ack.Segment("MSA")
	if msa.Get(1, 1) != AR || msa.Get(2, 1) != "" {
		t.Errorf("MSA = %v", msa)
	}
}

func TestAckEscapesText(t *testing.T) {
	m, _ := Parse(wire(s12))
	ack, err := Parse(Ack(m, nil, "a|b^c\rd", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	msa, _ := ack.Segment("MSA")
	if got := msa.Get(3, 1); got != "a|b^c\nd" {
		t.Errorf("MSA-3 = %q", got)
	}
}

func TestAckKeepsSenderDelimiters(t *testing.T) {
	m, _ := Parse([]byte("MSH#$*!@#PAS#RXX01#DNA#Y#20250310091500##SIU$S12#C1#P#2.4\r"))
	ack := Ack(m, nil, "", time.Now())
	if !strings.HasPrefix(string(ack), "MSH#$*!@#DNA#Y#PAS#RXX01#") {
		t.Errorf("ACK = %q", ack)
	}
}
