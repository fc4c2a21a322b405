package siu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/pas"
	"github.com/nhsx/dnarisk/pas/hl7"
)

// Messages as an NHS trust's PAS might send them, written from the HL7 v2.5.1 and v2.3
// chapter 10 segment definitions. Lines end with \n here and \r on the wire (wire()).
const (
	// A new-patient trauma & orthopaedics appointment, booked 10 March for 2 April 09:30
	// (BST). NHS number and hospital number in PID-3; a landline and a mobile in PID-13.
	s12v251 = `MSH|^~\&|PAS|RXX01|DNARISK|RXX01|20250310091500||SIU^S12^SIU_S12|MSG00001|P|2.5.1|||AL|NE||UNICODE UTF-8
SCH|PLC123^CRS|APT100234^PAS|||ORTHO-NEW^Orthopaedic new patient clinic||ROUTINE^Routine^HL70276|NEW^New patient^LOCAL|30|min^minutes^ISO+|^^M30^20250402093000
TQ1|1|||||30^min&minutes&UCUM|20250402093000|20250402100000
NTE|1||Patient requests ground floor room
PID|1||9434765919^^^NHS^NH~A123456^^^RXX01^MR||SMITH^JANE^^^MRS||19800615|F|||1 HIGH STREET^^LEEDS^^LS1 1AA^GBR||^PRN^PH^^44^113^4960000~^ORN^CP^^44^7700^900123
PD1|||LEEDS GP^^B86001|||||||||N
PV1|1|O|ORTHO1^^^RXX01|||||||110
RGS|1|A
AIS|1|A|110^Trauma \T\ Orthopaedics^NHSTFC|20250402093000|||30|min
AIG|1|A|ROOM12^Clinic room 12|ROOM
AIL|1|A|ORTHO1^^^RXX01^^C^Outpatients^1|CLINIC
AIP|1|A|C1234^BONES^JOHN^^^MR|CON^Consultant
`
	// v2.3: no TQ1; start in SCH-11.4; follow-up; specialty only as an alternate code of
	// AIS-3; landline only; NHS number marked by assigning authority; protection indicator Y.
	s12v23 = `MSH|^~\&|PAS|RXX01|DNARISK|RXX01|202503101030||SIU^S12|MSG00002|P|2.3
SCH||APT200|||DERM-FU||FU^Follow up^LOCAL|||min|^^M15^202505141415
PID|1||4010232137^^^NHS||JONES^AL||20070101|M|||||0113 496 0000
PD1|||||||||||F|Y
RGS|1
AIS|1||DERMFU^Dermatology follow-up^L^330^Dermatology^NHSTFC
AIL|1||DERM2
`
	s13 = `MSH|^~\&|PAS|RXX01|DNARISK|RXX01|20250320110000||SIU^S13^SIU_S12|MSG00003|P|2.5.1
SCH|PLC123^CRS|APT100234^PAS|||ORTHO-NEW||ROUTINE|NEW|||
TQ1|1||||||20250409141500
PID|1||9434765919^^^NHS^NH||SMITH^JANE||19800615|F
RGS|1
AIS|1|U|110^Trauma \T\ Orthopaedics^NHSTFC
AIL|1|U|ORTHO1
`
	s15 = `MSH|^~\&|PAS|RXX01|DNARISK|RXX01|20250325080000||SIU^S15^SIU_S12|MSG00004|P|2.5.1
SCH|PLC123^CRS|APT100234^PAS||||2^Cancelled by patient^NHSDD_ATTENDED
PID|1||9434765919^^^NHS^NH||SMITH^JANE||19800615|F
RGS|1
`
	s17 = `MSH|^~\&|PAS|RXX01|DNARISK|RXX01|20250325080000||SIU^S17^SIU_S12|MSG00005|P|2.5.1
SCH||APT100234
RGS|1
`
	s26 = `MSH|^~\&|PAS|RXX01|DNARISK|RXX01|20250409160000||SIU^S26^SIU_S12|MSG00006|P|2.5.1
SCH|PLC123^CRS|APT100234^PAS||||DNA^Did not attend
PID|1||9434765919^^^NHS^NH||SMITH^JANE||19800615|F
RGS|1
`
)

func wire(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r")) }

var secret = []byte("siu-test-secret-0123456789abcdef-0123")

func mapper(t testing.TB, cfg Config) *Mapper {
	t.Helper()
	ps, err := pseudo.New(secret)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pseudonymiser = ps
	m, err := NewMapper(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mapMsg(t *testing.T, m *Mapper, s string) (*pas.Change, string, error) {
	t.Helper()
	msg, err := hl7.Parse(wire(s))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return m.Map(msg)
}

// bookingOf is the booking a change makes for an appointment the gateway does not know.
func bookingOf(t *testing.T, c *pas.Change) *events.Booking {
	t.Helper()
	b, _, err := c.Facts(nil)
	if err != nil {
		t.Fatalf("booking: %v", err)
	}
	return b
}

func TestMapS12Full(t *testing.T) {
	m := mapper(t, Config{})
	c, _, err := mapMsg(t, m, s12v251)
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := pseudo.New(secret)
	want := &pas.Change{
		Kind: pas.Book, Source: "SIU^S12", EventID: "hl7:RXX01/PAS/MSG00001",
		EventTime:     time.Date(2025, 3, 10, 9, 15, 0, 0, time.UTC),
		AppointmentID: "RXX01:APT100234",
		Patient:       ps.Pseudonym("9434765919"),
	}
	if c.Kind != want.Kind || c.Source != want.Source || c.EventID != want.EventID || !c.EventTime.Equal(want.EventTime) ||
		c.AppointmentID != want.AppointmentID || c.Patient != want.Patient {
		t.Fatalf("change %+v\nwant %+v", c, want)
	}
	b := bookingOf(t, c)
	if b == nil {
		t.Fatal("no booking")
	}
	if !b.Start.Equal(time.Date(2025, 4, 2, 8, 30, 0, 0, time.UTC)) {
		t.Errorf("start %s (09:30 BST is 08:30 UTC)", b.Start)
	}
	if !b.BookedAt.Equal(want.EventTime) || b.Specialty != "110" || b.Clinic != "ORTHO1" || !b.FirstVisit ||
		b.AgeBand != "35-44" || b.Contact != (events.Contact{SMS: true}) || b.Extra[ExtraDuration] != 30 {
		t.Errorf("booking %+v", b)
	}
}

func TestMapS12v23(t *testing.T) {
	m := mapper(t, Config{})
	c, _, err := mapMsg(t, m, s12v23)
	if err != nil {
		t.Fatal(err)
	}
	b := bookingOf(t, c)
	if c.AppointmentID != "RXX01:APT200" || !b.Start.Equal(time.Date(2025, 5, 14, 13, 15, 0, 0, time.UTC)) ||
		b.Specialty != "330" || b.Clinic != "DERM2" || b.FirstVisit || b.AgeBand != "18-24" ||
		b.Contact != (events.Contact{SMS: false, OptOut: true}) || b.Extra[ExtraDuration] != 15 {
		t.Errorf("change %+v booking %+v", c, b)
	}
}

func TestMapOtherTriggers(t *testing.T) {
	m := mapper(t, Config{})
	for _, c := range []struct {
		name, msg string
		kind      pas.Kind
		by        events.CancelledBy
		patient   bool
	}{
		{"S13 reschedule", s13, pas.Modify, "", true},
		{"S14 modify", strings.Replace(s13, "SIU^S13", "SIU^S14", 1), pas.Modify, "", true},
		{"S15 cancelled by patient", s15, pas.Cancel, events.ByPatient, true},
		{"S15 reason in words", strings.Replace(s15, "2^Cancelled by patient^NHSDD_ATTENDED", "^Patient phoned to cancel", 1), pas.Cancel, events.ByPatient, true},
		{"S15 hospital code", strings.Replace(s15, "2^Cancelled by patient^NHSDD_ATTENDED", "HOSP^Clinic cancelled", 1), pas.Cancel, events.ByHospital, true},
		{"S15 without reason", strings.Replace(s15, "2^Cancelled by patient^NHSDD_ATTENDED", "", 1), pas.Cancel, events.ByHospital, true},
		{"S17 delete, no PID", s17, pas.Cancel, events.ByHospital, false},
		{"S26 no-show", s26, pas.DidNotAttend, "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ch, _, err := mapMsg(t, m, c.msg)
			if err != nil {
				t.Fatal(err)
			}
			if ch.Kind != c.kind || ch.CancelledBy != c.by || (ch.Patient != "") != c.patient || ch.AppointmentID != "RXX01:APT100234" {
				t.Fatalf("change %+v", ch)
			}
			if c.kind == pas.Modify && (bookingOf(t, ch) == nil || !bookingOf(t, ch).Start.Equal(time.Date(2025, 4, 9, 13, 15, 0, 0, time.UTC))) {
				t.Fatalf("rescheduled booking %+v", bookingOf(t, ch))
			}
		})
	}
}

func TestMapIgnoredTriggers(t *testing.T) {
	m := mapper(t, Config{})
	for _, tr := range []string{"S16", "S18", "S20", "S25"} {
		ch, why, err := mapMsg(t, m, strings.Replace(s17, "SIU^S17", "SIU^"+tr, 1))
		if err != nil || ch != nil || !strings.Contains(why, tr) {
			t.Errorf("%s: %+v %q %v", tr, ch, why, err)
		}
	}
}

func TestMapPatientIdentifiers(t *testing.T) {
	ps, _ := pseudo.New(secret)
	pidWith := func(pid3 string) string {
		return strings.Replace(s12v251, "9434765919^^^NHS^NH~A123456^^^RXX01^MR", pid3, 1)
	}
	for _, c := range []struct {
		name  string
		types []string
		pid3  string
		want  string // raw identifier expected; "" = refused
		err   string
	}{
		{name: "NHS number by type", pid3: "A123456^^^RXX01^MR~943 476 5919^^^NHS^NH", want: "9434765919"},
		{name: "NHS number by OID", pid3: "9434765919^^^&2.16.840.1.113883.2.1.4.1&ISO", want: "9434765919"},
		{name: "bad check digit", pid3: "9434765918^^^NHS^NH", err: "check digit"},
		{name: "hospital number only", pid3: "A123456^^^RXX01^MR", err: "no patient identifier of type NH"},
		{name: "trust chose hospital numbers", types: []string{"MR"}, pid3: "9434765919^^^NHS^NH~A123456^^^RXX01^MR", want: "A123456"},
		{name: "fallback order", types: []string{"NH", "MR"}, pid3: "A123456^^^RXX01^MR", want: "A123456"},
		{name: "empty PID-3", pid3: "", err: "no patient identifier"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mapper(t, Config{PatientIDTypes: c.types})
			ch, _, err := mapMsg(t, m, pidWith(c.pid3))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				if strings.Contains(err.Error(), "943") {
					t.Fatal("error text quotes the identifier")
				}
				return
			}
			if err != nil || ch.Patient != ps.Pseudonym(c.want) {
				t.Fatalf("patient %q, %v", ch.Patient, err)
			}
		})
	}
}

func TestMapContact(t *testing.T) {
	m := mapper(t, Config{})
	phones := func(pid13, pid14 string) events.Contact {
		msg := strings.Replace(s12v251, "^PRN^PH^^44^113^4960000~^ORN^CP^^44^7700^900123", pid13+"|"+pid14, 1)
		ch, _, err := mapMsg(t, m, msg)
		if err != nil {
			t.Fatal(err)
		}
		return bookingOf(t, ch).Contact
	}
	for _, c := range []struct {
		name, pid13, pid14 string
		sms                bool
	}{
		{"landline only", "^PRN^PH^^44^113^4960000", "", false},
		{"equipment type CP", "^PRN^CP", "", true},
		{"v2.3 formatted mobile", "07700 900123^PRN^PH", "", true},
		{"XTN-12 unformatted", "^PRN^PH^^^^^^^^^07700900123", "", true},
		{"work mobile in PID-14", "", "^WPN^PH^^44^7700^900124", true},
		{"e-mail only", "^NET^Internet^jane@example.org", "", false},
		{"none", "", "", false},
	} {
		if got := phones(c.pid13, c.pid14); got.SMS != c.sms {
			t.Errorf("%s: sms %v", c.name, got.SMS)
		}
	}
}

func TestMapFirstVisitAndSpecialty(t *testing.T) {
	m := mapper(t, Config{})
	sch := func(s5, s7, s8 string) string {
		return strings.Replace(s12v251,
			"SCH|PLC123^CRS|APT100234^PAS|||ORTHO-NEW^Orthopaedic new patient clinic||ROUTINE^Routine^HL70276|NEW^New patient^LOCAL|",
			"SCH|PLC123^CRS|APT100234^PAS|||"+s5+"||"+s7+"|"+s8+"|", 1)
	}
	for _, c := range []struct {
		name, s5, s7, s8 string
		first            bool
	}{
		{"NEW code", "", "", "NEW", true},
		{"FU code", "", "", "FU^Follow-up", false},
		{"text only", "", "", "^New patient appointment", true},
		{"HL7 0277 Normal then 0276 FOLLOWUP", "", "FOLLOWUP", "Normal^Normal^HL70277", false},
		{"nothing known", "", "ROUTINE", "Normal", false},
		{"review text", "", "^Review", "", false},
	} {
		ch, _, err := mapMsg(t, m, sch(c.s5, c.s7, c.s8))
		if err != nil {
			t.Fatal(err)
		}
		if bookingOf(t, ch).FirstVisit != c.first {
			t.Errorf("%s: first visit %v", c.name, bookingOf(t, ch).FirstVisit)
		}
	}
	// Without AIS-3, PV1-10 or SCH-7 codes the specialty is "unknown", as in csvimport.
	noSpec := strings.Replace(strings.Replace(s12v251, "|||||||110\n", "\n", 1), "110^Trauma \\T\\ Orthopaedics^NHSTFC", "XR^X-ray", 1)
	ch, _, err := mapMsg(t, m, noSpec)
	if err != nil || bookingOf(t, ch).Specialty != "unknown" {
		t.Fatalf("specialty %q, %v", bookingOf(t, ch).Specialty, err)
	}
}

// TestMapRefuses covers malformed and unacceptable messages: each is answered AE or AR with
// the HL7 error code and a location, and no text quotes a value from the message.
func TestMapRefuses(t *testing.T) {
	for _, c := range []struct {
		name, msg string
		ack       string
		code      int
		where     string
	}{
		{"ADT message", strings.Replace(s12v251, "SIU^S12^SIU_S12", "ADT^A04^ADT_A01", 1), hl7.AR, hl7.CodeUnsupportedType, "MSH-9"},
		{"unknown trigger", strings.Replace(s12v251, "SIU^S12^SIU_S12", "SIU^S99", 1), hl7.AR, hl7.CodeUnsupportedEvent, "MSH-9"},
		{"no message type", strings.Replace(s12v251, "SIU^S12^SIU_S12", "", 1), hl7.AR, hl7.CodeRequiredMissing, "MSH-9"},
		{"version 2.2", strings.Replace(s12v251, "|P|2.5.1|", "|P|2.2|", 1), hl7.AR, hl7.CodeUnsupportedVersion, "MSH-12"},
		{"version 3", strings.Replace(s12v251, "|P|2.5.1|", "|P|3.0|", 1), hl7.AR, hl7.CodeUnsupportedVersion, "MSH-12"},
		{"no version", strings.Replace(s12v251, "|P|2.5.1|", "|P||", 1), hl7.AR, hl7.CodeUnsupportedVersion, "MSH-12"},
		{"training processing id", strings.Replace(s12v251, "|P|2.5.1|", "|T|2.5.1|", 1), hl7.AR, hl7.CodeUnsupportedProcID, "MSH-11"},
		{"no control id", strings.Replace(s12v251, "|MSG00001|", "||", 1), hl7.AR, hl7.CodeRequiredMissing, "MSH-10"},
		{"bad message time", strings.Replace(s12v251, "20250310091500", "20251310091500", 1), hl7.AE, hl7.CodeDataType, "MSH-7"},
		{"message time without time of day", strings.Replace(s12v251, "20250310091500", "20250310", 1), hl7.AE, hl7.CodeDataType, "MSH-7"},
		{"no SCH", strings.Replace(s12v251, "SCH|", "ZSC|", 1), hl7.AE, hl7.CodeSegmentSequence, "SCH"},
		{"no appointment id", strings.Replace(s12v251, "PLC123^CRS|APT100234^PAS", "|", 1), hl7.AE, hl7.CodeRequiredMissing, "SCH-2"},
		{"no PID on booking", strings.Replace(s12v251, "PID|", "ZPI|", 1), hl7.AE, hl7.CodeSegmentSequence, "PID"},
		{"group appointment", strings.Replace(s12v251, "PD1|", "PID|2||4010232137^^^NHS^NH||X||20000101\nPD1|", 1), hl7.AE, hl7.CodeSegmentSequence, "PID"},
		{"no date of birth", strings.Replace(s12v251, "||19800615|F", "|||F", 1), hl7.AE, hl7.CodeRequiredMissing, "PID-7"},
		{"bad date of birth", strings.Replace(s12v251, "||19800615|F", "||19801315|F", 1), hl7.AE, hl7.CodeDataType, "PID-7"},
		{"birth after booking", strings.Replace(s12v251, "||19800615|F", "||20300615|F", 1), hl7.AE, hl7.CodeDataType, "PID-7"},
		{"bad start", strings.Replace(s12v251, "|20250402093000|20250402100000", "|20250230093000|", 1), hl7.AE, hl7.CodeDataType, "TQ1-7"},
		{"start without time", strings.Replace(s12v251, "|20250402093000|20250402100000", "|20250402|", 1), hl7.AE, hl7.CodeDataType, "TQ1-7"},
		{"no start anywhere", strings.NewReplacer("|20250402093000|20250402100000", "||", "^^M30^20250402093000", "", "|20250402093000|||30", "||||30").Replace(s12v251), hl7.AE, hl7.CodeRequiredMissing, "SCH-11"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mapper(t, Config{})
			ch, _, err := mapMsg(t, m, c.msg)
			if err == nil && ch != nil {
				_, _, err = ch.Facts(nil) // facts an update may leave out are checked when built
			}
			var he *hl7.Error
			if !errors.As(err, &he) {
				t.Fatalf("change %+v, err %v; want an *hl7.Error", ch, err)
			}
			loc := he.Segment
			if he.Field > 0 {
				loc += "-" + strconv.Itoa(he.Field)
			}
			if he.Ack != c.ack || he.Code != c.code || loc != c.where {
				t.Fatalf("got %s %d at %s (%v); want %s %d at %s", he.Ack, he.Code, loc, err, c.ack, c.code, c.where)
			}
			for _, secret := range []string{"9434765919", "19800615", "SMITH", "7700"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error text %q quotes message content", err)
				}
			}
		})
	}
}

// recorder is an Applier double that records changes and answers as configured.
type recorder struct {
	mu      sync.Mutex
	changes []pas.Change
	res     pas.Result
	err     error
}

func (r *recorder) Apply(_ context.Context, c pas.Change) (pas.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
	return r.res, r.err
}

func ackOf(t *testing.T, b []byte) (code, ctrl, text string, errSeg hl7.Segment) {
	t.Helper()
	m, err := hl7.Parse(b)
	if err != nil {
		t.Fatalf("ack does not parse: %v", err)
	}
	msa, ok := m.Segment("MSA")
	if !ok {
		t.Fatal("ack without MSA")
	}
	e, _ := m.Segment("ERR")
	return msa.Get(1, 1), msa.Get(2, 1), msa.Get(3, 1), e
}

func TestHandlerAcks(t *testing.T) {
	ev := &events.Appointment{Type: events.Booked, Version: 1, EventID: "hl7:RXX01/PAS/MSG00001"}
	s12v251 := strings.Replace(s12v251, "|||AL|NE||", "|||||", 1) // original acknowledgement mode
	for _, c := range []struct {
		name    string
		frame   string
		res     pas.Result
		err     error
		code    string
		ctrl    string
		text    string
		applied int
	}{
		{"published", s12v251, pas.Result{Event: ev}, nil, hl7.AA, "MSG00001", "booked version 1 published", 1},
		{"nothing new", s12v251, pas.Result{Ignored: "booking facts unchanged"}, nil, hl7.AA, "MSG00001", "ignored: booking facts unchanged", 1},
		{"kafka down (wrapped)", s12v251, pas.Result{}, wrapUnavailable(), hl7.AR, "MSG00001", "temporarily unable to publish the event; send the message again later", 1},
		{"rejected by contract", s12v251, pas.Result{}, wrapRejected(), hl7.AE, "MSG00001", "change rejected: start too early", 1},
		{"ignored trigger", strings.Replace(s17, "SIU^S17", "SIU^S20", 1), pas.Result{}, nil, hl7.AA, "MSG00005", "ignored: SIU^S20 changes nothing the risk scorer uses", 0},
		{"mapping error", strings.Replace(s12v251, "|P|2.5.1|", "|P|2.1|", 1), pas.Result{}, nil, hl7.AR, "MSG00001", "MSH-12: version 2.1 not accepted: HL7 v2.3 to v2.9 only", 0},
		{"missing MSH", "PID|1||9434765919^^^NHS^NH\nSCH||APT1\n", pas.Result{}, nil, hl7.AR, "", "malformed HL7 message: does not start with an MSH segment", 0},
		{"broken body, readable header", strings.Replace(s12v251, "PID|1", "pid|1", 1), pas.Result{}, nil, hl7.AR, "MSG00001", "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{res: c.res, err: c.err}
			h := &Handler{Mapper: mapper(t, Config{}), Gateway: rec}
			code, ctrl, text, _ := ackOf(t, only(t, h.Message(context.Background(), wire(c.frame))))
			if code != c.code || ctrl != c.ctrl || (c.text != "" && text != c.text) {
				t.Fatalf("ack %s %q %q; want %s %q %q", code, ctrl, text, c.code, c.ctrl, c.text)
			}
			if len(rec.changes) != c.applied {
				t.Fatalf("%d changes applied", len(rec.changes))
			}
		})
	}
}

func wrapUnavailable() error {
	return fmt.Errorf("%w: kafka: leader not available", pas.ErrUnavailable)
}
func wrapRejected() error { return fmt.Errorf("%w: start too early", pas.ErrRejected) }

func TestHandlerTooLarge(t *testing.T) {
	h := &Handler{Mapper: mapper(t, Config{}), Gateway: &recorder{}}
	code, ctrl, _, e := ackOf(t, h.TooLarge(context.Background(), wire(s12v251)[:200]))
	if code != hl7.AR || ctrl != "MSG00001" || e.Get(3, 1) != "207" {
		t.Fatalf("ack %s %q %v", code, ctrl, e)
	}
}

// TestHandlerLogsNoPersonalData runs good and bad messages through the handler and a real
// gateway and checks the log never holds the NHS number, hospital number, name, birth date,
// phone numbers or address from the messages.
func TestHandlerLogsNoPersonalData(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	g := pas.NewGateway(&pas.MemoryTracker{}, validating{}, log)
	h := &Handler{Mapper: mapper(t, Config{}), Gateway: g, Log: log}
	msgs := []string{s12v251, s12v23, s13, s15, s17, s26,
		strings.Replace(s12v251, "19800615", "19801315", 1),
		strings.Replace(s12v251, "9434765919", "9434765918", 1),
		strings.Replace(s12v251, "MSH|", "XSH|", 1),
		strings.Replace(s12v251, "|20250402093000|20250402100000", "|2025040|", 1),
	}
	for _, m := range msgs {
		h.Message(context.Background(), wire(m))
	}
	h.TooLarge(context.Background(), wire(s12v251))
	out := logs.String()
	if !strings.Contains(out, "APT100234") {
		t.Fatalf("expected the handler to log something useful:\n%s", out)
	}
	for _, pii := range []string{"9434765919", "4010232137", "A123456", "SMITH", "JANE", "JONES", "19800615", "20070101", "7700", "4960000", "HIGH STREET", "LS1"} {
		if strings.Contains(out, pii) {
			t.Fatalf("log contains %q:\n%s", pii, out)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// One rule for event times (events.CheckAhead): a message dated further past the receiver's
// clock than the scorer accepts is refused here with AE at MSH-7, naming the limit.
func TestMapRefusesMessagesDatedTooFarAhead(t *testing.T) {
	sent := time.Date(2025, 3, 10, 9, 15, 0, 0, time.UTC) // s12v251's MSH-7
	for _, c := range []struct {
		clock time.Time
		max   time.Duration
		ok    bool
	}{
		{sent, 0, true},
		{sent.Add(-events.DefaultMaxAhead), 0, true},
		{sent.Add(-events.DefaultMaxAhead - time.Minute), 0, false},
		{sent.Add(-2 * time.Hour), time.Hour, false},
		{sent.AddDate(-5, 0, 0), -1, true}, // no limit
	} {
		m := mapper(t, Config{Now: func() time.Time { return c.clock }, MaxAhead: c.max})
		ch, _, err := mapMsg(t, m, s12v251)
		if c.ok {
			if err != nil || !ch.Received.Equal(c.clock) {
				t.Errorf("clock %s max %s: %v (received %s)", c.clock, c.max, err, ch.Received)
			}
			continue
		}
		var he *hl7.Error
		if !errors.As(err, &he) || he.Ack != hl7.AE || he.Segment != "MSH" || he.Field != 7 || !strings.Contains(he.Text, "ahead of this receiver's clock") {
			t.Errorf("clock %s max %s: %v, want AE at MSH-7", c.clock, c.max, err)
		}
	}
}

// only is the one reply a handler gave (original acknowledgement mode).
func only(t testing.TB, replies [][]byte) []byte {
	t.Helper()
	if len(replies) != 1 {
		t.Fatalf("%d replies, want 1", len(replies))
	}
	return replies[0]
}

// Enhanced acknowledgement mode: MSH-15 (accept) and MSH-16 (application) say which replies
// the sender wants; each outcome gets exactly those, in order.
func TestHandlerEnhancedAcks(t *testing.T) {
	ev := &events.Appointment{Type: events.Booked, Version: 1, EventID: "e"}
	mode := func(accept, app string) string {
		return strings.Replace(s12v251, "|||AL|NE||", "|||"+accept+"|"+app+"||", 1)
	}
	for _, c := range []struct {
		name        string
		accept, app string
		res         pas.Result
		err         error
		frame       string // default: mode(accept, app)
		want        string // reply codes in order
	}{
		{name: "AL/NE published", accept: "AL", app: "NE", res: pas.Result{Event: ev}, want: "CA"},
		{name: "AL/AL published", accept: "AL", app: "AL", res: pas.Result{Event: ev}, want: "CA AA"},
		{name: "NE/AL published", accept: "NE", app: "AL", res: pas.Result{Event: ev}, want: "AA"},
		{name: "AL/ER published", accept: "AL", app: "ER", res: pas.Result{Event: ev}, want: "CA"},
		{name: "ER/SU published", accept: "ER", app: "SU", res: pas.Result{Event: ev}, want: "AA"},
		{name: "NE/NE published", accept: "NE", app: "NE", res: pas.Result{Event: ev}, want: ""},
		{name: "AL/AL kafka down", accept: "AL", app: "AL", err: wrapUnavailable(), want: "CE"},
		{name: "ER/NE kafka down", accept: "ER", app: "NE", err: wrapUnavailable(), want: "CE"},
		{name: "SU/AL kafka down", accept: "SU", app: "AL", err: wrapUnavailable(), want: ""},
		{name: "AL/AL content error", accept: "AL", app: "AL", err: wrapRejected(), want: "CA AE"},
		{name: "AL/ER content error", accept: "AL", app: "ER", err: wrapRejected(), want: "CA AE"},
		{name: "AL/NE content error is not lost", accept: "AL", app: "NE", err: wrapRejected(), want: "CE"},
		{name: "AL/AL bad version", accept: "AL", app: "AL", frame: strings.Replace(mode("AL", "AL"), "|P|2.5.1|", "|P|2.1|", 1), want: "CR"},
		{name: "empty/AL", accept: "", app: "AL", res: pas.Result{Event: ev}, want: "CA AA"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := &Handler{Mapper: mapper(t, Config{}), Gateway: &recorder{res: c.res, err: c.err}}
			frame := c.frame
			if frame == "" {
				frame = mode(c.accept, c.app)
			}
			var got []string
			for _, r := range h.Message(context.Background(), wire(frame)) {
				code, ctrl, _, _ := ackOf(t, r)
				m, _ := hl7.Parse(r)
				if ctrl != "MSG00001" || m.Header().Get(15, 1) != "NE" || m.Header().Get(16, 1) != "NE" {
					t.Fatalf("reply %q: control id %q, MSH-15/16 %q/%q", r, ctrl, m.Header().Get(15, 1), m.Header().Get(16, 1))
				}
				got = append(got, code)
			}
			if strings.Join(got, " ") != c.want {
				t.Fatalf("replies %v, want %q", got, c.want)
			}
		})
	}
	// An acknowledgement sent to the receiver is not answered (no ping-pong).
	h := &Handler{Mapper: mapper(t, Config{}), Gateway: &recorder{}}
	if r := h.Message(context.Background(), wire("MSH|^~\\&|A|B|C|D|20250310091500||ACK^S12^ACK|9|P|2.5.1\nMSA|CA|1\n")); len(r) != 0 {
		t.Fatalf("answered an ACK: %q", r)
	}
}
