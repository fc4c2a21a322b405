// Package siu maps HL7 v2 scheduling messages (SIU^S12 book, S13 reschedule, S14 modify,
// S15 cancel, S17 delete, S26 did not show) to pas.Changes, and answers them over MLLP: a
// Handler parses each frame, maps it, lets the pas.Gateway publish it, and acknowledges AA
// only after Kafka acknowledged the event; AE or AR, with the reason, otherwise.
//
// The mapping (which field wins where the standard leaves room) is documented in
// docs/pas-integration.md. Patient identifiers are pseudonymised as soon as they are read;
// the mobile number goes only into the change's Contact (for the encrypted contact store),
// never into an event, a log or the gateway's state.
package siu

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/pas"
	"github.com/nhsx/dnarisk/pas/hl7"
)

// NHSNumberOID is the OID of the NHS number, which some senders put in CX-4 instead of
// identifier type NH in CX-5.
const NHSNumberOID = "2.16.840.1.113883.2.1.4.1"

// Config says how to read a trust's messages. The zero value of each field but
// Pseudonymiser has a default.
type Config struct {
	// Pseudonymiser keys the patient identifier; required.
	Pseudonymiser *pseudo.Pseudonymiser
	// Location is the time zone of date/times without an offset. Default Europe/London.
	Location *time.Location
	// PatientIDTypes are the PID-3 identifier type codes (CX-5) to use, in order of
	// preference. Default ["NH"] (NHS number, check digit verified). Every producer of the
	// appointments topic must pseudonymise the same identifier, or one patient becomes two.
	PatientIDTypes []string
	// ProcessingIDs are the MSH-11 processing ids accepted. Default ["P"] (production).
	ProcessingIDs []string
	// MaxAhead refuses (AE) a message whose MSH-7 lies further than this past the receiver's
	// clock: the rule events.CheckAhead that the scorer and dispatcher apply too, so nothing
	// acknowledged here is dead-lettered there. Default events.DefaultMaxAhead; negative: no
	// limit. It must equal the scorer's --max-ahead.
	MaxAhead time.Duration
	// Now is the receiver's clock; default time.Now.
	Now func() time.Time
	// Mapping is the trust's mapping file: local specialty codes, cancellation codes and
	// phrases, and the fields carrying extra features. nil: the built-in rules only.
	Mapping *pas.Mapping
}

// Mapper turns parsed SIU messages into changes. It is safe for concurrent use.
type Mapper struct {
	cfg     Config
	tracked []trackedSeg // the built-in tracked fields and those of the mapping's extras
}

type trackedSeg struct {
	seg    string
	fields []int
}

// NewMapper checks cfg and fills in its defaults.
func NewMapper(cfg Config) (*Mapper, error) {
	if cfg.Pseudonymiser == nil {
		return nil, errors.New("siu: a pseudonymiser is required")
	}
	if cfg.Location == nil {
		l, err := time.LoadLocation("Europe/London")
		if err != nil {
			return nil, fmt.Errorf("siu: load Europe/London: %w", err)
		}
		cfg.Location = l
	}
	if len(cfg.PatientIDTypes) == 0 {
		cfg.PatientIDTypes = []string{"NH"}
	}
	if len(cfg.ProcessingIDs) == 0 {
		cfg.ProcessingIDs = []string{"P"}
	}
	if cfg.MaxAhead == 0 {
		cfg.MaxAhead = events.DefaultMaxAhead
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Mapper{cfg: cfg, tracked: append([]trackedSeg(nil), tracked...)}
	if cfg.Mapping != nil {
	extras:
		for _, e := range cfg.Mapping.Extras {
			if e.HL7 == "" {
				continue
			}
			for i := range m.tracked {
				if m.tracked[i].seg == e.Segment {
					m.tracked[i].fields = append(append([]int(nil), m.tracked[i].fields...), e.Field)
					continue extras
				}
			}
			m.tracked = append(m.tracked, trackedSeg{e.Segment, []int{e.Field}})
		}
	}
	return m, nil
}

// What each trigger event means. Events not listed (S16 discontinue, S18–S25 service and
// resource changes) are valid SIU messages that change nothing the scorer uses: they are
// acknowledged and ignored.
var triggers = map[string]pas.Kind{
	"S12": pas.Book,
	"S13": pas.Modify,
	"S14": pas.Modify,
	"S15": pas.Cancel,
	"S17": pas.Cancel,
	"S26": pas.DidNotAttend,
}

var ignoredTriggers = map[string]bool{
	"S16": true, "S18": true, "S19": true, "S20": true, "S21": true, "S22": true, "S23": true, "S24": true, "S25": true,
}

// Map returns the change msg describes. A nil change with a nil error is a valid message
// with nothing to publish; the string then says why. Errors are *hl7.Error, whose text names
// fields but never quotes their values.
func (m *Mapper) Map(msg *hl7.Message) (*pas.Change, string, error) {
	h := msg.Header()
	trigger, err := m.checkHeader(msg)
	if err != nil {
		return nil, "", err
	}
	if ignoredTriggers[trigger] {
		return nil, "SIU^" + trigger + " changes nothing the risk scorer uses", nil
	}
	kind := triggers[trigger]
	eventTime, p, err := hl7.ParseTime(h.Get(7, 1), m.cfg.Location)
	if err != nil || p < hl7.Minute {
		return nil, "", hl7.Errorf(hl7.CodeDataType, "MSH", 7, "message date/time must be a date and time (YYYYMMDDHHMM[SS][+ZZZZ])")
	}
	received := m.cfg.Now()
	if events.CheckAhead(eventTime, received, m.cfg.MaxAhead) != nil {
		return nil, "", hl7.Errorf(hl7.CodeInternal, "MSH", 7, "message date/time is more than %s ahead of this receiver's clock: "+
			"the sender's clock or the message is wrong; the risk scorer would refuse the event, so it is not accepted here", m.cfg.MaxAhead)
	}

	sch, ok := msg.Segment("SCH")
	if !ok {
		return nil, "", hl7.Errorf(hl7.CodeSegmentSequence, "SCH", 0, "SCH segment missing")
	}
	c := &pas.Change{
		Kind:      kind,
		Source:    "SIU^" + trigger,
		EventID:   eventID(h),
		EventTime: eventTime,
		Received:  received,
	}
	if c.AppointmentID, err = appointmentID(h, sch); err != nil {
		return nil, "", err
	}

	pids := msg.All("PID")
	var pid *hl7.Segment
	switch {
	case len(pids) > 1:
		return nil, "", hl7.Errorf(hl7.CodeSegmentSequence, "PID", 0, "several PID segments (a group appointment) are not supported: send one message per patient")
	case len(pids) == 1:
		pid = &pids[0]
		if c.Patient, err = m.patient(*pid); err != nil {
			return nil, "", err
		}
	case kind == pas.Book:
		// An update (S13/S14) may leave PID out: the gateway knows the appointment's patient.
		return nil, "", hl7.Errorf(hl7.CodeSegmentSequence, "PID", 0, "PID segment missing: a booking needs the patient")
	}

	c.Contact = contact(msg, pid)
	switch kind {
	case pas.Book, pas.Modify:
		if c.Fields, err = m.fields(msg, pid, eventTime); err != nil {
			return nil, "", err
		}
		c.Build = func(f pas.Fields) (*events.Booking, error) { return m.build(f, eventTime) }
	case pas.Cancel:
		c.CancelledBy = events.ByHospital
		if trigger == "S15" {
			c.CancelledBy = m.cancelledBy(msg, sch.Field(6))
		}
	}
	return c, "", nil
}

func (m *Mapper) checkHeader(msg *hl7.Message) (string, error) {
	h := msg.Header()
	if typ := h.Get(9, 1); typ != "SIU" {
		if typ == "" {
			return "", hl7.Reject(hl7.CodeRequiredMissing, "MSH", 9, "message type missing")
		}
		return "", hl7.Reject(hl7.CodeUnsupportedType, "MSH", 9, "message type %s not accepted: this receiver takes SIU only", clip(typ))
	}
	trigger := h.Get(9, 2)
	if _, ok := triggers[trigger]; !ok && !ignoredTriggers[trigger] {
		return "", hl7.Reject(hl7.CodeUnsupportedEvent, "MSH", 9, "trigger event %s not accepted: S12–S26 only", clip(trigger))
	}
	if h.Get(10, 1) == "" {
		return "", hl7.Reject(hl7.CodeRequiredMissing, "MSH", 10, "message control id missing")
	}
	if len(h.Get(10, 1)) > 199 {
		return "", hl7.Reject(hl7.CodeDataType, "MSH", 10, "message control id longer than 199")
	}
	pid := h.Get(11, 1)
	accepted := false
	for _, p := range m.cfg.ProcessingIDs {
		accepted = accepted || strings.EqualFold(p, pid)
	}
	if !accepted {
		return "", hl7.Reject(hl7.CodeUnsupportedProcID, "MSH", 11, "processing id %s not accepted here (accepted: %s)", clip(pid), strings.Join(m.cfg.ProcessingIDs, ", "))
	}
	major, minor, ok := msg.Version()
	if !ok || major != 2 || minor < 3 {
		return "", hl7.Reject(hl7.CodeUnsupportedVersion, "MSH", 12, "version %s not accepted: HL7 v2.3 to v2.9 only", clip(h.Get(12, 1)))
	}
	return trigger, nil
}

// eventID is deterministic from the sender and its control id, so an engine's retransmission
// of a message carries the same event id. Over-long ids are hashed to fit the contract.
func eventID(h hl7.Segment) string {
	id := "hl7:" + h.Get(4, 1) + "/" + h.Get(3, 1) + "/" + h.Get(10, 1)
	if len(id) <= 128 && utf8.ValidString(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "hl7:sha256:" + hex.EncodeToString(sum[:])
}

// appointmentID is the filler's (the PAS's own) id, SCH-2.1, or else the placer's, SCH-1.1,
// namespaced by the sending facility (MSH-4.1, else MSH-4.2) as pas.Namespaced does, so two
// feeds' ids cannot collide.
func appointmentID(h, sch hl7.Segment) (string, error) {
	facility := h.Get(4, 1)
	if facility == "" {
		facility = h.Field(4).Comp(2).String()
	}
	for _, n := range []int{2, 1} {
		if id := strings.TrimSpace(sch.Get(n, 1)); id != "" {
			id = pas.Namespaced(facility, id)
			if len(id) > 128 {
				return "", hl7.Errorf(hl7.CodeDataType, "SCH", n, "appointment id with its sending facility (MSH-4) longer than 128")
			}
			return id, nil
		}
	}
	return "", hl7.Errorf(hl7.CodeRequiredMissing, "SCH", 2, "no appointment id in SCH-2 (filler) or SCH-1 (placer)")
}

// patient finds the configured identifier in PID-3 and pseudonymises it at once.
func (m *Mapper) patient(pid hl7.Segment) (string, error) {
	for _, want := range m.cfg.PatientIDTypes {
		for _, rep := range pid.Field(3).Reps() {
			typ := rep.Comp(5).String()
			auth := rep.Comp(4)
			match := strings.EqualFold(typ, want)
			if strings.EqualFold(want, "NH") && typ == "" {
				match = strings.EqualFold(auth.Sub(1), "NHS") || auth.Sub(2) == NHSNumberOID
			}
			if !match {
				continue
			}
			id := strings.TrimSpace(rep.Comp(1).String())
			if id == "" {
				continue
			}
			if strings.EqualFold(want, "NH") && !pas.ValidNHSNumber(id) {
				return "", hl7.Errorf(hl7.CodeDataType, "PID", 3, "NHS number is not ten digits with a valid check digit")
			}
			return m.cfg.Pseudonymiser.Pseudonym(id), nil
		}
	}
	return "", hl7.Errorf(hl7.CodeRequiredMissing, "PID", 3, "no patient identifier of type %s", strings.Join(m.cfg.PatientIDTypes, " or "))
}

// tracked are the fields the booking mapping reads, by segment (the first maxOccurrences of a
// repeating one). In an update (S13, S14) a field left empty keeps the value the gateway holds
// for the appointment and "" deletes it, as HL7 v2 says; so each is kept as sent.
var tracked = []trackedSeg{
	{"SCH", []int{5, 7, 8, 9, 10, 11}},
	{"TQ1", []int{6, 7, 8}},
	{"PV1", []int{3, 10}},
	{"AIS", []int{3, 4, 7, 8}},
	{"AIG", []int{8}},
	{"AIL", []int{3, 6}},
	{"AIP", []int{6}},
}

const maxOccurrences = 4

// startFields hold the appointment start. The start is one fact: a message that gives it
// anywhere replaces the held one wholesale, so a start held in TQ1-7 cannot outrank a new one
// sent only in AIS-4.
var startFields = map[string]bool{"TQ1-7": true, "SCH-11": true, "AIS-4": true, "AIG-8": true, "AIL-6": true, "AIP-6": true}

// Names of the fields derived from the patient's segments. The gateway keeps what they give
// (the age band, whether there is a mobile, the opt-out), never the birth date or the number.
const (
	fieldAgeBand = "age_band"
	fieldSMS     = "sms"
	fieldOptOut  = "opt_out"
)

func fieldKey(seg string, occ, n int) string {
	if occ == 0 {
		return seg + "-" + strconv.Itoa(n)
	}
	return fmt.Sprintf("%s[%d]-%d", seg, occ+1, n)
}

// parseKey reads a fieldKey back; ok is false for the derived fields.
func parseKey(k string) (seg string, occ, n int, ok bool) {
	name, num, found := strings.Cut(k, "-")
	if !found || len(name) < 3 {
		return "", 0, 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 {
		return "", 0, 0, false
	}
	seg = name[:3]
	if rest := name[3:]; rest != "" {
		i, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]"))
		if err != nil || i < 2 {
			return "", 0, 0, false
		}
		occ = i - 1
	}
	return seg, occ, n, true
}

// fields reads what msg says about the booking: every tracked field it carries (as ER7 text in
// the default delimiters, or pas.Null for ""), and the facts derived from PID and PD1.
func (m *Mapper) fields(msg *hl7.Message, pid *hl7.Segment, bookedAt time.Time) (pas.Fields, error) {
	f := pas.Fields{}
	for _, t := range m.tracked {
		for occ, seg := range msg.All(t.seg) {
			if occ >= maxOccurrences {
				break
			}
			for _, n := range t.fields {
				if raw := seg.Field(n).Raw(); raw != "" {
					f[fieldKey(t.seg, occ, n)] = raw
				}
			}
		}
	}
	hasStart := false
	for k, v := range f {
		seg, _, n, _ := parseKey(k)
		hasStart = hasStart || v != pas.Null && startFields[fieldKey(seg, 0, n)]
	}
	if hasStart {
		for _, t := range m.tracked {
			for occ := range maxOccurrences {
				for _, n := range t.fields {
					if k := fieldKey(t.seg, occ, n); startFields[fieldKey(t.seg, 0, n)] && f[k] == "" {
						f[k] = pas.Null
					}
				}
			}
		}
	}
	if pid != nil {
		switch raw := pid.Field(7).Raw(); raw {
		case "":
		case pas.Null:
			f[fieldAgeBand] = pas.Null
		default:
			dob, _, err := hl7.ParseTime(pid.Get(7, 1), m.cfg.Location)
			if err != nil {
				return nil, hl7.Errorf(hl7.CodeDataType, "PID", 7, "date of birth is not a valid date")
			}
			band, err := pas.AgeBand(dob, bookedAt)
			if err != nil {
				return nil, hl7.Errorf(hl7.CodeDataType, "PID", 7, "%s", err.Error())
			}
			f[fieldAgeBand] = band
		}
		if pid.Field(13).Raw() != "" || pid.Field(14).Raw() != "" {
			f[fieldSMS] = flag(hasMobile(*pid))
		}
	}
	if pd1, ok := msg.Segment("PD1"); ok && pd1.Field(12).Raw() != "" {
		f[fieldOptOut] = flag(strings.EqualFold(pd1.Get(12, 1), "Y"))
	}
	return f, nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// build maps fields (a message's, laid over those held for the appointment) to booking facts.
// It reads them from a message rebuilt from the fields, with the same functions for every
// fact whether it came in this message or an earlier one.
func (m *Mapper) build(f pas.Fields, bookedAt time.Time) (*events.Booking, error) {
	type place struct {
		seg string
		occ int
	}
	segs := map[place]map[int]string{}
	for k, v := range f {
		seg, occ, n, ok := parseKey(k)
		if !ok {
			continue
		}
		p := place{seg, occ}
		if segs[p] == nil {
			segs[p] = map[int]string{}
		}
		segs[p][n] = v
	}
	var list []hl7.Segment
	for _, t := range m.tracked {
		for occ := range maxOccurrences {
			if fs, ok := segs[place{t.seg, occ}]; ok {
				list = append(list, hl7.NewSegment(t.seg, fs))
			} else if t.seg == "SCH" && occ == 0 {
				list = append(list, hl7.NewSegment("SCH", nil))
			}
		}
	}
	msg := hl7.NewMessage(list...)
	sch, _ := msg.Segment("SCH")
	start, err := m.start(msg, sch)
	if err != nil {
		return nil, err
	}
	band, ok := f[fieldAgeBand]
	if !ok {
		return nil, hl7.Errorf(hl7.CodeRequiredMissing, "PID", 7, "date of birth missing: the age band is required")
	}
	b := &events.Booking{
		Specialty:  m.specialty(msg, sch),
		Clinic:     clinic(msg, sch),
		FirstVisit: firstVisit(sch),
		Start:      start,
		BookedAt:   bookedAt,
		AgeBand:    band,
		Contact:    events.Contact{SMS: f[fieldSMS] == "1", OptOut: f[fieldOptOut] == "1"},
	}
	if d, ok := m.duration(msg, sch, start); ok {
		b.Extra = events.Extra{ExtraDuration: d}
	}
	if m.cfg.Mapping != nil {
		for _, e := range m.cfg.Mapping.Extras {
			if e.HL7 == "" {
				continue
			}
			seg, ok := msg.Segment(e.Segment)
			if !ok {
				continue
			}
			if v, ok := e.Value(seg.Get(e.Field, e.Component)); ok {
				if b.Extra == nil {
					b.Extra = events.Extra{}
				}
				b.Extra[e.Name] = v
			}
		}
	}
	return b, nil
}

// ExtraDuration is the booking extra that carries the appointment's length in minutes; a
// CSV export for training can supply the same column.
const ExtraDuration = "duration_minutes"

type located struct {
	seg   hl7.Segment
	name  string
	field int
	comp  int
}

func (l located) value() string { return l.seg.Get(l.field, l.comp) }

// start reads the appointment start from the first of TQ1-7 (v2.5+), SCH-11.4 (the TQ of
// v2.3/2.4, still common later), AIS-4, AIG-8, AIL-6, AIP-6 that has one.
func (m *Mapper) start(msg *hl7.Message, sch hl7.Segment) (time.Time, error) {
	var cands []located
	for _, s := range msg.All("TQ1") {
		cands = append(cands, located{s, "TQ1", 7, 1})
	}
	cands = append(cands, located{sch, "SCH", 11, 4})
	for _, r := range []struct {
		name  string
		field int
	}{{"AIS", 4}, {"AIG", 8}, {"AIL", 6}, {"AIP", 6}} {
		for _, s := range msg.All(r.name) {
			cands = append(cands, located{s, r.name, r.field, 1})
		}
	}
	for _, c := range cands {
		v := c.value()
		if v == "" {
			continue
		}
		t, p, err := hl7.ParseTime(v, m.cfg.Location)
		if err != nil {
			return time.Time{}, hl7.Errorf(hl7.CodeDataType, c.name, c.field, "appointment start is not a valid date/time")
		}
		if p < hl7.Minute {
			return time.Time{}, hl7.Errorf(hl7.CodeDataType, c.name, c.field, "appointment start needs a time of day, not only a date")
		}
		return t, nil
	}
	return time.Time{}, hl7.Errorf(hl7.CodeRequiredMissing, "SCH", 11, "no appointment start in TQ1-7, SCH-11.4 or AIS/AIG/AIL/AIP")
}

// duration reads the length in minutes from TQ1-6, SCH-9/10, SCH-11.3, AIS-7/8, or the end
// in TQ1-8 / SCH-11.5. It is optional: an unreadable one is left out, not an error.
func (m *Mapper) duration(msg *hl7.Message, sch hl7.Segment, start time.Time) (float64, bool) {
	ok := func(d float64) bool { return d > 0 && d <= 24*60 }
	if tq1, found := msg.Segment("TQ1"); found {
		if d, good := quantity(tq1.Get(6, 1), tq1.Field(6).Comp(2).Sub(1)); good && ok(d) {
			return d, true
		}
	}
	if d, good := quantity(sch.Get(9, 1), sch.Get(10, 1)); good && ok(d) {
		return d, true
	}
	if d, good := tqDuration(sch.Get(11, 3)); good && ok(d) {
		return d, true
	}
	if ais, found := msg.Segment("AIS"); found {
		if d, good := quantity(ais.Get(7, 1), ais.Get(8, 1)); good && ok(d) {
			return d, true
		}
	}
	for _, v := range []string{firstOf(msg, "TQ1", 8), sch.Get(11, 5)} {
		if v == "" {
			continue
		}
		if end, _, err := hl7.ParseTime(v, m.cfg.Location); err == nil {
			if d := end.Sub(start).Minutes(); ok(d) {
				return d, true
			}
		}
	}
	return 0, false
}

func firstOf(msg *hl7.Message, seg string, field int) string {
	if s, ok := msg.Segment(seg); ok {
		return s.Get(field, 1)
	}
	return ""
}

// quantity reads a number with ISO+/ANSI+ units (min, h, s, d); no units means minutes.
func quantity(n, units string) (float64, bool) {
	v, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
	if err != nil {
		return 0, false
	}
	switch strings.ToLower(strings.TrimSpace(units)) {
	case "", "min", "mins", "minute", "minutes", "m":
		return v, true
	case "h", "hr", "hrs", "hour", "hours":
		return v * 60, true
	case "s", "sec", "second", "seconds":
		return v / 60, true
	}
	return 0, false
}

// tqDuration reads TQ-3 durations such as M30 (minutes), H1 (hours), S900 (seconds).
func tqDuration(v string) (float64, bool) {
	if len(v) < 2 {
		return 0, false
	}
	n, err := strconv.ParseFloat(v[1:], 64)
	if err != nil {
		return 0, false
	}
	switch v[0] {
	case 'M', 'm':
		return n, true
	case 'H', 'h':
		return n * 60, true
	case 'S', 's':
		return n / 60, true
	}
	return 0, false
}

var treatmentFunction = regexp.MustCompile(`^[0-9]{3}$`)

// specialty is the NHS treatment function code (three digits, or a local code the mapping
// file maps to one) from the identifier or the alternate identifier of AIS-3 (the service),
// PV1-10 (hospital service, where UK feeds put the specialty) or SCH-7; "unknown" (a missing
// value to the model) when none has one, as csvimport does.
func (m *Mapper) specialty(msg *hl7.Message, sch hl7.Segment) string {
	var cands []hl7.Field
	for _, s := range msg.All("AIS") {
		cands = append(cands, s.Field(3))
	}
	if pv1, ok := msg.Segment("PV1"); ok {
		cands = append(cands, pv1.Field(10))
	}
	cands = append(cands, sch.Field(7))
	for _, f := range cands {
		for _, c := range []int{1, 4} {
			v := strings.TrimSpace(f.Comp(c).String())
			if treatmentFunction.MatchString(v) {
				return v
			}
			if tfc, ok := m.cfg.Mapping.Specialty(v); ok {
				return tfc
			}
		}
	}
	return "unknown"
}

// clinic is the clinic code: AIL-3.1 (point of care of the location resource), PV1-3.1, or
// SCH-5.1 (schedule id), cut to the contract's 64 bytes.
func clinic(msg *hl7.Message, sch hl7.Segment) string {
	var cands []string
	for _, s := range msg.All("AIL") {
		cands = append(cands, s.Get(3, 1))
	}
	if pv1, ok := msg.Segment("PV1"); ok {
		cands = append(cands, pv1.Get(3, 1))
	}
	cands = append(cands, sch.Get(5, 1))
	for _, v := range cands {
		if v = strings.TrimSpace(v); v != "" {
			return clipBytes(v, 64)
		}
	}
	return ""
}

// firstVisit reads new (true) or follow-up (false) from SCH-8 (appointment type), then SCH-7
// (appointment reason), code before text. HL7's own tables (0276 ROUTINE, WALKIN, CHECKUP,
// FOLLOWUP, EMERGENCY; 0277 Normal, Tentative, Complete) barely say; UK feeds use local
// codes like NEW and FU. Unknown means follow-up (false), as in csvimport.
func firstVisit(sch hl7.Segment) bool {
	for _, n := range []int{8, 7} {
		f := sch.Field(n)
		if first, known := pas.VisitType(f.Comp(1).String(), f.Comp(2).String()); known {
			return first
		}
	}
	return false
}

var (
	patientCancel  = map[string]bool{"2": true, "P": true, "PAT": true, "PT": true, "PATIENT": true, "CBP": true}
	hospitalCancel = map[string]bool{"4": true, "H": true, "HOSP": true, "HOSPITAL": true, "PROV": true, "PROVIDER": true, "CBH": true, "CLIN": true}
)

// cancelledBy reads who cancelled from SCH-6 (event reason). HL7 leaves the codes to the
// site; we accept the mapping file's codes, the NHS Data Dictionary "attended or did not
// attend" codes (2 cancelled by the patient, 4 by the provider), common local codes, the
// mapping file's phrases in SCH-6.2 or NTE, and words in SCH-6.2. Unknown is a hospital
// cancellation: calling it the patient's would raise that patient's future risk on
// a guess.
func (m *Mapper) cancelledBy(msg *hl7.Message, reason hl7.Field) events.CancelledBy {
	code := strings.ToUpper(strings.TrimSpace(reason.Comp(1).String()))
	if by, ok := m.cfg.Mapping.CancelCode(code); ok {
		return by
	}
	switch {
	case patientCancel[code]:
		return events.ByPatient
	case hospitalCancel[code]:
		return events.ByHospital
	}
	// The trust's phrases, in the reason's text and then in the notes (NTE-3), which PAS
	// front ends often use instead ("Patient requested cancellation"). Searched, never kept.
	texts := []string{reason.Comp(2).String()}
	for _, nte := range msg.All("NTE") {
		for _, rep := range nte.Field(3).Reps() {
			texts = append(texts, rep.Comp(1).String())
		}
	}
	for _, t := range texts {
		if by, ok := m.cfg.Mapping.CancelText(t); ok {
			return by
		}
	}
	for _, w := range pas.Words(reason.Comp(2).String()) {
		switch w {
		case "patient":
			return events.ByPatient
		case "hospital", "clinic", "provider", "trust", "consultant", "doctor", "clinician":
			return events.ByHospital
		}
	}
	return events.ByHospital
}

// hasMobile reports whether PID-13 or PID-14 holds a mobile: equipment type CP, or a UK
// mobile number.
func hasMobile(pid hl7.Segment) bool {
	_, sms := mobile(pid)
	return sms
}

// mobile finds the patient's mobile number in PID-13 (home) then PID-14 (business): first a
// repetition with equipment type (XTN-3) CP, cellular, then any whose number is a UK mobile,
// whatever its use code (XTN-2 PRN, ORN, WPN, …). E-mail addresses (use NET, types Internet
// and X.400) are skipped. The number is read from XTN-12 (unformatted), XTN-5/6/7 (country,
// area, local) or XTN-1 (the formatted number of v2.3). sms says whether there is a mobile at
// all, even one whose number is not a UK mobile the contact store can keep.
func mobile(pid hl7.Segment) (m pas.Mobile, sms bool) {
	var reps []hl7.Rep
	for _, n := range []int{13, 14} {
		reps = append(reps, pid.Field(n).Reps()...)
	}
	number := func(rep hl7.Rep) (pas.Mobile, bool) {
		parts := rep.Comp(6).String() + rep.Comp(7).String()
		if cc := rep.Comp(5).String(); cc != "" {
			parts = "+" + cc + parts
		}
		for _, v := range []string{rep.Comp(12).String(), parts, rep.Comp(1).String()} {
			if mob, ok := pas.ParseMobile(v); ok {
				return mob, true
			}
		}
		return pas.Mobile{}, false
	}
	email := func(rep hl7.Rep) bool {
		use, typ := strings.ToUpper(rep.Comp(2).String()), strings.ToUpper(rep.Comp(3).String())
		return use == "NET" || typ == "INTERNET" || typ == "X.400"
	}
	for _, rep := range reps {
		if !email(rep) && strings.EqualFold(rep.Comp(3).String(), "CP") {
			sms = true
			if mob, ok := number(rep); ok {
				return mob, true
			}
		}
	}
	for _, rep := range reps {
		if !email(rep) {
			if mob, ok := number(rep); ok {
				return mob, true
			}
		}
	}
	return pas.Mobile{}, sms
}

// contact is what PID and PD1 say about reaching the patient, for the contact store; nil when
// they say nothing (an update without PID-13, PID-14 and PD1-12 keeps the stored record).
func contact(msg *hl7.Message, pid *hl7.Segment) *pas.Contact {
	if pid == nil {
		return nil
	}
	var c pas.Contact
	if pid.Field(13).Raw() != "" || pid.Field(14).Raw() != "" {
		c.PhoneSent = true
		c.Mobile, _ = mobile(*pid)
	}
	if pd1, ok := msg.Segment("PD1"); ok && pd1.Field(12).Raw() != "" {
		c.OptOutSent, c.OptOut = true, strings.EqualFold(pd1.Get(12, 1), "Y")
	}
	if !c.PhoneSent && !c.OptOutSent {
		return nil
	}
	return &c
}

func clip(s string) string { return clipBytes(s, 20) }

func clipBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
