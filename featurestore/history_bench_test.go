package featurestore

import (
	"fmt"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/events"
)

// BenchmarkApply is one event applied to a patient's history two years deep (22
// appointments, each booked and attended, ids sharing the patient's prefix as PAS ids and the
// simulator's do): the consumer applies every event it reads, after Cancelled and
// LatestVersion for a booking.
func BenchmarkApply(b *testing.B) {
	var h History
	for i := range 22 {
		id := fmt.Sprintf("RX1-OP-4711-%d", i)
		at := t0.Add(time.Duration(i) * 30 * 24 * time.Hour)
		bk := booking(id, 1, at, at.Add(14*24*time.Hour))
		h.Apply(&bk, Policy{})
		o := outcome(id, events.Attended, at.Add(14*24*time.Hour))
		h.Apply(&o, Policy{})
	}
	n := len(h.Facts)
	last := t0.Add(23 * 30 * 24 * time.Hour)
	bk := booking("RX1-OP-4711-22", 1, last, last.Add(14*24*time.Hour))
	o := outcome("RX1-OP-4711-21", events.DidNotAttend, last)
	b.Run("booking", func(b *testing.B) {
		for b.Loop() {
			h.Facts = h.Facts[:n]
			if h.Cancelled(bk.AppointmentID) || h.LatestVersion(bk.AppointmentID) > bk.Version || !h.Apply(&bk, Policy{}) {
				b.Fatal("the new booking was not applied")
			}
		}
	})
	b.Run("outcome", func(b *testing.B) {
		for b.Loop() {
			h.Facts = h.Facts[:n]
			if !h.Apply(&o, Policy{}) {
				b.Fatal("the corrected outcome was not applied")
			}
		}
	})
}
