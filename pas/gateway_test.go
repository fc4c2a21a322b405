package pas

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
)

// sink records what was published; fail makes the next writes fail.
type sink struct {
	mu    sync.Mutex
	evs   []events.Appointment
	times []time.Time // Kafka timestamps
	fail  error
}

func (s *sink) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	for _, m := range msgs {
		ev, err := events.DecodeAppointment(m.Value)
		if err != nil {
			return err
		}
		if string(m.Key) != ev.Patient {
			return errors.New("message not keyed by patient")
		}
		s.evs = append(s.evs, ev)
		s.times = append(s.times, m.Time)
	}
	return nil
}

const (
	patA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	patB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

var t0 = time.Date(2025, 3, 10, 9, 15, 0, 0, time.UTC)

func booking(start time.Time) *events.Booking {
	return &events.Booking{Specialty: "110", Clinic: "ORTHO1", FirstVisit: true, Start: start, BookedAt: t0,
		AgeBand: "35-44", Contact: events.Contact{SMS: true}}
}

func change(kind Kind, id string, b *events.Booking) Change {
	return Change{Kind: kind, Source: "test", EventID: "e-" + id + "-" + kind.String(), EventTime: t0,
		AppointmentID: "APT1", Patient: patA, Booking: b, CancelledBy: events.ByPatient}
}

func TestGatewayVersions(t *testing.T) {
	ctx := context.Background()
	start := t0.Add(14 * 24 * time.Hour)
	type step struct {
		c        Change
		typ      events.Type // "" = nothing published
		version  int
		ignoring string
	}
	later := booking(start.Add(time.Hour))
	otherClinic := booking(start.Add(time.Hour))
	otherClinic.Clinic = "ORTHO2"
	contactOnly := *otherClinic
	contactOnly.Contact.OptOut = true
	noPatient := change(DidNotAttend, "7", nil)
	noPatient.Patient = ""
	steps := []step{
		{c: change(Book, "1", booking(start)), typ: events.Booked, version: 1},
		{c: change(Book, "1", booking(start)), ignoring: "unchanged"},   // retransmitted S12
		{c: change(Modify, "2", booking(start)), ignoring: "unchanged"}, // S14 with nothing new
		{c: change(Modify, "3", later), typ: events.Rescheduled, version: 2},
		{c: change(Modify, "3", later), ignoring: "unchanged"}, // retransmitted S13
		{c: change(Modify, "4", otherClinic), typ: events.Rescheduled, version: 3},
		{c: change(Modify, "5", &contactOnly), ignoring: "unchanged"}, // not a booking fact the scorer uses
		{c: noPatient, typ: events.DidNotAttend, version: 3},          // patient from state
		{c: change(Cancel, "8", nil), typ: events.Cancelled, version: 3},
		{c: change(Modify, "9", booking(start.Add(48*time.Hour))), ignoring: "cancelled"},
	}
	var out sink
	g := NewGateway(&MemoryTracker{}, &out, nil)
	for i, s := range steps {
		res, err := g.Apply(ctx, s.c)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if s.typ == "" {
			if res.Event != nil || !strings.Contains(res.Ignored, s.ignoring) {
				t.Fatalf("step %d: published %+v / ignored %q; want ignored %q", i, res.Event, res.Ignored, s.ignoring)
			}
			continue
		}
		if res.Event == nil || res.Event.Type != s.typ || res.Event.Version != s.version {
			t.Fatalf("step %d: got %+v (%s), want %s v%d", i, res.Event, res.Ignored, s.typ, s.version)
		}
		if res.Event.Patient != patA {
			t.Fatalf("step %d: patient %s", i, res.Event.Patient)
		}
	}
	if len(out.evs) != 5 {
		t.Fatalf("%d events published", len(out.evs))
	}
	if out.evs[0].Booking.BookedAt != t0 || out.evs[4].CancelledBy != events.ByPatient {
		t.Errorf("facts lost: %+v", out.evs)
	}
}

func TestGatewayModifyOfUnknownAppointmentIsABooking(t *testing.T) {
	var out sink
	g := NewGateway(&MemoryTracker{}, &out, nil)
	res, err := g.Apply(context.Background(), change(Modify, "1", booking(t0.Add(time.Hour))))
	if err != nil || res.Event == nil || res.Event.Type != events.Booked || res.Event.Version != 1 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestGatewayPatientChangeIsANewVersion(t *testing.T) {
	var out sink
	g := NewGateway(&MemoryTracker{}, &out, nil)
	ctx := context.Background()
	b := booking(t0.Add(time.Hour))
	if _, err := g.Apply(ctx, change(Book, "1", b)); err != nil {
		t.Fatal(err)
	}
	c := change(Modify, "2", b)
	c.Patient = patB
	res, err := g.Apply(ctx, c)
	if err != nil || res.Event == nil || res.Event.Version != 2 || res.Event.Patient != patB {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestGatewayRejects(t *testing.T) {
	g := NewGateway(&MemoryTracker{}, &sink{}, nil)
	ctx := context.Background()
	unknown := change(Cancel, "1", nil)
	unknown.Patient = ""
	bad := change(Book, "2", booking(t0.Add(-72*time.Hour))) // start three days before booking
	noID := change(Book, "3", booking(t0))
	noID.AppointmentID = ""
	for name, c := range map[string]Change{"cancel of unknown appointment without patient": unknown, "invalid booking": bad, "no appointment id": noID} {
		if _, err := g.Apply(ctx, c); !errors.Is(err, ErrRejected) {
			t.Errorf("%s: err = %v, want ErrRejected", name, err)
		}
	}
}

func TestGatewayPublishFailureSavesNothing(t *testing.T) {
	out := &sink{fail: errors.New("kafka: not enough replicas")}
	tr := &MemoryTracker{}
	g := NewGateway(tr, out, nil)
	ctx := context.Background()
	b := booking(t0.Add(time.Hour))
	if _, err := g.Apply(ctx, change(Book, "1", b)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if st, _ := tr.Load(ctx, "APT1"); st.Version != 0 {
		t.Fatalf("state saved although Kafka refused: %+v", st)
	}
	// The sender retries once Kafka is back: the same booking, version 1.
	out.fail = nil
	res, err := g.Apply(ctx, change(Book, "1", b))
	if err != nil || res.Event == nil || res.Event.Version != 1 {
		t.Fatalf("%+v %v", res, err)
	}
}

type failingTracker struct{ MemoryTracker }

func (f *failingTracker) Save(context.Context, string, State) error {
	return errors.New("redis: connection refused")
}

func TestGatewaySaveFailureRepublishesSameVersion(t *testing.T) {
	var out sink
	g := NewGateway(&failingTracker{}, &out, nil)
	ctx := context.Background()
	c := change(Book, "1", booking(t0.Add(time.Hour)))
	for range 2 {
		if _, err := g.Apply(ctx, c); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v", err)
		}
	}
	if len(out.evs) != 2 || out.evs[0].EventID != out.evs[1].EventID || out.evs[1].Version != 1 {
		t.Fatalf("a retry after a failed save must republish the same event: %+v", out.evs)
	}
}

func TestGatewayConcurrentChangesToOneAppointment(t *testing.T) {
	var out sink
	g := NewGateway(&MemoryTracker{}, &out, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := change(Modify, "x", booking(t0.Add(time.Duration(i+1)*time.Hour)))
			if _, err := g.Apply(ctx, c); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	seen := map[int]bool{}
	for _, ev := range out.evs {
		if seen[ev.Version] {
			t.Fatalf("version %d published twice", ev.Version)
		}
		seen[ev.Version] = true
	}
	if len(seen) != 20 {
		t.Fatalf("%d versions", len(seen))
	}
}

// The event's Kafka timestamp is the time the gateway received the message, the time it
// checked event_time against, so the scorer and the dispatcher check it against the same.
func TestGatewayStampsEventsWithReceiptTime(t *testing.T) {
	var out sink
	g := NewGateway(&MemoryTracker{}, &out, nil)
	c := change(Book, "1", booking(t0.Add(time.Hour)))
	c.Received = t0.Add(3 * time.Second)
	if _, err := g.Apply(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if len(out.times) != 1 || !out.times[0].Equal(c.Received) {
		t.Fatalf("Kafka timestamps %v, want %s", out.times, c.Received)
	}
}
