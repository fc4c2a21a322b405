package siu

import (
	"context"
	"errors"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/pas"
)

type validating struct{}

func (validating) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	for _, m := range msgs {
		if _, err := events.DecodeAppointment(m.Value); err != nil {
			return err
		}
	}
	return nil
}

// FuzzHandler sends arbitrary frames through the whole SIU path (parse, map, version,
// publish to a validating sink): nothing panics, every frame gets an acknowledgement that
// parses, and whatever is published satisfies the appointment.v1 contract.
func FuzzHandler(f *testing.F) {
	for _, s := range []string{s12v251, s12v23, s13, s15, s17, s26} {
		f.Add(wire(s))
	}
	f.Add([]byte("MSH|^~\\&|A|B|C|D|2025||SIU^S12|1|P|2.5\rSCH||X\rPID|1||9434765919^^^NHS^NH||||\r"))
	m := mapper(f, Config{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		g := pas.NewGateway(&pas.MemoryTracker{}, validating{}, nil)
		h := &Handler{Mapper: m, Gateway: unavailableIsABug{g, t}}
		for _, reply := range h.Message(context.Background(), frame) {
			code, _, _, _ := ackOf(t, reply)
			switch code {
			case "AA", "AE", "AR", "CA", "CE", "CR":
			default:
				t.Fatalf("ack code %q", code)
			}
		}
	})
}

// unavailableIsABug fails the test when the gateway reports Kafka trouble: with a validating
// in-memory sink that can only mean the mapper produced an event that breaks the contract.
type unavailableIsABug struct {
	g *pas.Gateway
	t *testing.T
}

func (u unavailableIsABug) Apply(ctx context.Context, c pas.Change) (pas.Result, error) {
	res, err := u.g.Apply(ctx, c)
	if errors.Is(err, pas.ErrUnavailable) {
		u.t.Fatalf("published an invalid event: %v", err)
	}
	return res, err
}
