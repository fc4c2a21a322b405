package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/reminders"
	"github.com/nhsx/dnarisk/reminders/contacts"
	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
	"github.com/nhsx/dnarisk/reminders/policy"
	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

// Topics, groups and Redis layout of the run: the defaults of the commands, on the suite's
// own Kafka and Redis.
const (
	topicAppointments = "appointments"
	topicRisk         = "risk"
	topicDLQ          = "appointments.dlq"
	topicFailed       = "reminders.failed"
	appointmentParts  = 8
	riskParts         = 4
	scorerGroup       = "chaos-scorer"
	reminderGroup     = "chaos-reminders"
	monitorGroup      = "chaos-monitor"
	redisPrefix       = "dna:"
	stdTemplate       = "f33517ff-2a88-4f6e-b855-c550268ce08a"
	extraTemplate     = "aa46d7b7-0c3b-4f5c-9b2a-0c2f8d5f7b11"
	historyRetention  = 3 * 365 * 24 * time.Hour
)

// fault is one injected fault, as reported.
type fault struct {
	Kind   string  `json:"kind"`
	AtS    float64 `json:"at_s"`
	Phase  string  `json:"phase"`
	Target string  `json:"target,omitempty"`
	Detail string  `json:"detail,omitempty"`
}

// requiredFaults must each be injected at least once for a run to pass (and kafkaFaults, by
// the size of the cluster).
var requiredFaults = []string{
	"consumer_kill9", "group_join", "group_leave", "redis_restart", "redis_crash", "redis_slow",
	"net_latency", "net_stall", "net_reset",
	"malformed_events", "dispatcher_kill9", "monitor_kill9", "notify_500", "notify_500_after_accept", "notify_429",
	"notify_timeout", "notify_timeout_after_accept", "notify_created_late",
}

// kafkaFaults are the required Kafka faults by number of nodes.
var kafkaFaults = map[int][]string{
	1: {"kafka_restart", "kafka_kill9"},
	3: {"kafka_leader_kill9", "kafka_controller_kill9"},
}

// runner drives one pipeline run.
type runner struct {
	cfg   config
	log   *slog.Logger
	svc   *services
	ps    *procs
	began time.Time
	rdb   *redis.Client

	secrets                     struct{ pseudonym, reminder, contact, notifyKey string }
	clockPath, dispatcherConfig string
	notifyURL                   string
	notifyTimers                *notifystub.Timers // moved with the clock file

	mu         sync.Mutex
	faults     []fault
	consumers  map[string]*proc
	dispatcher *proc
	monitor    *proc
	violations []string
	malformed  []malformed
	phases     map[string]float64
	net        *netFaults // the scorers' proxies to Redis and Kafka; nil: direct
}

func (r *runner) since() float64 { return time.Since(r.began).Seconds() }

func (r *runner) record(kind, phase, target, detail string) {
	r.mu.Lock()
	r.faults = append(r.faults, fault{Kind: kind, AtS: round(r.since(), 1), Phase: phase, Target: target, Detail: detail})
	r.mu.Unlock()
	r.log.Info("fault injected", "kind", kind, "target", target, "detail", detail)
}

func (r *runner) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.violations = append(r.violations, msg)
	r.mu.Unlock()
	r.log.Error("violation", "what", msg)
}

func round(x float64, places int) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', places, 64), 64)
	return f
}

// newRunner is a runner for cfg whose services are the suite's own Kafka and Redis.
func newRunner(cfg config, log *slog.Logger) *runner {
	r := &runner{cfg: cfg, log: log, began: time.Now(), consumers: map[string]*proc{}, phases: map[string]float64{}}
	r.svc = &services{root: cfg.root, kafkaPort: cfg.kafkaPort, kafkaNodes: cfg.kafkaNodes, redisPort: cfg.redisPort, log: log}
	return r
}

// setUp starts the suite's Kafka and Redis while it builds the binaries (both take a while
// on a small machine), then readies the process table. The teardown it returns is never nil,
// also on error: it stops every process started, then the services (unless --keep-services).
func (r *runner) setUp(ctx context.Context, binaries ...string) (teardown func(), err error) {
	var undo []func()
	teardown = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	if err := os.MkdirAll(r.cfg.work, 0o755); err != nil {
		return teardown, err
	}
	built := make(chan error, 1)
	go func() { built <- build(ctx, r.cfg.root, filepath.Join(r.cfg.work, "bin"), binaries...) }()
	if err := r.svc.start(ctx); err != nil {
		return teardown, err
	}
	if !r.cfg.keep {
		undo = append(undo, r.svc.stop)
	}
	if err := <-built; err != nil {
		return teardown, err
	}
	ps, err := newProcs(filepath.Join(r.cfg.work, "bin"), filepath.Join(r.cfg.work, "logs"), r.log)
	if err != nil {
		return teardown, err
	}
	r.ps = ps
	undo = append(undo, ps.stopAll)
	return teardown, nil
}

// runPipeline is the chaos run. It returns the report (also written to cfg.out); an error
// means the run could not be carried out at all.
func runPipeline(parent context.Context, cfg config, log *slog.Logger) (*report, error) {
	ctx, cancel := context.WithTimeout(parent, cfg.timeout)
	defer cancel()
	r := newRunner(cfg, log)
	mark := time.Now()
	phase := func(name string) {
		r.phases[name] = round(time.Since(mark).Seconds(), 1)
		mark = time.Now()
	}
	teardown, err := r.setUp(ctx, "consumer", "dispatcher", "producer", "monitor")
	defer teardown()
	if err != nil {
		return nil, err
	}
	if r.net, err = r.startNetFaults(); err != nil {
		return nil, err
	}
	defer r.net.close()
	sampling, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go r.ps.sampleEvery(sampling, 200*time.Millisecond)
	phase("setup_s")

	in, release, err := r.prepare(ctx)
	defer release()
	if err != nil {
		return nil, err
	}
	phase("prepare_s")

	// Phase 1: the PAS publishes, the scorers score, the dispatcher plans; faults hit all.
	producer, err := r.startIntake()
	if err != nil {
		return nil, err
	}
	if err := r.intakeFaults(ctx, producer, in.events); err != nil {
		return r.finish(ctx, in.gt, in.nf, in.events, err)
	}
	if err := producer.wait(ctx); err != nil {
		r.violate("producer failed: %v (see %s)", err, r.ps.logDir)
	}
	phase("produce_s")
	if err := r.waitDrained(ctx); err != nil {
		return r.finish(ctx, in.gt, in.nf, in.events, err)
	}
	phase("drain_s")

	// Phase 2: the clock sweeps through every due reminder while Notify misbehaves.
	in.nf.on.Store(true)
	err = r.sweep(ctx)
	in.nf.on.Store(false)
	phase("sweep_s")
	return r.finish(ctx, in.gt, in.nf, in.events, err)
}

// pipelineInput is what a run checks its outputs against, and the Notify stub it sends to.
type pipelineInput struct {
	events int // valid appointment events the producer publishes
	gt     *truth
	nf     *faultyNotify
}

// prepare creates the topics and the run's secrets, computes the input and its ground truth
// with the project's own code, stores every patient's contact, serves the faulty Notify and
// writes the dispatcher's clock and configuration. The returned release (never nil) stops the
// Notify stub and closes the Redis client.
func (r *runner) prepare(ctx context.Context) (in *pipelineInput, release func(), err error) {
	var undo []func()
	release = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	if err := createTopics(ctx, r.svc.brokers(), map[string]int{topicAppointments: appointmentParts, topicRisk: riskParts, topicDLQ: 2, topicFailed: 1}); err != nil {
		return nil, release, err
	}
	r.secrets.pseudonym = randomHex(64)
	r.secrets.reminder = randomHex(64)
	r.secrets.contact = randomHex(64)
	r.secrets.notifyKey = "chaos-" + uuid() + "-" + uuid()

	in = &pipelineInput{}
	planAt, err := r.truth(in)
	if err != nil {
		return nil, release, err
	}
	r.rdb = redis.NewClient(&redis.Options{Addr: r.svc.redisAddr(), DisableIdentity: true, MaxRetries: 5})
	undo = append(undo, func() { r.rdb.Close() })
	if err := r.storeContacts(ctx, in.gt); err != nil {
		return nil, release, err
	}
	stopNotify, err := r.serveNotify(ctx, in)
	if err != nil {
		return nil, release, err
	}
	undo = append(undo, stopNotify)
	r.clockPath = filepath.Join(r.cfg.work, "clock")
	if err := r.setClock(planAt); err != nil {
		return nil, release, err
	}
	if err := r.writeDispatcherConfig(); err != nil {
		return nil, release, err
	}
	return in, release, nil
}

// truth regenerates the producer's input and computes what the outputs must show, from the
// project's own code; it returns where the dispatcher's clock starts: before the first event,
// so nothing falls due during intake.
func (r *runner) truth(in *pipelineInput) (planAt time.Time, err error) {
	evs, err := simEvents(r.cfg, []byte(r.secrets.pseudonym))
	if err != nil {
		return planAt, err
	}
	model, err := scoring.Load(filepath.Join(r.cfg.root, "models", "default"))
	if err != nil {
		return planAt, err
	}
	opts := reminderOptions([]byte(r.secrets.reminder))
	if err := opts.Policy.Validate(); err != nil {
		return planAt, err
	}
	planAt = evs[0].EventTime.Add(-24 * time.Hour).UTC().Truncate(time.Hour)
	in.events = len(evs)
	in.gt = groundTruth(evs, model, historyRetention, opts.Secret, &opts.Policy, planAt)
	r.log.Info("input and ground truth ready", "events", len(evs), "patients", len(in.gt.histories),
		"bookings_to_score", len(in.gt.risk), "reminders_due", len(in.gt.reminders))
	return planAt, nil
}

// serveNotify serves the Notify stub behind its fault injector (off until the sweep) on a
// local port, and returns how to stop it.
func (r *runner) serveNotify(ctx context.Context, in *pipelineInput) (stop func(), err error) {
	key, err := notify.ParseKey(r.secrets.notifyKey)
	if err != nil {
		return nil, err
	}
	in.nf, err = newFaultyNotify(key, map[string][]string{stdTemplate: {"appointment_date", "appointment_time"},
		extraTemplate: {"appointment_date", "appointment_time"}}, notifyRates{
		Error500: 0.01, Error500Accept: 0.005, Error429: 0.01, Timeout: 0.001, TimeoutAccept: 0.001, CreatedLate: 0.002, Lookup500: 0.03,
	}, 2*time.Second, uint64(r.cfg.seed))
	if err != nil {
		return nil, err
	}
	r.notifyTimers = in.nf.timers
	r.notifyURL, stop, err = serve(ctx, in.nf)
	return stop, err
}

// startIntake starts the dispatcher, the model monitor, the scorers and the producer (the
// simulated PAS).
func (r *runner) startIntake() (producer *proc, err error) {
	if err := r.startDispatcher(); err != nil {
		return nil, err
	}
	if err := r.startMonitor(); err != nil {
		return nil, err
	}
	for i := 1; i <= r.cfg.consumers; i++ {
		if err := r.startConsumer(fmt.Sprintf("consumer-%d", i)); err != nil {
			return nil, err
		}
	}
	return r.startProducer()
}

// startProducer runs cmd/producer: the simulator's events at the configured rate.
func (r *runner) startProducer() (*proc, error) {
	cfg := r.cfg
	return r.ps.start("producer", "producer", "producer", []string{
		"--seed", strconv.FormatInt(cfg.seed, 10), "--patients", strconv.Itoa(cfg.patients), "--days", strconv.Itoa(cfg.days),
		"--start", simStart, "--rate", strconv.FormatFloat(cfg.rate, 'f', -1, 64), "--brokers", r.svc.brokerList(), "--topic", topicAppointments,
	}, []string{"DNA_PSEUDONYM_SECRET=" + r.secrets.pseudonym})
}

// finish stops the processes (each must stop cleanly on SIGTERM), checks the outputs and
// writes the report.
func (r *runner) finish(ctx context.Context, gt *truth, nf *faultyNotify, valid int, runErr error) (*report, error) {
	if runErr != nil {
		r.violate("run did not complete: %v", runErr)
	}
	r.mu.Lock()
	stopping := []*proc{r.dispatcher, r.monitor}
	for _, p := range r.consumers {
		stopping = append(stopping, p)
	}
	r.mu.Unlock()
	for _, p := range stopping {
		if p == nil || !p.alive() {
			continue
		}
		r.ps.sample()
		if err := p.term(30 * time.Second); err != nil {
			r.violate("%s did not stop cleanly on SIGTERM: %v", p.name, err)
		}
	}
	verifyCtx := context.WithoutCancel(ctx)
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		verifyCtx, cancel = context.WithTimeout(verifyCtx, 2*time.Minute)
		defer cancel()
	}
	start := time.Now()
	rep, err := r.verify(verifyCtx, gt, nf, valid)
	if err != nil {
		return nil, err
	}
	rep.Phases["verify_s"] = round(time.Since(start).Seconds(), 1)
	rep.DurationS = round(r.since(), 1)
	if err := rep.write(r.cfg.out); err != nil {
		return rep, err
	}
	return rep, nil
}

func uuid() string {
	h := randomHex(32)
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

// reminderOptions are the dispatcher's settings for the run: the default policy, quick
// retries (sends are cut off after 400ms, so a stalled Notify costs little), a recheck of
// uncertain sends 40 s later (Notify's late creations here come up to 30 s after the
// request), and the shortest lease that allows (twice the recheck), so a reminder held by a
// killed dispatcher is taken over in 80 s.
func reminderOptions(secret []byte) reminders.Config {
	return reminders.Config{
		Policy:       policy.DefaultPolicy(),
		Templates:    reminders.Templates{Standard: stdTemplate, Extra: extraTemplate},
		Secret:       secret,
		Prefix:       redisPrefix,
		Lease:        80 * time.Second,
		Workers:      16,
		PollInterval: time.Second,
		MaxAttempts:  8,
		RetryBackoff: 5 * time.Minute,
		KeepAfter:    30 * 24 * time.Hour,
		// Above createAfterMax, on the same clock.
		UncertainRecheck: 40 * time.Second,
	}
}

func (r *runner) writeDispatcherConfig() error {
	r.dispatcherConfig = filepath.Join(r.cfg.work, "dispatcher.json")
	return writeJSONFile(r.dispatcherConfig, r.dispatcherSettings())
}

// dispatcherSettings is the dispatcher's config file for the run, as JSON values.
func (r *runner) dispatcherSettings() map[string]any {
	o := reminderOptions(nil)
	return map[string]any{
		"notify_base_url": r.notifyURL,
		"notify":          map[string]any{"timeout": "400ms", "max_retries": 3, "retry_wait_min": "20ms", "retry_wait_max": "1s"},
		"templates":       map[string]string{"standard": stdTemplate, "extra": extraTemplate},
		"policy":          o.Policy,
		"sending": map[string]any{"workers": o.Workers, "lease": policy.Duration(o.Lease), "poll_interval": policy.Duration(o.PollInterval),
			"max_attempts": o.MaxAttempts, "retry_backoff": policy.Duration(o.RetryBackoff),
			"uncertain_recheck": policy.Duration(o.UncertainRecheck)},
		"keep_after": policy.Duration(o.KeepAfter),
	}
}

// writeJSONFile replaces path with v as indented JSON in one rename, so a process reading
// it (a dispatcher on SIGHUP) never sees half a file.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// setClock moves the dispatcher's planning clock (it reads the file every 10ms). Notify's
// late creations due by t happen first, so the dispatcher cannot look one up at t and miss it.
func (r *runner) setClock(t time.Time) error {
	if r.notifyTimers != nil {
		r.notifyTimers.Advance(t)
	}
	tmp := r.clockPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(t.UTC().Format(time.RFC3339Nano)+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, r.clockPath)
}

// storeContacts gives every patient a number from Ofcom's drama range.
func (r *runner) storeContacts(ctx context.Context, gt *truth) error {
	key, err := contacts.ParseKey(r.secrets.contact)
	if err != nil {
		return err
	}
	store, err := contacts.NewStore(r.rdb, redisPrefix, key)
	if err != nil {
		return err
	}
	batch := map[string]contacts.Contact{}
	i := 0
	for p := range gt.histories {
		batch[p] = contacts.Contact{Phone: contacts.Drama(i)}
		i++
		if len(batch) == 1000 {
			if err := store.PutMany(ctx, batch); err != nil {
				return err
			}
			clear(batch)
		}
	}
	return store.PutMany(ctx, batch)
}

func (r *runner) startConsumer(name string) error {
	brokers, redisAddr := r.svc.brokerList(), r.svc.redisAddr()
	if r.net != nil {
		brokers, redisAddr = r.net.scorerAddrs(r)
	}
	p, err := r.ps.start(name, "consumer", "consumer", []string{
		"--brokers", brokers, "--redis", redisAddr, "--model-dir", filepath.Join(r.cfg.root, "models", "default"),
		"--model-poll", "0", "--group", scorerGroup, "--metrics-addr", "off",
	}, nil)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.consumers[name] = p
	r.mu.Unlock()
	return nil
}

func (r *runner) startDispatcher() error {
	p, err := r.startDispatcherProc("dispatcher")
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.dispatcher = p
	r.mu.Unlock()
	return nil
}

// startDispatcherProc starts a dispatcher process called name on the run's config and clock.
func (r *runner) startDispatcherProc(name string) (*proc, error) {
	return r.ps.start(name, "dispatcher", "dispatcher", []string{
		"--config", r.dispatcherConfig, "--brokers", r.svc.brokerList(), "--redis", r.svc.redisAddr(), "--group", reminderGroup,
		"--metrics-addr", "off", "--clock-file", r.clockPath,
	}, []string{"NOTIFY_API_KEY=" + r.secrets.notifyKey, "DNA_REMINDER_SECRET=" + r.secrets.reminder, "DNA_CONTACT_KEY=" + r.secrets.contact})
}

// startMonitor runs cmd/monitor, the model monitor, in a consumer group of its own.
func (r *runner) startMonitor() error {
	p, err := r.ps.start("monitor", "monitor", "monitor", []string{
		"--brokers", r.svc.brokerList(), "--redis", r.svc.redisAddr(), "--model-dir", filepath.Join(r.cfg.root, "models", "default"),
		"--group", monitorGroup, "--topic-appointments", topicAppointments, "--topic-risk", topicRisk, "--topic-shadow", "off",
		"--metrics-addr", "off", "--report-interval", "5s",
	}, nil)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.monitor = p
	r.mu.Unlock()
	return nil
}

// killMonitor kills the monitor the hard way under load and starts it again: it must count
// every outcome once however much it reads again.
func (r *runner) killMonitor(ctx context.Context, detail string) error {
	r.mu.Lock()
	p := r.monitor
	r.mu.Unlock()
	lag := r.lag(ctx, monitorGroup, topicAppointments) + r.lag(ctx, monitorGroup, topicRisk)
	r.ps.sample()
	p.kill9()
	r.record("monitor_kill9", "intake", p.name, fmt.Sprintf("%s; pid %d; monitor lag %d", detail, p.cmd.Process.Pid, lag))
	time.Sleep(2 * time.Second)
	return r.startMonitor()
}

func (r *runner) consumer(name string) *proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.consumers[name]
}

// kill9 kills a process the hard way, recording the group's lag at that moment.
func (r *runner) kill9(ctx context.Context, p *proc, kind, phase, detail string) {
	lag := r.lag(ctx, scorerGroup, topicAppointments)
	r.ps.sample()
	p.kill9()
	r.record(kind, phase, p.name, fmt.Sprintf("%s; pid %d; scorer lag %d", detail, p.cmd.Process.Pid, lag))
}

func (r *runner) lag(ctx context.Context, group, topic string) int64 {
	a := stream.NewAdmin(r.svc.brokers())
	defer a.Close()
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lags, err := a.Lag(c, group, topic)
	if err != nil {
		return -1
	}
	var n int64
	for _, l := range lags {
		n += l.Lag
	}
	return n
}

// publishMalformed puts one burst of hostile messages on the appointments topic.
func (r *runner) publishMalformed(ctx context.Context, burst int) error {
	w := stream.NewWriter(r.svc.brokers(), "")
	defer w.Close()
	ms := malformedBurst(burst)
	msgs := make([]kafka.Message, len(ms))
	for i, m := range ms {
		msgs[i] = m.message(topicAppointments)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := w.WriteMessages(ctx, msgs...)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("publish malformed burst %d: %w", burst, err)
		}
		time.Sleep(time.Second)
	}
	r.mu.Lock()
	r.malformed = append(r.malformed, ms...)
	r.mu.Unlock()
	r.record("malformed_events", "intake", topicAppointments, fmt.Sprintf("%d hostile messages (burst %d)", len(ms), burst))
	return nil
}

// slowRedis stalls every Redis client for pause out of each period, for d: Redis answers,
// but slowly. CLIENT PAUSE is what an overloaded or swapping server looks like to clients.
func (r *runner) slowRedis(ctx context.Context, d, pause, period time.Duration, phase string) {
	r.record("redis_slow", phase, r.svc.redisAddr(), fmt.Sprintf("CLIENT PAUSE %s every %s for %s", pause, period, d))
	end := time.Now().Add(d)
	for time.Now().Before(end) && ctx.Err() == nil {
		_ = r.rdb.Do(ctx, "CLIENT", "PAUSE", pause.Milliseconds(), "ALL").Err()
		time.Sleep(period)
	}
}

func (r *runner) restartRedis(ctx context.Context, phase string) error {
	line, err := r.svc.restartRedis(ctx, 2*time.Second)
	if err != nil {
		return err
	}
	r.record("redis_restart", phase, r.svc.redisAddr(), line)
	return nil
}

// crashRedis kills Redis mid-stream (kill -9) and restarts it on its append-only file: every
// write Redis acknowledged must still be there (the checks would find a lost history fact,
// schedule entry or budget count).
func (r *runner) crashRedis(ctx context.Context, phase string) error {
	line, err := r.svc.crashRedis(ctx, 2*time.Second)
	if err != nil {
		return err
	}
	r.record("redis_crash", phase, r.svc.redisAddr(), line)
	return nil
}

// step is one injected fault: it fires once a run has got through share at of its input
// (intake) or of its timeline (sweep).
type step struct {
	at float64
	do func() error
}

// intakeFaults injects phase 1's faults as the input flows, each when a share of the input
// has been published, so every run (full or short) sees them all mid-stream.
func (r *runner) intakeFaults(ctx context.Context, producer *proc, total int) error {
	steps := append(r.intakeSteps(ctx), r.netSteps(ctx)...)
	slices.SortStableFunc(steps, func(a, b step) int { return cmp.Compare(a.at, b.at) })
	next := 0
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for next < len(steps) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		n, err := endOffsets(ctx, r.svc.brokers(), topicAppointments, appointmentParts)
		if err != nil {
			continue // the broker may be restarting
		}
		r.mu.Lock()
		bad := len(r.malformed)
		r.mu.Unlock()
		frac := float64(n-int64(bad)) / float64(total)
		if !producer.alive() {
			frac = 1 // it finished (or failed): the remaining faults still run, on the backlog
		}
		for next < len(steps) && frac >= steps[next].at {
			if err := steps[next].do(); err != nil {
				return err
			}
			next++
		}
	}
	return nil
}

// intakeSteps are phase 1's faults, in order (docs/chaos.md has the table).
func (r *runner) intakeSteps(ctx context.Context) []step {
	killAndRestart := func(name string) func() error {
		return func() error {
			r.kill9(ctx, r.consumer(name), "consumer_kill9", "intake", "under load")
			time.Sleep(3 * time.Second)
			return r.startConsumer(name)
		}
	}
	return []step{
		{0.03, func() error { return r.publishMalformed(ctx, 1) }},
		{0.06, killAndRestart("consumer-1")},
		{0.12, func() error {
			r.record("group_join", "intake", "consumer-3", "a third member joins the group")
			return r.startConsumer("consumer-3")
		}},
		{0.18, func() error { return r.killMidBatch(ctx, "consumer-2") }},
		{0.28, func() error { return r.restartRedis(ctx, "intake") }},
		{0.36, func() error { r.leaveGroup("consumer-3"); return nil }},
		{0.40, func() error { return r.killMonitor(ctx, "under load") }},
		{0.45, func() error { return r.publishMalformed(ctx, 2) }},
		{0.50, func() error { return r.kafkaFault(ctx, 1) }},
		{0.58, func() error { return r.kafkaFault(ctx, 2) }},
		{0.62, func() error {
			r.kill9(ctx, r.dispatcher, "dispatcher_kill9", "intake", "while planning reminders")
			time.Sleep(2 * time.Second)
			return r.startDispatcher()
		}},
		{0.70, killAndRestart("consumer-1")},
		{0.80, func() error {
			r.record("group_join", "intake", "consumer-4", "a member joins, to be killed and never come back")
			return r.startConsumer("consumer-4")
		}},
		{0.88, func() error {
			r.kill9(ctx, r.consumer("consumer-4"), "consumer_kill9", "intake", "under load; not restarted, so the group rebalances after its session times out")
			r.forget("consumer-4")
			return nil
		}},
		{0.84, func() error { return r.crashRedis(ctx, "intake") }},
		{0.86, func() error { return r.killMonitor(ctx, "under load, after the Redis crash") }},
		{0.92, func() error { return r.publishMalformed(ctx, 3) }},
	}
}

// killMidBatch slows Redis down and, 3 s in, kills scorer name: while Redis stalls, every
// member is inside a batch, so the kill is mid-batch. The scorer is restarted once Redis is
// quick again.
func (r *runner) killMidBatch(ctx context.Context, name string) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.slowRedis(ctx, 8*time.Second, 400*time.Millisecond, 600*time.Millisecond, "intake")
	}()
	time.Sleep(3 * time.Second)
	r.kill9(ctx, r.consumer(name), "consumer_kill9", "intake", "mid-batch, while Redis stalls")
	<-done
	return r.startConsumer(name)
}

// leaveGroup stops scorer name with SIGTERM: it must finish its batch, commit, leave the
// group and exit 0.
func (r *runner) leaveGroup(name string) {
	p := r.consumer(name)
	err := p.term(30 * time.Second)
	r.record("group_leave", "intake", p.name, fmt.Sprintf("SIGTERM: finishes its batch, commits, leaves (exit: %v)", errString(err)))
	if err != nil {
		r.violate("%s did not stop cleanly on SIGTERM: %v", name, err)
	}
	r.forget(name)
}

// forget drops a scorer that is gone for good from the processes the run stops at the end.
func (r *runner) forget(name string) {
	r.mu.Lock()
	delete(r.consumers, name)
	r.mu.Unlock()
}

// kafkaFault is the intake's n-th Kafka fault. One broker: a controlled restart, then a
// kill -9. A cluster: kill -9 of the leader of the busiest appointments partition, then of
// the active controller; each node comes back on its data after 5 s.
func (r *runner) kafkaFault(ctx context.Context, n int) error {
	switch {
	case r.cfg.kafkaNodes == 1 && n == 1:
		return r.restartKafka(ctx)
	case r.cfg.kafkaNodes == 1:
		return r.crashKafkaNode(ctx, "kafka_kill9", 1, "the only broker")
	case n == 1:
		node, part, err := r.busiestLeader(ctx)
		if err != nil {
			return err
		}
		return r.crashKafkaNode(ctx, "kafka_leader_kill9", node, fmt.Sprintf("leader of %s partition %d, the busiest", topicAppointments, part))
	default:
		node, err := r.svc.kafkaController(ctx)
		if err != nil {
			return err
		}
		return r.crashKafkaNode(ctx, "kafka_controller_kill9", node, "the active KRaft controller")
	}
}

func (r *runner) crashKafkaNode(ctx context.Context, kind string, node int, why string) error {
	start := time.Now()
	line, err := r.svc.crashKafkaNode(ctx, node, 5*time.Second)
	if err != nil {
		return err
	}
	r.record(kind, "intake", fmt.Sprintf("node %d", node), fmt.Sprintf("%s; %s (%.0fs)", why, line, time.Since(start).Seconds()))
	return nil
}

// busiestLeader finds the appointments partition with the most messages and its leader's
// node id.
func (r *runner) busiestLeader(ctx context.Context) (node, partition int, err error) {
	c := &kafka.Client{Addr: kafka.TCP(r.svc.brokers()...), Timeout: 10 * time.Second}
	reqs := make([]kafka.OffsetRequest, appointmentParts)
	for i := range reqs {
		reqs[i] = kafka.LastOffsetOf(i)
	}
	offs, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topicAppointments: reqs}})
	if err != nil {
		return 0, 0, fmt.Errorf("list offsets: %w", err)
	}
	var most int64 = -1
	for _, p := range offs.Topics[topicAppointments] {
		if p.Error == nil && p.LastOffset > most {
			most, partition = p.LastOffset, p.Partition
		}
	}
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topicAppointments}})
	if err != nil {
		return 0, 0, fmt.Errorf("metadata: %w", err)
	}
	for _, t := range md.Topics {
		for _, p := range t.Partitions {
			if p.ID == partition {
				return p.Leader.ID, partition, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("no leader for %s partition %d", topicAppointments, partition)
}

// restartKafka restarts the broker: a controlled shutdown, then a start on the same data.
func (r *runner) restartKafka(ctx context.Context) error {
	start := time.Now()
	line, err := r.svc.restartKafka(ctx)
	if err != nil {
		return err
	}
	r.record("kafka_restart", "intake", r.svc.brokers()[0], fmt.Sprintf("%s (%.0fs)", line, time.Since(start).Seconds()))
	return nil
}

func errString(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}

// waitDrained waits until the scorer group has committed every appointment event and the
// dispatcher's group every appointment and risk event.
func (r *runner) waitDrained(ctx context.Context) error {
	r.log.Info("input published; waiting for the scorers and the dispatcher to catch up")
	quiet := 0
	for quiet < 3 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the pipeline to drain: %w (scorer lag %d, dispatcher lag %d+%d)", ctx.Err(),
				r.lag(context.Background(), scorerGroup, topicAppointments), r.lag(context.Background(), reminderGroup, topicAppointments),
				r.lag(context.Background(), reminderGroup, topicRisk))
		case <-time.After(time.Second):
		}
		a := r.lag(ctx, scorerGroup, topicAppointments)
		b := r.lag(ctx, reminderGroup, topicAppointments)
		c := r.lag(ctx, reminderGroup, topicRisk)
		m := r.lag(ctx, monitorGroup, topicAppointments) + r.lag(ctx, monitorGroup, topicRisk)
		if a == 0 && b == 0 && c == 0 && m == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	return nil
}

// sweepStep is the most the clock moves past the earliest pending reminder in one step:
// well inside the policy's 12 hours after which a reminder is dropped as late.
const sweepStep = 4 * time.Hour

// stepEnd is where one step of the sweep takes the clock, given the earliest pending due
// time: up to sweepStep on, but not into the evening's quiet hours, where the dispatcher
// would hold every reminder until the morning.
func stepEnd(due time.Time) time.Time {
	end := due.Truncate(time.Minute).Add(sweepStep)
	l := due.In(london)
	evening := time.Date(l.Year(), l.Month(), l.Day(), 19, 59, 59, 0, london)
	if due.Before(evening) && end.After(evening) {
		end = evening
	}
	return end.UTC()
}

// sweep moves the dispatcher's clock from due time to due time (a step of up to four hours
// at a time, see stepEnd), waiting each time until every reminder due by then is settled,
// until none is left.
// Notify fails a share of requests meanwhile; the dispatcher is killed mid-send and Redis
// restarts and stalls under it.
func (r *runner) sweep(ctx context.Context) error {
	first, last, err := r.dueRange(ctx)
	if err != nil {
		return err
	}
	steps := r.sweepSteps(ctx)
	next := 0
	clock := first
	moves, nudges := 0, 0
	for {
		z, err := r.rdb.ZRangeWithScores(ctx, dueKey, 0, 0).Result()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if len(z) == 0 {
			break
		}
		clock = r.stepTo(clock, later(stepEnd(time.UnixMilli(int64(z[0].Score))), clock))
		if err := r.setClock(clock); err != nil {
			return err
		}
		moves++
		frac := float64(clock.Sub(first)) / float64(max(last.Sub(first), time.Hour))
		// Faults fire as a step begins, with its reminders in flight.
		for next < len(steps) && frac >= steps[next].at {
			time.Sleep(20 * time.Millisecond)
			if err := steps[next].do(); err != nil {
				return err
			}
			next++
		}
		n := 0
		if clock, n, err = r.settle(ctx, clock); err != nil {
			return err
		}
		nudges += n
	}
	r.log.Info("sweep done", "steps", moves, "nudges", nudges, "clock", clock.UTC())
	return nil
}

// dueKey is the dispatcher's queue of pending reminders, scored by due time.
const dueKey = redisPrefix + "reminders:due"

// dueRange is the earliest and the latest due time in the dispatcher's queue.
func (r *runner) dueRange(ctx context.Context) (first, last time.Time, err error) {
	firstZ, err := r.rdb.ZRangeWithScores(ctx, dueKey, 0, 0).Result()
	if err != nil {
		return first, last, fmt.Errorf("read due queue: %w", err)
	}
	lastZ, err := r.rdb.ZRangeWithScores(ctx, dueKey, -1, -1).Result()
	if err != nil {
		return first, last, fmt.Errorf("read due queue: %w", err)
	}
	if len(firstZ) == 0 {
		return first, last, errors.New("no reminders were planned")
	}
	first, last = time.UnixMilli(int64(firstZ[0].Score)), time.UnixMilli(int64(lastZ[0].Score))
	r.log.Info("sweeping the clock through the due reminders", "from", first.UTC(), "to", last.UTC(),
		"pending", r.rdb.ZCard(ctx, dueKey).Val())
	return first, last, nil
}

// sweepSteps are phase 2's faults, each at a share of the sweep's timeline.
func (r *runner) sweepSteps(ctx context.Context) []step {
	return []step{
		{0.30, func() error {
			r.kill9(ctx, r.dispatcher, "dispatcher_kill9", "sweep", "mid-send: its claimed reminders wait out their lease, then the new process looks each up in Notify")
			time.Sleep(time.Second)
			return r.startDispatcher()
		}},
		{0.55, func() error { return r.crashRedis(ctx, "sweep") }},
		{0.75, func() error {
			r.slowRedis(ctx, 3*time.Second, 300*time.Millisecond, 500*time.Millisecond, "sweep")
			return nil
		}},
	}
}

// settle waits until no reminder due by clock is pending, for at most 2 minutes. It returns
// the clock, which it nudges on while it waits, and how many nudges that took.
func (r *runner) settle(ctx context.Context, clock time.Time) (time.Time, int, error) {
	nudges := 0
	waitStart, lastNudge := time.Now(), time.Now()
	for {
		n, err := r.rdb.ZCount(ctx, dueKey, "-inf", strconv.FormatInt(clock.UnixMilli(), 10)).Result()
		if err == nil && n == 0 {
			return clock, nudges, nil
		}
		if ctx.Err() != nil {
			return clock, nudges, fmt.Errorf("sweep at %s: %w", clock.UTC(), ctx.Err())
		}
		if time.Since(waitStart) > 2*time.Minute {
			return clock, nudges, fmt.Errorf("sweep stuck at %s: %d reminders due and not settled for 2 minutes", clock.UTC(), n)
		}
		// A reminder claimed by a killed sender is busy until its lease (wall clock) ends;
		// the sender sleeps on the planning clock, so nudge it on to look again.
		if time.Since(lastNudge) > time.Second {
			clock = r.stepTo(clock, clock.Add(2*time.Second))
			_ = r.setClock(clock)
			lastNudge = time.Now()
			nudges++
		}
		time.Sleep(3 * time.Millisecond)
	}
}

// stepTo is where the clock goes on its way from clock to target: never past one of
// Notify's late creations in one move. A move over both a creation and the recheck of its
// reminder would create the message before the lookup, whatever the recheck, and prove
// nothing; so the clock stops just before the next creation (the settle that follows lets
// every recheck due by then look, and send again if it finds nothing), then on it.
func (r *runner) stepTo(clock, target time.Time) time.Time {
	if r.notifyTimers == nil {
		return target
	}
	next, ok := r.notifyTimers.Next()
	return stepBefore(clock, target, next, ok)
}

// stepBefore is stepTo's rule, given the next creation (ok false: none pending).
func stepBefore(clock, target, next time.Time, ok bool) time.Time {
	if !ok || !next.After(clock) || next.After(target) {
		return target
	}
	if before := next.Add(-time.Millisecond); before.After(clock) {
		return before
	}
	return next
}

// later is the later of two times.
func later(a, b time.Time) time.Time {
	if a.Before(b) {
		return b
	}
	return a
}
