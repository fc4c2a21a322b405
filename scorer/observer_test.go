package scorer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
)

type recorder struct {
	done   []*BatchReport
	failed int
}

func (r *recorder) BatchDone(b *BatchReport)              { r.done = append(r.done, b) }
func (r *recorder) BatchFailed(int, time.Duration, error) { r.failed++ }

func TestObserverHearsEveryBatch(t *testing.T) {
	out := &memOutput{}
	rec := &recorder{}
	p := mustNew(t, Config{Store: &featurestore.MemoryStore{}, Output: out, Model: fakeModel{"m1"}, Observer: Observers(rec)})
	sent := time.Now().Add(-time.Second)
	good := msg(t, book("A", 1, t0), 0)
	good.Topic, good.Time = "appointments", sent
	bad := kafka.Message{Topic: "appointments", Key: []byte("k"), Value: []byte(`{"schema":`), Offset: 1}
	wrongKey := msg(t, book("B", 1, t0), 2)
	wrongKey.Topic, wrongKey.Key = "appointments", []byte("not-the-patient")
	if err := p.Process(context.Background(), []kafka.Message{good, bad, wrongKey}); err != nil {
		t.Fatal(err)
	}
	if len(rec.done) != 1 {
		t.Fatalf("%d reports", len(rec.done))
	}
	r := rec.done[0]
	if r.Source != "appointments" || r.Messages != 3 || r.Published["risk"] != 1 || r.Published["appointments.dlq"] != 2 ||
		r.DeadLettered[ReasonMalformedJSON] != 1 || r.DeadLettered[ReasonKeyMismatch] != 1 || len(r.Scores) != 1 {
		t.Fatalf("report %+v", r)
	}
	if s := r.Scores[0]; s.Event.AppointmentID != "A" || s.ModelID != "m1" || s.Delay < time.Second || s.Band == "" {
		t.Fatalf("score %+v", s)
	}

	out.fail = errors.New("kafka down")
	if err := p.Process(context.Background(), []kafka.Message{good}); err == nil || rec.failed != 1 || len(rec.done) != 1 {
		t.Fatalf("failed batch: err %v, failed %d, done %d", err, rec.failed, len(rec.done))
	}
}

func TestDeadLetterReason(t *testing.T) {
	big := `{"schema":"appointment.v1","x":"` + strings.Repeat("a", events.MaxEventBytes) + `"}`
	for _, tt := range []struct {
		value string
		err   error
		want  string
	}{
		{`{"schema":`, events.ErrInvalid, ReasonMalformedJSON},
		{"\xff\xfe", events.ErrInvalid, ReasonNotUTF8},
		{big, events.ErrInvalid, ReasonTooLarge},
		{`{"schema":"appointment.v9"}`, events.ErrInvalid, ReasonUnknownSchema},
		{`[1,2]`, events.ErrInvalid, ReasonUnknownSchema},
		{`{"schema":"appointment.v1","type":"booked"}`, events.ErrInvalid, ReasonContract},
		{`{"schema":"appointment.v1"}`, errKeyMismatch, ReasonKeyMismatch},
	} {
		if got := DeadLetterReason([]byte(tt.value), tt.err); got != tt.want {
			t.Errorf("%.40q: %s, want %s", tt.value, got, tt.want)
		}
	}
}

func TestRedactDigits(t *testing.T) {
	for in, want := range map[string]string{
		`parsing time "\"943 476 5919\"" as`:    `parsing time "\"[digits]\"" as`,
		`nhs 9434765919, phone +44 7700 900123`: `nhs [digits], phone [digits]`,
		`booking.start 2025-02-10T10:00:00Z`:    `booking.start 2025-02-10T10:00:00Z`,
		`booking_version 12345 out of range`:    `booking_version 12345 out of range`,
	} {
		if got := redactDigits(in); got != want {
			t.Errorf("redactDigits(%q) = %q, want %q", in, got, want)
		}
	}
}

// The report counts, per model feature, the scored bookings whose input was missing: a
// first booking has no prior DNA rate, a second one (after a no-show) has.
func TestReportCountsMissingInputsPerFeature(t *testing.T) {
	rec := &recorder{}
	p := mustNew(t, Config{Store: &featurestore.MemoryStore{}, Output: &memOutput{}, Model: fakeModel{"m1"}, Observer: Observers(rec)})
	batch := []kafka.Message{
		msg(t, book("A", 1, t0), 0),
		msg(t, done("A", events.DidNotAttend, t0.Add(96*time.Hour)), 1),
		msg(t, book("B", 1, t0.Add(100*time.Hour)), 2),
	}
	if err := p.Process(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	r := rec.done[0]
	if len(r.Missing) != len(featurestore.Names) {
		t.Fatalf("missing counts for %d features, want every one of %d: %v", len(r.Missing), len(featurestore.Names), r.Missing)
	}
	if r.Missing["prior_dna_rate"] != 1 || r.Missing["lead_time_days"] != 0 {
		t.Fatalf("missing prior_dna_rate %d (want 1: the first booking), lead_time_days %d (want 0)", r.Missing["prior_dna_rate"], r.Missing["lead_time_days"])
	}
	if err := p.Process(context.Background(), []kafka.Message{msg(t, done("A", events.Attended, t0.Add(96*time.Hour)), 3)}); err != nil {
		t.Fatal(err)
	}
	if r := rec.done[1]; r.Missing != nil {
		t.Fatalf("a batch scoring nothing reports missing counts %v", r.Missing)
	}
}
