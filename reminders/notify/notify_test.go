package notify_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
)

const (
	key      = "my-service_live-26785a09-ab16-4eb0-8407-a37497a57506-3d844edf-8d35-48ac-975b-e847b4f122b0"
	template = "f33517ff-2a88-4f6e-b855-c550268ce08a"
)

func TestParseKey(t *testing.T) {
	k, err := notify.ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if k.Name != "my-service_live" || k.ServiceID != "26785a09-ab16-4eb0-8407-a37497a57506" || string(k.Secret()) != "3d844edf-8d35-48ac-975b-e847b4f122b0" {
		t.Fatalf("parsed %q %q", k.Name, k.ServiceID)
	}
	if s := fmt.Sprint(k) + fmt.Sprintf("%v %+v", k, k); strings.Contains(s, "3d844edf") {
		t.Fatalf("key prints its secret: %s", s)
	}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "key", k)
	if strings.Contains(logged.String(), "3d844edf") {
		t.Fatalf("key logs its secret: %s", logged.String())
	}
	for _, bad := range []string{
		"",
		"26785a09-ab16-4eb0-8407-a37497a57506-3d844edf-8d35-48ac-975b-e847b4f122b0", // no name
		"name-26785a09-ab16-4eb0-8407-a37497a57506_3d844edf-8d35-48ac-975b-e847b4f122b0",
		"name-26785a09-ab16-4eb0-8407-a37497a57506-3d844edf-8d35-48ac-975b-e847b4f122bZ",
		"name-26785a09-ab16-4eb0-8407-a37497a5750x-3d844edf-8d35-48ac-975b-e847b4f122b0",
	} {
		_, err := notify.ParseKey(bad)
		if !errors.Is(err, notify.ErrBadKey) {
			t.Errorf("%q: %v", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), "3d844edf") {
			t.Errorf("error echoes the key: %v", err)
		}
	}
}

func TestToken(t *testing.T) {
	k, _ := notify.ParseKey(key)
	now := time.Unix(1_700_000_000, 0)
	tok, err := k.Token(now)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	parsed, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return k.Secret(), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithoutClaimsValidation())
	if err != nil || !parsed.Valid {
		t.Fatal(err)
	}
	if claims["iss"] != k.ServiceID || claims["iat"] != float64(now.Unix()) || len(claims) != 2 {
		t.Fatalf("claims %v", claims)
	}
}

func newStub(t *testing.T) (*notifystub.Stub, string) {
	k, _ := notify.ParseKey(key)
	s, err := notifystub.New(notifystub.Config{Key: k, Templates: map[string][]string{template: {"day"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func newClient(t *testing.T, url string, retries int) *notify.Client {
	k, _ := notify.ParseKey(key)
	c, err := notify.New(notify.Config{BaseURL: url, Key: k, MaxRetries: retries, Timeout: time.Second,
		RetryWaitMin: time.Millisecond, RetryWaitMax: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var sms = notify.SMS{PhoneNumber: "07700 900123", TemplateID: template, Personalisation: map[string]string{"day": "Monday"}, Reference: "ref-1"}

func TestSendAndFind(t *testing.T) {
	stub, url := newStub(t)
	c := newClient(t, url, 3)
	n, err := c.SendSMS(context.Background(), sms)
	if err != nil || n.ID == "" || n.Reference != "ref-1" {
		t.Fatalf("%+v %v", n, err)
	}
	found, err := c.FindByReference(context.Background(), "ref-1")
	if err != nil || len(found) != 1 || found[0].ID != n.ID {
		t.Fatalf("%+v %v", found, err)
	}
	if none, err := c.FindByReference(context.Background(), "ref-2"); err != nil || len(none) != 0 {
		t.Fatalf("%+v %v", none, err)
	}
	if m := stub.Messages(); len(m) != 1 || m[0].Personalisation["day"] != "Monday" {
		t.Fatalf("%+v", m)
	}
}

func TestRetryPolicy(t *testing.T) {
	for _, tc := range []struct {
		name          string
		faults        []notifystub.Fault
		sms           notify.SMS
		wantPosts     int
		wantErr       int  // HTTP status of the error, 0 for success or none
		wantUncertain bool // the error says Notify may have created the message
		minTook       time.Duration
	}{
		{"429 honours Retry-After", []notifystub.Fault{{Status: 429, RetryAfter: time.Second}}, sms, 2, 0, false, time.Second},
		{"429 twice then ok", []notifystub.Fault{{Status: 429}, {Status: 429}}, sms, 3, 0, false, 0},
		{"429 longer than we wait is handed back", []notifystub.Fault{{Status: 429, RetryAfter: time.Minute}}, sms, 1, 429, false, 0},
		// Anything that may have created the message is handed back at once, never resent.
		{"500 is uncertain, not retried", []notifystub.Fault{{Status: 500}}, sms, 1, 500, true, 0},
		{"502 after accepting is uncertain", []notifystub.Fault{{Status: 502, Accept: true}}, sms, 1, 502, true, 0},
		{"429 then 500 stops at the 500", []notifystub.Fault{{Status: 429}, {Status: 500}}, sms, 2, 500, true, 0},
		{"timeout is uncertain, not retried", []notifystub.Fault{{Delay: 3 * time.Second}}, sms, 1, 0, true, time.Second},
		{"400 is not retried", nil, notify.SMS{PhoneNumber: "01632 960000", TemplateID: template, Personalisation: map[string]string{"day": "x"}}, 1, 400, false, 0},
		{"missing personalisation", nil, notify.SMS{PhoneNumber: "07700900001", TemplateID: template}, 1, 400, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stub, url := newStub(t)
			stub.Inject(tc.faults...)
			began := time.Now()
			_, err := newClient(t, url, 3).SendSMS(context.Background(), tc.sms)
			if took := time.Since(began); took < tc.minTook {
				t.Fatalf("returned after %s, want at least %s", took, tc.minTook)
			}
			if posts := stub.Requests("POST /v2/notifications/sms"); posts != tc.wantPosts {
				t.Fatalf("%d sends, want %d (err %v)", posts, tc.wantPosts, err)
			}
			if gets := stub.Requests("GET /v2/notifications"); gets != 0 {
				t.Fatalf("%d lookups inside a send, want none", gets)
			}
			if notify.Uncertain(err) != tc.wantUncertain {
				t.Fatalf("uncertain = %v, want %v (err %v)", notify.Uncertain(err), tc.wantUncertain, err)
			}
			var ae *notify.APIError
			switch {
			case tc.wantErr == 0 && !tc.wantUncertain && err != nil:
				t.Fatal(err)
			case tc.wantErr == 0 && tc.wantUncertain && errors.As(err, &ae):
				t.Fatalf("a timeout came back as HTTP %d", ae.StatusCode)
			case tc.wantErr != 0 && (!errors.As(err, &ae) || ae.StatusCode != tc.wantErr):
				t.Fatalf("error %v, want HTTP %d", err, tc.wantErr)
			case tc.wantErr == 400 && (!notify.Permanent(err) || ae.Errors[0].Message == ""):
				t.Fatalf("400 not permanent or without message: %v", err)
			case tc.wantErr == 429 && (notify.Permanent(err) || notify.RetryAfter(err) != time.Minute):
				t.Fatalf("429: permanent %v, retry after %s", notify.Permanent(err), notify.RetryAfter(err))
			case tc.wantUncertain && notify.Permanent(err):
				t.Fatalf("an uncertain send is permanent: %v", err)
			}
		})
	}
}

// A connection that was never made cannot have created anything: it is retried, and if it
// never succeeds the error is not uncertain.
func TestRefusedConnectionIsRetriedAndCertain(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	_, err = newClient(t, url, 2).SendSMS(context.Background(), sms)
	if err == nil || notify.Uncertain(err) || notify.Permanent(err) {
		t.Fatalf("err %v: uncertain %v, permanent %v; want a certain, transient failure", err, notify.Uncertain(err), notify.Permanent(err))
	}
}

// A send that Notify accepted but answered 500 is handed back as uncertain, and the message
// is there to be found by reference: the caller's lookup (later) is what prevents a resend.
func TestAcceptedThen500IsUncertainAndFindable(t *testing.T) {
	stub, url := newStub(t)
	stub.Inject(notifystub.Fault{Status: 500, Accept: true})
	c := newClient(t, url, 3)
	_, err := c.SendSMS(context.Background(), sms)
	if !notify.Uncertain(err) {
		t.Fatalf("err %v, want uncertain", err)
	}
	found, err := c.FindByReference(context.Background(), sms.Reference)
	if err != nil || len(found) != 1 || stub.Requests("POST /v2/notifications/sms") != 1 {
		t.Fatalf("found %+v (%v) after %d sends", found, err, stub.Requests("POST /v2/notifications/sms"))
	}
}

// Lookups are idempotent and keep their retries.
func TestLookupRetriesServerErrors(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(`{"notifications":[{"id":"n1","reference":"ref-1"}]}`))
	}))
	defer srv.Close()
	found, err := newClient(t, srv.URL, 3).FindByReference(context.Background(), "ref-1")
	if err != nil || len(found) != 1 || calls.Load() != 3 {
		t.Fatalf("%+v %v after %d calls", found, err, calls.Load())
	}
}

// Every attempt gets a fresh token: a retry after a long wait must not carry a stale iat.
func TestFreshTokenPerAttempt(t *testing.T) {
	var tokens []string
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokens = append(tokens, r.Header.Get("Authorization"))
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":"x"}`))
	}))
	defer srv.Close()
	c := newClient(t, srv.URL, 1)
	if _, err := c.SendSMS(context.Background(), sms); err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 2 || !strings.HasPrefix(tokens[0], "Bearer ey") || tokens[0] == tokens[1] {
		t.Fatalf("tokens %v", tokens)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	k, _ := notify.ParseKey(key)
	for _, c := range []notify.Config{{Key: k, BaseURL: "api.example"}, {BaseURL: "https://x"}, {Key: k, RetryWaitMin: time.Minute, RetryWaitMax: time.Second}} {
		if _, err := notify.New(c); err == nil {
			t.Errorf("%+v accepted", c.BaseURL)
		}
	}
}
