// Package csvimport replays a historical appointments CSV, one row per appointment, as
// appointment.v1 events in event-time order: a booked event at booked_at and, when the row
// has an outcome, an attended, did_not_attend or cancelled event. The layout is documented
// in docs/csv.md. A bad header is one error naming every problem; a bad row is reported with
// its line number and every bad column, and the import carries on, so nothing is dropped
// silently. Patient identifiers are pseudonymised before they leave this package.
package csvimport

import (
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // times without an offset are local (Europe/London by default); images may lack a zoneinfo database

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/scoring"
)

// Column names. Names in a file are matched after trimming spaces and lower-casing.
const (
	ColPatient     = "patient_id"
	ColAppointment = "appointment_id"
	ColBookedAt    = "booked_at"
	ColStart       = "appointment_start"
	ColOutcome     = "outcome"

	ColSpecialty   = "specialty"
	ColClinic      = "clinic"
	ColFirstVisit  = "first_visit"
	ColAgeBand     = "age_band"
	ColAge         = "age" // age in whole years, an alternative to age_band
	ColDeprivation = "deprivation_decile"
	ColSMS         = "sms_opt_in"
	ColCancelledAt = "cancelled_at"
)

// Required lists the columns every file must have.
var Required = []string{ColPatient, ColAppointment, ColBookedAt, ColStart, ColOutcome}

// known are the columns with a meaning; any other column is an extra fact.
var known = map[string]bool{
	ColPatient: true, ColAppointment: true, ColBookedAt: true, ColStart: true, ColOutcome: true,
	ColSpecialty: true, ColClinic: true, ColFirstVisit: true, ColAgeBand: true, ColAge: true,
	ColDeprivation: true, ColSMS: true, ColCancelledAt: true,
}

// UnknownSpecialty is the specialty of rows without one: appointment.v1 requires a value,
// and the feature code reads a non-numeric code as missing.
const UnknownSpecialty = "unknown"

// MaxExtraColumns is the most extra columns a file may have (appointment.v1's limit on
// booking.extra).
const MaxExtraColumns = 64

// ErrHeader is wrapped by every header problem; the error text names all of them.
var ErrHeader = errors.New("csv header")

// RowError says why one data row was not imported. Reasons never quote cell values, which
// may be personal data; the line number finds the row.
type RowError struct {
	Line   int // 1-based line in the file where the row starts
	Reason string
}

func (e RowError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// Result is what an import produced.
type Result struct {
	// Events are in event-time order; events at the same instant keep file order, and an
	// appointment's booking precedes its outcome.
	Events []events.Appointment
	// Rows counts data rows read, good and bad; Imported those that became events.
	Rows, Imported int
	// Bad lists every row that was not imported, in file order.
	Bad []RowError
	// Texts lists, for each extra column with text in an imported row, the distinct texts
	// (as scoring.CategoryText, sorted). Such cells are in booking.extra as
	// scoring.TextCode; cmd/trainset learns a feature's category list from them.
	Texts map[string][]string
}

// Defaults of Options.
const (
	DefaultTimeZone     = "Europe/London"
	DefaultDateOnlyTime = "23:59"
)

// Options are an import's settings; the zero value means the defaults.
type Options struct {
	// TimeZone is the IANA zone of times without an offset (default Europe/London).
	TimeZone string
	// DateOnlyTime is the local time of day, HH:MM, given to a date-only (YYYY-MM-DD)
	// appointment_start or cancelled_at (default 23:59: an outcome or cancellation known
	// only by its day is not seen by bookings made earlier that day). A date-only booked_at
	// is read as 00:00, the start of its day.
	DateOnlyTime string
}

// settings are validated Options.
type settings struct {
	loc     *time.Location
	dayTime time.Duration // offset of DateOnlyTime from midnight
}

// Validate checks the options; cmd/producer and cmd/trainset exit 2 on its error.
func (o Options) Validate() error {
	_, err := o.settings()
	return err
}

func (o Options) settings() (settings, error) {
	var s settings
	zone := o.TimeZone
	if zone == "" {
		zone = DefaultTimeZone
	}
	loc, err := time.LoadLocation(zone)
	if err != nil || zone == "Local" {
		return s, fmt.Errorf("time zone %q: want an IANA name such as Europe/London or UTC", zone)
	}
	s.loc = loc
	clock := o.DateOnlyTime
	if clock == "" {
		clock = DefaultDateOnlyTime
	}
	t, err := time.Parse("15:04", clock)
	if err != nil {
		return s, fmt.Errorf("date-only time %q: want HH:MM, 00:00 to 23:59", clock)
	}
	s.dayTime = time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute
	return s, nil
}

// Import reads a whole CSV from r. It returns an error wrapping ErrHeader when the header is
// unusable, or another error when r itself fails or the options are invalid; bad rows are in
// Result.Bad.
func Import(r io.Reader, ps *pseudo.Pseudonymiser, o Options) (Result, error) {
	var res Result
	if ps == nil {
		return res, errors.New("csvimport: nil pseudonymiser")
	}
	set, err := o.settings()
	if err != nil {
		return res, fmt.Errorf("csvimport: %w", err)
	}
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return res, fmt.Errorf("%w: the file is empty; want a header row with %s", ErrHeader, strings.Join(Required, ", "))
	}
	if err != nil {
		return res, fmt.Errorf("%w: %v", ErrHeader, err)
	}
	cols, err := parseHeader(head)
	if err != nil {
		return res, err
	}
	cols.settings = set
	texts := map[string]map[string]bool{}
	seen := map[string]int{} // appointment_id -> line of its row
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		var perr *csv.ParseError
		if errors.As(err, &perr) {
			res.Rows++
			res.Bad = append(res.Bad, RowError{Line: perr.StartLine, Reason: parseReason(perr)})
			continue
		}
		if err != nil {
			return res, fmt.Errorf("read csv: %w", err)
		}
		res.Rows++
		line, _ := cr.FieldPos(0)
		evs, rowTexts, reason := cols.row(rec, ps)
		if reason == "" {
			id := evs[0].AppointmentID
			if first, dup := seen[id]; dup {
				reason = fmt.Sprintf("appointment_id repeats the row on line %d; one row per appointment", first)
			} else {
				seen[id] = line
			}
		}
		if reason != "" {
			res.Bad = append(res.Bad, RowError{Line: line, Reason: reason})
			continue
		}
		res.Imported++
		res.Events = append(res.Events, evs...)
		for _, t := range rowTexts {
			if texts[t.column] == nil {
				texts[t.column] = map[string]bool{}
			}
			texts[t.column][t.text] = true
		}
	}
	slices.SortStableFunc(res.Events, func(a, b events.Appointment) int { return a.EventTime.Compare(b.EventTime) })
	if len(texts) > 0 {
		res.Texts = make(map[string][]string, len(texts))
		for c, ts := range texts {
			res.Texts[c] = slices.Sorted(maps.Keys(ts))
		}
	}
	return res, nil
}

func parseReason(e *csv.ParseError) string {
	if errors.Is(e.Err, csv.ErrFieldCount) {
		return "wrong number of fields for the header"
	}
	return "malformed CSV: " + e.Err.Error()
}

// columns maps the header onto field positions (-1 when absent).
type columns struct {
	patient, appt, bookedAt, start, outcome                       int
	specialty, clinic, first, ageBand, age, dep, sms, cancelledAt int
	extra                                                         []extraCol
	settings
}

// cellText is a text cell of an extra column.
type cellText struct{ column, text string }

type extraCol struct {
	name string
	i    int
}

func parseHeader(head []string) (*columns, error) {
	idx := map[string]int{}
	var problems, dups, blank []string
	for i, h := range head {
		name := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		switch _, dup := idx[name]; {
		case name == "":
			blank = append(blank, strconv.Itoa(i+1))
		case dup:
			dups = append(dups, name)
		default:
			idx[name] = i
		}
	}
	var missing []string
	for _, c := range Required {
		if _, ok := idx[c]; !ok {
			missing = append(missing, c)
		}
	}
	_, hasBand := idx[ColAgeBand]
	_, hasAge := idx[ColAge]
	if !hasBand && !hasAge {
		missing = append(missing, "age_band (or age: appointment.v1 requires an age band)")
	}
	if len(missing) > 0 {
		problems = append(problems, "missing required columns "+strings.Join(missing, ", "))
	}
	if len(dups) > 0 {
		problems = append(problems, "duplicate columns "+strings.Join(dups, ", "))
	}
	if len(blank) > 0 {
		problems = append(problems, "unnamed columns at positions "+strings.Join(blank, ", "))
	}
	get := func(name string) int {
		if i, ok := idx[name]; ok {
			return i
		}
		return -1
	}
	c := &columns{
		patient: get(ColPatient), appt: get(ColAppointment), bookedAt: get(ColBookedAt),
		start: get(ColStart), outcome: get(ColOutcome), specialty: get(ColSpecialty),
		clinic: get(ColClinic), first: get(ColFirstVisit), ageBand: get(ColAgeBand),
		age: get(ColAge), dep: get(ColDeprivation), sms: get(ColSMS), cancelledAt: get(ColCancelledAt),
	}
	for i, h := range head {
		name := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		if name != "" && !known[name] && idx[name] == i {
			c.extra = append(c.extra, extraCol{name: name, i: i})
		}
	}
	if len(c.extra) > MaxExtraColumns {
		problems = append(problems, fmt.Sprintf("%d extra columns, limit %d", len(c.extra), MaxExtraColumns))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s (required: %s; optional: specialty, clinic, first_visit, age_band or age, deprivation_decile, sms_opt_in, cancelled_at; any other column is an extra fact, a number or a text category)",
			ErrHeader, strings.Join(problems, "; "), strings.Join(Required, ", "))
	}
	return c, nil
}

func field(rec []string, i int) string {
	if i < 0 {
		return ""
	}
	return strings.TrimSpace(rec[i])
}

// row turns one record into its events and the texts of its extra columns, or returns why
// it cannot: every bad column, "; "-separated.
func (c *columns) row(rec []string, ps *pseudo.Pseudonymiser) ([]events.Appointment, []cellText, string) {
	var bad []string
	problem := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	patient := field(rec, c.patient)
	if patient == "" {
		problem("patient_id is empty")
	}
	id := field(rec, c.appt)
	if id == "" || len(id) > 128 {
		problem("appointment_id is empty or longer than 128 characters")
	}
	bookedAt, err := c.parseTime(field(rec, c.bookedAt), 0)
	if err != nil {
		problem("booked_at %v", err)
	}
	start, err := c.parseTime(field(rec, c.start), c.dayTime)
	if err != nil {
		problem("appointment_start %v", err)
	}
	b := &events.Booking{
		Specialty: field(rec, c.specialty),
		Clinic:    field(rec, c.clinic),
		Start:     start,
		BookedAt:  bookedAt,
	}
	if b.Specialty == "" {
		b.Specialty = UnknownSpecialty
	}
	if b.FirstVisit, err = parseBool(field(rec, c.first)); err != nil {
		problem("first_visit %v", err)
	}
	if b.Contact.SMS, err = parseBool(field(rec, c.sms)); err != nil {
		problem("sms_opt_in %v", err)
	}
	if b.AgeBand, err = ageBand(field(rec, c.ageBand), field(rec, c.age)); err != nil {
		problem("%v", err)
	}
	if s := field(rec, c.dep); s != "" {
		d, err := strconv.Atoi(s)
		if err != nil || d < 1 || d > 10 {
			problem("deprivation_decile is not a whole number from 1 to 10")
		}
		b.Deprivation = &d
	}
	var texts []cellText
	var badNumbers []string
	for _, x := range c.extra {
		s := field(rec, x.i)
		if s == "" {
			continue
		}
		v, err := strconv.ParseFloat(s, 64)
		switch {
		case err == nil && (math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) >= maxExtraNumber):
			badNumbers = append(badNumbers, x.name)
			continue
		case err != nil:
			// Text: a category (F, M, an area name), carried as its code.
			t := scoring.CategoryText(s)
			if len(t) > maxTextBytes {
				problem("extra column %q holds text longer than %d bytes; categories are short labels", x.name, maxTextBytes)
				continue
			}
			texts = append(texts, cellText{x.name, t})
			v = scoring.TextCode(t)
		}
		if b.Extra == nil {
			b.Extra = events.Extra{}
		}
		b.Extra[x.name] = v
	}
	if len(badNumbers) > 0 {
		problem("extra columns %s hold NaN, Inf or a number beyond ±4.5e15", strings.Join(badNumbers, ", "))
	}

	outcome := strings.ToLower(field(rec, c.outcome))
	cancelledAt := field(rec, c.cancelledAt)
	cancellation := outcome == "cancelled_by_patient" || outcome == "cancelled_by_hospital"
	if cancelledAt != "" && !cancellation {
		problem("cancelled_at is set but outcome is not a cancellation")
	}
	var endType events.Type
	switch outcome {
	case "":
	case "attended":
		endType = events.Attended
	case "did_not_attend":
		endType = events.DidNotAttend
	case "cancelled_by_patient", "cancelled_by_hospital":
		endType = events.Cancelled
	default:
		problem("outcome is not one of attended, did_not_attend, cancelled_by_patient, cancelled_by_hospital or empty")
	}
	// A booking recorded after the appointment (a walk-in) still precedes its outcome.
	endAt := laterOf(start, bookedAt)
	if cancellation && cancelledAt != "" {
		at, err := c.parseTime(cancelledAt, c.dayTime)
		switch {
		case err != nil:
			problem("cancelled_at %v", err)
		case at.Before(bookedAt) && !bookedAt.IsZero():
			problem("cancelled_at is before booked_at")
		default:
			endAt = at
		}
	}
	if len(bad) > 0 {
		return nil, nil, strings.Join(bad, "; ")
	}

	pseudonym := ps.Pseudonym(patient)
	booked := events.Appointment{
		Schema:        events.AppointmentSchema,
		EventID:       eventID(id, events.Booked),
		Type:          events.Booked,
		EventTime:     bookedAt,
		AppointmentID: id,
		Version:       1,
		Patient:       pseudonym,
		Booking:       b,
	}
	if err := booked.Validate(); err != nil {
		return nil, nil, strings.TrimPrefix(err.Error(), events.ErrInvalid.Error()+": ")
	}
	evs := []events.Appointment{booked}
	if endType == "" {
		return evs, texts, ""
	}
	end := events.Appointment{
		Schema:        events.AppointmentSchema,
		EventID:       eventID(id, endType),
		Type:          endType,
		AppointmentID: id,
		Version:       1,
		Patient:       pseudonym,
		EventTime:     endAt,
	}
	if endType == events.Cancelled {
		end.CancelledBy = events.ByPatient
		if outcome == "cancelled_by_hospital" {
			end.CancelledBy = events.ByHospital
		}
	}
	if err := end.Validate(); err != nil {
		return nil, nil, strings.TrimPrefix(err.Error(), events.ErrInvalid.Error()+": ")
	}
	return append(evs, end), texts, ""
}

// maxExtraNumber bounds a numeric extra: below it every whole number is exact, and
// scoring.TextCode values lie beyond it.
const maxExtraNumber = 1 << 52

// maxTextBytes bounds a text cell of an extra column (scoring's limit on a listed category).
const maxTextBytes = 256

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Layouts accepted for times without an offset; they are read in the data's time zone.
var localLayouts = []string{"2006-01-02 15:04", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02T15:04:05"}

// parseTime reads a time in any accepted form; a date-only value is read at dayTime past
// local midnight.
func (c *columns) parseTime(s string, dayTime time.Duration) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("is empty")
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	for _, l := range localLayouts {
		if t, err := time.ParseInLocation(l, s, c.loc); err == nil {
			return t.UTC(), nil
		}
	}
	if d, err := time.ParseInLocation(time.DateOnly, s, c.loc); err == nil {
		// Wall-clock arithmetic, so 23:59 stays 23:59 on the days the clocks change.
		h, m := int(dayTime/time.Hour), int(dayTime%time.Hour/time.Minute)
		return time.Date(d.Year(), d.Month(), d.Day(), h, m, 0, 0, c.loc).UTC(), nil
	}
	return time.Time{}, fmt.Errorf(`is not RFC 3339, "YYYY-MM-DD HH:MM" local time or a date "YYYY-MM-DD" (local time zone %s)`, c.loc)
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "", "false", "0", "no", "n":
		return false, nil
	case "true", "1", "yes", "y":
		return true, nil
	}
	return false, errors.New("is not true/false, 1/0, yes/no or y/n")
}

func ageBand(band, age string) (string, error) {
	if band != "" {
		if events.AgeBandIndex(band) < 0 {
			return "", fmt.Errorf("age_band is not one of %s", strings.Join(events.AgeBands, ", "))
		}
		return band, nil
	}
	if age == "" {
		return "", errors.New("age_band (or age) is empty; appointment.v1 requires an age band")
	}
	n, err := strconv.Atoi(age)
	if err != nil || n < 0 || n > 130 {
		return "", errors.New("age is not a whole number of years from 0 to 130")
	}
	switch {
	case n < 18:
		return "0-17", nil
	case n < 25:
		return "18-24", nil
	case n >= 85:
		return "85+", nil
	}
	lo := (n-5)/10*10 + 5 // bands run 25-34, 35-44, ... 75-84
	return fmt.Sprintf("%d-%d", lo, lo+9), nil
}

// eventID is a UUID-shaped (version 8) digest of the appointment and event type, so
// importing the same file twice gives the same event ids and downstream deduplication works.
func eventID(appointment string, t events.Type) string {
	sum := sha256.Sum256([]byte("csvimport\x00" + appointment + "\x00" + string(t)))
	sum[6] = sum[6]&0x0f | 0x80
	sum[8] = sum[8]&0x3f | 0x80
	h := hex.EncodeToString(sum[:16])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
