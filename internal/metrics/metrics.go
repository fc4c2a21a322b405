// Package metrics is the Prometheus instrumentation of every long-running dnarisk process:
// what the scorer consumed, published and dead-lettered, how long batches and Redis calls
// took, the distribution of scores, the model in use, consumer lag and reminders. Each
// Metrics owns its own registry (never the global one), so tests and several processes in
// one binary (the demo) do not collide. Labels carry topics, reasons, bands and model ids,
// never anything about a patient.
package metrics

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/stream"
)

// Namespace starts every metric name.
const Namespace = "dnarisk"

// Metrics holds the collectors of one process. Its methods are safe for concurrent use.
type Metrics struct {
	// Registry is what /metrics serves.
	Registry *prometheus.Registry

	consumed      *prometheus.CounterVec
	published     *prometheus.CounterVec
	deadLettered  *prometheus.CounterVec
	batchFailures prometheus.Counter
	quarantined   prometheus.Counter
	batchDuration *prometheus.HistogramVec
	batchSize     prometheus.Histogram
	delay         prometheus.Histogram
	probability   prometheus.Histogram
	riskEvents    *prometheus.CounterVec
	missing       *prometheus.CounterVec
	modelInfo     *prometheus.GaugeVec
	modelReloads  *prometheus.CounterVec
	lag           *prometheus.GaugeVec
	lagErrors     prometheus.Counter
	redisDuration *prometheus.HistogramVec
	redisErrors   *prometheus.CounterVec
	challenger    challenger
}

// Metric names, for tests and the status page.
const (
	EventsConsumed     = Namespace + "_events_consumed_total"
	EventsPublished    = Namespace + "_events_published_total"
	EventsDeadLettered = Namespace + "_events_dead_lettered_total"
	BatchFailures      = Namespace + "_batch_failures_total"
	HistoryQuarantined = Namespace + "_history_quarantined_total"
	BatchDuration      = Namespace + "_batch_duration_seconds"
	BatchMessages      = Namespace + "_batch_messages"
	EventDelay         = Namespace + "_event_delay_seconds"
	RiskProbability    = Namespace + "_risk_probability"
	RiskEvents         = Namespace + "_risk_events_total"
	FeatureMissing     = Namespace + "_feature_missing_total"
	ModelInfo          = Namespace + "_model_info"
	ModelReloads       = Namespace + "_model_reloads_total"
	ConsumerLag        = Namespace + "_consumer_lag_messages"
	ConsumerLagErrors  = Namespace + "_consumer_lag_errors_total"
	RedisDuration      = Namespace + "_redis_command_duration_seconds"
	RedisErrors        = Namespace + "_redis_errors_total"
	Reminders          = Namespace + "_reminders_total"
	RemindersToday     = Namespace + "_reminders_today"
)

// New returns the collectors of one process, registered on a new registry together with the
// Go runtime and process collectors.
func New() *Metrics {
	short := prometheus.ExponentialBucketsRange(0.0005, 10, 16) // 0.5 ms .. 10 s
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: EventsConsumed,
			Help: "Input messages processed in completed batches, valid or not, by topic."}, []string{"topic"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: EventsPublished,
			Help: "Messages acknowledged by Kafka, by topic (risk events, dead letters, appointments from the producer)."}, []string{"topic"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: EventsDeadLettered,
			Help: "Input messages refused and sent to the dead-letter topic, by source topic and reason."}, []string{"topic", "reason"}),
		batchFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: BatchFailures,
			Help: "Batches that failed and were retried (Redis or Kafka unavailable); nothing of them was committed."}),
		quarantined: prometheus.NewCounter(prometheus.CounterOpts{Name: HistoryQuarantined,
			Help: "Patient histories that could not be read (corrupt) and were moved to a quarantine key; each patient's history started again empty and should be rebuilt from the topic."}),
		batchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: BatchDuration,
			Help: "Time to process one batch (stage total) and its parts: history load, score (decode, features, model, encode), publish to Kafka, history save; " +
				"and the consumer loop's: fetch (the batch's oldest message from its producer timestamp to being fetched), fill (first message fetched to the batch complete), offset commit.",
			Buckets: short}, []string{"stage"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: BatchMessages,
			Help: "Messages per completed batch.", Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{Name: EventDelay,
			Help:    "From a booking's Kafka timestamp to its risk event being acknowledged: time queued in Kafka plus processing.",
			Buckets: prometheus.ExponentialBucketsRange(0.001, 3600, 20)}),
		probability: prometheus.NewHistogram(prometheus.HistogramOpts{Name: RiskProbability,
			Help:    "Predicted probability of non-attendance of every risk event published.",
			Buckets: []float64{0.02, 0.04, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1}}),
		riskEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: RiskEvents,
			Help: "Risk events published, by risk band."}, []string{"band"}),
		missing: prometheus.NewCounterVec(prometheus.CounterOpts{Name: FeatureMissing,
			Help: "Scored bookings whose model input was missing, by feature (contract name); divide by the sum of " + RiskEvents + " for the live missing rate."}, []string{"feature"}),
		modelInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ModelInfo,
			Help: "1 for the model currently scoring, labelled with its id."}, []string{"model_id"}),
		modelReloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ModelReloads,
			Help: "Model directory changes seen: loaded (now serving) or refused (the previous model kept serving)."}, []string{"result"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ConsumerLag,
			Help: "Messages on the partition after the consumer group's committed offset."}, []string{"topic", "partition"}),
		lagErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: ConsumerLagErrors,
			Help: "Failed attempts to measure consumer lag."}),
		redisDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: RedisDuration,
			Help:    "Redis round trips, by command (a pipeline counts once, as \"pipeline\").",
			Buckets: short}, []string{"command"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: RedisErrors,
			Help: "Redis round trips that failed, by command."}, []string{"command"}),
		challenger: newChallenger(),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.consumed, m.published, m.deadLettered, m.batchFailures, m.quarantined, m.batchDuration, m.batchSize,
		m.delay, m.probability, m.riskEvents, m.missing, m.modelInfo, m.modelReloads, m.lag, m.lagErrors,
		m.redisDuration, m.redisErrors,
	)
	m.Registry.MustRegister(m.challenger.collectors()...)
	return m
}

// BatchDone implements scorer.Observer.
func (m *Metrics) BatchDone(r *scorer.BatchReport) {
	m.consumed.WithLabelValues(r.Source).Add(float64(r.Messages))
	for topic, n := range r.Published {
		m.published.WithLabelValues(topic).Add(float64(n))
	}
	for reason, n := range r.DeadLettered {
		m.deadLettered.WithLabelValues(r.Source, reason).Add(float64(n))
	}
	m.quarantined.Add(float64(r.Quarantined))
	m.batchSize.Observe(float64(r.Messages))
	m.batchDuration.WithLabelValues("total").Observe(r.Took.Seconds())
	m.batchDuration.WithLabelValues("load").Observe(r.Load.Seconds())
	m.batchDuration.WithLabelValues("score").Observe(r.Score.Seconds())
	if r.Published != nil {
		m.batchDuration.WithLabelValues("publish").Observe(r.Publish.Seconds())
	}
	m.batchDuration.WithLabelValues("save").Observe(r.Save.Seconds())
	for i := range r.Scores {
		s := &r.Scores[i]
		m.riskEvents.WithLabelValues(s.Band).Inc()
		m.probability.Observe(s.Probability)
		if s.Delay > 0 {
			m.delay.Observe(s.Delay.Seconds())
		}
	}
	// Every feature gets a series, zeros too, so a rate can be taken from the first batch.
	for feature, n := range r.Missing {
		m.missing.WithLabelValues(feature).Add(float64(n))
	}
	m.challenger.batchDone(r)
}

// LoopDone records the consumer loop's stages of one batch (stream.Batching.Timed): fetch,
// fill and commit.
func (m *Metrics) LoopDone(lt stream.LoopTimes) {
	if w, ok := FetchWait(lt); ok {
		m.batchDuration.WithLabelValues("fetch").Observe(w.Seconds())
	}
	m.batchDuration.WithLabelValues("fill").Observe(lt.Fill.Seconds())
	m.batchDuration.WithLabelValues("commit").Observe(lt.Commit.Seconds())
}

// FetchWait is how long the oldest message of a batch waited, from its producer timestamp to
// being fetched: the broker's append and fetch, plus any wait behind earlier batches. False
// when no message carries a timestamp.
func FetchWait(lt stream.LoopTimes) (time.Duration, bool) {
	var oldest time.Time
	for i := range lt.Batch {
		if t := lt.Batch[i].Time; !t.IsZero() && (oldest.IsZero() || t.Before(oldest)) {
			oldest = t
		}
	}
	if oldest.IsZero() {
		return 0, false
	}
	return max(0, lt.FetchedAt.Sub(oldest)), true
}

// BatchFailed implements scorer.Observer.
func (m *Metrics) BatchFailed(int, time.Duration, error) { m.batchFailures.Inc() }

// Published counts n messages acknowledged on topic, for processes that publish without a
// scorer.Processor (the producer).
func (m *Metrics) Published(topic string, n int) { m.published.WithLabelValues(topic).Add(float64(n)) }

// SetModel records the model now scoring; the previous one's info series is removed.
func (m *Metrics) SetModel(id string) {
	m.modelInfo.Reset()
	m.modelInfo.WithLabelValues(id).Set(1)
}

// ModelReload counts a model directory change: loaded or refused.
func (m *Metrics) ModelReload(loaded bool) {
	if loaded {
		m.modelReloads.WithLabelValues("loaded").Inc()
	} else {
		m.modelReloads.WithLabelValues("refused").Inc()
	}
}

// LagSource measures a consumer group's lag; *stream.Admin implements it.
type LagSource interface {
	Lag(ctx context.Context, group, topic string) ([]stream.PartitionLag, error)
}

// PollLag measures group's lag on topic now and then every interval until ctx ends. A failed
// measurement counts in dnarisk_consumer_lag_errors_total and leaves the last values.
func (m *Metrics) PollLag(ctx context.Context, src LagSource, group, topic string, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		qctx, cancel := context.WithTimeout(ctx, every)
		err := m.MeasureLag(qctx, src, group, topic)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing && log != nil {
				log.Warn("cannot measure consumer lag", "group", group, "topic", topic, "err", err)
			}
			failing = true
		case err == nil:
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// MeasureLag measures group's lag on topic once.
func (m *Metrics) MeasureLag(ctx context.Context, src LagSource, group, topic string) error {
	lags, err := src.Lag(ctx, group, topic)
	if err != nil {
		if ctx.Err() == nil {
			m.lagErrors.Inc()
		}
		return err
	}
	for _, l := range lags {
		m.lag.WithLabelValues(topic, strconv.Itoa(l.Partition)).Set(float64(l.Lag))
	}
	return nil
}
