// Package policy decides which SMS reminders an appointment gets and when: offsets before
// the start, extra reminders for high-risk bands, quiet hours, the last-moment and
// too-late limits.
package policy

import (
	"errors"
	"fmt"
	"slices"
	"time"
	_ "time/tzdata" // quiet hours are local time; images may lack a zoneinfo database
)

// Kind tells standard reminders (everyone) from extra ones (high-risk bands).
type Kind string

// Reminder kinds; each has its own Notify template.
const (
	Standard Kind = "standard"
	Extra    Kind = "extra"
)

// Policy decides which reminders an appointment gets and when. The zero value is not
// usable; start from DefaultPolicy or a config file, then call Validate.
type Policy struct {
	// Standard offsets before the appointment start, for every patient who accepts SMS.
	Standard []Duration `json:"standard"`
	// Extra offsets, only for appointments whose latest risk band is in ExtraBands.
	Extra      []Duration `json:"extra"`
	ExtraBands []string   `json:"extra_bands"`
	// QuietHours is a local-time window with no sends ("20:00" to "08:00" wraps midnight).
	// A reminder due inside it moves to its end. Omit for none.
	QuietHours *QuietHours `json:"quiet_hours,omitempty"`
	// TimeZone of quiet hours and of the date and time in the message [Europe/London].
	TimeZone string `json:"time_zone"`
	// MinLead: no reminder is sent less than this before the appointment start [3h].
	MinLead Duration `json:"min_lead"`
	// MaxLate: a reminder not sent within this of its due time (the dispatcher was down) is
	// dropped rather than sent late [12h].
	MaxLate Duration `json:"max_late"`
	// ExtraHoldout withholds the extra reminders (never the standard ones) from a share of
	// the appointments in ExtraBands, to measure their effect: a service evaluation needing
	// local approval; omit, or share 0, in production (see Holdout).
	ExtraHoldout *Holdout `json:"extra_holdout,omitempty"`

	loc          *time.Location
	quietFrom    time.Duration // since local midnight
	quietTo      time.Duration
	standardSlot []Slot
	extraSlot    []Slot
}

// QuietHours is a daily local-time window, "HH:MM" to "HH:MM".
type QuietHours struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// Slot is one reminder of a plan: its kind and how long before the start it is due. Its
// Name is part of the reminder id, so it depends only on kind and offset.
type Slot struct {
	Name   string
	Kind   Kind
	Before time.Duration
}

// DefaultPolicy: 7 and 2 days before for everyone, and the day before for high and very
// high risk; nothing between 20:00 and 08:00 UK time; nothing in the last 3 hours.
func DefaultPolicy() Policy {
	return Policy{
		Standard:   []Duration{Duration(7 * 24 * time.Hour), Duration(2 * 24 * time.Hour)},
		Extra:      []Duration{Duration(24 * time.Hour)},
		ExtraBands: []string{"high", "very_high"},
		QuietHours: &QuietHours{Start: "20:00", End: "08:00"},
		TimeZone:   "Europe/London",
		MinLead:    Duration(3 * time.Hour),
		MaxLate:    Duration(12 * time.Hour),
	}
}

// maxOffset bounds reminder offsets: longer ones are almost certainly a unit mistake.
const maxOffset = 90 * 24 * time.Hour

// Validate checks the policy and prepares it for use. Zero TimeZone and MaxLate take their
// defaults.
func (p *Policy) Validate() error {
	if p.TimeZone == "" {
		p.TimeZone = "Europe/London"
	}
	if p.MaxLate == 0 {
		p.MaxLate = Duration(12 * time.Hour)
	}
	loc, err := time.LoadLocation(p.TimeZone)
	if err != nil {
		return fmt.Errorf("policy time_zone: %w", err)
	}
	p.loc = loc
	if len(p.Standard)+len(p.Extra) == 0 {
		return errors.New("policy has no reminder offsets (standard and extra are both empty)")
	}
	if err := p.ExtraHoldout.Validate(); err != nil {
		return err
	}
	if len(p.Extra) > 0 && len(p.ExtraBands) == 0 {
		return errors.New("policy has extra offsets but no extra_bands to apply them to")
	}
	seen := map[time.Duration]bool{}
	p.standardSlot, p.extraSlot = nil, nil
	for _, list := range []struct {
		kind Kind
		ds   []Duration
		into *[]Slot
	}{{Standard, p.Standard, &p.standardSlot}, {Extra, p.Extra, &p.extraSlot}} {
		for _, d := range list.ds {
			o := time.Duration(d)
			if o <= 0 || o > maxOffset {
				return fmt.Errorf("policy %s offset %s out of range (0, %s]", list.kind, compact(o), compact(maxOffset))
			}
			if seen[o] {
				return fmt.Errorf("policy offset %s appears twice (it would send two messages at once)", compact(o))
			}
			seen[o] = true
			*list.into = append(*list.into, Slot{Name: string(list.kind) + "-" + compact(o), Kind: list.kind, Before: o})
		}
	}
	if p.MinLead < 0 || p.MaxLate <= 0 {
		return errors.New("policy min_lead must be >= 0 and max_late > 0")
	}
	if q := p.QuietHours; q != nil {
		if p.quietFrom, err = clockTime(q.Start); err != nil {
			return fmt.Errorf("policy quiet_hours.start: %w", err)
		}
		if p.quietTo, err = clockTime(q.End); err != nil {
			return fmt.Errorf("policy quiet_hours.end: %w", err)
		}
		if p.quietFrom == p.quietTo {
			return errors.New("policy quiet_hours start and end are equal")
		}
	}
	return nil
}

func clockTime(s string) (time.Duration, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}

// Appointment is what the dispatcher knows about one appointment, merged from the
// appointments and risk topics.
type Appointment struct {
	ID       string
	Patient  string
	Version  int       // latest booking version seen on the appointments topic
	Start    time.Time // of that version
	BookedAt time.Time // when that version was booked
	Known    bool      // a booking event has been seen (risk events alone do not plan)
	SMS      bool      // the booking says SMS reminders are wanted (sms and not opted out)
	// Band is the latest risk band and BandVersion the booking version it was scored for.
	Band        string
	BandVersion int
	Cancelled   bool
}

// Planned is one reminder the policy wants.
type Planned struct {
	Slot Slot
	Due  time.Time
}

// Plan returns the reminders a appointment should have, as of now. A slot is left out when
// it would fall before the booking was made, less than MinLead before the start (after
// moving out of quiet hours), or more than MaxLate in the past. The risk band applies when
// it was scored for this booking version or an earlier one: a reschedule keeps the earlier
// assessment until the new version is scored.
func (p *Policy) Plan(a Appointment, now time.Time) []Planned {
	if a.Cancelled || !a.Known || !a.SMS {
		return nil
	}
	slots := p.standardSlot
	if p.ExtraDue(a) && !p.ExtraHoldout.HeldOut(a.ID) {
		slots = append(slices.Clip(slots), p.extraSlot...)
	}
	var out []Planned
	for _, s := range slots {
		due := p.OutOfQuiet(p.before(a.Start, s.Before))
		switch {
		case a.Start.Sub(due) < time.Duration(p.MinLead):
		case due.Before(a.BookedAt):
		case now.Sub(due) > time.Duration(p.MaxLate):
		default:
			out = append(out, Planned{Slot: s, Due: due})
		}
	}
	return out
}

// ExtraDue reports whether a's risk band earns the extra reminders: a band in ExtraBands,
// scored for this booking version or an earlier one. Held out or not.
func (p *Policy) ExtraDue(a Appointment) bool {
	return a.BandVersion > 0 && a.BandVersion <= a.Version && slices.Contains(p.ExtraBands, a.Band)
}

// ExtraWithheld reports whether a's extra reminders are withheld by the hold-out.
func (p *Policy) ExtraWithheld(a Appointment) bool {
	return p.ExtraDue(a) && p.ExtraHoldout.HeldOut(a.ID)
}

// before counts whole days back on the local calendar, so "7 days before" a 10:00
// appointment is at 10:00 even across a clock change; the rest of the offset is elapsed time.
func (p *Policy) before(start time.Time, d time.Duration) time.Time {
	const day = 24 * time.Hour
	return start.In(p.loc).AddDate(0, 0, -int(d/day)).Add(-(d % day)).UTC()
}

// InQuiet reports whether t falls in quiet hours.
func (p *Policy) InQuiet(t time.Time) bool {
	if p.QuietHours == nil {
		return false
	}
	l := t.In(p.loc)
	since := time.Duration(l.Hour())*time.Hour + time.Duration(l.Minute())*time.Minute + time.Duration(l.Second())*time.Second
	if p.quietFrom < p.quietTo {
		return since >= p.quietFrom && since < p.quietTo
	}
	return since >= p.quietFrom || since < p.quietTo
}

// OutOfQuiet moves t to the end of the quiet hours it falls in, or returns it unchanged.
func (p *Policy) OutOfQuiet(t time.Time) time.Time {
	if !p.InQuiet(t) {
		return t
	}
	l := t.In(p.loc)
	h, m := int(p.quietTo/time.Hour), int(p.quietTo%time.Hour/time.Minute)
	end := time.Date(l.Year(), l.Month(), l.Day(), h, m, 0, 0, p.loc)
	if !end.After(t) {
		end = time.Date(l.Year(), l.Month(), l.Day()+1, h, m, 0, 0, p.loc)
	}
	return end
}

// Location is the policy's time zone (valid after Validate).
func (p *Policy) Location() *time.Location { return p.loc }
