package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/stream"
)

// The binary with --rescore, on real Kafka and Redis: a no-show re-scores the patient's
// other open booking, as of the day before it, with the no-show in its features; the
// dispatcher-facing risk event says why and as of when.
func TestBinaryRescoresWhenHistoryChanges(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	bin := consumerBinary(t)
	names := laterTopics(t, brokers, 3)
	in, risk, dlq := names[0], names[1], names[2]
	group := fmt.Sprintf("consumer-rescore-%d", time.Now().UnixNano())
	r := startScorer(t, bin, []string{"KAFKA_BROKERS=" + strings.Join(brokers, ","), "REDIS_ADDR=" + redisAddr, "CREATE_TOPICS=true"},
		"--group", group, "--redis-prefix", group+":", "--topic-appointments", in, "--topic-risk", risk, "--topic-dlq", dlq,
		"--rescore", "--decision-model-dir", "../../models/default")
	defer r.stop(t)

	now := time.Now().UTC().Truncate(time.Second)
	patient := strings.Repeat("c3", 32)
	booking := func(id string, at, start time.Time) events.Appointment {
		return events.Appointment{Schema: events.AppointmentSchema, EventID: id + "-b", Type: events.Booked, EventTime: at,
			AppointmentID: id, Version: 1, Patient: patient,
			Booking: &events.Booking{Specialty: "110", Start: start, BookedAt: at, AgeBand: "35-44", Contact: events.Contact{SMS: true}}}
	}
	c := booking("C", now.Add(-5*24*time.Hour), now.Add(-time.Hour))
	a := booking("A", now.Add(-2*24*time.Hour), now.Add(10*24*time.Hour))
	dna := events.Appointment{Schema: events.AppointmentSchema, EventID: "C-dna", Type: events.DidNotAttend,
		EventTime: now.Add(-30 * time.Minute), AppointmentID: "C", Version: 1, Patient: patient}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin := stream.NewAdmin(brokers)
	defer admin.Close()
	testenv.Eventually(t, 30*time.Second, func() bool {
		missing, err := admin.Missing(ctx, names...)
		return err == nil && len(missing) == 0
	}, "the consumer to create its topics")
	w := stream.NewWriter(brokers, in)
	defer w.Close()
	for _, ev := range []events.Appointment{c, a, dna} { // one at a time: in three batches or one
		b, _ := json.Marshal(ev)
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(patient), Value: b}); err != nil {
			t.Fatal(err)
		}
	}
	var got []events.Risk
	testenv.Eventually(t, 90*time.Second, func() bool {
		msgs, err := stream.ReadAll(ctx, brokers, risk)
		got = got[:0]
		for _, m := range msgs {
			var r events.Risk
			if json.Unmarshal(m.Value, &r) == nil {
				got = append(got, r)
			}
		}
		return err == nil && len(got) >= 3
	}, "three risk events: C and A at booking, A again after the no-show")
	last := got[len(got)-1]
	if len(got) != 3 || last.AppointmentID != "A" || last.Reason != events.RescoreHistoryChanged ||
		!last.ScoredAsOf.Equal(a.Booking.Start.Add(-24*time.Hour)) || last.Features["prior_dna"] != 1 || got[1].Features["prior_dna"] != 0 {
		t.Fatalf("risk events %+v; want C, A (no prior DNA), then A re-scored as of the day before with one prior DNA", got)
	}
	if last.Probability <= got[1].Probability {
		t.Errorf("the no-show did not raise A's risk: %.4f at booking, %.4f after", got[1].Probability, last.Probability)
	}
}
