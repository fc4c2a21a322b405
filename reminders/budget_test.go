package reminders_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
	"github.com/nhsx/dnarisk/reminders/policy"
)

// dueNow books n patients (from patient number first) whose 2-day reminder is due at the
// clock's now, and returns their pseudonyms.
func (h *harness) dueNow(first, n int) []string {
	h.t.Helper()
	start := h.clock.Now().Add(2 * day)
	var evs []any
	var ps []string
	for i := first; i < first+n; i++ {
		p := h.addPatient(i)
		ps = append(ps, p)
		evs = append(evs, booking(p, fmt.Sprintf("B%d", i), 1, start, h.clock.Now().Add(-time.Hour)))
	}
	h.process(h.dispatcher(), evs...)
	return ps
}

// senders starts n dispatchers over their own Redis connections, as n processes would.
// They look every reminder up before sending (lookup_first), so that any request a held
// reminder makes to Notify shows.
func (h *harness) senders(n int, b reminders.Budget) []*reminders.Dispatcher {
	o := h.opts
	o.Budget = b
	o.Workers = 4
	o.LookupFirst = true
	var ds []*reminders.Dispatcher
	for range n {
		ds = append(ds, h.dispatcherWith(h.client(), h.notifier(testKey, 3), o))
	}
	return ds
}

// sendAll runs one SendDue pass on every dispatcher at once.
func sendAll(t *testing.T, ds []*reminders.Dispatcher) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(ds))
	for _, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.SendDue(context.Background()); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func held(ds []*reminders.Dispatcher) (hour, day, patient int64) {
	for _, d := range ds {
		hour += d.Stats.HeldHour.Load()
		day += d.Stats.HeldDay.Load()
		patient += d.Stats.HeldPatient.Load()
	}
	return
}

// Four dispatchers with four workers each race for 40 due reminders under an hourly cap of
// 7: exactly 7 go out, on standalone Redis and on a Cluster. The rest are held — still
// pending, neither failed nor cancelled — and go out, each once, when the cap is raised on
// the running dispatchers.
func TestBudgetHoldsAcrossConcurrentSenders(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs func(testing.TB) []string
	}{
		{"standalone", func(tb testing.TB) []string { return []string{testenv.Redis(tb)} }},
		{"cluster", testenv.RedisCluster},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.addrs(t)...)
			h.dueNow(0, 40)
			ds := h.senders(4, reminders.Budget{PerHour: 7, PerDay: 100})
			ctx := context.Background()

			sendAll(t, ds)
			if got := len(h.stub.Messages()); got != 7 {
				t.Fatalf("%d messages under an hourly cap of 7", got)
			}
			// Passes at each recheck within the hour send nothing more, and ask Notify nothing.
			requests := h.stub.Requests("GET /v2/notifications") + h.stub.Requests("POST /v2/notifications/sms")
			for range 3 {
				h.clock.Advance(time.Minute)
				sendAll(t, ds)
			}
			if got := len(h.stub.Messages()); got != 7 {
				t.Fatalf("%d messages after rechecks in the same hour", got)
			}
			if n := h.stub.Requests("GET /v2/notifications") + h.stub.Requests("POST /v2/notifications/sms"); n != requests {
				t.Fatalf("held reminders made %d requests to Notify at their rechecks", n-requests)
			}
			if pending, _ := ds[0].Pending(ctx); pending != 33 {
				t.Fatalf("%d pending, want the 33 held", pending)
			}
			if hour, _, _ := held(ds); hour < 33 {
				t.Fatalf("%d holds counted, want at least 33", hour)
			}
			for _, d := range ds {
				if d.Stats.Failed.Load()+d.Stats.Cancelled.Load() != 0 {
					t.Fatalf("held reminders were failed or cancelled: %d, %d", d.Stats.Failed.Load(), d.Stats.Cancelled.Load())
				}
			}
			if u, err := ds[1].BudgetUsage(ctx); err != nil || u.Hour != 7 || u.Day != 7 {
				t.Fatalf("budget usage %+v %v, want 7 and 7", u, err)
			}

			// The operator raises the cap; within one recheck everything held is sent.
			for _, d := range ds {
				if err := d.SetBudget(reminders.Budget{PerHour: 1000, PerDay: 1000}); err != nil {
					t.Fatal(err)
				}
			}
			h.clock.Advance(time.Minute)
			sendAll(t, ds)
			if got, refs := len(h.stub.Messages()), len(h.byReference()); got != 40 || refs != 40 {
				t.Fatalf("%d messages for %d references after raising the cap, want 40 each once", got, refs)
			}
			if pending, _ := ds[0].Pending(ctx); pending != 0 {
				t.Fatalf("%d still pending", pending)
			}
		})
	}
}

// A day cap holds reminders into the next day, past the quiet hours, without them being
// dropped as late; the count starts again at local midnight.
func TestBudgetDayCapCarriesOver(t *testing.T) {
	h := newHarness(t)
	h.dueNow(0, 5)
	d := h.senders(1, reminders.Budget{PerDay: 3, Recheck: policy.Duration(30 * time.Minute)})[0]
	h.runUntil(d, t0.Add(14*time.Hour)) // 23:00, the end of the first day
	if got := len(h.stub.Messages()); got != 3 {
		t.Fatalf("%d messages on the first day, cap 3", got)
	}
	if d.Stats.HeldDay.Load() == 0 {
		t.Fatal("no day-cap holds counted")
	}
	// The stub stamps messages with the wall clock (its JWT iat check needs it), so the
	// quiet hours are checked on the dispatcher's manual clock instead: nothing by 07:30.
	h.runUntil(d, t0.Add(day-90*time.Minute))
	if got := len(h.stub.Messages()); got != 3 {
		t.Fatalf("%d messages by 07:30 on the second day, want the first day's 3 (quiet hours until 08:00)", got)
	}
	h.runUntil(d, t0.Add(day+2*time.Hour))
	if got := len(h.stub.Messages()); got != 5 || d.Stats.Cancelled.Load() != 0 {
		t.Fatalf("%d messages, %d cancelled by the second morning, want 5 and 0", got, d.Stats.Cancelled.Load())
	}
}

// One patient with three appointments gets one message a day; another patient is not held
// back by that. The third reminder, held until its appointment is too close, is cancelled
// with the reason "budget".
func TestBudgetPerPatient(t *testing.T) {
	h := newHarness(t)
	busy, other := h.addPatient(1), h.addPatient(2)
	start := t0.Add(2 * day)
	booked := t0.Add(-time.Hour)
	h.process(h.dispatcher(), booking(busy, "P1", 1, start, booked), booking(busy, "P2", 1, start, booked),
		booking(busy, "P3", 1, start, booked), booking(other, "P4", 1, start, booked))
	d := h.senders(1, reminders.Budget{PerPatientPerDay: 1, Recheck: policy.Duration(time.Hour)})[0]

	if _, err := d.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	count := func() (busyN, otherN int) {
		for _, m := range h.stub.Messages() {
			switch m.PhoneNumber {
			case contactsDrama(1):
				busyN++
			case contactsDrama(2):
				otherN++
			}
		}
		return
	}
	if b, o := count(); b != 1 || o != 1 {
		t.Fatalf("first pass: %d to the busy patient, %d to the other; want 1 and 1", b, o)
	}
	h.runUntil(d, start)
	if b, o := count(); b != 2 || o != 1 {
		t.Fatalf("by the appointment: %d to the busy patient (one a day for two days), %d to the other", b, o)
	}
	if d.Stats.HeldPatient.Load() == 0 || d.Stats.BudgetCancelled.Load() != 1 || d.Stats.Failed.Load() != 0 {
		t.Fatalf("held %d, cancelled for the budget %d, failed %d; want >0, 1, 0",
			d.Stats.HeldPatient.Load(), d.Stats.BudgetCancelled.Load(), d.Stats.Failed.Load())
	}
}

// A message Notify refused outright (400, or 429) was not sent, so it does not spend the
// budget; the next reminder still fits under a cap of one.
func TestBudgetRefundsRefusedSends(t *testing.T) {
	h := newHarness(t)
	h.dueNow(0, 2)
	h.stub.Inject(notifystub.Fault{Status: 400}, notifystub.Fault{Status: 429, RetryAfter: time.Hour})
	o := h.opts
	o.Budget = reminders.Budget{PerDay: 1}
	o.Workers = 1
	d := h.dispatcherWith(h.client(), h.notifier(testKey, 3), o)
	if _, err := d.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if u, err := d.BudgetUsage(context.Background()); err != nil || u.Day != 0 {
		t.Fatalf("usage %+v %v after a 400 and a 429, want 0", u, err)
	}
	h.clock.Advance(time.Hour + time.Minute)
	if _, err := d.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(h.stub.Messages()); n != 1 || d.Stats.Failed.Load() != 1 || d.Stats.Sent.Load() != 1 {
		t.Fatalf("%d messages, %d failed, %d sent; want the 429 one sent under the cap", n, d.Stats.Failed.Load(), d.Stats.Sent.Load())
	}
}

func TestBudgetValidate(t *testing.T) {
	for _, b := range []reminders.Budget{{PerHour: -1}, {PerDay: -1}, {PerPatientPerDay: -2}, {PerHour: 10, PerDay: 5},
		{Recheck: policy.Duration(-time.Second)}} {
		if err := b.Validate(); err == nil {
			t.Errorf("%+v accepted", b)
		}
	}
	b := reminders.Budget{PerHour: 5, PerDay: 5}
	if err := b.Validate(); err != nil || b.Recheck != policy.Duration(time.Minute) {
		t.Fatalf("%+v: %v", b, err)
	}
}
