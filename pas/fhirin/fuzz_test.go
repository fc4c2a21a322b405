package fhirin

import (
	"context"
	"errors"
	"testing"

	"github.com/nhsx/dnarisk/pas"
)

// FuzzMap feeds arbitrary JSON to the Appointment mapper: it never panics, every refusal is
// an *Issue, and a booking it accepts either makes a valid appointment.v1 event or is
// refused by Gateway.Check with ErrRejected (never anything else).
func FuzzMap(f *testing.F) {
	f.Add([]byte(booked))
	f.Add([]byte(`{"resourceType":"Appointment","status":"noshow","identifier":[{"value":"A"}],"participant":[{"actor":{"type":"Patient","identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}},"status":"accepted"}]}`))
	f.Add([]byte(`{"resourceType":"Appointment","status":"booked","contained":[{"resourceType":"Patient","id":"x","birthDate":"2001"}]}`))
	m := newMapper(f, Config{})
	g := pas.NewGateway(&pas.MemoryTracker{}, nil, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, _, err := m.Map(b, "", patients{})
		if err != nil {
			var is *Issue
			if !errors.As(err, &is) {
				t.Fatalf("refusal is not an *Issue: %v", err)
			}
			return
		}
		if c == nil {
			return
		}
		if err := g.Check(context.Background(), *c); err != nil && !errors.Is(err, pas.ErrRejected) {
			t.Fatalf("check: %v", err)
		}
	})
}
