package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhsx/dnarisk/reminders"
)

// watchHUP catches SIGHUP (whose default is to end the process) from now on.
func watchHUP() (<-chan os.Signal, func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return hup, func() { signal.Stop(hup) }
}

// reloadBudget applies the config file's budget section on every SIGHUP until ctx ends. A
// file that does not read or a budget that does not validate is logged and the caps in
// force stay.
func reloadBudget(ctx context.Context, hup <-chan os.Signal, path string, d *reminders.Dispatcher, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		fc, err := readConfigFile(path)
		if err == nil {
			err = d.SetBudget(fc.Budget)
		}
		if err != nil {
			log.Error("SIGHUP: budget not reloaded; the caps in force stay", "err", err, "config", path)
			continue
		}
		logBudget(log, "SIGHUP: SMS budget reloaded (other settings need a restart)", d.Budget())
	}
}

func logBudget(log *slog.Logger, msg string, b reminders.Budget) {
	if !b.Capped() {
		log.Warn(msg + ": no caps; anyone who can plan reminders can spend the Notify account (set budget in the config file)")
		return
	}
	log.Info(msg, "per_hour", b.PerHour, "per_day", b.PerDay, "per_patient_per_day", b.PerPatientPerDay,
		"recheck", time.Duration(b.Recheck))
}

// budgetCollector exports the SMS budget: its caps, what the current hour and day have
// used (read from Redis, so the same from every dispatcher), and the holds.
type budgetCollector struct {
	d                 *reminders.Dispatcher
	limit, sent, held *prometheus.Desc
	cancelled         *prometheus.Desc
}

func registerBudget(r *prometheus.Registry, d *reminders.Dispatcher) {
	r.MustRegister(&budgetCollector{d: d,
		limit: prometheus.NewDesc("dnarisk_sms_budget_limit", "SMS budget cap in force by window (hour, day, patient_day); 0 is no cap.", []string{"window"}, nil),
		sent: prometheus.NewDesc("dnarisk_sms_budget_sent", "Messages counted against the SMS budget in the current hour and day, across every dispatcher.",
			[]string{"window"}, nil),
		held: prometheus.NewDesc("dnarisk_sms_budget_held_total",
			"Sends held by the SMS budget since the dispatcher started, by the cap that held them (hour, day, patient); a reminder held again at each recheck counts each time.",
			[]string{"cap"}, nil),
		cancelled: prometheus.NewDesc("dnarisk_sms_budget_cancelled_total",
			"Reminders the SMS budget held until they were too close to the appointment, then cancelled, since the dispatcher started.", nil, nil),
	})
}

func (c *budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.limit
	ch <- c.sent
	ch <- c.held
	ch <- c.cancelled
}

func (c *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.d.Budget()
	for w, v := range map[string]int{"hour": b.PerHour, "day": b.PerDay, "patient_day": b.PerPatientPerDay} {
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(v), w)
	}
	s := &c.d.Stats
	for capName, v := range map[string]int64{reminders.CapHour: s.HeldHour.Load(), reminders.CapDay: s.HeldDay.Load(),
		reminders.CapPatient: s.HeldPatient.Load()} {
		ch <- prometheus.MustNewConstMetric(c.held, prometheus.CounterValue, float64(v), capName)
	}
	ch <- prometheus.MustNewConstMetric(c.cancelled, prometheus.CounterValue, float64(s.BudgetCancelled.Load()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if u, err := c.d.BudgetUsage(ctx); err == nil { // without Redis the gauge is absent, not wrong
		ch <- prometheus.MustNewConstMetric(c.sent, prometheus.GaugeValue, float64(u.Hour), "hour")
		ch <- prometheus.MustNewConstMetric(c.sent, prometheus.GaugeValue, float64(u.Day), "day")
	}
}
