package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
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
	r := newRunner(cfg, log)
	teardown, err := r.setUp(ctx, "consumer", "producer")
	defer teardown()
	if err != nil {
		return false, err
	}
	b, err := r.startBackpressure(ctx)
	if err != nil {
		return false, err
	}
	defer b.mem.stop()

	time.Sleep(20 * time.Second) // warm up under load
	if err := b.outages(ctx); err != nil {
		return false, err
	}
	// Then everything: the rest of the input, scored, nothing lost.
	b.drain(ctx)
	b.summariseRSS()
	if err := b.countLost(ctx); err != nil {
		return false, err
	}
	rep := b.rep
	if rep.RSS.RedisOutagePeak > rep.RSS.BeforePeak+64 || rep.RSS.OutputOutagePeak > rep.RSS.BeforePeak+64 {
		b.violate("peak memory during an outage (%.1f, %.1f MiB) is far above the peak under load before it (%.1f MiB)",
			rep.RSS.RedisOutagePeak, rep.RSS.OutputOutagePeak, rep.RSS.BeforePeak)
	}
	rep.DurationS = round(time.Since(r.began).Seconds(), 1)
	rep.OK = len(rep.Violations) == 0
	if err := rep.write(cfg.out); err != nil {
		return false, err
	}
	return rep.OK, nil
}

// backpressure is one backpressure run under way: the scorer, the producer feeding it, its
// memory samples and the report.
type backpressure struct {
	*runner
	evs      []events.Appointment
	rep      *backpressureReport
	scorer   *proc
	producer *proc
	mem      *rssSampler
}

// startBackpressure creates the topics, regenerates the input (for the ground truth) and
// starts one scorer, the producer and the sampling of the scorer's memory.
func (r *runner) startBackpressure(ctx context.Context) (*backpressure, error) {
	if err := createTopics(ctx, r.svc.brokers(), map[string]int{topicAppointments: appointmentParts, topicRisk: riskParts, topicDLQ: 2}); err != nil {
		return nil, err
	}
	r.secrets.pseudonym = randomHex(64)
	evs, err := simEvents(r.cfg, []byte(r.secrets.pseudonym))
	if err != nil {
		return nil, err
	}
	b := &backpressure{runner: r, evs: evs, rep: &backpressureReport{Rate: r.cfg.rate, Events: len(evs)}}
	if err := r.startConsumer("consumer-1"); err != nil {
		return nil, err
	}
	b.scorer = r.consumer("consumer-1")
	if b.producer, err = r.startProducer(); err != nil {
		return nil, err
	}
	b.mem = sampleRSS(ctx, b.scorer.cmd.Process.Pid)
	return b, nil
}

func (b *backpressure) violate(format string, args ...any) {
	b.rep.Violations = append(b.rep.Violations, fmt.Sprintf(format, args...))
	b.log.Error("violation", "what", b.rep.Violations[len(b.rep.Violations)-1])
}

// outages takes Redis away for --outage (a restart that keeps it down that long), waits 10
// s, then makes the broker refuse every risk event for half as long.
func (b *backpressure) outages(ctx context.Context) error {
	cfg, brokers := b.cfg, b.svc.brokers()
	var redisDown chan error
	err := b.outage(ctx, "redis outage", cfg.outage, func() error {
		redisDown = make(chan error, 1)
		go func() {
			_, err := b.svc.restartRedis(ctx, cfg.outage)
			redisDown <- err
		}()
		return nil
	}, func() error { return <-redisDown })
	if err != nil {
		return err
	}
	b.rep.RedisOutageS = cfg.outage.Seconds()
	time.Sleep(10 * time.Second)
	outputOutage := cfg.outage / 2
	err = b.outage(ctx, "output topic outage", outputOutage,
		func() error { return setTopicConfig(ctx, brokers, topicRisk, "max.message.bytes", "64") },
		func() error { return setTopicConfig(ctx, brokers, topicRisk, "max.message.bytes", "1048588") })
	if err != nil {
		return err
	}
	b.rep.OutputOutageS = outputOutage.Seconds()
	return nil
}

// outage takes a dependency away with down, keeps it away for d, brings it back with up,
// and reports what the scorer did meanwhile.
func (b *backpressure) outage(ctx context.Context, what string, d time.Duration, down, up func() error) error {
	committed := func() int64 { return b.committed(ctx, scorerGroup, topicAppointments, appointmentParts) }
	published := func() int64 {
		n, _ := endOffsets(ctx, b.svc.brokers(), topicRisk, riskParts)
		return n
	}
	b.log.Info("outage begins", "what", what, "for", d)
	b.mem.setPhase(what)
	start := time.Now()
	if err := down(); err != nil {
		return err
	}
	time.Sleep(time.Second) // the batch in hand may still finish
	c0, p0 := committed(), published()
	time.Sleep(time.Until(start.Add(d)))
	c1, p1 := committed(), published()
	o := outageReport{What: what, CommittedDuring: c1 - c0, PublishedDuring: p1 - p0,
		LagAtEnd: b.lag(ctx, scorerGroup, topicAppointments)}
	if err := up(); err != nil {
		return err
	}
	back := time.Now()
	b.mem.setPhase("after " + what)
	for committed() == c1 && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	o.ResumedAfterS = round(time.Since(back).Seconds(), 1)
	o.PeakMB, o.GrowthMB = b.mem.growth(what)
	b.rep.Outages = append(b.rep.Outages, o)
	b.log.Info("outage over", "what", what, "committed_during", o.CommittedDuring, "published_during", o.PublishedDuring,
		"lag_at_end", o.LagAtEnd, "peak_mb", o.PeakMB, "growth_mb", o.GrowthMB, "resumed_after_s", o.ResumedAfterS)
	if o.CommittedDuring != 0 {
		b.violate("%s: the scorer committed %d offsets while it lasted", what, o.CommittedDuring)
	}
	if o.PublishedDuring != 0 {
		b.violate("%s: the scorer published %d risk events while it lasted", what, o.PublishedDuring)
	}
	if o.GrowthMB > 32 {
		b.violate("%s: the scorer's memory grew %.1f MiB while it lasted: it is buffering", what, o.GrowthMB)
	}
	return nil
}

// drain waits for the producer to finish and the scorer to commit the whole backlog, then
// stops the sampling and the scorer (which must stop cleanly).
func (b *backpressure) drain(ctx context.Context) {
	if err := b.producer.wait(ctx); err != nil {
		b.violate("producer failed: %v", err)
	}
	for b.lag(ctx, scorerGroup, topicAppointments) != 0 && ctx.Err() == nil {
		time.Sleep(time.Second)
	}
	b.mem.setPhase("end")
	b.mem.stop()
	b.ps.sample() // the kernel's high-water mark, while the process is still there to ask
	if err := b.scorer.term(30 * time.Second); err != nil {
		b.violate("scorer did not stop cleanly: %v", err)
	}
}

// summariseRSS fills the report's memory figures: the peak of each phase's samples and the
// kernel's high-water mark.
func (b *backpressure) summariseRSS() {
	rss := &b.rep.RSS
	for _, s := range b.mem.all() {
		mb := float64(s.kb) / 1024
		switch {
		case s.phase == "before":
			rss.BeforePeak = max(rss.BeforePeak, mb)
		case s.phase == "redis outage":
			rss.RedisOutagePeak = max(rss.RedisOutagePeak, mb)
		case s.phase == "output topic outage":
			rss.OutputOutagePeak = max(rss.OutputOutagePeak, mb)
		default:
			rss.AfterPeak = max(rss.AfterPeak, mb)
		}
	}
	rss.HighWater = b.ps.peakMB()["consumer"]
	for _, p := range []*float64{&rss.BeforePeak, &rss.RedisOutagePeak, &rss.OutputOutagePeak, &rss.AfterPeak, &rss.HighWater} {
		*p = round(*p, 1)
	}
}

// countLost compares the risk topic with the ground truth: every booking whose latest
// version the scorer must score has a risk event.
func (b *backpressure) countLost(ctx context.Context) error {
	model, err := scoring.Load(filepath.Join(b.cfg.root, "models", "default"))
	if err != nil {
		return err
	}
	opts := reminderOptions([]byte(randomHex(64)))
	_ = opts.Policy.Validate()
	gt := groundTruth(b.evs, model, historyRetention, opts.Secret, &opts.Policy, b.evs[0].EventTime)
	risk, err := stream.ReadAll(ctx, b.svc.brokers(), topicRisk)
	if err != nil {
		return err
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
			b.rep.Lost++
		}
	}
	if b.rep.Lost > 0 {
		b.violate("lost = %d bookings never scored", b.rep.Lost)
	}
	return nil
}

// write writes the report as indented JSON.
func (rep *backpressureReport) write(path string) error {
	out, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(out, '\n'), 0o644)
}

// rssSample is one reading of the scorer's resident memory, tagged with the run's phase.
type rssSample struct {
	phase string
	at    time.Time
	kb    int64
}

// rssSampler reads a process's resident memory four times a second, tagged with the phase
// the run is in.
type rssSampler struct {
	stop    context.CancelFunc
	mu      sync.Mutex
	phase   string
	samples []rssSample
}

// sampleRSS starts sampling pid, in phase "before", until ctx ends or stop is called.
func sampleRSS(ctx context.Context, pid int) *rssSampler {
	sampling, stop := context.WithCancel(ctx)
	s := &rssSampler{stop: stop, phase: "before"}
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampling.Done():
				return
			case <-t.C:
			}
			kb, err := vmRSS(pid)
			if err != nil {
				continue
			}
			s.mu.Lock()
			s.samples = append(s.samples, rssSample{s.phase, time.Now(), kb})
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *rssSampler) setPhase(p string) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

// all is every sample so far.
func (s *rssSampler) all() []rssSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rssSample(nil), s.samples...)
}

// growth is the peak over phase's samples and how much the peak of its last quarter is
// above that of its first (MiB); zeros with fewer than four samples.
func (s *rssSampler) growth(phase string) (peakMB, growthMB float64) {
	var during []rssSample
	for _, x := range s.all() {
		if x.phase == phase {
			during = append(during, x)
		}
	}
	if len(during) < 4 {
		return 0, 0
	}
	q := len(during) / 4
	var first, last int64
	for _, x := range during[:q] {
		first = max(first, x.kb)
	}
	for _, x := range during {
		peakMB = max(peakMB, float64(x.kb)/1024)
	}
	for _, x := range during[len(during)-q:] {
		last = max(last, x.kb)
	}
	return round(peakMB, 1), round(float64(last-first)/1024, 1)
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
