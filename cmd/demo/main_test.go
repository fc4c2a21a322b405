package main

import (
	"context"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/producer/sim"
)

// The demo checks its own claims (every booking scored, exactly the malformed events
// dead-lettered); this keeps `make demo` from rotting between releases.
func TestDemoRunsEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := run(ctx, options{sim: sim.Config{Seed: 11, Patients: 300, Days: 30}, malformed: 3, modelDir: "../../models/default"})
	if err != nil {
		t.Fatal(err)
	}
	if s.BookingsProduced == 0 || s.RiskEventsPublished < s.BookingsProduced || s.BookingsUnscored != 0 {
		t.Fatalf("bookings %d, risk events %d, unscored %d", s.BookingsProduced, s.RiskEventsPublished, s.BookingsUnscored)
	}
	if s.DLQEvents != 3 || s.MalformedInjected != 3 {
		t.Fatalf("dead letters %d for %d malformed", s.DLQEvents, s.MalformedInjected)
	}
	var banded int64
	for _, n := range s.RiskBands {
		banded += n
	}
	if banded != int64(s.BookingsProduced) || s.ModelID == "" {
		t.Fatalf("bands %v cover %d of %d bookings; model %q", s.RiskBands, banded, s.BookingsProduced, s.ModelID)
	}
}
