package hl7

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Precision is how much of a date/time a value gave.
type Precision int

// Precisions of an HL7 DTM value, from a year alone to fractions of a second.
const (
	Year Precision = iota + 1
	Month
	Day
	Hour
	Minute
	Second
)

// ErrTime wraps every reason ParseTime refuses a value.
var ErrTime = errors.New("not an HL7 date/time")

// ParseTime reads an HL7 DTM (TS before 2.5) value: YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ].
// A value without an offset is local time in loc, as HL7 says (the sender's local time; for
// an NHS PAS that is Europe/London). Missing parts take their first value. It refuses values
// that are not real dates (month 13, 30 February) rather than let time.Date normalise them.
func ParseTime(v string, loc *time.Location) (time.Time, Precision, error) {
	s := strings.TrimSpace(v)
	zone := loc
	if i := strings.IndexAny(s, "+-"); i >= 0 {
		off := s[i:]
		s = s[:i]
		if len(off) != 5 || !digits(off[1:]) {
			return time.Time{}, 0, fmt.Errorf("%w: offset must be +HHMM or -HHMM", ErrTime)
		}
		h, _ := strconv.Atoi(off[1:3])
		m, _ := strconv.Atoi(off[3:5])
		if h > 14 || m > 59 {
			return time.Time{}, 0, fmt.Errorf("%w: offset out of range", ErrTime)
		}
		secs := h*3600 + m*60
		if off[0] == '-' {
			secs = -secs
		}
		zone = time.FixedZone("", secs)
	}
	frac := 0
	if whole, f, ok := strings.Cut(s, "."); ok {
		if len(whole) != 14 || f == "" || len(f) > 4 || !digits(f) {
			return time.Time{}, 0, fmt.Errorf("%w: fractional seconds need YYYYMMDDHHMMSS and 1 to 4 digits", ErrTime)
		}
		n, _ := strconv.Atoi(f)
		for i := len(f); i < 9; i++ {
			n *= 10
		}
		frac, s = n, whole
	}
	if !digits(s) {
		return time.Time{}, 0, fmt.Errorf("%w: expected digits YYYY[MM[DD[HH[MM[SS]]]]]", ErrTime)
	}
	var p Precision
	switch len(s) {
	case 4:
		p = Year
	case 6:
		p = Month
	case 8:
		p = Day
	case 10:
		p = Hour
	case 12:
		p = Minute
	case 14:
		p = Second
	default:
		return time.Time{}, 0, fmt.Errorf("%w: %d digits, expected 4, 6, 8, 10, 12 or 14", ErrTime, len(s))
	}
	part := func(i, def int) int {
		if len(s) < i+2 {
			return def
		}
		n, _ := strconv.Atoi(s[i : i+2])
		return n
	}
	year, _ := strconv.Atoi(s[:4])
	month, day, hour, minute, sec := part(4, 1), part(6, 1), part(8, 0), part(10, 0), part(12, 0)
	if month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, 0, fmt.Errorf("%w: a part is out of range", ErrTime)
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, frac, zone)
	if t.Day() != day || int(t.Month()) != month {
		return time.Time{}, 0, fmt.Errorf("%w: no such day", ErrTime)
	}
	return t, p, nil
}

// FormatTime writes t as an HL7 DTM to the second with its offset.
func FormatTime(t time.Time) string { return t.Format("20060102150405-0700") }

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
