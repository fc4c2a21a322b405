package reminders_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
)

// oneDue books one appointment whose 2-day reminder is due now.
func (h *harness) oneDue(patient int) (string, time.Time) {
	p := h.addPatient(patient)
	start := h.clock.Now().Add(2 * day)
	h.process(h.dispatcher(), booking(p, "F1", 1, start, h.clock.Now().Add(-time.Hour)))
	return p, start
}

// A 5xx may come after Notify created the message, so it is never resent inside the
// request: the reminder goes back for UncertainRecheck and is looked up first. A plain 500
// (nothing created) is then sent again; an accepted-then-500 is found, not sent again.
func TestServerErrorsAreLookedUpNotResent(t *testing.T) {
	h := newHarness(t)
	h.oneDue(1)
	h.stub.Inject(notifystub.Fault{Status: 500}, notifystub.Fault{Status: 500, Accept: true})
	d := h.dispatcher()
	ctx := context.Background()
	if _, err := d.SendDue(ctx); err != nil {
		t.Fatal(err)
	}
	next, _, _ := d.NextDue(ctx)
	if posts, gets := h.stub.Requests("POST /v2/notifications/sms"), h.stub.Requests("GET /v2/notifications"); posts != 1 || gets != 0 ||
		d.Stats.Uncertain.Load() != 1 || !next.Equal(h.clock.Now().Add(h.opts.UncertainRecheck)) {
		t.Fatalf("after a 500: %d sends, %d lookups, %d uncertain, next due %s; want 1, 0, 1 and in %s",
			posts, gets, d.Stats.Uncertain.Load(), next, h.opts.UncertainRecheck)
	}
	if _, err := d.SendDue(ctx); err != nil || h.stub.Requests("POST /v2/notifications/sms") != 1 {
		t.Fatalf("sent again before the recheck (%v)", err)
	}
	h.advance(h.opts.UncertainRecheck) // looked up: not there, sent again: accepted, then 500
	if _, err := d.SendDue(ctx); err != nil {
		t.Fatal(err)
	}
	h.advance(h.opts.UncertainRecheck) // looked up: there
	if _, err := d.SendDue(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(h.stub.Messages()); n != 1 || d.Stats.Sent.Load() != 1 || d.Stats.Recovered.Load() != 1 || d.Stats.Uncertain.Load() != 2 {
		t.Fatalf("%d messages, %d sent, %d recovered, %d uncertain; want 1, 1, 1, 2", n, d.Stats.Sent.Load(), d.Stats.Recovered.Load(), d.Stats.Uncertain.Load())
	}
	if posts, gets := h.stub.Requests("POST /v2/notifications/sms"), h.stub.Requests("GET /v2/notifications"); posts != 2 || gets != 2 {
		t.Fatalf("%d sends and %d lookups; want 2 sends (500, accepted-then-500) and a lookup before the second and after it", posts, gets)
	}
}

// 429 waits for Retry-After; a Retry-After longer than the client will wait puts the
// reminder back in the queue for then instead of holding a worker.
func TestRateLimitHonoursRetryAfter(t *testing.T) {
	h := newHarness(t)
	h.oneDue(2)
	h.stub.Inject(notifystub.Fault{Status: 429, RetryAfter: time.Second})
	d := h.dispatcher()
	began := time.Now()
	if _, err := d.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < time.Second || len(h.stub.Messages()) != 1 {
		t.Fatalf("sent %d after %s; want 1 after waiting the 1s Retry-After", len(h.stub.Messages()), took)
	}

	h.oneDue(3)
	h.stub.Inject(notifystub.Fault{Status: 429, RetryAfter: time.Hour})
	if _, err := d.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	next, _, _ := d.NextDue(context.Background())
	if d.Stats.Deferred.Load() != 1 || !next.Equal(h.clock.Now().Add(time.Hour)) {
		t.Fatalf("deferred %d, next due %s; want 1 and an hour from now", d.Stats.Deferred.Load(), next)
	}
	h.clock.Advance(time.Hour)
	if _, err := d.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(h.stub.Messages()) != 2 {
		t.Fatalf("%d messages after the wait", len(h.stub.Messages()))
	}
}

// A slow answer times out: the reminder is not resent but looked up after the recheck, and
// the message the slow attempt created is found.
func TestTimeoutIsLookedUpNotResent(t *testing.T) {
	h := newHarness(t)
	h.oneDue(4)
	h.stub.Inject(notifystub.Fault{Delay: 5 * time.Second, Status: 201, Accept: true})
	d := h.dispatcher() // client timeout 2s
	if _, err := d.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d.Stats.Uncertain.Load() != 1 || d.Stats.Sent.Load() != 0 {
		t.Fatalf("%d uncertain, %d sent after the timeout; want 1 and 0", d.Stats.Uncertain.Load(), d.Stats.Sent.Load())
	}
	h.advance(h.opts.UncertainRecheck)
	if _, err := d.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(h.stub.Messages()) != 1 || d.Stats.Sent.Load() != 1 || h.stub.Requests("POST /v2/notifications/sms") != 1 {
		t.Fatalf("%d messages, %d sent, %d sends", len(h.stub.Messages()), d.Stats.Sent.Load(), h.stub.Requests("POST /v2/notifications/sms"))
	}
}

// 400 and 403 are not retried: the reminder fails and the failed topic says why.
func TestBadRequestAndForbiddenAreNotRetried(t *testing.T) {
	h := newHarness(t)
	h.oneDue(5)
	o := h.opts
	o.Templates.Standard = "0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f" // unknown to Notify
	d := h.dispatcherWith(h.client(), h.notifier(testKey, 3), o)
	if _, err := d.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	f := h.failed.events(t)
	if len(f) != 1 || f[0].StatusCode != http.StatusBadRequest || !strings.Contains(f[0].Reason, "Template not found") {
		t.Fatalf("failed events %+v", f)
	}
	if n := h.stub.Requests("POST /v2/notifications/sms"); n != 1 {
		t.Fatalf("%d sends for a 400, want 1", n)
	}

	h2 := newHarness(t)
	h2.oneDue(6)
	wrongSecret := testKey[:len(testKey)-36] + "00000000-0000-4000-8000-000000000000"
	d2 := h2.dispatcherWith(h2.client(), h2.notifier(wrongSecret, 3), h2.opts)
	if _, err := d2.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	f = h2.failed.events(t)
	if len(f) != 1 || f[0].StatusCode != http.StatusForbidden || !strings.Contains(f[0].Reason, "AuthError") {
		t.Fatalf("failed events %+v", f)
	}
	if n := h2.stub.Requests("POST /v2/notifications/sms"); n != 1 || d2.Stats.Failed.Load() != 1 {
		t.Fatalf("%d sends for a 403, want 1", n)
	}
	// Failed is final: a later pass sends nothing.
	h2.clock.Advance(time.Hour)
	if _, err := d2.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := h2.stub.Requests("POST /v2/notifications/sms"); n != 1 {
		t.Fatalf("%d sends after failing", n)
	}
}

// The dispatcher dies after Notify accepted the message and before it recorded "sent". The
// next one takes the claim over when its lease ends, finds the message by reference and
// records it: still one SMS.
func TestCrashBetweenSentAndRecorded(t *testing.T) {
	h := newHarness(t)
	h.oneDue(7)
	// Notify accepts, then the answer is slow; the process dies while waiting for it.
	// Its client gives up after 800ms with no retry, well after the test has seen the message;
	// a 4s lease covers two such sends (Config.Validate checks that), so the heir takes over soon.
	h.stub.Inject(notifystub.Fault{Status: 201, Accept: true, Delay: 6 * time.Second})
	doomedRedis := h.client()
	o := h.opts
	o.Lease, o.UncertainRecheck = 4*time.Second, 2*time.Second
	k, err := notify.ParseKey(testKey)
	if err != nil {
		t.Fatal(err)
	}
	quick, err := notify.New(notify.Config{BaseURL: h.url, Key: k, MaxRetries: -1, Timeout: 800 * time.Millisecond,
		RetryWaitMin: 5 * time.Millisecond, RetryWaitMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	doomed := h.dispatcherWith(doomedRedis, quick, o)
	done := make(chan error, 1)
	go func() { _, err := doomed.SendDue(context.Background()); done <- err }()
	testenv.Eventually(t, 5*time.Second, func() bool { return len(h.stub.Messages()) == 1 }, "Notify to accept the message")
	doomedRedis.Close() // the crash: nothing more reaches Redis from this process
	if err := <-done; err == nil {
		t.Fatal("the crashed sender recorded its outcome")
	}

	heir := h.dispatcher()
	testenv.Eventually(t, 20*time.Second, func() bool {
		_, err := heir.SendDue(context.Background())
		return err == nil && heir.Stats.Sent.Load() == 1
	}, "the next dispatcher to take the claim over after the lease")
	if len(h.stub.Messages()) != 1 || heir.Stats.Recovered.Load() != 1 {
		t.Fatalf("%d messages, %d recovered; want 1 and 1", len(h.stub.Messages()), heir.Stats.Recovered.Load())
	}
	if n, _ := heir.Pending(context.Background()); n != 0 {
		t.Fatalf("%d still pending", n)
	}
}

// With LookupFirst, even a reminder whose record lost its claim (a Redis failover dropping
// acknowledged writes) is looked up before it is sent, so Notify's record wins.
func TestLookupFirstClosesLostClaimWindow(t *testing.T) {
	h := newHarness(t)
	p, _ := h.oneDue(8)
	d := h.dispatcher()
	rid := d.ReminderID(p, "F1", 1, "standard-2d")
	// Notify already has it; Redis does not remember sending it.
	if _, err := h.notifier(testKey, 0).SendSMS(context.Background(), notify.SMS{PhoneNumber: contactsDrama(8),
		TemplateID: stdTemplate, Reference: rid,
		Personalisation: map[string]string{"appointment_date": "x", "appointment_time": "y"}}); err != nil {
		t.Fatal(err)
	}
	o := h.opts
	o.LookupFirst = true
	careful := h.dispatcherWith(h.client(), h.notifier(testKey, 3), o)
	if _, err := careful.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(h.stub.Messages()) != 1 || careful.Stats.Recovered.Load() != 1 {
		t.Fatalf("%d messages, %d recovered; want 1 and 1", len(h.stub.Messages()), careful.Stats.Recovered.Load())
	}
}
