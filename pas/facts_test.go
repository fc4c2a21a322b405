package pas

import (
	"testing"
	"time"
)

func TestAgeBand(t *testing.T) {
	at := time.Date(2025, 3, 10, 9, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		dob  time.Time
		want string
		bad  bool
	}{
		{dob: time.Date(2010, 3, 10, 0, 0, 0, 0, time.UTC), want: "0-17"},
		{dob: time.Date(2007, 3, 11, 0, 0, 0, 0, time.UTC), want: "0-17"}, // 18 tomorrow
		{dob: time.Date(2007, 3, 10, 0, 0, 0, 0, time.UTC), want: "18-24"},
		{dob: time.Date(1980, 6, 15, 0, 0, 0, 0, time.UTC), want: "35-44"},
		{dob: time.Date(1940, 1, 1, 0, 0, 0, 0, time.UTC), want: "85+"},
		{dob: time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC), want: "0-17"},
		{dob: time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC), bad: true},
		{dob: time.Date(1890, 1, 1, 0, 0, 0, 0, time.UTC), bad: true},
	} {
		got, err := AgeBand(c.dob, at)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("AgeBand(%s) = %q, %v", c.dob.Format("2006-01-02"), got, err)
		}
	}
	// Late on the 9th in UTC is already the 10th in BST: the UK date counts.
	dob := time.Date(2007, 7, 10, 0, 0, 0, 0, time.UTC)
	if got, _ := AgeBand(dob, time.Date(2025, 7, 9, 23, 30, 0, 0, time.UTC)); got != "18-24" {
		t.Errorf("birthday by UK date: %q", got)
	}
}

func TestValidNHSNumber(t *testing.T) {
	for s, want := range map[string]bool{
		"9434765919":   true,
		"943 476 5919": true,
		"943-476-5919": true,
		"9434765918":   false,
		"943476591":    false,
		"94347659190":  false,
		"943476591X":   false,
		"":             false,
		"4010232137":   true,
		"0000000000":   true,  // check digit 0 from remainder 0
		"1000000000":   false, // check 11-10=1? weights give 10 -> remainder 10 -> check 1
	} {
		if got := ValidNHSNumber(s); got != want {
			t.Errorf("ValidNHSNumber(%q) = %v", s, got)
		}
	}
}

func TestUKMobile(t *testing.T) {
	for s, want := range map[string]bool{
		"07700 900123":       true,
		"07700900123":        true,
		"+44 7700 900123":    true,
		"+44 (0)7700 900123": false, // ambiguous trunk-prefix form is not guessed
		"00447700900123":     true,
		"447700900123":       true,
		"0113 496 0000":      false,
		"+441134960000":      false,
		"07700 900123 x12":   true,
		"0770090012":         false,
		"mobile":             false,
		"":                   false,
	} {
		if got := UKMobile(s); got != want {
			t.Errorf("UKMobile(%q) = %v", s, got)
		}
	}
}
