package notifystub_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
)

func lateClient(t *testing.T, url string, timeout time.Duration) *notify.Client {
	t.Helper()
	k, _ := notify.ParseKey(key)
	c, err := notify.New(notify.Config{BaseURL: url, Key: k, MaxRetries: 3, Timeout: timeout,
		RetryWaitMin: time.Millisecond, RetryWaitMax: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var lateSMS = notify.SMS{PhoneNumber: "07700900001", TemplateID: template,
	Personalisation: map[string]string{"appointment_date": "Monday"}, Reference: "late-1"}

// A Late fault: the caller gives up with nothing to show, a lookup finds nothing, and the
// message appears between CreateAfter and CreateAfterMax later on the stub's timers. This is
// the fault under which "look up a moment later, then resend" sends two messages.
func TestLateFaultCreatesAfterTheCallerGaveUp(t *testing.T) {
	k, _ := notify.ParseKey(key)
	start := time.Date(2025, 3, 3, 9, 0, 0, 0, time.UTC)
	timers := notifystub.NewTimers(start)
	stub, err := notifystub.New(notifystub.Config{Key: k, Templates: map[string][]string{template: {"appointment_date"}},
		AfterFunc: timers.AfterFunc})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	c := lateClient(t, srv.URL, 200*time.Millisecond)
	stub.Inject(notifystub.Fault{Late: true, CreateAfter: time.Second, CreateAfterMax: 30 * time.Second})
	if _, err := c.SendSMS(context.Background(), lateSMS); !notify.Uncertain(err) {
		t.Fatalf("err %v, want an uncertain send", err)
	}
	found, err := c.FindByReference(context.Background(), lateSMS.Reference)
	if err != nil || len(found) != 0 || stub.Pending() != 1 || stub.Requests("POST /v2/notifications/sms") != 1 {
		t.Fatalf("right after giving up: found %d (%v), pending %d, %d sends; want 0, 1 and 1",
			len(found), err, stub.Pending(), stub.Requests("POST /v2/notifications/sms"))
	}
	if next, ok := timers.Next(); !ok || next.Before(start.Add(time.Second)) || next.After(start.Add(30*time.Second)) {
		t.Fatalf("next timer %s (%v), want within 1-30 s of the request", next, ok)
	}
	timers.Advance(start.Add(999 * time.Millisecond))
	if n := len(stub.Messages()); n != 0 {
		t.Fatalf("%d messages before CreateAfter", n)
	}
	timers.Advance(start.Add(30 * time.Second))
	if _, ok := timers.Next(); ok {
		t.Fatal("a timer still pending after CreateAfterMax")
	}
	found, err = c.FindByReference(context.Background(), lateSMS.Reference)
	if err != nil || len(found) != 1 || stub.Pending() != 0 {
		t.Fatalf("after CreateAfterMax: found %d (%v), pending %d; want 1 and 0", len(found), err, stub.Pending())
	}
}

// On the real timers: held until the client times out (Delay 0), or dropped after Delay
// while the client still waits; from the stub's random faults (Chaos.CreatedLate) too.
func TestLateFaultOnRealTimers(t *testing.T) {
	k, _ := notify.ParseKey(key)
	for _, tc := range []struct {
		name  string
		fault *notifystub.Fault
	}{
		{"held until the client gives up", &notifystub.Fault{Late: true, CreateAfter: 20 * time.Millisecond, CreateAfterMax: 50 * time.Millisecond}},
		{"connection dropped", &notifystub.Fault{Late: true, Delay: 50 * time.Millisecond, CreateAfter: 20 * time.Millisecond, CreateAfterMax: 50 * time.Millisecond}},
		{"chaos", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := notifystub.Config{Key: k, Templates: map[string][]string{template: {"appointment_date"}}}
			if tc.fault == nil {
				cfg.Chaos = notifystub.Chaos{CreatedLate: 1, CreateAfter: 20 * time.Millisecond, CreateAfterMax: 50 * time.Millisecond}
			}
			stub, err := notifystub.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(stub)
			defer srv.Close()
			if tc.fault != nil {
				stub.Inject(*tc.fault)
			}
			c := lateClient(t, srv.URL, 5*time.Second)
			if tc.fault == nil || tc.fault.Delay == 0 {
				c = lateClient(t, srv.URL, 200*time.Millisecond)
			}
			if _, err := c.SendSMS(context.Background(), lateSMS); !notify.Uncertain(err) {
				t.Fatalf("err %v, want an uncertain send", err)
			}
			testenv.Eventually(t, 10*time.Second, func() bool { return stub.Pending() == 0 }, "the late message to be created")
			if m := stub.Messages(); len(m) != 1 || m[0].Reference != lateSMS.Reference || stub.Requests("POST /v2/notifications/sms") != 1 {
				t.Fatalf("%d messages after %d sends; want 1 and 1", len(m), stub.Requests("POST /v2/notifications/sms"))
			}
		})
	}
}
