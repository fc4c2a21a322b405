package reminders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/reminders/policy"
)

// change is one event that may alter an appointment's reminders.
type change struct {
	appt *events.Appointment
	risk *events.Risk
}

type apptRef struct{ patient, id string }

// record is an appointment as stored: what is known, the revision it was read at, and the
// ids of every reminder ever created for it.
type record struct {
	policy.Appointment
	rev  string
	rems []string
}

var pseudonymRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// decodeRisk reads a risk.v1 event, checking only what the dispatcher relies on.
func decodeRisk(b []byte) (events.Risk, error) {
	var r events.Risk
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("risk event: %w", err)
	}
	switch {
	case r.Schema != events.RiskSchema:
		return r, fmt.Errorf("risk event schema %q, want %q", r.Schema, events.RiskSchema)
	case !pseudonymRE.MatchString(r.Patient):
		return r, errors.New("risk event patient is not a pseudonym")
	case r.AppointmentID == "" || len(r.AppointmentID) > 128 || r.Version < 1:
		return r, errors.New("risk event without appointment_id or booking_version")
	}
	return r, nil
}

// maxConflictRetries bounds how often a batch re-plans an appointment another writer
// changed under it (the risk and appointments topics of one patient may be read by
// different members).
const maxConflictRetries = 8

// Process applies one batch of messages from the appointments and risk topics. It returns
// only when every resulting change is stored in Redis (so the offsets may be committed),
// or with an error, in which case the batch must be processed again; processing is
// idempotent. Messages that cannot be read are counted and skipped: the scorer dead-letters
// bad appointment events, and a risk event is only ever written by the scorer.
func (d *Dispatcher) Process(ctx context.Context, msgs []kafka.Message) error {
	var order []apptRef
	changes := map[apptRef][]change{}
	add := func(ref apptRef, c change) {
		if _, ok := changes[ref]; !ok {
			order = append(order, ref)
		}
		changes[ref] = append(changes[ref], c)
	}
	var ignored int64
	for i := range msgs {
		m := &msgs[i]
		switch m.Topic {
		case d.o.Topics.Appointments:
			ev, err := events.DecodeAppointment(m.Value)
			// The scorer dead-letters an event keyed by anything but its patient (it could
			// overtake the patient's other events), or dated too far past its Kafka
			// timestamp, so it is no booking or cancellation here either.
			if err == nil && string(m.Key) != ev.Patient {
				err = errors.New("key is not the patient")
			}
			if err == nil {
				err = events.CheckAhead(ev.EventTime, events.Reference(m.Time, time.Now()), d.o.MaxAhead)
			}
			if err != nil {
				ignored++
				continue
			}
			switch ev.Type {
			case events.Booked, events.Rescheduled, events.Cancelled:
				add(apptRef{ev.Patient, ev.AppointmentID}, change{appt: &ev})
			}
		case d.o.Topics.Risk:
			r, err := decodeRisk(m.Value)
			if err != nil {
				ignored++
				d.o.Log.Warn("unreadable risk event skipped", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
				continue
			}
			add(apptRef{r.Patient, r.AppointmentID}, change{risk: &r})
		default:
			ignored++
		}
	}

	now := d.o.Clock.Now()
	var adds []redis.Z
	var rems []any
	var scheduled, retimed, cancelled int64
	pending := order
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > maxConflictRetries {
			return fmt.Errorf("store reminder plans: %d appointments still conflicting after %d attempts", len(pending), attempt)
		}
		recs, err := d.load(ctx, pending)
		if err != nil {
			return err
		}
		pipe := d.rdb.Pipeline()
		calls := make([]*redis.Cmd, len(pending))
		plans := make([]*planCall, len(pending))
		for i, ref := range pending {
			rec := recs[i]
			for _, c := range changes[ref] {
				rec.apply(c)
			}
			plans[i] = d.planCall(rec, now)
			calls[i] = reconcileScript.EvalSha(ctx, pipe, plans[i].keys, rec.rev, plans[i].payload)
		}
		if _, err := pipe.Exec(ctx); err != nil && !isNoScript(err) && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("store reminder plans for %d appointments: %w", len(pending), err)
		}
		var conflicts []apptRef
		for i, call := range calls {
			res, err := call.Slice()
			if isNoScript(err) {
				if err := reconcileScript.Load(ctx, d.rdb).Err(); err != nil {
					return fmt.Errorf("load reminder script: %w", err)
				}
				conflicts = append(conflicts, pending[i])
				continue
			}
			if err != nil {
				return fmt.Errorf("store reminder plan: %w", err)
			}
			if res[0] == "conflict" {
				conflicts = append(conflicts, pending[i])
				continue
			}
			scheduled += toInt(res[1])
			retimed += toInt(res[2])
			cancelled += toInt(res[3])
			p := plans[i]
			for _, a := range res[4].([]any) {
				w := p.want[toInt(a)]
				adds = append(adds, redis.Z{Score: float64(w.due), Member: member(p.rec.Patient, w.rid, p.rec.ID)})
			}
			for _, r := range res[5].([]any) {
				rems = append(rems, member(p.rec.Patient, toString(r), p.rec.ID))
			}
		}
		pending = conflicts
	}
	if len(adds)+len(rems) > 0 {
		pipe := d.rdb.Pipeline()
		if len(adds) > 0 {
			pipe.ZAdd(ctx, d.DueKey(), adds...)
		}
		if len(rems) > 0 {
			pipe.ZRem(ctx, d.DueKey(), rems...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("update due queue: %w", err)
		}
	}
	d.Stats.Consumed.Add(int64(len(msgs)))
	d.Stats.Ignored.Add(ignored)
	d.Stats.Scheduled.Add(scheduled)
	d.Stats.Retimed.Add(retimed)
	d.Stats.Cancelled.Add(cancelled)
	return nil
}

// apply merges one event. Every rule is idempotent and ignores what is older than what is
// known, so replays and the interleaving of the two topics do not matter: bookings by
// version, the band by the version it was scored for, a cancellation for good.
func (r *record) apply(c change) {
	if e := c.appt; e != nil {
		switch e.Type {
		case events.Booked, events.Rescheduled:
			if e.Version >= r.Version {
				r.Version, r.Start, r.BookedAt, r.Known = e.Version, e.Booking.Start.UTC(), e.Booking.BookedAt.UTC(), true
				r.SMS = e.Booking.Contact.SMS && !e.Booking.Contact.OptOut
			}
		case events.Cancelled:
			r.Cancelled = true
		}
	}
	if e := c.risk; e != nil && e.Version >= r.BandVersion {
		r.Band, r.BandVersion = e.Band, e.Version
		if !r.Known && r.Start.IsZero() {
			r.Start = e.AppointmentStart.UTC() // only to set the record's expiry
		}
	}
}

func (d *Dispatcher) load(ctx context.Context, refs []apptRef) ([]*record, error) {
	pipe := d.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(refs))
	for i, ref := range refs {
		cmds[i] = pipe.HGetAll(ctx, d.apptKey(ref.patient, ref.id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("load %d appointments: %w", len(refs), err)
	}
	out := make([]*record, len(refs))
	for i, ref := range refs {
		h := cmds[i].Val()
		r := &record{Appointment: policy.Appointment{ID: ref.id, Patient: ref.patient}, rev: "0"}
		if len(h) > 0 {
			r.rev = h["rev"]
			r.Version, _ = strconv.Atoi(h["ver"])
			r.Start, r.BookedAt = fromMS(h["start"]), fromMS(h["booked"])
			r.Known, r.SMS, r.Cancelled = h["known"] == "1", h["sms"] == "1", h["cancelled"] == "1"
			r.Band = h["band"]
			r.BandVersion, _ = strconv.Atoi(h["bver"])
			if h["rems"] != "" {
				r.rems = strings.Split(h["rems"], ",")
			}
		}
		out[i] = r
	}
	return out, nil
}

type want struct {
	rid string
	due int64
}

type planCall struct {
	rec     *record
	keys    []string
	payload string
	want    []want
}

// planCall builds the reconcile script call for rec: the reminders the policy wants now and
// the reminders to drop (every earlier one it no longer wants).
func (d *Dispatcher) planCall(rec *record, now time.Time) *planCall {
	planned := d.o.Policy.Plan(rec.Appointment, now)
	pc := &planCall{rec: rec, keys: []string{d.apptKey(rec.Patient, rec.ID)}}
	type wantArg struct {
		K    int    `json:"k"`
		Due  string `json:"due"`
		Ver  string `json:"ver"`
		Slot string `json:"slot"`
		Kind string `json:"kind"`
	}
	type dropArg struct {
		K      int    `json:"k"`
		Reason string `json:"reason"`
	}
	payload := struct {
		Fields map[string]string `json:"fields"`
		Expire string            `json:"expire"`
		Want   []wantArg         `json:"want"`
		Drop   []dropArg         `json:"drop"`
	}{Want: []wantArg{}, Drop: []dropArg{}}
	wanted := map[string]bool{}
	rems := append([]string(nil), rec.rems...)
	known := map[string]bool{}
	for _, r := range rems {
		known[r] = true
	}
	for _, p := range planned {
		rid := d.ReminderID(rec.Patient, rec.ID, rec.Version, p.Slot.Name)
		wanted[rid] = true
		pc.keys = append(pc.keys, d.remKey(rec.Patient, rid))
		pc.want = append(pc.want, want{rid, ms(p.Due)})
		payload.Want = append(payload.Want, wantArg{K: len(pc.keys), Due: strconv.FormatInt(ms(p.Due), 10),
			Ver: strconv.Itoa(rec.Version), Slot: p.Slot.Name, Kind: string(p.Slot.Kind)})
		if !known[rid] {
			known[rid] = true
			rems = append(rems, rid)
		}
	}
	reason := "replanned"
	switch {
	case rec.Cancelled:
		reason = "cancelled"
	case rec.Known && !rec.SMS:
		reason = "opt_out"
	}
	for _, rid := range rec.rems {
		if !wanted[rid] {
			pc.keys = append(pc.keys, d.remKey(rec.Patient, rid))
			payload.Drop = append(payload.Drop, dropArg{K: len(pc.keys), Reason: reason})
		}
	}
	b01 := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	expire := rec.Start
	if expire.Before(now) {
		expire = now
	}
	// A TTL rather than a deadline: the planning clock need not be Redis's (tests, the demo).
	payload.Expire = strconv.FormatInt(expire.Add(d.o.KeepAfter).Sub(now).Milliseconds(), 10)
	payload.Fields = map[string]string{
		"appt": rec.ID, "ver": strconv.Itoa(rec.Version), "start": strconv.FormatInt(ms(rec.Start), 10),
		"booked": strconv.FormatInt(ms(rec.BookedAt), 10), "known": b01(rec.Known), "sms": b01(rec.SMS),
		"band": rec.Band, "bver": strconv.Itoa(rec.BandVersion), "cancelled": b01(rec.Cancelled),
		"rems": strings.Join(rems, ","),
		// Recorded on the plan for audit: the extra reminders were due but withheld by the
		// hold-out (policy.Holdout).
		"extra_held_out": b01(d.o.Policy.ExtraWithheld(rec.Appointment)),
	}
	b, _ := json.Marshal(payload) // strings and ints only
	pc.payload = string(b)
	return pc
}

// reconcileScript stores an appointment and brings its reminders in line with the plan,
// if the appointment is still at the revision it was planned from.
//
// KEYS[1] appointment hash; KEYS[2..] reminder hashes named by index in the payload.
// ARGV[1] expected rev; ARGV[2] JSON {fields, expire (TTL, ms), want: [{k, due, ver, slot, kind}],
// drop: [{k, reason}]}.
// A wanted reminder is created (or revived from cancelled) as scheduled, or re-timed if
// still scheduled; one claimed, sent or failed is left alone. A dropped reminder is
// cancelled only if still scheduled. Returns {"conflict"} or {"ok", created, retimed,
// cancelled, [want index (0-based) of every scheduled wanted reminder], [reminder id of
// every cancelled one]}; the caller puts the first in the due queue and takes the second
// out.
var reconcileScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'rev') or '0'
if cur ~= ARGV[1] then return {'conflict'} end
local p = cjson.decode(ARGV[2])
local created, retimed, cancelled = 0, 0, 0
local add, rem = {}, {}
for i, w in ipairs(p.want) do
  local k = KEYS[w.k]
  local st = redis.call('HMGET', k, 'state', 'due')
  if not st[1] or st[1] == 'cancelled' then
    redis.call('HSET', k, 'state', 'scheduled', 'due', w.due, 'ver', w.ver, 'slot', w.slot, 'kind', w.kind,
      'appt', p.fields.appt, 'start', p.fields.start, 'reason', '')
    redis.call('PEXPIRE', k, p.expire)
    created = created + 1
    table.insert(add, i - 1)
  elseif st[1] == 'scheduled' then
    if st[2] ~= w.due then
      redis.call('HSET', k, 'due', w.due)
      retimed = retimed + 1
    end
    table.insert(add, i - 1)
  end
end
for _, x in ipairs(p.drop) do
  local k = KEYS[x.k]
  if redis.call('HGET', k, 'state') == 'scheduled' then
    redis.call('HSET', k, 'state', 'cancelled', 'reason', x.reason)
    cancelled = cancelled + 1
    table.insert(rem, string.sub(k, -32))
  end
end
for f, v in pairs(p.fields) do redis.call('HSET', KEYS[1], f, v) end
redis.call('HSET', KEYS[1], 'rev', tostring(tonumber(cur) + 1))
redis.call('PEXPIRE', KEYS[1], p.expire)
return {'ok', created, retimed, cancelled, add, rem}
`)

func isNoScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }

func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

func toString(v any) string {
	s, _ := v.(string)
	return s
}
