package policy

import (
	"fmt"
	"math"
	"testing"
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
