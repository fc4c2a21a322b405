package reminders_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders"
	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
)

// quickNotifier gives up on an attempt after 300ms, so held answers cost little.
func (h *harness) quickNotifier() *notify.Client {
	h.t.Helper()
	k, err := notify.ParseKey(testKey)
	if err != nil {
		h.t.Fatal(err)
	}
	c, err := notify.New(notify.Config{BaseURL: h.url, Key: k, MaxRetries: 3, Timeout: 300 * time.Millisecond,
		RetryWaitMin: 5 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// lookupThenResend is the send-once logic this project had before: a send whose outcome is
// unknown is looked up after 250-500 ms, inside the request, and sent again if not found.
type lookupThenResend struct{ *notify.Client }

func (o lookupThenResend) SendSMS(ctx context.Context, m notify.SMS) (notify.Notification, error) {
	n, err := o.Client.SendSMS(ctx, m)
	for i := 0; i < 3 && notify.Uncertain(err); i++ {
		time.Sleep(250*time.Millisecond + rand.N(250*time.Millisecond))
		if found, ferr := o.FindByReference(ctx, m.Reference); ferr == nil && len(found) > 0 {
			return found[0], nil
		}
		n, err = o.Client.SendSMS(ctx, m)
	}
	return n, err
}

// settleStub runs the stub's timers far ahead, so every late message has been created.
func (h *harness) settleStub() {
	h.t.Helper()
	h.timers.Advance(h.clock.Now().Add(time.Hour))
	if n := h.stub.Pending(); n != 0 {
		h.t.Fatalf("%d late messages still to be created", n)
	}
}

// Notify creates the message after the client gave up, 1-29 s later. The old logic, which
// looked the reference up a moment later inside the request, finds nothing and sends a
// second SMS; the dispatcher now records the send as uncertain and looks it up only after
// UncertainRecheck (30 s here), and sends one.
func TestLateCreationIsNotSentTwice(t *testing.T) {
	late := notifystub.Fault{Late: true, CreateAfter: time.Second, CreateAfterMax: 29 * time.Second}
	for _, tc := range []struct {
		name     string
		notifier func(h *harness) reminders.Notifier
		want     int // messages with the reminder's reference
	}{
		{"old: looked up inside the request, sent again", func(h *harness) reminders.Notifier { return lookupThenResend{h.quickNotifier()} }, 2},
		{"new: uncertain, looked up after the recheck", func(h *harness) reminders.Notifier { return h.quickNotifier() }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			p, _ := h.oneDue(9)
			h.stub.Inject(late)
			d := h.dispatcherWith(h.client(), tc.notifier(h), h.opts)
			h.runUntil(d, h.clock.Now().Add(2*time.Hour))
			h.settleStub()
			rid := d.ReminderID(p, "F1", 1, "standard-2d")
			if got := len(h.byReference()[rid]); got != tc.want || len(h.stub.Messages()) != tc.want {
				t.Fatalf("%d messages for the reminder (%d in all), want %d", got, len(h.stub.Messages()), tc.want)
			}
			if d.Stats.Sent.Load() != 1 {
				t.Fatalf("%d recorded sent, want 1", d.Stats.Sent.Load())
			}
		})
	}
}

// Two dispatchers race over reminders while Notify creates messages late, answers 500
// before or after creating them, and times out; and a recheck shorter than Notify's
// late creations is shown to send twice, so the figure matters.
func TestUncertainSendsAcrossRacingDispatchers(t *testing.T) {
	faults := []notifystub.Fault{
		{Late: true, CreateAfter: 5 * time.Second, CreateAfterMax: 29 * time.Second},
		{Status: 500},
		{Late: true, CreateAfter: 5 * time.Second, CreateAfterMax: 29 * time.Second},
		{Status: 500, Accept: true},
		{Delay: time.Second, Status: 201, Accept: true},
		{Late: true, Delay: 100 * time.Millisecond, CreateAfter: 5 * time.Second, CreateAfterMax: 29 * time.Second},
		{Delay: time.Second}, // nothing created
		{Late: true, CreateAfter: 29 * time.Second, CreateAfterMax: 29 * time.Second},
	}
	const patients = 8
	for _, tc := range []struct {
		name    string
		recheck time.Duration
		dups    bool
	}{
		{"recheck 30s, above Notify's 29s", 30 * time.Second, false},
		{"recheck 3s, below it", 3 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			var rids []string
			d0 := h.dispatcher()
			for i := range patients {
				p, _ := h.oneDue(100 + i)
				rids = append(rids, d0.ReminderID(p, "F1", 1, "standard-2d"))
			}
			h.stub.Inject(faults...)
			o := h.opts
			o.UncertainRecheck = tc.recheck
			o.Workers = 2
			ds := []*reminders.Dispatcher{h.dispatcherWith(h.client(), h.quickNotifier(), o), h.dispatcherWith(h.client(), h.quickNotifier(), o)}
			ctx := context.Background()
			for round := 0; ; round++ {
				if round > 50 {
					t.Fatal("reminders still pending after 50 rounds")
				}
				var wg sync.WaitGroup
				errs := make([]error, len(ds))
				for i, d := range ds {
					wg.Add(1)
					go func() { defer wg.Done(); _, errs[i] = d.SendDue(ctx) }()
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
				next, ok, err := ds[0].NextDue(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				if next.After(h.clock.Now()) {
					h.setClock(next)
				}
			}
			h.settleStub()
			refs := h.byReference()
			dups := 0
			for _, rid := range rids {
				switch n := len(refs[rid]); {
				case n == 0:
					t.Errorf("reminder %s never sent", rid)
				case n > 1:
					dups += n - 1
				}
			}
			if len(refs) != patients {
				t.Errorf("%d references, want %d", len(refs), patients)
			}
			var sent, uncertain, recovered int64
			for _, d := range ds {
				sent, uncertain, recovered = sent+d.Stats.Sent.Load(), uncertain+d.Stats.Uncertain.Load(), recovered+d.Stats.Recovered.Load()
			}
			t.Logf("%d messages, %d duplicates; dispatchers: %d sent, %d uncertain sends, %d found by reference", len(h.stub.Messages()), dups, sent, uncertain, recovered)
			if tc.dups {
				if dups == 0 {
					t.Fatal("a recheck shorter than the late creations sent no duplicate: the fault does not bite")
				}
				return
			}
			// Every fault leaves the client not knowing (a timeout that created nothing too);
			// six of them had created the message, two (the 500, the plain timeout) had not
			// and are sent again after the lookup.
			if posts := h.stub.Requests("POST /v2/notifications/sms"); dups != 0 || sent != patients || uncertain != 8 || recovered != 6 || posts != 10 {
				t.Fatalf("%d duplicates, %d sent, %d uncertain, %d recovered, %d sends; want 0, %d, 8, 6 and 10", dups, sent, uncertain, recovered, posts, patients)
			}
		})
	}
}

// The dispatcher dies while Notify is still to create its message (a late creation): the
// claim is taken over at the end of the lease, which is at least twice UncertainRecheck, by a
// dispatcher that looks the reference up first and finds it.
func TestCrashDuringLateCreation(t *testing.T) {
	h := newHarness(t)
	h.oneDue(20)
	h.stub.Inject(notifystub.Fault{Late: true, CreateAfter: 500 * time.Millisecond, CreateAfterMax: 1500 * time.Millisecond})
	o := h.opts
	o.Lease, o.UncertainRecheck = 4*time.Second, 2*time.Second
	doomedRedis := h.client()
	k, err := notify.ParseKey(testKey)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := notify.New(notify.Config{BaseURL: h.url, Key: k, MaxRetries: -1, Timeout: time.Second,
		RetryWaitMin: 5 * time.Millisecond, RetryWaitMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	doomed := h.dispatcherWith(doomedRedis, slow, o)
	done := make(chan error, 1)
	go func() { _, err := doomed.SendDue(context.Background()); done <- err }()
	testenv.Eventually(t, 5*time.Second, func() bool { return h.stub.Requests("POST /v2/notifications/sms") == 1 }, "the send to reach Notify")
	doomedRedis.Close() // the crash: it cannot record the uncertain send
	if err := <-done; err == nil {
		t.Fatal("the crashed sender recorded its outcome")
	}
	// The lease runs out on the wall clock; the same time passes on the stub's and the
	// dispatchers' clock, and Notify creates the message within it.
	h.advance(o.Lease)
	heir := h.dispatcherWith(h.client(), h.quickNotifier(), o)
	testenv.Eventually(t, 20*time.Second, func() bool {
		_, err := heir.SendDue(context.Background())
		return err == nil && heir.Stats.Sent.Load() == 1
	}, "the next dispatcher to take the claim over after the lease")
	h.settleStub()
	if len(h.stub.Messages()) != 1 || heir.Stats.Recovered.Load() != 1 || h.stub.Requests("POST /v2/notifications/sms") != 1 {
		t.Fatalf("%d messages, %d recovered, %d sends; want 1, 1, 1", len(h.stub.Messages()), heir.Stats.Recovered.Load(), h.stub.Requests("POST /v2/notifications/sms"))
	}
}
