package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ReminderCounts are a reminder dispatcher's counts since it started.
type ReminderCounts struct {
	Scheduled int64 // reminders planned
	Sent      int64 // accepted by Notify
	Deferred  int64 // sends that failed for now and were put back
	Uncertain int64 // sends whose outcome was unknown, put back to be looked up before any resend
	Failed    int64 // given up: refused by Notify, no contact details, too many attempts
	Cancelled int64 // dropped before sending: cancelled, rescheduled, opted out, too late
}

func (c ReminderCounts) by() map[string]int64 {
	return map[string]int64{"scheduled": c.Scheduled, "sent": c.Sent, "deferred": c.Deferred, "uncertain": c.Uncertain, "failed": c.Failed, "cancelled": c.Cancelled}
}

// Reminders exposes a dispatcher's counts, read from counts at every scrape, as
// dnarisk_reminders_total{outcome} (since the process started) and
// dnarisk_reminders_today{outcome} (since local midnight in loc, or since the process
// started if that was later). The dispatcher keeps the counts; this only reads them, so it
// needs no hooks in its code.
func (m *Metrics) Reminders(counts func() ReminderCounts, loc *time.Location) {
	m.Registry.MustRegister(&reminderCollector{counts: counts, loc: loc, now: time.Now})
}

var (
	remindersTotalDesc = prometheus.NewDesc(Reminders,
		"SMS reminders by outcome since the dispatcher started: scheduled, sent (accepted by Notify), deferred (retry later), uncertain (outcome unknown: looked up in Notify before any resend), failed (given up), cancelled (dropped before sending).",
		[]string{"outcome"}, nil)
	remindersTodayDesc = prometheus.NewDesc(RemindersToday,
		"SMS reminders by outcome since local midnight (or since the dispatcher started, if later).",
		[]string{"outcome"}, nil)
)

type reminderCollector struct {
	counts func() ReminderCounts
	loc    *time.Location
	now    func() time.Time

	mu       sync.Mutex
	day      string         // local date the baseline belongs to
	baseline ReminderCounts // counts at the first reading of that day
}

func (c *reminderCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- remindersTotalDesc
	ch <- remindersTodayDesc
}

func (c *reminderCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.counts()
	today := c.today(now)
	for outcome, n := range now.by() {
		ch <- prometheus.MustNewConstMetric(remindersTotalDesc, prometheus.CounterValue, float64(n), outcome)
	}
	for outcome, n := range today.by() {
		ch <- prometheus.MustNewConstMetric(remindersTodayDesc, prometheus.GaugeValue, float64(n), outcome)
	}
}

// today returns counts minus the day's baseline. The first reading after midnight starts a
// new day, so reminders sent between midnight and that reading (one scrape interval at
// most, while Prometheus scrapes) count for the day before.
func (c *reminderCollector) today(now ReminderCounts) ReminderCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	day := c.now().In(c.loc).Format(time.DateOnly)
	if c.day == "" {
		c.day = day // started today: everything so far is today's
	} else if day != c.day {
		c.day, c.baseline = day, now
	}
	b := c.baseline
	return ReminderCounts{Scheduled: now.Scheduled - b.Scheduled, Sent: now.Sent - b.Sent, Deferred: now.Deferred - b.Deferred,
		Uncertain: now.Uncertain - b.Uncertain, Failed: now.Failed - b.Failed, Cancelled: now.Cancelled - b.Cancelled}
}
