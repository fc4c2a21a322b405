package reminders

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/reminders/policy"
)

// Budget caps how many text messages are sent: per clock hour, per day and per patient per
// day, counted in Redis so that the caps hold across every dispatcher sharing it (and
// survive restarts). Zero means no cap. A send above a cap is held: the reminder goes back
// to the queue unchanged and is tried again every Recheck until the cap allows it, so a
// cap raised on a running dispatcher (Dispatcher.SetBudget; cmd/dispatcher on SIGHUP)
// releases held reminders within Recheck. Nothing is dropped or failed for the budget,
// except what the policy drops anyway: a reminder held until less than MinLead before its
// appointment is cancelled with the reason "budget".
type Budget struct {
	// PerHour caps messages per clock hour (UTC hours, which are local hours in the UK).
	PerHour int `json:"per_hour"`
	// PerDay caps messages per day, midnight to midnight in the policy's time zone.
	PerDay int `json:"per_day"`
	// PerPatientPerDay caps messages to one patient per day (same days).
	PerPatientPerDay int `json:"per_patient_per_day"`
	// Recheck is how long a held reminder waits before it is tried again, or less if the
	// window that holds it ends sooner [1m].
	Recheck policy.Duration `json:"recheck"`
}

// Budget caps, the label of dnarisk_sms_budget_held_total.
const (
	CapHour    = "hour"
	CapDay     = "day"
	CapPatient = "patient"
)

// Validate checks the caps and fills in the default Recheck.
func (b *Budget) Validate() error {
	switch {
	case b.PerHour < 0 || b.PerDay < 0 || b.PerPatientPerDay < 0:
		return errors.New("budget caps must be 0 (no cap) or more")
	case b.Recheck < 0:
		return errors.New("budget.recheck must be positive")
	case b.PerHour > 0 && b.PerDay > 0 && b.PerHour > b.PerDay:
		return fmt.Errorf("budget.per_hour %d is above budget.per_day %d", b.PerHour, b.PerDay)
	}
	if b.Recheck == 0 {
		b.Recheck = policy.Duration(time.Minute)
	}
	return nil
}

// Capped reports whether any cap is set.
func (b Budget) Capped() bool { return b.PerHour > 0 || b.PerDay > 0 || b.PerPatientPerDay > 0 }

// SetBudget replaces the caps of a running Dispatcher; sends from then on are counted
// against them (what was already sent in the current hour and day still counts).
func (d *Dispatcher) SetBudget(b Budget) error {
	if err := b.Validate(); err != nil {
		return err
	}
	d.budget.Store(&b)
	return nil
}

// Budget returns the caps in force.
func (d *Dispatcher) Budget() Budget { return *d.budget.Load() }

// BudgetUsage is what the budget has counted in the current windows.
type BudgetUsage struct {
	Hour, Day int64
}

// BudgetUsage reads the counts of the current hour and day from Redis.
func (d *Dispatcher) BudgetUsage(ctx context.Context) (BudgetUsage, error) {
	w := d.windows(d.o.Clock.Now())
	v, err := d.rdb.MGet(ctx, w.hourKey, w.dayKey).Result()
	if err != nil {
		return BudgetUsage{}, fmt.Errorf("read SMS budget counts: %w", err)
	}
	n := func(x any) int64 {
		i, _ := strconv.ParseInt(toString(x), 10, 64)
		return i
	}
	return BudgetUsage{Hour: n(v[0]), Day: n(v[1])}, nil
}

// windows are the budget counters a send at one moment is counted in, and when each
// window ends. All keys share the hash tag {budget}, so one script updates them together
// in one Redis Cluster slot; per-patient counts are fields of one hash per day, keyed by
// the pseudonym.
type windows struct {
	hourKey, dayKey, patientKey string
	hourEnd, dayEnd             time.Time
}

func (d *Dispatcher) windows(now time.Time) windows {
	u := now.UTC()
	l := now.In(d.o.Policy.Location())
	base := d.o.Prefix + "{budget}:sent:"
	return windows{
		hourKey:    base + "h:" + u.Format("2006010215"),
		dayKey:     base + "d:" + l.Format("20060102"),
		patientKey: base + "p:" + l.Format("20060102"),
		hourEnd:    u.Truncate(time.Hour).Add(time.Hour),
		dayEnd:     time.Date(l.Year(), l.Month(), l.Day()+1, 0, 0, 0, 0, d.o.Policy.Location()),
	}
}

// Counters live a little longer than their window (a day may have 25 hours).
const (
	hourKeyTTL = 2 * time.Hour
	dayKeyTTL  = 50 * time.Hour
)

// spend is one send counted against the budget, to be refunded if Notify refused it.
type spend struct {
	w       windows
	patient string
}

// take counts one send to patient at now against the caps, atomically, unless a cap is
// already reached: then it returns the cap and when to try again.
func (d *Dispatcher) take(ctx context.Context, patient string, now time.Time) (*spend, string, time.Time, error) {
	b := d.Budget()
	w := d.windows(now)
	res, err := takeScript.Run(ctx, d.rdb, []string{w.hourKey, w.dayKey, w.patientKey},
		b.PerHour, b.PerDay, b.PerPatientPerDay, patient, int(hourKeyTTL/time.Second), int(dayKeyTTL/time.Second)).Slice()
	if err != nil {
		return nil, "", time.Time{}, fmt.Errorf("count the send against the SMS budget: %w", err)
	}
	capName := toString(res[0])
	if capName == "ok" {
		return &spend{w: w, patient: patient}, "", time.Time{}, nil
	}
	end := w.dayEnd
	if capName == CapHour {
		end = w.hourEnd
	}
	if recheck := now.Add(time.Duration(b.Recheck)); recheck.Before(end) {
		end = recheck
	}
	return nil, capName, end, nil
}

// refund gives back a send Notify refused outright (so nothing was sent). A failed refund
// leaves the count one high: the budget errs towards holding.
func (d *Dispatcher) refund(ctx context.Context, s *spend) {
	if s == nil {
		return
	}
	if err := refundScript.Run(ctx, d.rdb, []string{s.w.hourKey, s.w.dayKey, s.w.patientKey}, s.patient).Err(); err != nil {
		d.o.Log.Warn("could not refund an unsent message to the SMS budget; it stays counted", "err", err)
	}
}

// takeScript: KEYS[1] count of the hour, KEYS[2] count of the day, KEYS[3] hash of the day's
// count per patient. ARGV[1..3] caps per hour, per day, per patient (0: none), ARGV[4]
// patient, ARGV[5] hour key TTL (s), ARGV[6] day keys TTL (s). Returns {"ok"} after
// counting, or the first cap reached ({"patient"}, {"day"} or {"hour"}) counting nothing.
var takeScript = redis.NewScript(`
local h = tonumber(redis.call('GET', KEYS[1]) or '0')
local d = tonumber(redis.call('GET', KEYS[2]) or '0')
local p = tonumber(redis.call('HGET', KEYS[3], ARGV[4]) or '0')
local ch, cd, cp = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if cp > 0 and p >= cp then return {'patient'} end
if cd > 0 and d >= cd then return {'day'} end
if ch > 0 and h >= ch then return {'hour'} end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
redis.call('EXPIRE', KEYS[3], ARGV[6])
return {'ok'}
`)

// refundScript undoes one takeScript count; KEYS as for takeScript, ARGV[1] patient.
var refundScript = redis.NewScript(`
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
if tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') > 0 then redis.call('HINCRBY', KEYS[3], ARGV[1], -1) end
return 1
`)
