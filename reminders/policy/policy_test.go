package policy

import (
	"strings"
	"testing"
	"time"
)

func mustPolicy(t *testing.T, edit func(*Policy)) Policy {
	t.Helper()
	p := DefaultPolicy()
	if edit != nil {
		edit(&p)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlan(t *testing.T) {
	london, _ := time.LoadLocation("Europe/London")
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, london)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	start := at("2025-03-13 11:00") // Thursday
	base := Appointment{ID: "A", Version: 1, Start: start, BookedAt: at("2025-03-01 10:00"), Known: true, SMS: true}
	with := func(f func(a *Appointment)) Appointment {
		a := base
		f(&a)
		return a
	}
	now := at("2025-03-01 10:00")
	for _, tc := range []struct {
		name string
		a    Appointment
		now  time.Time
		want []string // slot@local due
	}{
		{"standard for everyone", base, now, []string{"standard-7d@2025-03-06 11:00", "standard-2d@2025-03-11 11:00"}},
		{"medium band: no extra", with(func(a *Appointment) { a.Band, a.BandVersion = "medium", 1 }), now,
			[]string{"standard-7d@2025-03-06 11:00", "standard-2d@2025-03-11 11:00"}},
		{"high band: extra the day before", with(func(a *Appointment) { a.Band, a.BandVersion = "high", 1 }), now,
			[]string{"standard-7d@2025-03-06 11:00", "standard-2d@2025-03-11 11:00", "extra-1d@2025-03-12 11:00"}},
		{"very high band", with(func(a *Appointment) { a.Band, a.BandVersion = "very_high", 1 }), now,
			[]string{"standard-7d@2025-03-06 11:00", "standard-2d@2025-03-11 11:00", "extra-1d@2025-03-12 11:00"}},
		{"band of a newer version not yet booked is not used", with(func(a *Appointment) { a.Band, a.BandVersion = "high", 2 }), now,
			[]string{"standard-7d@2025-03-06 11:00", "standard-2d@2025-03-11 11:00"}},
		{"band of the previous version still applies", with(func(a *Appointment) { a.Version, a.Band, a.BandVersion = 2, "high", 1 }), now,
			[]string{"standard-7d@2025-03-06 11:00", "standard-2d@2025-03-11 11:00", "extra-1d@2025-03-12 11:00"}},
		{"booked 3 days ahead: no 7-day", with(func(a *Appointment) { a.BookedAt = at("2025-03-10 09:00") }), now,
			[]string{"standard-2d@2025-03-11 11:00"}},
		{"booked the same morning: nothing", with(func(a *Appointment) { a.BookedAt = at("2025-03-13 09:00") }), now, nil},
		{"early appointment: moved out of quiet hours", with(func(a *Appointment) { a.Start = at("2025-03-13 07:30") }), now,
			[]string{"standard-7d@2025-03-06 08:00", "standard-2d@2025-03-11 08:00"}},
		{"quiet evening", with(func(a *Appointment) { a.Start = at("2025-03-13 20:30") }), now,
			[]string{"standard-7d@2025-03-07 08:00", "standard-2d@2025-03-12 08:00"}},
		{"across the clocks going forward (30 March)", with(func(a *Appointment) { a.Start = at("2025-04-01 10:00"); a.BookedAt = at("2025-03-20 10:00") }), now,
			[]string{"standard-7d@2025-03-25 10:00", "standard-2d@2025-03-30 10:00"}},
		{"slot long past is dropped", base, at("2025-03-07 00:00"), []string{"standard-2d@2025-03-11 11:00"}},
		{"slot just past is kept (sent at once)", base, at("2025-03-06 12:00"), []string{"standard-7d@2025-03-06 11:00", "standard-2d@2025-03-11 11:00"}},
		{"cancelled", with(func(a *Appointment) { a.Cancelled = true }), now, nil},
		{"opted out", with(func(a *Appointment) { a.SMS = false }), now, nil},
		{"risk event only, no booking seen", with(func(a *Appointment) { a.Known = false }), now, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPolicy(t, nil)
			var got []string
			for _, pl := range p.Plan(tc.a, tc.now) {
				got = append(got, pl.Slot.Name+"@"+pl.Due.In(london).Format("2006-01-02 15:04"))
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestMinLead(t *testing.T) {
	p := mustPolicy(t, func(p *Policy) {
		p.Extra = []Duration{Duration(2 * time.Hour)}
		p.QuietHours = nil
	})
	a := Appointment{Version: 1, Start: time.Date(2025, 3, 13, 11, 0, 0, 0, time.UTC), Known: true, SMS: true, Band: "high", BandVersion: 1}
	for _, pl := range p.Plan(a, a.Start.Add(-10*24*time.Hour)) {
		if pl.Slot.Kind == Extra {
			t.Fatalf("a reminder 2h before the start was planned with min_lead 3h: %+v", pl)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Policy)
		want string
	}{
		{func(p *Policy) { p.Standard, p.Extra = nil, nil }, "no reminder offsets"},
		{func(p *Policy) { p.ExtraBands = nil }, "no extra_bands"},
		{func(p *Policy) { p.Extra = []Duration{Duration(48 * time.Hour)} }, "appears twice"},
		{func(p *Policy) { p.Standard = []Duration{0} }, "out of range"},
		{func(p *Policy) { p.Standard = []Duration{Duration(400 * 24 * time.Hour)} }, "out of range"},
		{func(p *Policy) { p.TimeZone = "Mars/Olympus" }, "time_zone"},
		{func(p *Policy) { p.QuietHours = &QuietHours{Start: "8pm", End: "08:00"} }, "quiet_hours.start"},
		{func(p *Policy) { p.QuietHours = &QuietHours{Start: "08:00", End: "08:00"} }, "equal"},
		{func(p *Policy) { p.MinLead = Duration(-time.Hour) }, "min_lead"},
	} {
		p := DefaultPolicy()
		tc.edit(&p)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	for in, want := range map[string]time.Duration{`"7d"`: 7 * 24 * time.Hour, `"36h"`: 36 * time.Hour, `"90m"`: 90 * time.Minute} {
		var d Duration
		if err := d.UnmarshalJSON([]byte(in)); err != nil || time.Duration(d) != want {
			t.Errorf("%s: %v %v", in, time.Duration(d), err)
		}
	}
	for _, bad := range []string{`"7 days"`, `7`, `"-1d"`, `"xd"`} {
		var d Duration
		if err := d.UnmarshalJSON([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
