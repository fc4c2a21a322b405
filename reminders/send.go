package reminders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/reminders/contacts"
	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/policy"
)

// FailedSchema names the failed-reminder event contract.
const FailedSchema = "reminder_failed.v1"

// Failed is published to the failed-reminders topic, keyed by the patient pseudonym, when a
// reminder is given up: Notify refused it (400, 403), there is no usable contact, or it kept
// failing. It carries no phone number and no clinical detail. Delivery is at-least-once:
// readers deduplicate on reminder_id.
type Failed struct {
	Schema        string    `json:"schema"`
	ReminderID    string    `json:"reminder_id"`
	AppointmentID string    `json:"appointment_id"`
	Version       int       `json:"booking_version"`
	Patient       string    `json:"patient"`
	Slot          string    `json:"slot"`
	StatusCode    int       `json:"status_code,omitempty"` // Notify's HTTP status, if it answered
	Reason        string    `json:"reason"`
	Attempts      int       `json:"attempts"`
	FailedAt      time.Time `json:"failed_at"`
}

// dueBatch bounds how many due reminders one SendDue pass takes.
const dueBatch = 500

// SendDue sends the reminders due by the clock's now, up to one batch, with Workers at
// once. It returns how many queue entries it settled (sent, failed, cancelled, re-timed,
// put back for a retry or cleaned up); entries claimed by another live sender are left.
// Once a send has started it is finished even if ctx ends, so a shutdown does not leave a
// message half-known.
func (d *Dispatcher) SendDue(ctx context.Context) (int, error) {
	if d.notifier == nil || d.contacts == nil || d.failed == nil {
		return 0, errors.New("reminders: this Dispatcher has no Notifier, Contacts or Failed publisher: it can plan but not send")
	}
	now := d.o.Clock.Now()
	members, err := d.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: d.DueKey(), ByScore: true, Start: "-inf", Stop: strconv.FormatInt(ms(now), 10), Count: dueBatch,
	}).Result()
	if err != nil {
		return 0, fmt.Errorf("read due reminders: %w", err)
	}
	work := make(chan string)
	var settled atomic.Int64
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range min(d.o.Workers, len(members)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				ok, err := d.fire(ctx, m, now)
				if ok {
					settled.Add(1)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
feed:
	for _, m := range members {
		select {
		case work <- m:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	return int(settled.Load()), errors.Join(errs...)
}

// NextDue returns when the earliest pending reminder is due.
func (d *Dispatcher) NextDue(ctx context.Context) (time.Time, bool, error) {
	z, err := d.rdb.ZRangeWithScores(ctx, d.DueKey(), 0, 0).Result()
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read due queue: %w", err)
	}
	if len(z) == 0 {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(int64(z[0].Score)).UTC(), true, nil
}

// Pending returns how many reminders are in the due queue.
func (d *Dispatcher) Pending(ctx context.Context) (int64, error) {
	return d.rdb.ZCard(ctx, d.DueKey()).Result()
}

// RunSender sends reminders as they fall due until ctx ends, then returns nil once the sends
// in hand are finished.
func (d *Dispatcher) RunSender(ctx context.Context) error {
	for {
		n, err := d.SendDue(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			d.o.Log.Error("sending due reminders failed; will try again", "err", err)
		}
		if n > 0 && err == nil {
			continue
		}
		wait := d.o.PollInterval
		if next, ok, err := d.NextDue(ctx); err == nil && ok {
			if w := next.Sub(d.o.Clock.Now()); w > 0 && w < wait {
				wait = w
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.o.Clock.After(wait):
		}
	}
}

// claimed is a reminder this process holds.
type claimed struct {
	patient, rid, appt, slot string
	kind                     policy.Kind
	version, attempts        int
	held                     int  // times the SMS budget held it
	uncertain                bool // an earlier send's outcome is unknown: look it up before anything else
	due, start               time.Time
	member                   string
}

// fire settles one due-queue entry. It reports whether the entry was settled.
func (d *Dispatcher) fire(ctx context.Context, m string, now time.Time) (bool, error) {
	patient, rid, appt, ok := parseMember(m)
	if !ok {
		return true, d.rdb.ZRem(ctx, d.DueKey(), m).Err()
	}
	wall := time.Now()
	res, err := claimScript.Run(ctx, d.rdb, []string{d.remKey(patient, rid), d.apptKey(patient, appt)},
		ms(now), wall.UnixMilli(), wall.Add(d.o.Lease).UnixMilli(), d.token).Slice()
	if err != nil {
		return false, fmt.Errorf("claim reminder %s: %w", rid, err)
	}
	switch res[0] {
	case "busy":
		return false, nil
	case "early": // queue score behind a re-time: repair it
		due, _ := strconv.ParseFloat(toString(res[1]), 64)
		return true, d.rdb.ZAdd(ctx, d.DueKey(), redis.Z{Score: due, Member: m}).Err()
	case "cancelled":
		d.Stats.Cancelled.Add(1)
		return true, d.rdb.ZRem(ctx, d.DueKey(), m).Err()
	case "claimed":
	default: // gone or already final
		return true, d.rdb.ZRem(ctx, d.DueKey(), m).Err()
	}
	c := claimed{patient: patient, rid: rid, appt: appt, member: m, slot: toString(res[1]), kind: policy.Kind(toString(res[2])),
		due: fromMS(toString(res[4])), start: fromMS(toString(res[5]))}
	c.version, _ = strconv.Atoi(toString(res[3]))
	c.attempts = int(toInt(res[6]))
	c.held, _ = strconv.Atoi(toString(res[7]))
	c.uncertain = toString(res[8]) == "1"
	// A send that has begun is seen through: stopping half-way would leave it unknown. No
	// request starts after half the lease (on the wall clock the lease is measured on), so
	// an heir taking the claim over at the lease's end looks up at least UncertainRecheck
	// after the last request.
	work, cancel := context.WithDeadline(context.WithoutCancel(ctx), wall.Add(d.o.Lease/2))
	defer cancel()
	return true, d.deliver(work, &c, now)
}

// deliver decides and sends one claimed reminder, and records the outcome.
func (d *Dispatcher) deliver(ctx context.Context, c *claimed, now time.Time) error {
	looked := false
	if c.uncertain {
		// An earlier send may have gone: Notify's record decides before any policy does.
		found, err := d.notifier.FindByReference(ctx, c.rid)
		if err != nil {
			return d.retryLater(ctx, c, now, err)
		}
		if len(found) > 0 {
			d.Stats.Recovered.Add(1)
			return d.sent(ctx, c, found[0].ID)
		}
		if c.attempts > d.o.MaxAttempts {
			return d.fail(ctx, c, 0, fmt.Sprintf("gave up after %d attempts: the last send's outcome was unknown and Notify has no message with its reference", c.attempts-1))
		}
		looked = true
	}
	p := &d.o.Policy
	switch {
	case now.Sub(c.due) > time.Duration(p.MaxLate):
		return d.cancel(ctx, c, "late")
	case c.start.Sub(now) < time.Duration(p.MinLead):
		return d.cancelTooClose(ctx, c)
	case p.InQuiet(now):
		due := p.OutOfQuiet(now)
		if c.start.Sub(due) < time.Duration(p.MinLead) {
			return d.cancelTooClose(ctx, c)
		}
		d.Stats.Retimed.Add(1)
		return d.release(ctx, c, due, true)
	}
	contact, err := d.contacts.Get(ctx, c.patient)
	switch {
	case errors.Is(err, contacts.ErrNotFound):
		return d.fail(ctx, c, 0, "no contact details for the patient")
	case err != nil:
		d.o.Log.Warn("contact lookup failed; reminder put back", "reminder_id", c.rid, "err", err)
		return d.release(ctx, c, now.Add(d.backoff(c.attempts)), true)
	case contact.OptOut:
		return d.cancel(ctx, c, "opt_out")
	case contact.Phone.IsZero():
		return d.fail(ctx, c, 0, "no mobile number for the patient")
	}
	// The budget comes before any request to Notify, so held reminders cost Notify nothing
	// at each recheck.
	spent, capName, until, err := d.take(ctx, c.patient, now)
	switch {
	case err != nil:
		d.o.Log.Warn("SMS budget unavailable; reminder put back", "reminder_id", c.rid, "err", err)
		return d.release(ctx, c, now.Add(d.backoff(c.attempts)), true)
	case capName != "":
		return d.hold(ctx, c, capName, until)
	}
	if !looked && (c.attempts > 1 || d.o.LookupFirst) {
		// An earlier claim may have sent it and died before recording that (and counted it).
		found, err := d.notifier.FindByReference(ctx, c.rid)
		if err != nil {
			d.refund(ctx, spent)
			return d.retryLater(ctx, c, now, err)
		}
		if len(found) > 0 {
			d.refund(ctx, spent)
			d.Stats.Recovered.Add(1)
			return d.sent(ctx, c, found[0].ID)
		}
	}
	n, err := d.notifier.SendSMS(ctx, notify.SMS{
		PhoneNumber:     contact.Phone.Reveal(),
		TemplateID:      d.template(c.kind),
		Personalisation: d.personalisation(c.start),
		Reference:       c.rid,
	})
	switch {
	case err == nil:
		return d.sent(ctx, c, n.ID)
	case notify.Uncertain(err):
		// Notify may have created it, or may still: never resent now. It stays counted in
		// the budget and is looked up after UncertainRecheck.
		return d.uncertain(ctx, c, err)
	case notify.Permanent(err):
		// Refused outright (the client never repeats a send that may have been created):
		// nothing was sent, so nothing is spent.
		d.refund(ctx, spent)
		var ae *notify.APIError
		errors.As(err, &ae)
		return d.fail(ctx, c, ae.StatusCode, ae.Error())
	default:
		// A 429, or a connection never made: nothing was created, so nothing is spent.
		d.refund(ctx, spent)
		return d.retryLater(ctx, c, now, err)
	}
}

// hold puts a reminder the budget refused back in the queue until until, without counting
// an attempt, and says so once per cap and window.
func (d *Dispatcher) hold(ctx context.Context, c *claimed, capName string, until time.Time) error {
	switch capName {
	case CapHour:
		d.Stats.HeldHour.Add(1)
	case CapDay:
		d.Stats.HeldDay.Add(1)
	default:
		d.Stats.HeldPatient.Add(1)
	}
	if capName != CapPatient {
		w := d.windows(d.o.Clock.Now())
		end := map[string]time.Time{CapHour: w.hourEnd, CapDay: w.dayEnd}[capName]
		d.heldMu.Lock()
		first := !d.heldLogged[capName].Equal(end)
		d.heldLogged[capName] = end
		d.heldMu.Unlock()
		if first {
			b := d.Budget()
			d.o.Log.Warn("SMS budget reached: reminders are held, not dropped, until the window ends or the cap is raised",
				"cap", capName, "per_hour", b.PerHour, "per_day", b.PerDay, "window_ends", end)
		}
	}
	return d.release(ctx, c, until, true, "held", strconv.Itoa(c.held+1))
}

// cancelTooClose drops a reminder that can no longer go out before MinLead; if the budget
// held it on its way, the reason says so.
func (d *Dispatcher) cancelTooClose(ctx context.Context, c *claimed) error {
	if c.held > 0 {
		d.Stats.BudgetCancelled.Add(1)
		d.o.Log.Warn("reminder held by the SMS budget until too close to the appointment; cancelled", "reminder_id", c.rid, "slot", c.slot, "held", c.held)
		return d.cancel(ctx, c, "budget")
	}
	return d.cancel(ctx, c, "too_close")
}

func (d *Dispatcher) template(k policy.Kind) string {
	if k == policy.Extra {
		return d.o.Templates.Extra
	}
	return d.o.Templates.Standard
}

// personalisation is the only patient-facing content: when the appointment is. No
// specialty, clinic or risk: the message may be read by someone else.
func (d *Dispatcher) personalisation(start time.Time) map[string]string {
	l := start.In(d.o.Policy.Location())
	return map[string]string{
		"appointment_date": l.Format("Monday 2 January 2006"),
		"appointment_time": l.Format("15:04"),
	}
}

func (d *Dispatcher) backoff(attempts int) time.Duration {
	return d.o.RetryBackoff << min(max(attempts-1, 0), 10)
}

// retryLater puts a reminder back after a transient failure, or gives up after MaxAttempts.
// The next claim looks the reference up before sending, since this attempt may have sent.
func (d *Dispatcher) retryLater(ctx context.Context, c *claimed, now time.Time, cause error) error {
	if c.attempts >= d.o.MaxAttempts {
		return d.fail(ctx, c, statusOf(cause), fmt.Sprintf("gave up after %d attempts: %v", c.attempts, cause))
	}
	wait := max(d.backoff(c.attempts), notify.RetryAfter(cause))
	d.Stats.Deferred.Add(1)
	d.o.Log.Warn("reminder send failed; will retry", "reminder_id", c.rid, "attempt", c.attempts, "retry_in", wait,
		"err", phoneLike.ReplaceAllString(cause.Error(), "[redacted]"))
	return d.release(ctx, c, now.Add(wait), false)
}

// uncertain puts a reminder whose send may or may not have created a message back in the
// queue for UncertainRecheck from now, marked so that whoever claims it next looks it up in
// Notify before anything else. It is never given up here: only the lookup can say whether
// it went.
func (d *Dispatcher) uncertain(ctx context.Context, c *claimed, cause error) error {
	wait := d.o.UncertainRecheck
	d.Stats.Uncertain.Add(1)
	d.o.Log.Warn("reminder send outcome unknown; will look it up before sending again", "reminder_id", c.rid, "attempt", c.attempts,
		"recheck_in", wait, "err", phoneLike.ReplaceAllString(cause.Error(), "[redacted]"))
	return d.release(ctx, c, d.o.Clock.Now().Add(wait), false, "uncertain", "1")
}

func statusOf(err error) int {
	var ae *notify.APIError
	if errors.As(err, &ae) {
		return ae.StatusCode
	}
	return 0
}

func (d *Dispatcher) sent(ctx context.Context, c *claimed, notifyID string) error {
	if err := d.finish(ctx, c, "sent", "notify_id", notifyID); err != nil {
		return err
	}
	d.Stats.Sent.Add(1)
	return d.rdb.ZRem(ctx, d.DueKey(), c.member).Err()
}

func (d *Dispatcher) cancel(ctx context.Context, c *claimed, reason string) error {
	if err := d.finish(ctx, c, "cancelled", "reason", reason); err != nil {
		return err
	}
	d.Stats.Cancelled.Add(1)
	return d.rdb.ZRem(ctx, d.DueKey(), c.member).Err()
}

// phoneLike finds digit runs long enough to be a phone number, so that no error text a
// server echoes can carry one into the failed topic.
var phoneLike = regexp.MustCompile(`\+?\d[\d ()-]{6,}\d`)

// fail publishes the failure, then records it; a crash between the two publishes again
// (readers deduplicate on reminder_id).
func (d *Dispatcher) fail(ctx context.Context, c *claimed, status int, reason string) error {
	reason = phoneLike.ReplaceAllString(reason, "[redacted]")
	if d.failed != nil {
		b, _ := json.Marshal(Failed{Schema: FailedSchema, ReminderID: c.rid, AppointmentID: c.appt, Version: c.version,
			Patient: c.patient, Slot: c.slot, StatusCode: status, Reason: reason, Attempts: c.attempts,
			FailedAt: d.o.Clock.Now().UTC()})
		err := d.failed.WriteMessages(ctx, kafka.Message{Topic: d.o.Topics.Failed, Key: []byte(c.patient), Value: b,
			Headers: []kafka.Header{{Key: "schema", Value: []byte(FailedSchema)}}})
		if err != nil {
			_ = d.release(ctx, c, d.o.Clock.Now().Add(d.backoff(1)), true)
			return fmt.Errorf("publish failed reminder %s: %w", c.rid, err)
		}
	}
	if err := d.finish(ctx, c, "failed", "reason", reason, "status", strconv.Itoa(status)); err != nil {
		return err
	}
	d.Stats.Failed.Add(1)
	d.o.Log.Warn("reminder failed", "reminder_id", c.rid, "slot", c.slot, "status", status, "reason", reason)
	return d.rdb.ZRem(ctx, d.DueKey(), c.member).Err()
}

// release returns a claimed reminder to the queue, due at due, with extra fields set.
// untouched says nothing was sent on this claim, so it does not count as an attempt.
func (d *Dispatcher) release(ctx context.Context, c *claimed, due time.Time, untouched bool, extra ...string) error {
	attempts := c.attempts
	if untouched {
		attempts--
	}
	fields := append([]string{"due", strconv.FormatInt(ms(due), 10), "attempts", strconv.Itoa(attempts)}, extra...)
	if err := d.finish(ctx, c, "scheduled", fields...); err != nil {
		return err
	}
	return d.rdb.ZAdd(ctx, d.DueKey(), redis.Z{Score: float64(ms(due)), Member: c.member}).Err()
}

// errLostClaim means the claim's lease ran out and another sender took the reminder over.
var errLostClaim = errors.New("claim lost to another sender (lease expired)")

func (d *Dispatcher) finish(ctx context.Context, c *claimed, state string, fields ...string) error {
	args := []any{d.token, state}
	for _, f := range fields {
		args = append(args, f)
	}
	n, err := finishScript.Run(ctx, d.rdb, []string{d.remKey(c.patient, c.rid)}, args...).Int()
	if err != nil {
		return fmt.Errorf("record reminder %s as %s: %w", c.rid, state, err)
	}
	if n == 0 {
		d.o.Log.Warn("reminder claim lost before recording; the new holder checks Notify by reference", "reminder_id", c.rid, "state", state)
		return fmt.Errorf("record reminder %s as %s: %w", c.rid, state, errLostClaim)
	}
	return nil
}

// claimScript takes a due reminder for one sender.
//
// KEYS[1] reminder hash, KEYS[2] its appointment hash. ARGV[1] clock now (ms), ARGV[2] wall
// now (ms), ARGV[3] lease end on the wall clock (ms), ARGV[4] claimant token.
// Returns {"gone"}, {"final", state}, {"early", due}, {"busy"} (claimed by a live lease),
// {"cancelled", reason} (the appointment was cancelled, rescheduled or opted out since), or
// {"claimed", slot, kind, ver, due, start, attempts, held, uncertain}. A claim whose lease
// has run out is taken over; attempts counts claims, so the caller knows an earlier one may
// have sent; held counts the times the SMS budget held it; uncertain is "1" once a send's
// outcome was unknown (it stays set: every later claim looks the reference up first) and
// when the claim is taken over from a sender whose lease ran out.
var claimScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'state', 'due', 'ver', 'attempts', 'lease', 'slot', 'kind', 'start', 'held', 'uncertain')
local state = r[1]
if not state then return {'gone'} end
if state == 'scheduled' then
  if tonumber(r[2]) > tonumber(ARGV[1]) then return {'early', r[2]} end
elseif state == 'claimed' then
  if tonumber(r[5] or '0') > tonumber(ARGV[2]) then return {'busy'} end
else
  return {'final', state}
end
local a = redis.call('HMGET', KEYS[2], 'ver', 'cancelled', 'sms')
local reason = nil
if not a[1] then reason = 'gone'
elseif a[2] == '1' then reason = 'cancelled'
elseif a[1] ~= r[3] then reason = 'rescheduled'
elseif a[3] ~= '1' then reason = 'opt_out' end
if reason then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'reason', reason)
  return {'cancelled', reason}
end
local n = tonumber(r[4] or '0') + 1
local uncertain = r[10] or '0'
if state == 'claimed' then uncertain = '1' end -- taken over from a sender that died mid-claim
redis.call('HSET', KEYS[1], 'state', 'claimed', 'attempts', tostring(n), 'lease', ARGV[3], 'token', ARGV[4])
return {'claimed', r[6], r[7], r[3], r[2], r[8], n, r[9] or '0', uncertain}
`)

// finishScript records the outcome of a claim, if the caller still holds it.
// KEYS[1] reminder hash; ARGV[1] token, ARGV[2] new state, ARGV[3..] field/value pairs.
var finishScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'state') ~= 'claimed' or redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HDEL', KEYS[1], 'lease', 'token')
return 1
`)
