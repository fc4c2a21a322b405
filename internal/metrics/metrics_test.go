package metrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/stream"
)

func TestBatchDoneCountsByTopicReasonAndBand(t *testing.T) {
	m := metrics.New()
	ev := &events.Appointment{Patient: strings.Repeat("a", 64)}
	m.BatchDone(&scorer.BatchReport{
		Source: "appointments", Messages: 5, Took: 20 * time.Millisecond,
		Published:    map[string]int{"risk": 2, "appointments.dlq": 1},
		DeadLettered: map[string]int{scorer.ReasonMalformedJSON: 1},
		Scores: []scorer.Score{
			{Event: ev, Probability: 0.05, Band: "low", Delay: time.Second},
			{Event: ev, Probability: 0.4, Band: "very_high", Delay: 2 * time.Second},
		},
		Missing:     map[string]int{"prior_dna_rate": 1, "extra.imd_decile": 2, "lead_time_days": 0},
		Quarantined: 1,
	})
	m.BatchFailed(3, time.Millisecond, errors.New("redis down"))
	m.SetModel("m1")
	m.SetModel("m2")
	m.Reminders(func() metrics.ReminderCounts { return metrics.ReminderCounts{Sent: 1} }, time.UTC)

	want := `
# HELP dnarisk_events_consumed_total Input messages processed in completed batches, valid or not, by topic.
# TYPE dnarisk_events_consumed_total counter
dnarisk_events_consumed_total{topic="appointments"} 5
# HELP dnarisk_events_dead_lettered_total Input messages refused and sent to the dead-letter topic, by source topic and reason.
# TYPE dnarisk_events_dead_lettered_total counter
dnarisk_events_dead_lettered_total{reason="malformed_json",topic="appointments"} 1
# HELP dnarisk_events_published_total Messages acknowledged by Kafka, by topic (risk events, dead letters, appointments from the producer).
# TYPE dnarisk_events_published_total counter
dnarisk_events_published_total{topic="appointments.dlq"} 1
dnarisk_events_published_total{topic="risk"} 2
# HELP dnarisk_risk_events_total Risk events published, by risk band.
# TYPE dnarisk_risk_events_total counter
dnarisk_risk_events_total{band="low"} 1
dnarisk_risk_events_total{band="very_high"} 1
# HELP dnarisk_feature_missing_total Scored bookings whose model input was missing, by feature (contract name); divide by the sum of dnarisk_risk_events_total for the live missing rate.
# TYPE dnarisk_feature_missing_total counter
dnarisk_feature_missing_total{feature="extra.imd_decile"} 2
dnarisk_feature_missing_total{feature="lead_time_days"} 0
dnarisk_feature_missing_total{feature="prior_dna_rate"} 1
# HELP dnarisk_batch_failures_total Batches that failed and were retried (Redis or Kafka unavailable); nothing of them was committed.
# TYPE dnarisk_batch_failures_total counter
dnarisk_batch_failures_total 1
# HELP dnarisk_history_quarantined_total Patient histories that could not be read (corrupt) and were moved to a quarantine key; each patient's history started again empty and should be rebuilt from the topic.
# TYPE dnarisk_history_quarantined_total counter
dnarisk_history_quarantined_total 1
# HELP dnarisk_model_info 1 for the model currently scoring, labelled with its id.
# TYPE dnarisk_model_info gauge
dnarisk_model_info{model_id="m2"} 1
# HELP dnarisk_reminders_total SMS reminders by outcome since the dispatcher started: scheduled, sent (accepted by Notify), deferred (retry later), uncertain (outcome unknown: looked up in Notify before any resend), failed (given up), cancelled (dropped before sending).
# TYPE dnarisk_reminders_total counter
dnarisk_reminders_total{outcome="cancelled"} 0
dnarisk_reminders_total{outcome="deferred"} 0
dnarisk_reminders_total{outcome="failed"} 0
dnarisk_reminders_total{outcome="scheduled"} 0
dnarisk_reminders_total{outcome="sent"} 1
dnarisk_reminders_total{outcome="uncertain"} 0
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want),
		metrics.EventsConsumed, metrics.EventsDeadLettered, metrics.EventsPublished, metrics.RiskEvents,
		metrics.FeatureMissing, metrics.BatchFailures, metrics.HistoryQuarantined, metrics.ModelInfo, metrics.Reminders); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.Registry, metrics.RiskProbability, metrics.EventDelay, metrics.BatchDuration); n != 1+1+5 {
		t.Fatalf("histogram series = %d, want 7 (probability, delay, 5 batch stages)", n)
	}
	// No label may carry a patient pseudonym.
	fams, _ := m.Registry.Gather()
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if strings.Contains(l.GetValue(), ev.Patient[:16]) {
					t.Fatalf("%s carries a pseudonym in label %s", f.GetName(), l.GetName())
				}
			}
		}
	}
}

func TestRedisHookTimesCommandsAndPipelines(t *testing.T) {
	mr := miniredis.RunT(t)
	m := metrics.New()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), DisableIdentity: true, Protocol: 2})
	defer rdb.Close()
	rdb.AddHook(m.RedisHook())
	ctx := context.Background()
	rdb.Get(ctx, "missing") // a miss is not an error
	pipe := rdb.Pipeline()
	pipe.Set(ctx, "k", "v", 0)
	pipe.Get(ctx, "k")
	pipe.Exec(ctx)
	mr.SetError("boom")
	rdb.Get(ctx, "k")
	if n := testutil.CollectAndCount(m.Registry, metrics.RedisDuration); n < 2 {
		t.Fatalf("redis duration series = %d, want get and pipeline", n)
	}
	want := `
# HELP dnarisk_redis_errors_total Redis round trips that failed, by command.
# TYPE dnarisk_redis_errors_total counter
dnarisk_redis_errors_total{command="get"} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), metrics.RedisErrors); err != nil {
		t.Fatal(err)
	}
}

type lagSource struct {
	lags []stream.PartitionLag
	err  error
}

func (s lagSource) Lag(context.Context, string, string) ([]stream.PartitionLag, error) {
	return s.lags, s.err
}

func TestPollLag(t *testing.T) {
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // one measurement, then return
	m.PollLag(ctx, lagSource{lags: []stream.PartitionLag{{Partition: 0, Lag: 7}, {Partition: 1, Lag: 3}}}, "g", "appointments", time.Second, nil)
	want := `
# HELP dnarisk_consumer_lag_messages Messages on the partition after the consumer group's committed offset.
# TYPE dnarisk_consumer_lag_messages gauge
dnarisk_consumer_lag_messages{partition="0",topic="appointments"} 7
dnarisk_consumer_lag_messages{partition="1",topic="appointments"} 3
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), metrics.ConsumerLag); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	m.PollLag(ctx, lagSource{err: errors.New("no broker")}, "g", "appointments", 100*time.Millisecond, nil)
	fams, _ := m.Registry.Gather()
	for _, f := range fams {
		if f.GetName() == metrics.ConsumerLagErrors && f.GetMetric()[0].GetCounter().GetValue() >= 1 {
			return
		}
	}
	t.Fatal("a failed lag measurement was not counted")
}

func TestLoopDoneRecordsFetchFillCommit(t *testing.T) {
	m := metrics.New()
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	lt := stream.LoopTimes{
		Batch:     []kafka.Message{{Time: at.Add(-3 * time.Millisecond)}, {Time: at.Add(-7 * time.Millisecond)}, {}},
		FetchedAt: at, Fill: time.Millisecond, Commit: 2 * time.Millisecond,
	}
	if w, ok := metrics.FetchWait(lt); !ok || w != 7*time.Millisecond {
		t.Fatalf("fetch wait %s %v, want the oldest message's 7ms", w, ok)
	}
	if _, ok := metrics.FetchWait(stream.LoopTimes{Batch: []kafka.Message{{}}}); ok {
		t.Fatal("a fetch wait without timestamps")
	}
	m.LoopDone(lt)
	if n := testutil.CollectAndCount(m.Registry, metrics.BatchDuration); n != 3 {
		t.Fatalf("batch stage series = %d, want 3 (fetch, fill, commit)", n)
	}
}
