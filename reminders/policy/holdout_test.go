package policy

import (
	"fmt"
	"math"
	"testing"
	"time"
)

func TestHoldoutShareAndDeterminism(t *testing.T) {
	h := &Holdout{Share: 0.2, Key: []byte("0123456789abcdef-test")}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	const n = 20000
	held := 0
	for i := range n {
		id := fmt.Sprintf("RX1:appt-%d", i)
		a := h.HeldOut(id)
		if a != h.HeldOut(id) {
			t.Fatalf("%s: assignment changed between calls", id)
		}
		if a {
			held++
		}
	}
	// Binomial(20000, 0.2): sd 57; 5 sd either side.
	if got := float64(held); math.Abs(got-0.2*n) > 5*math.Sqrt(n*0.2*0.8) {
		t.Fatalf("held out %d of %d, want about %d", held, n, int(0.2*n))
	}
	other := &Holdout{Share: 0.2, Key: []byte("another-key-0123456789")}
	same := 0
	for i := range 1000 {
		id := fmt.Sprintf("RX1:appt-%d", i)
		if h.HeldOut(id) == other.HeldOut(id) {
			same++
		}
	}
	if same == 1000 {
		t.Fatal("a different key gave the same assignment for every appointment")
	}
}

func TestHoldoutValidate(t *testing.T) {
	for _, tc := range []struct {
		h  *Holdout
		ok bool
	}{
		{nil, true},
		{&Holdout{}, true},
		{&Holdout{Share: 0.2}, false},
		{&Holdout{Share: 0.2, Key: []byte("short")}, false},
		{&Holdout{Share: 0.6, Key: []byte("0123456789abcdef")}, false},
		{&Holdout{Share: -0.1, Key: []byte("0123456789abcdef")}, false},
		{&Holdout{Share: math.NaN(), Key: []byte("0123456789abcdef")}, false},
		{&Holdout{Share: 0.5, Key: []byte("0123456789abcdef")}, true},
	} {
		if err := tc.h.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", tc.h, err, tc.ok)
		}
	}
	if (&Holdout{}).HeldOut("x") || (*Holdout)(nil).HeldOut("x") {
		t.Fatal("a zero share held an appointment out")
	}
}

func TestPlanWithholdsOnlyTheExtraReminderFromTheHeldOut(t *testing.T) {
	p := DefaultPolicy()
	p.ExtraHoldout = &Holdout{Share: 0.5, Key: []byte("0123456789abcdef-plan")}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2025, 3, 20, 10, 0, 0, 0, time.UTC)
	booked := start.AddDate(0, 0, -30)
	kinds := func(a Appointment) map[Kind]int {
		n := map[Kind]int{}
		for _, pl := range p.Plan(a, booked) {
			n[pl.Slot.Kind]++
		}
		return n
	}
	held, reminded := 0, 0
	for i := range 200 {
		a := Appointment{ID: fmt.Sprint("RX1:", i), Version: 1, Start: start, BookedAt: booked, Known: true, SMS: true, Band: "high", BandVersion: 1}
		k := kinds(a)
		if k[Standard] != 2 {
			t.Fatalf("%s: %d standard reminders, want 2 whatever the arm", a.ID, k[Standard])
		}
		switch {
		case p.ExtraHoldout.HeldOut(a.ID):
			held++
			if k[Extra] != 0 || !p.ExtraWithheld(a) {
				t.Fatalf("%s is held out but planned %d extra reminders (withheld %v)", a.ID, k[Extra], p.ExtraWithheld(a))
			}
		default:
			reminded++
			if k[Extra] != 1 || p.ExtraWithheld(a) {
				t.Fatalf("%s is not held out but planned %d extra reminders", a.ID, k[Extra])
			}
		}
		low := a
		low.Band = "low"
		if p.ExtraWithheld(low) {
			t.Fatalf("%s: a low-risk booking reported as withheld", a.ID)
		}
	}
	if held == 0 || reminded == 0 {
		t.Fatalf("held %d, reminded %d: want both arms", held, reminded)
	}
	p.ExtraHoldout.Key = nil
	if err := p.Validate(); err == nil {
		t.Fatal("a hold-out without a key validated")
	}
}
