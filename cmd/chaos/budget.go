package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/reminders/contacts"
	"github.com/nhsx/dnarisk/stream"
)

// The budget scenario (--scenario budget) proves the SMS budget holds under the suite's
// faults: two dispatchers share an hourly cap while Notify fails the ways the pipeline run
// makes it fail, one dispatcher is killed mid-send and Redis crashes (kill -9). Every booking has one
// reminder, all due in the same clock hour. The suite checks that Notify never holds more
// messages in an hour than the cap, that the held reminders go out in the next hour and,
// once an operator raises the cap (SIGHUP), the rest; each reminder exactly once.

// budgetReport is out/budget.json.
type budgetReport struct {
	OK         bool           `json:"ok"`
	Reminders  int            `json:"reminders"`
	PerHourCap int            `json:"per_hour_cap"`
	Hours      []budgetHour   `json:"hours"`
	Sent       int            `json:"sent"`
	Duplicates int            `json:"duplicate_sms"`
	Faults     []fault        `json:"faults"`
	Notify     map[string]int `json:"notify_faults"`
	Violations []string       `json:"violations"`
	Seconds    float64        `json:"seconds"`
}

// budgetHour is what Notify had accepted by the end of one step of the dispatchers' clock.
type budgetHour struct {
	Step  string `json:"step"`
	Clock string `json:"clock"`
	Total int    `json:"messages_total"`
	New   int    `json:"messages_new"`
	Limit int    `json:"limit"` // most new messages the step may add (0: no cap)
	// New below Limit while reminders waited is budget spent on a send whose outcome a
	// killed dispatcher never recorded: the cap errs on the side of sending less.
}

// budgetRun is one run of the scenario.
type budgetRun struct {
	*runner
	n, cap     int
	due        time.Time // the clock hour every reminder falls due in
	nf         *faultyNotify
	dispatches []*proc
	rep        budgetReport
}

func runBudget(parent context.Context, cfg config, log *slog.Logger) (bool, error) {
	ctx, cancel := context.WithTimeout(parent, cfg.timeout)
	defer cancel()
	b := &budgetRun{runner: newRunner(cfg, log), n: cfg.reminders, cap: cfg.reminders * 2 / 5}
	b.rep = budgetReport{Reminders: b.n, PerHourCap: b.cap, Violations: []string{}}
	teardown, err := b.setUp(ctx, "dispatcher")
	defer teardown()
	if err != nil {
		return false, err
	}
	release, err := b.prepareBudget(ctx)
	defer release()
	if err != nil {
		return false, err
	}
	err = b.sendThroughFaults(ctx)
	if err != nil {
		b.violate("run: %v", err)
	}
	b.rep.Faults, b.rep.Notify = b.faults, b.nf.faults()
	b.rep.Violations = append(b.rep.Violations, b.violations...)
	b.rep.OK = len(b.rep.Violations) == 0
	b.rep.Seconds = round(b.since(), 1)
	out, _ := json.MarshalIndent(b.rep, "", "  ")
	if werr := os.WriteFile(cfg.out, append(out, '\n'), 0o644); werr != nil {
		return false, werr
	}
	return b.rep.OK, nil
}

// prepareBudget creates the topics, stores the contacts, publishes one booking per patient
// (one reminder each, all due in one clock hour), serves Notify with faults on, and writes
// the dispatchers' clock and configuration with the cap.
func (b *budgetRun) prepareBudget(ctx context.Context) (release func(), err error) {
	release = func() {}
	if err := createTopics(ctx, b.svc.brokers(), map[string]int{topicAppointments: 4, topicRisk: 4, topicFailed: 1}); err != nil {
		return release, err
	}
	b.secrets.reminder, b.secrets.contact = randomHex(64), randomHex(64)
	b.secrets.notifyKey = "chaos-" + uuid() + "-" + uuid()
	b.rdb = redis.NewClient(&redis.Options{Addr: b.svc.redisAddr(), DisableIdentity: true, MaxRetries: 5})
	var stopNotify func()
	in := &pipelineInput{}
	if stopNotify, err = b.serveNotify(ctx, in); err != nil {
		return release, err
	}
	b.nf = in.nf
	// No late creations here: a message created after its hour (on the next clock move)
	// would count against the wrong hour's cap in Notify's list, though the budget spent it
	// in its own. The pipeline run covers that fault.
	b.nf.rates.CreatedLate = 0
	b.nf.on.Store(true)
	release = func() { stopNotify(); b.rdb.Close() }
	b.due = time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC) // a Monday; 10:00 is outside quiet hours
	evs := make([]events.Appointment, b.n)
	phones := map[string]contacts.Contact{}
	for i := range evs {
		patient := randomHex(64)
		start := b.due.Add(48*time.Hour + time.Duration(i)*5*time.Second) // the 2-day reminder falls due at 10:00 + 5 s × i
		booked := start.Add(-3 * 24 * time.Hour)                          // too late for the 7-day one
		evs[i] = events.Appointment{Schema: events.AppointmentSchema, EventID: fmt.Sprintf("budget-%d", i), Type: events.Booked,
			EventTime: booked, AppointmentID: fmt.Sprintf("B%05d", i), Version: 1, Patient: patient,
			Booking: &events.Booking{Specialty: "110", Start: start, BookedAt: booked, AgeBand: "35-44", Contact: events.Contact{SMS: true}}}
		phones[patient] = contacts.Contact{Phone: contacts.Drama(i)}
	}
	key, _ := contacts.ParseKey(b.secrets.contact)
	store, err := contacts.NewStore(b.rdb, redisPrefix, key)
	if err == nil {
		err = store.PutMany(ctx, phones)
	}
	if err == nil {
		err = b.publish(ctx, evs)
	}
	if err == nil {
		b.clockPath = filepath.Join(b.cfg.work, "clock")
		err = b.setClock(b.due.Add(-2 * time.Hour))
	}
	if err == nil {
		err = b.writeBudgetConfig(b.cap)
	}
	return release, err
}

func (b *budgetRun) publish(ctx context.Context, evs []events.Appointment) error {
	w := stream.NewWriter(b.svc.brokers(), topicAppointments)
	defer w.Close()
	msgs := make([]kafka.Message, len(evs))
	for i := range evs {
		v, err := json.Marshal(evs[i])
		if err != nil {
			return err
		}
		msgs[i] = kafka.Message{Key: []byte(evs[i].Patient), Value: v}
	}
	return w.WriteMessages(ctx, msgs...)
}

// writeBudgetConfig writes the pipeline run's dispatcher configuration with an hourly cap
// (0: none), rechecking held reminders every minute of the dispatchers' clock.
func (b *budgetRun) writeBudgetConfig(perHour int) error {
	cfg := b.dispatcherSettings()
	cfg["budget"] = map[string]any{"per_hour": perHour, "recheck": "1m"}
	// A short lease, so a killed dispatcher's claims are taken over within one step's quiet
	// window (25 s); the uncertain recheck must stay at most half of it.
	sending := cfg["sending"].(map[string]any)
	sending["lease"], sending["uncertain_recheck"] = "15s", "5s"
	b.dispatcherConfig = filepath.Join(b.cfg.work, "dispatcher.json")
	return writeJSONFile(b.dispatcherConfig, cfg)
}

// sendThroughFaults starts two dispatchers, waits for them to plan every reminder, then moves
// their clock into the due hour (a dispatcher is killed and Redis crashes while they send),
// into the next hour, and finally raises the cap; it checks Notify after each step.
func (b *budgetRun) sendThroughFaults(ctx context.Context) error {
	for i := 1; i <= 2; i++ {
		if err := b.startBudgetDispatcher(fmt.Sprintf("dispatcher-%d", i)); err != nil {
			return err
		}
	}
	if err := b.waitPlanned(ctx); err != nil {
		return err
	}
	go b.faultsWhileSending(ctx)
	if err := b.step(ctx, "due hour", b.due.Add(30*time.Minute), b.cap); err != nil {
		return err
	}
	if err := b.step(ctx, "next hour", b.due.Add(90*time.Minute), b.cap); err != nil {
		return err
	}
	if err := b.writeBudgetConfig(0); err != nil {
		return err
	}
	for _, p := range b.dispatches {
		if p.alive() {
			_ = p.cmd.Process.Signal(syscall.SIGHUP)
		}
	}
	b.record("budget_raised", "sweep", "dispatchers", "per_hour 0 (no cap), SIGHUP")
	if err := b.step(ctx, "cap raised", b.due.Add(95*time.Minute), 0); err != nil {
		return err
	}
	return b.checkOnce()
}

func (b *budgetRun) startBudgetDispatcher(name string) error {
	p, err := b.startDispatcherProc(name)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, old := range b.dispatches {
		if old.name == name {
			b.dispatches[i] = p
			return nil
		}
	}
	b.dispatches = append(b.dispatches, p)
	return nil
}

// waitPlanned waits until the dispatchers' group has committed every booking.
func (b *budgetRun) waitPlanned(ctx context.Context) error {
	for b.committed(ctx, reminderGroup, topicAppointments, 4) < int64(b.n) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("the dispatchers never planned all %d bookings: %w", b.n, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// faultsWhileSending kills dispatcher-1 once a fifth of the cap has gone out (restarting it
// 2 s later), then crashes Redis (kill -9, restarted on its append-only file) once half of
// it has: the budget counts must survive it.
func (b *budgetRun) faultsWhileSending(ctx context.Context) {
	waitFor := func(n int) bool {
		for len(b.nf.stub.Messages()) < n {
			select {
			case <-ctx.Done():
				return false
			case <-time.After(20 * time.Millisecond):
			}
		}
		return true
	}
	if !waitFor(b.cap / 5) {
		return
	}
	b.mu.Lock()
	d1 := b.dispatches[0]
	b.mu.Unlock()
	d1.kill9()
	b.record("kill9", "sending", d1.name, fmt.Sprintf("after %d messages", len(b.nf.stub.Messages())))
	time.Sleep(2 * time.Second)
	if err := b.startBudgetDispatcher(d1.name); err != nil {
		b.violate("restart %s: %v", d1.name, err)
	}
	if !waitFor(b.cap / 2) {
		return
	}
	if detail, err := b.svc.crashRedis(ctx, 2*time.Second); err != nil {
		b.violate("redis crash: %v", err)
	} else {
		b.record("redis_crash", "sending", "redis", detail)
	}
}

// step moves the clock to at, waits until Notify's message count has not changed for longer
// than a send lease (a killed dispatcher's claims are taken over by then), and checks that
// the step added at most limit messages (0: no limit; then every reminder must be sent).
func (b *budgetRun) step(ctx context.Context, name string, at time.Time, limit int) error {
	before := len(b.nf.stub.Messages())
	if err := b.setClock(at); err != nil {
		return err
	}
	quiet, last, count := time.Now(), before, before
	for time.Since(quiet) < 25*time.Second && !(limit == 0 && count == b.n) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("step %s: %w", name, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
		if count = len(b.nf.stub.Messages()); count != last {
			quiet, last = time.Now(), count
		}
		if limit > 0 && count-before > limit {
			b.violate("%s: %d messages sent, over the cap of %d", name, count-before, limit)
			break
		}
	}
	b.rep.Hours = append(b.rep.Hours, budgetHour{Step: name, Clock: at.Format(time.RFC3339), Total: count, New: count - before, Limit: limit})
	b.log.Info("budget step", "step", name, "messages", count, "new", count-before, "limit", limit)
	switch {
	case limit > 0 && count == before:
		b.violate("%s: nothing sent under a cap of %d while reminders were waiting", name, limit)
	case limit == 0 && count != b.n:
		b.violate("%s: %d messages after the cap was raised, want all %d", name, count, b.n)
	}
	return nil
}

// checkOnce: every reminder reached Notify exactly once.
func (b *budgetRun) checkOnce() error {
	seen := map[string]int{}
	for _, m := range b.nf.stub.Messages() {
		seen[m.Reference]++
	}
	b.rep.Sent = len(seen)
	for ref, n := range seen {
		if n > 1 {
			b.rep.Duplicates += n - 1
			b.violate("reference %s sent %d times", ref, n)
		}
	}
	if len(seen) != b.n {
		b.violate("%d distinct reminders sent, want %d", len(seen), b.n)
	}
	return nil
}
