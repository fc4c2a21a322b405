package main

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
)

// notifyRates are the shares of requests that fail, by kind.
type notifyRates struct {
	Error500       float64 // 500 before anything is created
	Error500Accept float64 // the message is created, then the caller sees a 500
	Error429       float64 // rate limited (one in ten with Retry-After: 1)
	Timeout        float64 // no answer before the client gives up
	TimeoutAccept  float64 // created, but the answer never arrives
	CreatedLate    float64 // no answer; created createAfter to createAfterMax after it arrived, once the client gave up
	Lookup500      float64 // a lookup by reference fails
}

// Notify's late creations in the run: 1 to 30 s after the request arrived (the client gives
// up after 400 ms), on the dispatcher's clock (see faultyNotify).
const (
	createAfter    = time.Second
	createAfterMax = 30 * time.Second
)

// faultyNotify is the Notify stub behind a fault injector. The stub checks tokens and
// bodies as Notify does and records every message it accepts; the injector, in front of
// it, fails a share of requests the ways the real service can: an error before the message
// is created, or after (the message exists but the caller cannot know), a 429, or a reply
// so slow the client times out, again before or after the message is created, or no answer
// at all and the message created seconds after the client gave up.
//
// The late creations run on timers moved with the dispatcher's clock file (setClock advances
// them first), not the wall clock: the dispatcher waits uncertain_recheck on its clock, which
// the sweep moves hours in a second, and Notify's delay must be measured on the same clock
// for the run to test the recheck against it.
type faultyNotify struct {
	stub   *notifystub.Stub
	timers *notifystub.Timers
	hold   time.Duration // how long a "timeout" holds the reply: longer than the client waits
	on     atomic.Bool
	rates  notifyRates

	mu     sync.Mutex
	rng    *rand.Rand
	counts map[string]int
}

func newFaultyNotify(key notify.Key, templates map[string][]string, rates notifyRates, hold time.Duration, seed uint64) (*faultyNotify, error) {
	timers := notifystub.NewTimers(time.Time{})
	stub, err := notifystub.New(notifystub.Config{Key: key, Templates: templates, AfterFunc: timers.AfterFunc})
	if err != nil {
		return nil, err
	}
	return &faultyNotify{stub: stub, timers: timers, hold: hold, rates: rates, rng: rand.New(rand.NewPCG(seed, 7)), counts: map[string]int{}}, nil
}

const (
	sendPath   = "/v2/notifications/sms"
	lookupPath = "/v2/notifications"
)

func (f *faultyNotify) pick(r *http.Request) string {
	if !f.on.Load() {
		return ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	x := f.rng.Float64()
	kind := ""
	switch {
	case r.Method == http.MethodGet && r.URL.Path == lookupPath:
		if x < f.rates.Lookup500 {
			kind = "notify_lookup_500"
		}
	case r.Method == http.MethodPost && r.URL.Path == sendPath:
		rt := f.rates
		switch {
		case x < rt.Error500:
			kind = "notify_500"
		case x < rt.Error500+rt.Error500Accept:
			kind = "notify_500_after_accept"
		case x < rt.Error500+rt.Error500Accept+rt.Error429:
			kind = "notify_429"
			if f.rng.IntN(10) == 0 {
				kind = "notify_429_retry_after"
			}
		case x < rt.Error500+rt.Error500Accept+rt.Error429+rt.Timeout:
			kind = "notify_timeout"
		case x < rt.Error500+rt.Error500Accept+rt.Error429+rt.Timeout+rt.TimeoutAccept:
			kind = "notify_timeout_after_accept"
		case x < rt.Error500+rt.Error500Accept+rt.Error429+rt.Timeout+rt.TimeoutAccept+rt.CreatedLate:
			kind = "notify_created_late"
		}
	}
	if kind != "" {
		f.counts[kind]++
	}
	return kind
}

func (f *faultyNotify) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch f.pick(r) {
	case "notify_500", "notify_lookup_500":
		writeError(w, http.StatusInternalServerError, "Exception", "Internal server error", 0)
	case "notify_429":
		writeError(w, http.StatusTooManyRequests, "RateLimitError", "Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds", 0)
	case "notify_429_retry_after":
		writeError(w, http.StatusTooManyRequests, "RateLimitError", "Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds", time.Second)
	case "notify_500_after_accept":
		f.stub.ServeHTTP(discard{}, r)
		writeError(w, http.StatusInternalServerError, "Exception", "Internal server error", 0)
	case "notify_timeout":
		f.stall(r)
	case "notify_timeout_after_accept":
		f.stub.ServeHTTP(discard{}, r)
		f.stall(r)
	case "notify_created_late":
		f.stub.ServeFault(w, r, notifystub.Fault{Late: true, Delay: f.hold, CreateAfter: createAfter, CreateAfterMax: createAfterMax})
	default:
		f.stub.ServeHTTP(w, r)
	}
}

// stall holds the reply until the caller gives up (or hold passes), then answers nothing.
func (f *faultyNotify) stall(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(f.hold):
	}
}

// faults returns how many of each fault were injected.
func (f *faultyNotify) faults() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.counts {
		out[k] = v
	}
	return out
}

func writeError(w http.ResponseWriter, status int, kind, msg string, retryAfter time.Duration) {
	w.Header().Set("Content-Type", "application/json")
	if retryAfter > 0 {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"status_code":` + strconv.Itoa(status) + `,"errors":[{"error":"` + kind + `","message":"` + msg + `"}]}`))
}

// discard is a ResponseWriter whose reply nobody receives.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// serve serves h on a free port of 127.0.0.1 until ctx ends and returns its base URL.
func serve(ctx context.Context, h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // ends with ErrServerClosed when stop shuts it down
	}()
	stop := func() {
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
		<-done
	}
	return "http://" + ln.Addr().String(), stop, nil
}
