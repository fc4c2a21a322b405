package pas

import (
	"errors"
	"strings"
	"time"
	_ "time/tzdata" // UK local dates for ages; images may lack a zoneinfo database

	"github.com/nhsx/dnarisk/events"
)

// london is where a PAS's dates are; a birthday is a UK calendar date.
var london = func() *time.Location {
	l, err := time.LoadLocation("Europe/London")
	if err != nil {
		panic(err)
	}
	return l
}()

// AgeBand returns the events.AgeBands band of someone born on dob, at time at (their age in
// completed years on the UK calendar date of at). Refuses a birth after at or an age over 130.
func AgeBand(dob, at time.Time) (string, error) {
	y1, m1, d1 := dob.Date() // dob is a date: read it in the zone it was given in
	y2, m2, d2 := at.In(london).Date()
	age := y2 - y1
	if m2 < m1 || m2 == m1 && d2 < d1 {
		age--
	}
	switch {
	case age < 0:
		return "", errors.New("date of birth is after the booking")
	case age > 130:
		return "", errors.New("date of birth gives an age over 130")
	}
	bounds := []int{18, 25, 35, 45, 55, 65, 75, 85}
	for i, b := range bounds {
		if age < b {
			return events.AgeBands[i], nil
		}
	}
	return events.AgeBands[len(events.AgeBands)-1], nil
}

// ValidNHSNumber reports whether s (spaces and dashes ignored) is ten digits with a correct
// modulus 11 check digit. A mistyped NHS number would otherwise become a phantom patient
// with no history.
func ValidNHSNumber(s string) bool {
	s = strings.NewReplacer(" ", "", "-", "").Replace(s)
	if len(s) != 10 {
		return false
	}
	sum := 0
	for i := 0; i < 10; i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		if i < 9 {
			sum += int(s[i]-'0') * (10 - i)
		}
	}
	check := 11 - sum%11
	if check == 11 {
		check = 0
	}
	return check != 10 && check == int(s[9]-'0')
}

// UKMobile reports whether a telephone number is a UK mobile (07…, +447…, 00447…). The number
// is only inspected: callers must never store, log or forward it.
func UKMobile(number string) bool {
	var d []byte
scan:
	for _, r := range number {
		switch {
		case r >= '0' && r <= '9':
			d = append(d, byte(r))
		case r == '+' && len(d) == 0:
			d = append(d, '0', '0')
		case strings.ContainsRune(" -().", r):
		case len(d) > 0:
			break scan // an extension or note after the number ("x123")
		default:
			return false
		}
	}
	n := string(d)
	switch {
	case strings.HasPrefix(n, "00447"):
		return len(n) == 14
	case strings.HasPrefix(n, "447"):
		return len(n) == 12
	case strings.HasPrefix(n, "07"):
		return len(n) == 11
	}
	return false
}

var (
	newCodes = map[string]bool{"NEW": true, "N": true, "NP": true, "FIRST": true, "1ST": true, "NEWPATIENT": true}
	fuCodes  = map[string]bool{"FU": true, "FUP": true, "F": true, "FOLLOWUP": true, "FOLLOW-UP": true, "REVIEW": true, "RV": true, "CHECKUP": true}
)

// VisitType classifies an appointment type as new (first is true) or follow-up from its code
// (NEW, N, NP, FIRST; FU, FUP, FOLLOWUP, REVIEW, CHECKUP, …) or else words in its text
// ("New patient", "Follow-up"); known is false when neither says.
func VisitType(code, text string) (first, known bool) {
	c := strings.ToUpper(strings.TrimSpace(code))
	switch {
	case newCodes[c]:
		return true, true
	case fuCodes[c]:
		return false, true
	}
	for _, w := range Words(text) {
		switch w {
		case "new", "first":
			return true, true
		case "follow", "followup", "review":
			return false, true
		}
	}
	return false, false
}

// Words splits text into lower-case words of letters and digits.
func Words(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') })
}

// Namespaced is the appointment id of id as facility (an HL7 sending facility, MSH-4, or the
// FHIR feed's --fhir-facility) names it: "facility:id", so two feeds' ids cannot collide;
// id alone when there is no facility. A ':' or '%' in facility is percent-encoded, so the
// first ':' always ends it.
func Namespaced(facility, id string) string {
	facility = strings.TrimSpace(facility)
	if facility == "" {
		return id
	}
	return strings.NewReplacer("%", "%25", ":", "%3A").Replace(facility) + ":" + id
}
