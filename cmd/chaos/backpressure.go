package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

// backpressureReport is out/backpressure.json.
type backpressureReport struct {
	OK        bool    `json:"ok"`
	DurationS float64 `json:"duration_s"`
	Rate      float64 `json:"producer_rate"`
	Events    int     `json:"events"`
	// Outages: what was unavailable and for how long.
	RedisOutageS  float64 `json:"redis_outage_s"`
	OutputOutageS float64 `json:"output_outage_s"`
	// RSS of the scorer (MiB): the highest sample before any outage, during each, and the
	// kernel's high-water mark for the whole run.
	RSS struct {
		BeforePeak       float64 `json:"before_peak_mb"`
		RedisOutagePeak  float64 `json:"redis_outage_peak_mb"`
		OutputOutagePeak float64 `json:"output_outage_peak_mb"`
		AfterPeak        float64 `json:"after_peak_mb"`
		HighWater        float64 `json:"high_water_mb"`
	} `json:"rss"`
	Outages []outageReport `json:"outages"`
	// Lost: bookings whose latest version has no risk event once the backlog is scored.
	Lost       int      `json:"lost"`
	Violations []string `json:"violations"`
}

// outageReport is what the scorer did while one dependency was away.
type outageReport struct {
	What string `json:"what"`
	// CommittedDuring is how far the group's committed offsets moved while it lasted
	// (after a grace second for the batch in hand): 0 means no commits.
	CommittedDuring int64 `json:"committed_during"`
	// PublishedDuring is how many risk events were written meanwhile.
	PublishedDuring int64 `json:"risk_published_during"`
	// LagAtEnd is the backlog the producer built up meanwhile: it waits in Kafka, not in
	// the scorer's memory.
	LagAtEnd int64 `json:"lag_at_end"`
	// PeakMB and GrowthMB: resident memory, and how much it grew from the outage's first
	// to its last quarter (unbounded buffering would grow with the backlog).
	PeakMB   float64 `json:"peak_mb"`
	GrowthMB float64 `json:"growth_mb"`
	// ResumedAfterS is how long after the dependency came back the first commit came.
	ResumedAfterS float64 `json:"resumed_after_s"`
}

// runBackpressure measures one scorer under a steady load through a Redis outage and an
// output-topic outage (the broker refusing every write to the risk topic: max.message.bytes
// below a risk event's size; Kafka 4 no longer refuses writes for min.insync.replicas above
// a one-replica topic's replication). While either lasts the scorer must commit nothing and publish nothing, and
// hold its memory flat, the backlog staying in Kafka; afterwards it must catch up with
// nothing lost.
func runBackpressure(parent context.Context, cfg config, log *slog.Logger) (bool, error) {
	ctx, cancel := context.WithTimeout(parent, cfg.timeout)
	defer cancel()
	began := time.Now()
	r := &runner{cfg: cfg, log: log, began: began, consumers: map[string]*proc{}, phases: map[string]float64{}}
	r.svc = &services{root: cfg.root, kafkaPort: cfg.kafkaPort, redisPort: cfg.redisPort, log: log}
	if err := os.MkdirAll(cfg.work, 0o755); err != nil {
		return false, err
	}
	built := make(chan error, 1)
	go func() { built <- build(ctx, cfg.root, filepath.Join(cfg.work, "bin"), "consumer", "producer") }()
	if err := r.svc.start(ctx); err != nil {
		return false, err
	}
	if !cfg.keep {
		defer r.svc.stop()
	}
	if err := <-built; err != nil {
		return false, err
	}
	var err error
	if r.ps, err = newProcs(filepath.Join(cfg.work, "bin"), filepath.Join(cfg.work, "logs"), log); err != nil {
		return false, err
	}
	defer r.ps.stopAll()
	brokers := r.svc.brokers()
	if err := createTopics(ctx, brokers, map[string]int{topicAppointments: appointmentParts, topicRisk: riskParts, topicDLQ: 2}); err != nil {
		return false, err
	}
	r.secrets.pseudonym = randomHex(64)
	evs, err := simEvents(cfg, []byte(r.secrets.pseudonym))
	if err != nil {
		return false, err
	}
	rep := &backpressureReport{Rate: cfg.rate, Events: len(evs)}
	violate := func(format string, args ...any) {
		rep.Violations = append(rep.Violations, fmt.Sprintf(format, args...))
		log.Error("violation", "what", rep.Violations[len(rep.Violations)-1])
	}

	if err := r.startConsumer("consumer-1"); err != nil {
		return false, err
	}
	scorer := r.consumer("consumer-1")
	producer, err := r.ps.start("producer", "producer", "producer", []string{
		"--seed", strconv.FormatInt(cfg.seed, 10), "--patients", strconv.Itoa(cfg.patients), "--days", strconv.Itoa(cfg.days),
		"--start", simStart, "--rate", strconv.FormatFloat(cfg.rate, 'f', -1, 64), "--brokers", brokers[0], "--topic", topicAppointments,
	}, []string{"DNA_PSEUDONYM_SECRET=" + r.secrets.pseudonym})
	if err != nil {
		return false, err
	}

	// Sample the scorer's memory four times a second, tagged with the phase.
	var mu sync.Mutex
	phase := "before"
	type sample struct {
		phase string
		at    time.Time
		kb    int64
	}
	var samples []sample
	sampling, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampling.Done():
				return
			case <-t.C:
			}
			kb, err := vmRSS(scorer.cmd.Process.Pid)
			if err != nil {
				continue
			}
			mu.Lock()
			samples = append(samples, sample{phase, time.Now(), kb})
			mu.Unlock()
		}
	}()
	setPhase := func(p string) {
		mu.Lock()
		phase = p
		mu.Unlock()
	}
	committed := func() int64 { return r.committed(ctx, scorerGroup, topicAppointments, appointmentParts) }
	published := func() int64 {
		n, _ := endOffsets(ctx, brokers, topicRisk, riskParts)
		return n
	}

	// outage takes a dependency away with down, keeps it away for d, brings it back with up,
	// and reports what the scorer did meanwhile.
	outage := func(what string, d time.Duration, down, up func() error) error {
		log.Info("outage begins", "what", what, "for", d)
		setPhase(what)
		start := time.Now()
		if err := down(); err != nil {
			return err
		}
		time.Sleep(time.Second) // the batch in hand may still finish
		c0, p0 := committed(), published()
		time.Sleep(time.Until(start.Add(d)))
		c1, p1 := committed(), published()
		o := outageReport{What: what, CommittedDuring: c1 - c0, PublishedDuring: p1 - p0,
			LagAtEnd: r.lag(ctx, scorerGroup, topicAppointments)}
		if err := up(); err != nil {
			return err
		}
		back := time.Now()
		setPhase("after " + what)
		for committed() == c1 && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
		}
		o.ResumedAfterS = round(time.Since(back).Seconds(), 1)
		mu.Lock()
		var during []sample
		for _, s := range samples {
			if s.phase == what {
				during = append(during, s)
			}
		}
		mu.Unlock()
		if len(during) >= 4 {
			q := len(during) / 4
			var first, last int64
			for _, s := range during[:q] {
				first = max(first, s.kb)
			}
			for _, s := range during {
				o.PeakMB = max(o.PeakMB, float64(s.kb)/1024)
			}
			for _, s := range during[len(during)-q:] {
				last = max(last, s.kb)
			}
			o.GrowthMB = round(float64(last-first)/1024, 1)
			o.PeakMB = round(o.PeakMB, 1)
		}
		rep.Outages = append(rep.Outages, o)
		log.Info("outage over", "what", what, "committed_during", o.CommittedDuring, "published_during", o.PublishedDuring,
			"lag_at_end", o.LagAtEnd, "peak_mb", o.PeakMB, "growth_mb", o.GrowthMB, "resumed_after_s", o.ResumedAfterS)
		if o.CommittedDuring != 0 {
			violate("%s: the scorer committed %d offsets while it lasted", what, o.CommittedDuring)
		}
		if o.PublishedDuring != 0 {
			violate("%s: the scorer published %d risk events while it lasted", what, o.PublishedDuring)
		}
		if o.GrowthMB > 32 {
			violate("%s: the scorer's memory grew %.1f MiB while it lasted: it is buffering", what, o.GrowthMB)
		}
		return nil
	}

	time.Sleep(20 * time.Second) // warm up under load
	var redisDown chan error
	err = outage("redis outage", cfg.outage, func() error {
		redisDown = make(chan error, 1)
		go func() {
			_, err := r.svc.restartRedis(ctx, cfg.outage)
			redisDown <- err
		}()
		return nil
	}, func() error { return <-redisDown })
	if err != nil {
		return false, err
	}
	rep.RedisOutageS = cfg.outage.Seconds()
	time.Sleep(10 * time.Second)
	outputOutage := cfg.outage / 2
	err = outage("output topic outage", outputOutage,
		func() error { return setTopicConfig(ctx, brokers, topicRisk, "max.message.bytes", "64") },
		func() error { return setTopicConfig(ctx, brokers, topicRisk, "max.message.bytes", "1048588") })
	if err != nil {
		return false, err
	}
	rep.OutputOutageS = outputOutage.Seconds()

	// Then everything: the rest of the input, scored, nothing lost.
	if err := producer.wait(ctx); err != nil {
		violate("producer failed: %v", err)
	}
	for r.lag(ctx, scorerGroup, topicAppointments) != 0 && ctx.Err() == nil {
		time.Sleep(time.Second)
	}
	setPhase("end")
	stopSampling()
	r.ps.sample() // the kernel's high-water mark, while the process is still there to ask
	if err := scorer.term(30 * time.Second); err != nil {
		violate("scorer did not stop cleanly: %v", err)
	}
	mu.Lock()
	for _, s := range samples {
		mb := float64(s.kb) / 1024
		switch {
		case s.phase == "before":
			rep.RSS.BeforePeak = max(rep.RSS.BeforePeak, mb)
		case s.phase == "redis outage":
			rep.RSS.RedisOutagePeak = max(rep.RSS.RedisOutagePeak, mb)
		case s.phase == "output topic outage":
			rep.RSS.OutputOutagePeak = max(rep.RSS.OutputOutagePeak, mb)
		default:
			rep.RSS.AfterPeak = max(rep.RSS.AfterPeak, mb)
		}
	}
	mu.Unlock()
	rep.RSS.HighWater = r.ps.peakMB()["consumer"]
	for _, p := range []*float64{&rep.RSS.BeforePeak, &rep.RSS.RedisOutagePeak, &rep.RSS.OutputOutagePeak, &rep.RSS.AfterPeak, &rep.RSS.HighWater} {
		*p = round(*p, 1)
	}

	model, err := scoring.Load(filepath.Join(cfg.root, "models", "default"))
	if err != nil {
		return false, err
	}
	opts := reminderOptions([]byte(randomHex(64)))
	_ = opts.Policy.Validate()
	gt := groundTruth(evs, model, historyRetention, opts.Secret, &opts.Policy, evs[0].EventTime)
	risk, err := stream.ReadAll(ctx, brokers, topicRisk)
	if err != nil {
		return false, err
	}
	seen := map[riskKey]bool{}
	for _, m := range risk {
		var ev struct {
			AppointmentID string `json:"appointment_id"`
			Version       int    `json:"booking_version"`
		}
		if json.Unmarshal(m.Value, &ev) == nil {
			seen[riskKey{ev.AppointmentID, ev.Version}] = true
		}
	}
	for _, k := range gt.latest {
		if _, ok := gt.risk[k]; ok && !seen[k] {
			rep.Lost++
		}
	}
	if rep.Lost > 0 {
		violate("lost = %d bookings never scored", rep.Lost)
	}
	if rep.RSS.RedisOutagePeak > rep.RSS.BeforePeak+64 || rep.RSS.OutputOutagePeak > rep.RSS.BeforePeak+64 {
		violate("peak memory during an outage (%.1f, %.1f MiB) is far above the peak under load before it (%.1f MiB)",
			rep.RSS.RedisOutagePeak, rep.RSS.OutputOutagePeak, rep.RSS.BeforePeak)
	}
	rep.DurationS = round(time.Since(began).Seconds(), 1)
	rep.OK = len(rep.Violations) == 0
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
		return false, err
	}
	if err := os.WriteFile(cfg.out, append(b, '\n'), 0o644); err != nil {
		return false, err
	}
	return rep.OK, nil
}

// committed sums a group's committed offsets over a topic's partitions (-1 if unknown).
func (r *runner) committed(ctx context.Context, group, topic string, partitions int) int64 {
	c := &kafka.Client{Addr: kafka.TCP(r.svc.brokers()...), Timeout: 5 * time.Second}
	parts := make([]int, partitions)
	for i := range parts {
		parts[i] = i
	}
	res, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return -1
	}
	var n int64
	for _, p := range res.Topics[topic] {
		n += max(p.CommittedOffset, 0)
	}
	return n
}

// setTopicConfig sets one configuration entry of a topic.
func setTopicConfig(ctx context.Context, brokers []string, topic, name, value string) error {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	res, err := c.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
		Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: name, Value: value, ConfigOperation: kafka.ConfigOperationSet}},
	}}})
	if err != nil {
		return fmt.Errorf("set %s=%s on %s: %w", name, value, topic, err)
	}
	for _, r := range res.Resources {
		if r.Error != nil {
			return fmt.Errorf("set %s=%s on %s: %w", name, value, topic, r.Error)
		}
	}
	return nil
}
