// Command demo runs the whole scorer on one machine with nothing installed but Go: an
// in-process Kafka-protocol broker (kfake) and an in-process Redis (miniredis) stand in for
// the real services, the PAS simulator publishes a few thousand appointments (plus a few
// malformed events on purpose), the consumer scores them with the default model, and the
// demo reads every output topic back to check that each valid booking got a risk event and
// each malformed event was dead-lettered. It ends by itself and prints, as its last line, a
// JSON summary. The consumer code is the same as cmd/consumer runs against real services.
//
// While it runs, the scorer's metrics, health, readiness and status page are served on
// --metrics-addr (http://127.0.0.1:9464/status by default); --hold keeps them up after the
// run so a person can look, and --rate slows the simulated PAS down to watch it live.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/internal/ops"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

const (
	apptTopic = "appointments"
	riskTopic = "risk"
	dlqTopic  = "appointments.dlq"
	// demoSecret pseudonymises the simulator's synthetic NHS numbers; it protects nothing
	// because there are no real patients here.
	demoSecret = "demo-only-not-a-secret-0123456789abcdef"
)

// Summary is the demo's last line.
type Summary struct {
	BookingsProduced    int              `json:"bookings_produced"`
	OutcomesProduced    int              `json:"outcomes_produced"`
	CancellationsProd   int              `json:"cancellations_produced"`
	MalformedInjected   int              `json:"malformed_injected"`
	RiskEventsPublished int              `json:"risk_events_published"`
	BookingsUnscored    int              `json:"bookings_unscored"`
	DLQEvents           int              `json:"dlq_events"`
	RiskBands           map[string]int64 `json:"risk_bands"`
	ModelID             string           `json:"model_id"`
	AUC                 float64          `json:"auc"`
	BayesAUC            float64          `json:"bayes_auc"`
	HistoriesStored     int              `json:"patient_histories_stored"`
	RemindersScheduled  int64            `json:"reminders_scheduled"`
	RemindersSent       int64            `json:"reminders_sent"`
	RemindersCancelled  int64            `json:"reminders_cancelled"`
	RemindersFailed     int64            `json:"reminders_failed"`
	ElapsedS            float64          `json:"elapsed_s"`
}

// options is one demo run.
type options struct {
	sim       sim.Config
	malformed int
	modelDir  string
	// rate paces the simulated PAS in events per second; 0 publishes as fast as possible.
	rate float64
	// metricsAddr serves the operations endpoint ("" or "off": none). If it is taken, a free
	// port is used instead.
	metricsAddr string
	// hold is called once the run is verified, while the endpoint still serves; the summary
	// is printed after it returns. nil returns at once.
	hold func(ctx context.Context, opsURL string)
	// logs receives the scorer's JSON logs. Default: nowhere.
	logs io.Writer
}

// progress receives the demo's progress lines: stderr, or what a test captures.
var progress io.Writer = os.Stderr

func say(format string, args ...any) { fmt.Fprintf(progress, "demo: "+format+"\n", args...) }

func main() {
	var (
		o       options
		timeout time.Duration
		hold    time.Duration
		logFile string
	)
	flag.Int64Var(&o.sim.Seed, "seed", 7, "simulator seed (the default model was trained on seed 42)")
	flag.IntVar(&o.sim.Patients, "patients", 2000, "simulated patients")
	flag.IntVar(&o.sim.Days, "days", 120, "days of bookings")
	flag.IntVar(&o.malformed, "malformed", 3, fmt.Sprintf("malformed events to inject (0-%d)", len(badEvents)))
	flag.StringVar(&o.modelDir, "model-dir", "models/default", "model directory")
	flag.Float64Var(&o.rate, "rate", 0, "events per second from the simulated PAS; 0 = as fast as possible")
	flag.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:9464", "serve /metrics, /healthz, /readyz and /status here while the demo runs; off to disable")
	flag.DurationVar(&hold, "hold", 0, "after the run, keep the status page and metrics up this long (Ctrl-C ends it early)")
	flag.StringVar(&logFile, "log-file", "", "write the scorer's JSON logs to this file")
	flag.DurationVar(&timeout, "timeout", 50*time.Second, "give up after this long (the hold not included)")
	flag.Parse()
	switch {
	case o.malformed < 0 || o.malformed > len(badEvents):
		fmt.Fprintf(os.Stderr, "demo: --malformed must be 0..%d\n", len(badEvents))
		os.Exit(2)
	case !(o.rate >= 0):
		fmt.Fprintln(os.Stderr, "demo: --rate must be 0 or more")
		os.Exit(2)
	case hold < 0:
		fmt.Fprintln(os.Stderr, "demo: --hold must be 0 or more")
		os.Exit(2)
	}
	if logFile != "" {
		f, err := os.Create(logFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo: --log-file:", err)
			os.Exit(2)
		}
		defer f.Close()
		o.logs = f
	}
	if hold > 0 {
		o.hold = func(ctx context.Context, opsURL string) {
			fmt.Fprintf(os.Stderr, "demo: holding for %s: status page %s/status, metrics %s/metrics (Ctrl-C ends it)\n", hold, opsURL, opsURL)
			sig, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			select {
			case <-sig.Done():
			case <-time.After(hold):
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
	out, _ := json.Marshal(s)
	fmt.Println(string(out))
}

func run(ctx context.Context, o options) (sum Summary, err error) {
	start := time.Now()
	cfg, malformed, modelDir := o.sim, o.malformed, o.modelDir
	if o.logs == nil {
		o.logs = io.Discard
	}
	log := slog.New(slog.NewJSONHandler(o.logs, nil))
	model, err := scoring.Load(modelDir)
	if err != nil {
		return sum, err
	}
	sum.ModelID = model.ID()

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, apptTopic, riskTopic, dlqTopic))
	if err != nil {
		return sum, fmt.Errorf("start in-process Kafka: %w", err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	mr, err := miniredis.Run()
	if err != nil {
		return sum, fmt.Errorf("start in-process Redis: %w", err)
	}
	defer mr.Close()
	say("in-process Kafka on %v, Redis on %s, model %s", brokers, mr.Addr(), model.ID())

	// The scorer, exactly as cmd/consumer runs it against real services, starts first and
	// scores while the simulated PAS publishes.
	m := metrics.New()
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{mr.Addr()}, DisableIdentity: true})
	defer rdb.Close()
	rdb.AddHook(m.RedisHook())
	store := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{})
	out := stream.NewWriter(brokers, "")
	defer out.Close()
	r := stream.NewReader(brokers, "dna-scorer", apptTopic)
	defer r.Close()
	admin := stream.NewAdmin(brokers)
	defer admin.Close()
	m.SetModel(model.ID())
	status := ops.NewStatus(ops.StatusConfig{Title: "DNA risk scorer (demo)", Metrics: m.Registry,
		Model: func() *scoring.Model { return model }, ModelDir: modelDir, Reminders: ops.RemindersFrom(m.Registry)})
	proc, err := scorer.New(scorer.Config{Store: store, Output: out, Model: model,
		Topics: scorer.Topics{Risk: riskTopic, DeadLetter: dlqTopic}, Observer: scorer.Observers(m, status), Log: log})
	if err != nil {
		return Summary{}, err
	}
	if o.metricsAddr != "" && o.metricsAddr != "off" {
		ln, err := listen(o.metricsAddr)
		if err != nil {
			return sum, err
		}
		if got := ln.Addr().String(); got != o.metricsAddr {
			say("%s is taken; serving on %s instead", o.metricsAddr, got)
		}
		h := ops.Handler(ops.Config{Registry: m.Registry, Status: status, Log: log, Checks: []ops.Check{
			{Name: "kafka", Func: func(ctx context.Context) error { return admin.Ping(ctx, apptTopic, riskTopic, dlqTopic) }},
			{Name: "redis", Func: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
			{Name: "model", Func: func(context.Context) error { return nil }},
		}})
		opsCtx, stopOps := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- ops.Serve(opsCtx, ln, h) }()
		defer func() { stopOps(); <-served }()
		opsURL := "http://" + ln.Addr().String()
		say("status page %s/status, metrics %s/metrics", opsURL, opsURL)
		if o.hold != nil {
			// Deferred, so it runs after every stage, while the endpoint still serves.
			defer func() {
				if err == nil {
					o.hold(context.WithoutCancel(ctx), opsURL)
				}
			}()
		}
	}
	consumeCtx, stopConsumer := context.WithCancel(ctx)
	defer stopConsumer()
	lagCtx, stopLag := context.WithCancel(ctx)
	defer stopLag()
	go m.PollLag(lagCtx, admin, "dna-scorer", apptTopic, time.Second, log)
	done := make(chan error, 1)
	go func() { done <- stream.Run(consumeCtx, r, proc, stream.Batching{}, log) }()

	// 1. The PAS simulator publishes the appointment stream.
	ps, _ := pseudo.New([]byte(demoSecret))
	gen, err := sim.New(cfg, ps)
	if err != nil {
		return sum, err
	}
	truth := map[string]float64{}    // appointment/version -> true P(DNA)
	outcome := map[string]float64{}  // appointment -> 1 DNA, 0 attended
	finalVersion := map[string]int{} // appointment -> version that reached an outcome
	booked := map[string]bool{}      // appointment/version of every valid booking
	w := stream.NewWriter(brokers, apptTopic)
	defer w.Close()
	batch := make([]kafka.Message, 0, 500)
	if o.rate > 0 {
		batch = make([]kafka.Message, 0, max(1, min(500, int(o.rate/10))))
	}
	sent := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := w.WriteMessages(ctx, batch...)
		sent += len(batch)
		batch = batch[:0]
		if o.rate > 0 && err == nil {
			due := start.Add(time.Duration(float64(sent) / o.rate * float64(time.Second)))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(due)):
			}
		}
		return err
	}
	for ev, tr := range gen.All() {
		switch ev.Type {
		case events.Booked, events.Rescheduled:
			sum.BookingsProduced++
			booked[key(ev.AppointmentID, ev.Version)] = true
			if tr != nil {
				truth[key(ev.AppointmentID, ev.Version)] = tr.PDNA
			}
		case events.Attended, events.DidNotAttend:
			sum.OutcomesProduced++
			outcome[ev.AppointmentID] = 0
			if ev.Type == events.DidNotAttend {
				outcome[ev.AppointmentID] = 1
			}
			finalVersion[ev.AppointmentID] = ev.Version
		case events.Cancelled:
			sum.CancellationsProd++
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return sum, err
		}
		batch = append(batch, kafka.Message{Key: []byte(ev.Patient), Value: b})
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return sum, fmt.Errorf("publish appointments: %w", err)
			}
		}
	}
	for _, bad := range badEvents[:malformed] {
		batch = append(batch, kafka.Message{Key: []byte(bad.key), Value: []byte(bad.value)})
	}
	sum.MalformedInjected = malformed
	if err := flush(); err != nil {
		return sum, fmt.Errorf("publish appointments: %w", err)
	}
	total := int64(sum.BookingsProduced + sum.OutcomesProduced + sum.CancellationsProd + malformed)
	say("producer published %d bookings, %d outcomes, %d cancellations and %d malformed events",
		sum.BookingsProduced, sum.OutcomesProduced, sum.CancellationsProd, malformed)

	// 2. Wait for the scorer to have processed every event.
	for proc.Stats.Consumed.Load() < total && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	stopConsumer()
	if err := <-done; err != nil {
		return sum, err
	}
	stopLag()
	// Once more now that everything is committed, so the page does not show a lag that was.
	if err := m.MeasureLag(ctx, admin, "dna-scorer", apptTopic); err != nil {
		return sum, fmt.Errorf("consumer lag: %w", err)
	}
	if ctx.Err() != nil {
		return sum, fmt.Errorf("consumer processed %d of %d events before the time limit", proc.Stats.Consumed.Load(), total)
	}
	say("consumer processed %d events: %d scored, %d dead-lettered, %d history facts applied",
		proc.Stats.Consumed.Load(), proc.Stats.Scored.Load(), proc.Stats.DeadLettered.Load(), proc.Stats.Applied.Load())

	// 3. Read the outputs back from Kafka, as a downstream service would.
	riskMsgs, err := stream.ReadAll(ctx, brokers, riskTopic)
	if err != nil {
		return sum, err
	}
	dlqMsgs, err := stream.ReadAll(ctx, brokers, dlqTopic)
	if err != nil {
		return sum, err
	}
	sum.DLQEvents = len(dlqMsgs)
	sum.RiskBands = map[string]int64{}
	scored := map[string]float64{}
	for _, m := range riskMsgs {
		var r events.Risk
		if err := json.Unmarshal(m.Value, &r); err != nil {
			return sum, fmt.Errorf("risk topic holds an unreadable event: %w", err)
		}
		k := key(r.AppointmentID, r.Version)
		if _, dup := scored[k]; !dup {
			sum.RiskBands[r.Band]++
		}
		scored[k] = r.Probability
	}
	sum.RiskEventsPublished = len(riskMsgs)
	for k := range booked {
		if _, ok := scored[k]; !ok {
			sum.BookingsUnscored++
		}
	}
	var modelP, bayes, labels []float64
	for appt, y := range outcome {
		k := key(appt, finalVersion[appt])
		p, ok := scored[k]
		if !ok {
			continue
		}
		modelP = append(modelP, p)
		bayes = append(bayes, truth[k])
		labels = append(labels, y)
	}
	sum.AUC = round(auc(modelP, labels), 4)
	sum.BayesAUC = round(auc(bayes, labels), 4)
	sum.HistoriesStored = len(mr.Keys())
	sum.ElapsedS = round(time.Since(start).Seconds(), 2)
	say("read back %d risk events (%d bookings unscored) and %d dead letters; AUC %.3f against outcomes (true-probability ceiling %.3f)",
		sum.RiskEventsPublished, sum.BookingsUnscored, sum.DLQEvents, sum.AUC, sum.BayesAUC)
	if sum.BookingsUnscored > 0 || sum.DLQEvents != malformed {
		return sum, fmt.Errorf("%d valid bookings have no risk event and %d of %d malformed events were dead-lettered",
			sum.BookingsUnscored, sum.DLQEvents, malformed)
	}

	// 4. The reminder dispatcher turns risk into SMS reminders (see reminders.go).
	if err := remind(ctx, brokers, rdb, riskMsgs, &sum, m, log); err != nil {
		return sum, fmt.Errorf("reminders: %w", err)
	}
	sum.ElapsedS = round(time.Since(start).Seconds(), 2)
	return sum, nil
}

// badEvents are the malformed inputs the demo injects: broken JSON, an unknown contract
// version, an impossible booking and (not by default; the log-scan test uses it) a booking
// from a PAS that put an NHS number where a time belongs and a phone number in the contact,
// whose decode error quotes the number: the log line must not.
var badEvents = []struct{ key, value string }{
	{"demo-bad-1", `{"schema":"appointment.v1","type":"booked",`},
	{"demo-bad-2", `{"schema":"appointment.v9","event_id":"x"}`},
	{"0000000000000000000000000000000000000000000000000000000000000000", `{"schema":"appointment.v1","event_id":"bad-3","type":"booked","event_time":"2025-02-03T10:00:00Z","appointment_id":"A-bad","booking_version":1,"patient":"0000000000000000000000000000000000000000000000000000000000000000","booking":{"specialty":"110","clinic":"X","first_visit":true,"start":"2025-02-10T10:00:00Z","booked_at":"2025-02-03T10:00:00Z","age_band":"unknown","contact":{"sms":true,"opt_out":false}}}`},
	{"demo-bad-4", `{"schema":"appointment.v1","event_id":"bad-4","type":"booked","event_time":"943 476 5919","appointment_id":"A-bad-4","booking_version":1,"patient":"9434765919","booking":{"specialty":"110","clinic":"X","first_visit":true,"start":"2025-02-10T10:00:00Z","booked_at":"2025-02-03T10:00:00Z","age_band":"30-39","contact":{"sms":true,"opt_out":false,"phone":"07700 900123"}}}`},
}

// listen binds addr, or a free port on the same host when addr is taken (another demo or
// a local Prometheus exporter), so a busy port never stops the demo.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return ln, err
	}
	host, _, _ := net.SplitHostPort(addr)
	return net.Listen("tcp", net.JoinHostPort(host, "0"))
}

func key(appt string, version int) string { return fmt.Sprintf("%s/%d", appt, version) }

// auc is the area under the ROC curve: the chance a random DNA scores above a random
// attendance (ties count half).
func auc(scores, labels []float64) float64 {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return scores[idx[a]] < scores[idx[b]] })
	var pos, neg, rankSum float64
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		avgRank := float64(i+j+1) / 2 // ranks are 1-based
		for k := i; k < j; k++ {
			if labels[idx[k]] == 1 {
				rankSum += avgRank
				pos++
			} else {
				neg++
			}
		}
		i = j
	}
	if pos == 0 || neg == 0 {
		return 0
	}
	return (rankSum - pos*(pos+1)/2) / (pos * neg)
}

func round(x float64, digits int) float64 {
	p := 1.0
	for i := 0; i < digits; i++ {
		p *= 10
	}
	return float64(int64(x*p+0.5)) / p
}
