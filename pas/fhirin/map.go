// Package fhirin takes FHIR R4 Appointment resources, posted alone or in a transaction or
// batch Bundle, and turns them into pas.Changes: status booked, cancelled, noshow, fulfilled
// and entered-in-error become appointment events; bad input is answered with an
// OperationOutcome that says what is wrong and where (a FHIRPath expression).
//
// Resource types come from github.com/samply/golang-fhir-models (generated from the R4
// StructureDefinitions, with the code systems as checked Go enums). Its Appointment has no
// "contained", and its enums decode an absent element as their first code, so this package
// reads those two things from the raw JSON itself.
package fhirin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/pas"
)

// NHSNumberSystem is the identifier system of the NHS number.
const NHSNumberSystem = "https://fhir.nhs.uk/Id/nhs-number"

// ExtraDuration is the booking extra carrying the appointment's length in minutes, the same
// key as siu.ExtraDuration.
const ExtraDuration = "duration_minutes"

// Config says how to read a trust's resources.
type Config struct {
	// Pseudonymiser keys the patient identifier; required.
	Pseudonymiser *pseudo.Pseudonymiser
	// PatientSystem is the identifier system of the patient id to pseudonymise. Default
	// NHSNumberSystem (check digit verified). It must name the same identifier the HL7
	// feed and CSV imports use, or one patient becomes two.
	PatientSystem string
	// Facility namespaces appointment ids (pas.Namespaced), so two feeds' ids cannot collide:
	// set it to the MSH-4 of the trust's HL7 feed so both name an appointment alike. Empty:
	// the appointment identifier's assigner.identifier.value, else no namespace.
	Facility string
	// AppointmentSystem, if set, is the identifier system of the PAS appointment id; the
	// Appointment must carry it. If empty, the first identifier is used, or else the
	// resource id.
	AppointmentSystem string
	// Now is the receipt time, used when a resource has no meta.lastUpdated. Default
	// time.Now.
	Now func() time.Time
	// Mapping is the trust's mapping file: local specialty codes, cancellation codes and
	// phrases, and the extensions carrying extra features. nil: the built-in rules only.
	Mapping *pas.Mapping
	// MaxAhead refuses (422) a resource whose event time lies further than this past Now: the
	// rule events.CheckAhead that the scorer and dispatcher apply too. Default
	// events.DefaultMaxAhead; negative: no limit. It must equal the scorer's --max-ahead.
	MaxAhead time.Duration
}

// Mapper turns Appointment resources into changes. It is safe for concurrent use.
type Mapper struct{ cfg Config }

// NewMapper checks cfg and fills in its defaults.
func NewMapper(cfg Config) (*Mapper, error) {
	if cfg.Pseudonymiser == nil {
		return nil, errors.New("fhirin: a pseudonymiser is required")
	}
	if cfg.PatientSystem == "" {
		cfg.PatientSystem = NHSNumberSystem
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxAhead == 0 {
		cfg.MaxAhead = events.DefaultMaxAhead
	}
	return &Mapper{cfg: cfg}, nil
}

// Issue is one problem with the input, reported to the sender as an OperationOutcome issue.
// Diagnostics names elements, never their values.
type Issue struct {
	Code        fhir.IssueType
	Expression  string // FHIRPath of the element at fault, e.g. "Appointment.start"
	Diagnostics string
}

func (i *Issue) Error() string {
	if i.Expression == "" {
		return i.Diagnostics
	}
	return i.Expression + ": " + i.Diagnostics
}

func issue(code fhir.IssueType, expr, format string, args ...any) *Issue {
	return &Issue{Code: code, Expression: expr, Diagnostics: fmt.Sprintf(format, args...)}
}

// patients resolves references to Patient resources sent alongside an Appointment: the
// Bundle's other entries by fullUrl and by "Patient/<id>", and the Appointment's contained
// resources by "#<id>".
type patients map[string]*fhir.Patient

// Map returns the change an Appointment resource describes, or nil with the reason when its
// status is not one the scorer acts on. urlID is the id from a PUT URL ("" if none); ctx
// holds the Patients sent with it.
func (m *Mapper) Map(raw json.RawMessage, urlID string, ctx patients) (*pas.Change, string, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, "", issue(fhir.IssueTypeStructure, "Appointment", "not a JSON object")
	}
	if rt := resourceType(raw); rt != "Appointment" {
		return nil, "", issue(fhir.IssueTypeNotSupported, "", "resourceType %s not accepted here; send an Appointment", quote(rt))
	}
	a, err := fhir.UnmarshalAppointment(raw)
	if err != nil {
		return nil, "", issue(fhir.IssueTypeStructure, Locate(reflect.TypeFor[fhir.Appointment](), raw, "Appointment"),
			"does not match the FHIR R4 Appointment structure: %s", jsonReason(err))
	}
	if len(a.ModifierExtension) > 0 {
		return nil, "", issue(fhir.IssueTypeExtension, "Appointment.modifierExtension", "modifier extensions change the meaning of the resource and none is understood here")
	}
	if _, ok := top["status"]; !ok {
		return nil, "", issue(fhir.IssueTypeRequired, "Appointment.status", "status is required")
	}
	if urlID != "" && a.Id != nil && *a.Id != urlID {
		return nil, "", issue(fhir.IssueTypeInvariant, "Appointment.id", "the resource id differs from the id in the URL")
	}
	if a.Id == nil && urlID != "" {
		a.Id = &urlID
	}
	local, err := containedPatients(top["contained"])
	if err != nil {
		return nil, "", err
	}
	for k, v := range ctx {
		local[k] = v
	}

	var kind pas.Kind
	by := events.CancelledBy("")
	switch a.Status {
	case fhir.AppointmentStatusBooked:
		kind = pas.Book
	case fhir.AppointmentStatusCancelled:
		kind, by = pas.Cancel, cancelledBy(a.CancelationReason, m.cfg.Mapping)
	case fhir.AppointmentStatusEnteredInError:
		kind, by = pas.Cancel, events.ByHospital
	case fhir.AppointmentStatusNoshow:
		kind = pas.DidNotAttend
	case fhir.AppointmentStatusFulfilled:
		kind = pas.Attend
	default:
		return nil, "status " + a.Status.Code() + " is not a booking or an outcome", nil
	}

	c := &pas.Change{Kind: kind, Source: "FHIR Appointment " + a.Status.Code(), CancelledBy: by}
	if c.AppointmentID, err = m.appointmentID(&a); err != nil {
		return nil, "", err
	}
	c.EventID = eventID(&a, raw)
	c.Received = m.cfg.Now()
	var timeElem string
	if c.EventTime, timeElem, err = eventTime(&a, kind, c.Received); err != nil {
		return nil, "", err
	}
	if events.CheckAhead(c.EventTime, c.Received, m.cfg.MaxAhead) != nil {
		return nil, "", issue(fhir.IssueTypeBusinessRule, timeElem, "more than %s ahead of this server's clock: the sender's clock or the resource is wrong; "+
			"the risk scorer would refuse the event, so it is not accepted here", m.cfg.MaxAhead)
	}
	actor, pat, err := findPatient(&a, local)
	if err != nil {
		return nil, "", err
	}
	if actor >= 0 || pat != nil {
		if c.Patient, err = m.patientID(&a, actor, pat); err != nil {
			return nil, "", err
		}
	}
	if kind != pas.Book {
		return c, "", nil
	}
	if c.Patient == "" {
		return nil, "", issue(fhir.IssueTypeRequired, "Appointment.participant", "a booked appointment needs a participant whose actor is the Patient")
	}
	base, err := booking(&a, c.EventTime, m.cfg.Mapping)
	if err != nil {
		return nil, "", err
	}
	if c.Fields, err = patientFields(pat, c.EventTime); err != nil {
		return nil, "", err
	}
	c.Contact = patientContact(pat)
	c.Build = func(f pas.Fields) (*events.Booking, error) {
		b := *base
		band, ok := f[fieldAgeBand]
		if !ok {
			return nil, issue(fhir.IssueTypeRequired, "Patient.birthDate",
				"the age band needs the patient's birthDate: send the Patient resource contained in the Appointment or in the same Bundle")
		}
		b.AgeBand = band
		b.Contact = events.Contact{SMS: f[fieldSMS] == "1", OptOut: f[fieldOptOut] == "1"}
		return &b, nil
	}
	return c, "", nil
}

// Names of the booking facts read from the Patient, shared with package siu so an update from
// either feed merges onto the other's. An Appointment is sent whole (a FHIR update replaces the
// resource), so its own elements are always taken as sent; the Patient is another resource,
// and an update that does not send it keeps the facts held from an earlier one.
const (
	fieldAgeBand = "age_band"
	fieldSMS     = "sms"
	fieldOptOut  = "opt_out"
)

// patientFields are the facts read from the Patient sent with the Appointment; none when it
// was not sent. A Patient is sent whole, so an element it lacks is deleted.
func patientFields(pat *fhir.Patient, bookedAt time.Time) (pas.Fields, error) {
	f := pas.Fields{}
	if pat == nil {
		return f, nil
	}
	f[fieldAgeBand] = pas.Null
	if pat.BirthDate != nil {
		dob, err := dateTime(*pat.BirthDate)
		if err != nil {
			return nil, issue(fhir.IssueTypeValue, "Patient.birthDate", "not a FHIR date")
		}
		band, err := pas.AgeBand(dob, bookedAt)
		if err != nil {
			return nil, issue(fhir.IssueTypeValue, "Patient.birthDate", "%s", err.Error())
		}
		f[fieldAgeBand] = band
	}
	f[fieldSMS], f[fieldOptOut] = "0", "0"
	if contact(pat).SMS {
		f[fieldSMS] = "1"
	}
	if restricted(pat) {
		f[fieldOptOut] = "1"
	}
	return f, nil
}

// restricted reports a Patient marked restricted or very restricted in meta.security
// (v3-Confidentiality R or V), as NHS PDS marks sensitive records: the FHIR counterpart of
// PD1-12, and as conservative: such a patient gets no reminders.
func restricted(p *fhir.Patient) bool {
	if p.Meta == nil {
		return false
	}
	for _, c := range p.Meta.Security {
		if c.System != nil && *c.System == "http://terminology.hl7.org/CodeSystem/v3-Confidentiality" && c.Code != nil && (*c.Code == "R" || *c.Code == "V") {
			return true
		}
	}
	return false
}

// patientContact is what the Patient says about reaching them, for the contact store: its
// mobile (telecom system phone with use mobile, then system sms, then any phone whose number
// is a UK mobile; ones whose period has ended are skipped) and the opt-out. nil when no
// Patient was sent: the stored record is kept.
func patientContact(p *fhir.Patient) *pas.Contact {
	if p == nil {
		return nil
	}
	c := &pas.Contact{PhoneSent: true, OptOutSent: true, OptOut: restricted(p)}
	rank := func(t fhir.ContactPoint) int {
		switch {
		case t.System == nil || t.Value == nil:
			return 0
		case t.Period != nil && t.Period.End != nil && endedBefore(*t.Period.End, time.Now()):
			return 0
		case *t.System == fhir.ContactPointSystemPhone && t.Use != nil && *t.Use == fhir.ContactPointUseMobile:
			return 3
		case *t.System == fhir.ContactPointSystemSms:
			return 2
		case *t.System == fhir.ContactPointSystemPhone:
			return 1
		}
		return 0
	}
	best := 0
	for _, t := range p.Telecom {
		if r := rank(t); r > best {
			if m, ok := pas.ParseMobile(*t.Value); ok {
				c.Mobile, best = m, r
			}
		}
	}
	return c
}

func endedBefore(end string, now time.Time) bool {
	t, err := dateTime(end)
	return err == nil && t.Before(now)
}

func resourceType(raw json.RawMessage) string {
	var r struct {
		ResourceType string `json:"resourceType"`
	}
	_ = json.Unmarshal(raw, &r)
	return r.ResourceType
}

func containedPatients(raw json.RawMessage) (patients, error) {
	out := patients{}
	if len(raw) == 0 {
		return out, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, issue(fhir.IssueTypeStructure, "Appointment.contained", "must be an array of resources")
	}
	for i, r := range list {
		if resourceType(r) != "Patient" {
			continue
		}
		p, err := fhir.UnmarshalPatient(r)
		if err != nil {
			return nil, issue(fhir.IssueTypeStructure, Locate(reflect.TypeFor[fhir.Patient](), r, fmt.Sprintf("Appointment.contained[%d]", i)),
				"not a FHIR R4 Patient: %s", jsonReason(err))
		}
		if p.Id != nil {
			out["#"+*p.Id] = &p
		}
	}
	return out, nil
}

// appointmentID is the PAS appointment id: the identifier with the configured system, or the
// first identifier, or the resource id.
func (m *Mapper) appointmentID(a *fhir.Appointment) (string, error) {
	id, facility := "", m.cfg.Facility
	for _, ident := range a.Identifier {
		if ident.Value == nil || *ident.Value == "" {
			continue
		}
		if m.cfg.AppointmentSystem == "" || ident.System != nil && *ident.System == m.cfg.AppointmentSystem {
			id = *ident.Value
			if as := ident.Assigner; facility == "" && as != nil && as.Identifier != nil && as.Identifier.Value != nil {
				facility = *as.Identifier.Value
			}
			break
		}
	}
	switch {
	case id == "" && m.cfg.AppointmentSystem != "":
		return "", issue(fhir.IssueTypeRequired, "Appointment.identifier", "no identifier with system %s (the PAS appointment id)", m.cfg.AppointmentSystem)
	case id == "" && a.Id != nil:
		id = *a.Id
	case id == "":
		return "", issue(fhir.IssueTypeRequired, "Appointment.identifier", "no appointment identifier and no resource id")
	}
	id = pas.Namespaced(facility, id)
	if len(id) > 128 {
		return "", issue(fhir.IssueTypeTooLong, "Appointment.identifier", "appointment id (with its facility) longer than 128")
	}
	return id, nil
}

// eventID is the resource's version when it has one ("Appointment/<id>/_history/<v>"), so a
// resent version is the same event; otherwise a hash of the content.
func eventID(a *fhir.Appointment, raw json.RawMessage) string {
	if a.Id != nil && a.Meta != nil && a.Meta.VersionId != nil {
		id := "fhir:Appointment/" + *a.Id + "/_history/" + *a.Meta.VersionId
		if len(id) <= 128 && utf8.ValidString(id) {
			return id
		}
	}
	sum := sha256.Sum256(raw)
	return "fhir:sha256:" + hex.EncodeToString(sum[:])
}

// eventTime is when the PAS recorded this state: meta.lastUpdated; for a booking without it,
// created; else the time of receipt. It also names the element it came from.
func eventTime(a *fhir.Appointment, kind pas.Kind, now time.Time) (time.Time, string, error) {
	if a.Meta != nil && a.Meta.LastUpdated != nil {
		t, err := time.Parse(time.RFC3339Nano, *a.Meta.LastUpdated)
		if err != nil {
			return time.Time{}, "", issue(fhir.IssueTypeValue, "Appointment.meta.lastUpdated", "not a FHIR instant (YYYY-MM-DDThh:mm:ss with a time zone)")
		}
		return t, "Appointment.meta.lastUpdated", nil
	}
	if kind == pas.Book && a.Created != nil {
		t, err := dateTime(*a.Created)
		if err != nil {
			return time.Time{}, "", issue(fhir.IssueTypeValue, "Appointment.created", "not a FHIR dateTime")
		}
		return t, "Appointment.created", nil
	}
	return now, "", nil
}

var london = func() *time.Location {
	l, err := time.LoadLocation("Europe/London")
	if err != nil {
		panic(err)
	}
	return l
}()

// dateTime reads a FHIR dateTime or date (YYYY, YYYY-MM, YYYY-MM-DD, or a full instant); a
// date alone is midnight UK time.
func dateTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02", "2006-01", "2006"} {
		if t, err := time.ParseInLocation(layout, s, london); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("not a FHIR date or dateTime")
}

// findPatient returns the index of the participant whose actor is the patient (-1 if none)
// and the Patient resource it refers to, if one was sent.
func findPatient(a *fhir.Appointment, local patients) (int, *fhir.Patient, error) {
	found := -1
	var pat *fhir.Patient
	for i, p := range a.Participant {
		r := p.Actor
		if r == nil {
			continue
		}
		isPatient := r.Type != nil && *r.Type == "Patient"
		var res *fhir.Patient
		if r.Reference != nil {
			ref := *r.Reference
			res = local[ref]
			isPatient = isPatient || res != nil || strings.HasPrefix(ref, "Patient/") || strings.Contains(ref, "/Patient/")
		}
		if !isPatient {
			continue
		}
		if found >= 0 {
			return -1, nil, issue(fhir.IssueTypeNotSupported, fmt.Sprintf("Appointment.participant[%d]", i), "several patient participants (a group appointment) are not supported: send one Appointment per patient")
		}
		found, pat = i, res
	}
	return found, pat, nil
}

// patientID takes the configured identifier from the participant's actor.identifier or from
// the Patient resource, and pseudonymises it at once.
func (m *Mapper) patientID(a *fhir.Appointment, actor int, pat *fhir.Patient) (string, error) {
	expr := "Appointment.participant"
	var idents []fhir.Identifier
	if actor >= 0 {
		expr = fmt.Sprintf("Appointment.participant[%d].actor", actor)
		if r := a.Participant[actor].Actor; r.Identifier != nil {
			idents = append(idents, *r.Identifier)
		}
	}
	if pat != nil {
		idents = append(idents, pat.Identifier...)
	}
	for _, ident := range idents {
		if ident.System == nil || *ident.System != m.cfg.PatientSystem || ident.Value == nil || strings.TrimSpace(*ident.Value) == "" {
			continue
		}
		if m.cfg.PatientSystem == NHSNumberSystem && !pas.ValidNHSNumber(*ident.Value) {
			return "", issue(fhir.IssueTypeValue, expr+".identifier", "NHS number is not ten digits with a valid check digit")
		}
		return m.cfg.Pseudonymiser.Pseudonym(*ident.Value), nil
	}
	return "", issue(fhir.IssueTypeRequired, expr+".identifier",
		"the patient needs an identifier with system %s, in actor.identifier or in the Patient resource (contained, or in the same Bundle)", m.cfg.PatientSystem)
}

// booking reads the Appointment's own booking facts; the Patient's are added by Build.
func booking(a *fhir.Appointment, bookedAt time.Time, mp *pas.Mapping) (*events.Booking, error) {
	if a.Start == nil {
		return nil, issue(fhir.IssueTypeRequired, "Appointment.start", "a booked appointment needs a start")
	}
	start, err := time.Parse(time.RFC3339Nano, *a.Start)
	if err != nil {
		return nil, issue(fhir.IssueTypeValue, "Appointment.start", "not a FHIR instant (YYYY-MM-DDThh:mm:ss with a time zone)")
	}
	b := &events.Booking{
		Specialty:  specialty(a, mp),
		Clinic:     clinic(a),
		FirstVisit: firstVisit(a.AppointmentType),
		Start:      start,
		BookedAt:   bookedAt,
	}
	if d, ok := duration(a, start); ok {
		b.Extra = events.Extra{ExtraDuration: d}
	}
	if mp != nil {
		for _, e := range mp.Extras {
			if v, ok := extension(a.Extension, &e); ok {
				if b.Extra == nil {
					b.Extra = events.Extra{}
				}
				b.Extra[e.Name] = v
			}
		}
	}
	return b, nil
}

func duration(a *fhir.Appointment, start time.Time) (float64, bool) {
	ok := func(d float64) bool { return d > 0 && d <= 24*60 }
	if a.MinutesDuration != nil && ok(float64(*a.MinutesDuration)) {
		return float64(*a.MinutesDuration), true
	}
	if a.End != nil {
		if end, err := time.Parse(time.RFC3339Nano, *a.End); err == nil {
			if d := end.Sub(start).Minutes(); ok(d) {
				return d, true
			}
		}
	}
	return 0, false
}

var treatmentFunction = regexp.MustCompile(`^[0-9]{3}$`)

// specialty is the first three-digit code (an NHS treatment function code) in specialty, then
// serviceType; "unknown" otherwise, as in csvimport and siu.
func specialty(a *fhir.Appointment, mp *pas.Mapping) string {
	for _, ccs := range [][]fhir.CodeableConcept{a.Specialty, a.ServiceType} {
		for _, cc := range ccs {
			for _, c := range cc.Coding {
				if c.Code == nil {
					continue
				}
				if treatmentFunction.MatchString(*c.Code) {
					return *c.Code
				}
				if tfc, ok := mp.Specialty(*c.Code); ok {
					return tfc
				}
			}
		}
	}
	return "unknown"
}

// extension reads extra e from the Appointment extension with its url, if any.
func extension(exts []fhir.Extension, e *pas.Extra) (float64, bool) {
	if e.FHIRExtension == "" {
		return 0, false
	}
	for _, x := range exts {
		if x.Url != e.FHIRExtension {
			continue
		}
		switch {
		case x.ValueDecimal != nil:
			return e.Value(x.ValueDecimal.String())
		case x.ValueInteger != nil:
			return e.Value(fmt.Sprint(*x.ValueInteger))
		case x.ValueBoolean != nil:
			if e.Values == nil {
				if *x.ValueBoolean {
					return 1, true
				}
				return 0, true
			}
			return e.Value(fmt.Sprint(*x.ValueBoolean))
		case x.ValueCode != nil:
			return e.Value(*x.ValueCode)
		case x.ValueString != nil:
			return e.Value(*x.ValueString)
		case x.ValueCoding != nil && x.ValueCoding.Code != nil:
			return e.Value(*x.ValueCoding.Code)
		}
	}
	return 0, false
}

// clinic is the Location participant's identifier value, or its reference id, cut to 64 bytes.
func clinic(a *fhir.Appointment) string {
	for _, p := range a.Participant {
		r := p.Actor
		if r == nil {
			continue
		}
		ref := ""
		if r.Reference != nil {
			ref = *r.Reference
		}
		isLoc := r.Type != nil && *r.Type == "Location" || strings.HasPrefix(ref, "Location/") || strings.Contains(ref, "/Location/")
		if !isLoc {
			continue
		}
		if r.Identifier != nil && r.Identifier.Value != nil && *r.Identifier.Value != "" {
			return clip(*r.Identifier.Value, 64)
		}
		if i := strings.LastIndex(ref, "Location/"); i >= 0 {
			return clip(ref[i+len("Location/"):], 64)
		}
	}
	return ""
}

// firstVisit reads appointmentType's codes (v2-0276 FOLLOWUP and CHECKUP, local NEW/FU) and
// then its text and displays; unknown is follow-up, as in csvimport and siu.
func firstVisit(cc *fhir.CodeableConcept) bool {
	if cc == nil {
		return false
	}
	for _, c := range cc.Coding {
		code, display := "", ""
		if c.Code != nil {
			code = *c.Code
		}
		if c.Display != nil {
			display = *c.Display
		}
		if first, known := pas.VisitType(code, display); known {
			return first
		}
	}
	if cc.Text != nil {
		first, _ := pas.VisitType("", *cc.Text)
		return first
	}
	return false
}

// cancelledBy reads cancelationReason: the R4 code system appointment-cancellation-reason
// starts patient reasons with "pat" and provider/other ones with "prov", "maint", "meds",
// "oth"; text is read for "patient". Unknown is a hospital cancellation (see siu).
func cancelledBy(cc *fhir.CodeableConcept, mp *pas.Mapping) events.CancelledBy {
	if cc == nil {
		return events.ByHospital
	}
	for _, c := range cc.Coding {
		if c.Code == nil {
			continue
		}
		if by, ok := mp.CancelCode(*c.Code); ok {
			return by
		}
		code := strings.ToLower(*c.Code)
		if code == "pat" || strings.HasPrefix(code, "pat-") {
			return events.ByPatient
		}
		if code == "prov" || strings.HasPrefix(code, "prov-") || code == "maint" || code == "meds-inc" || code == "other" || strings.HasPrefix(code, "oth-") {
			return events.ByHospital
		}
	}
	if cc.Text != nil {
		if by, ok := mp.CancelText(*cc.Text); ok {
			return by
		}
		for _, w := range pas.Words(*cc.Text) {
			if w == "patient" {
				return events.ByPatient
			}
		}
	}
	return events.ByHospital
}

// contact: sms when the Patient has a telecom of system sms, or a phone with use mobile or a
// UK mobile number. The numbers are only inspected.
func contact(p *fhir.Patient) events.Contact {
	var c events.Contact
	if p == nil {
		return c
	}
	for _, t := range p.Telecom {
		if t.System == nil {
			continue
		}
		switch *t.System {
		case fhir.ContactPointSystemSms:
			c.SMS = true
		case fhir.ContactPointSystemPhone:
			if t.Use != nil && *t.Use == fhir.ContactPointUseMobile || t.Value != nil && pas.UKMobile(*t.Value) {
				c.SMS = true
			}
		}
	}
	return c
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func quote(s string) string {
	if s == "" {
		return "(missing)"
	}
	return fmt.Sprintf("%q", clip(s, 32))
}

// jsonReason describes a decoding error without quoting the input.
func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("element %s has the wrong JSON type (%s)", te.Field, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	}
	msg := err.Error()
	// samply's enum errors quote the unknown code; codes are not personal data, but keep it short.
	return clip(msg, 120)
}

// Locate returns the FHIRPath (under path, the element raw is) of the innermost element of raw
// that does not decode as Go type typ: "Appointment.participant[1].status" for an unknown
// participant status, rather than the whole resource. It returns path itself when raw decodes
// or no single element is at fault.
func Locate(typ reflect.Type, raw json.RawMessage, path string) string {
	if json.Unmarshal(raw, reflect.New(typ).Interface()) == nil {
		return path
	}
	switch typ.Kind() {
	case reflect.Pointer:
		return Locate(typ.Elem(), raw, path)
	case reflect.Slice:
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil {
			return path
		}
		for i, it := range items {
			if json.Unmarshal(it, reflect.New(typ.Elem()).Interface()) != nil {
				return Locate(typ.Elem(), it, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return path
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			v, ok := obj[name]
			if !ok || name == "" || name == "-" {
				continue
			}
			if json.Unmarshal(v, reflect.New(f.Type).Interface()) != nil {
				return Locate(f.Type, v, path+"."+name)
			}
		}
	}
	return path
}
