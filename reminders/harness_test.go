package reminders_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders"
	"github.com/nhsx/dnarisk/reminders/clock"
	"github.com/nhsx/dnarisk/reminders/contacts"
	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
	"github.com/nhsx/dnarisk/reminders/policy"
)

const (
	testKey      = "dnarisk_test-26785a09-ab16-4eb0-8407-a37497a57506-3d844edf-8d35-48ac-975b-e847b4f122b0"
	stdTemplate  = "f33517ff-2a88-4f6e-b855-c550268ce08a"
	xtraTemplate = "aa46d7b7-0c3b-4f5c-9b2a-0c2f8d5f7b11"
)

var (
	// t0 is a Monday, 09:00 UK time (GMT).
	t0       = time.Date(2025, 3, 3, 9, 0, 0, 0, time.UTC)
	contactK = []byte("0123456789abcdef0123456789abcdef")
)

// harness is one test's world: real Redis under a fresh key prefix, the Notify stub on an
// httptest server, a manual clock (the stub's late-creation timers run on it too) and an
// in-memory failed-reminders topic.
type harness struct {
	t        *testing.T
	addrs    []string
	prefix   string
	clock    *clock.Manual
	timers   *notifystub.Timers
	stub     *notifystub.Stub
	url      string
	contacts *contacts.Store
	failed   *memTopic
	opts     reminders.Config
	rdb      redis.UniversalClient
}

func newHarness(t *testing.T, addrs ...string) *harness {
	t.Helper()
	if len(addrs) == 0 {
		addrs = []string{testenv.Redis(t)}
	}
	key, err := notify.ParseKey(testKey)
	if err != nil {
		t.Fatal(err)
	}
	timers := notifystub.NewTimers(t0)
	stub, err := notifystub.New(notifystub.Config{Key: key, Templates: map[string][]string{
		stdTemplate:  {"appointment_date", "appointment_time"},
		xtraTemplate: {"appointment_date", "appointment_time"},
	}, AfterFunc: timers.AfterFunc})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(stub)
	t.Cleanup(srv.Close)
	h := &harness{t: t, addrs: addrs, stub: stub, timers: timers, url: srv.URL, failed: &memTopic{},
		prefix: fmt.Sprintf("t%d:", time.Now().UnixNano()), clock: clock.NewManual(t0)}
	h.rdb = h.client()
	h.contacts, err = contacts.NewStore(h.rdb, h.prefix, contactK)
	if err != nil {
		t.Fatal(err)
	}
	h.opts = reminders.Config{
		Policy:       policy.DefaultPolicy(),
		Templates:    reminders.Templates{Standard: stdTemplate, Extra: xtraTemplate},
		Secret:       []byte("reminder-test-secret-0123456789abcdef"),
		Prefix:       h.prefix,
		Clock:        h.clock,
		Lease:        time.Minute,
		RetryBackoff: time.Minute,
		// Half the lease, and well above the stub's late creations in these tests.
		UncertainRecheck: 30 * time.Second,
		Log:              slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	t.Cleanup(func() { h.cleanup() })
	return h
}

func (h *harness) client() redis.UniversalClient {
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: h.addrs})
	h.t.Cleanup(func() { c.Close() })
	return c
}

func (h *harness) cleanup() {
	ctx := context.Background()
	del := func(c *redis.Client) {
		iter := c.Scan(ctx, 0, h.prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	}
	switch c := h.rdb.(type) {
	case *redis.ClusterClient:
		_ = c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { del(n); return nil })
	case *redis.Client:
		del(c)
	}
}

// notifier returns a Notify client for the stub with quick retries.
func (h *harness) notifier(key string, retries int) *notify.Client {
	h.t.Helper()
	k, err := notify.ParseKey(key)
	if err != nil {
		h.t.Fatal(err)
	}
	c, err := notify.New(notify.Config{BaseURL: h.url, Key: k, MaxRetries: retries, Timeout: 2 * time.Second,
		RetryWaitMin: 5 * time.Millisecond, RetryWaitMax: 2 * time.Second})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// dispatcher starts a new dispatcher over the same Redis data, as a restarted process would.
func (h *harness) dispatcher() *reminders.Dispatcher {
	return h.dispatcherWith(h.client(), h.notifier(testKey, 3), h.opts)
}

func (h *harness) dispatcherWith(rdb redis.UniversalClient, n reminders.Notifier, o reminders.Config) *reminders.Dispatcher {
	h.t.Helper()
	cs, err := contacts.NewStore(rdb, h.prefix, contactK)
	if err != nil {
		h.t.Fatal(err)
	}
	o.Redis, o.Notifier, o.Contacts, o.Failed = rdb, n, cs, h.failed
	d, err := reminders.New(o)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

func pseudonym(n int) string { return fmt.Sprintf("%064x", n+1) }

// addPatient stores a drama-range number for patient n.
func (h *harness) addPatient(n int) string {
	p := pseudonym(n)
	if err := h.contacts.Put(context.Background(), p, contacts.Contact{Phone: contacts.Drama(n)}); err != nil {
		h.t.Fatal(err)
	}
	return p
}

func booking(patient, appt string, version int, start, bookedAt time.Time) events.Appointment {
	typ := events.Booked
	if version > 1 {
		typ = events.Rescheduled
	}
	return events.Appointment{Schema: events.AppointmentSchema, EventID: fmt.Sprintf("%s-%d", appt, version), Type: typ,
		EventTime: bookedAt, AppointmentID: appt, Version: version, Patient: patient,
		Booking: &events.Booking{Specialty: "110", Clinic: "ORTHO1", FirstVisit: true, Start: start, BookedAt: bookedAt,
			AgeBand: "35-44", Contact: events.Contact{SMS: true}}}
}

func cancellation(patient, appt string, version int, at time.Time) events.Appointment {
	return events.Appointment{Schema: events.AppointmentSchema, EventID: appt + "-cancel", Type: events.Cancelled,
		EventTime: at, AppointmentID: appt, Version: version, Patient: patient, CancelledBy: events.ByPatient}
}

func risk(patient, appt string, version int, start time.Time, band string) events.Risk {
	return events.Risk{Schema: events.RiskSchema, AppointmentID: appt, Version: version, Patient: patient,
		SourceEventID: appt, AppointmentStart: start, Probability: 0.5, Band: band, ModelID: "test", ScoredAt: t0}
}

// msgs turns appointment and risk events into messages on the default topics.
func msgs(t *testing.T, evs ...any) []kafka.Message {
	t.Helper()
	var out []kafka.Message
	for _, ev := range evs {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		var topic, key string
		switch e := ev.(type) {
		case events.Appointment:
			topic, key = "appointments", e.Patient
		case events.Risk:
			topic, key = "risk", e.Patient
		default:
			t.Fatalf("unknown event %T", ev)
		}
		out = append(out, kafka.Message{Topic: topic, Key: []byte(key), Value: b})
	}
	return out
}

func (h *harness) process(d *reminders.Dispatcher, evs ...any) {
	h.t.Helper()
	if err := d.Process(context.Background(), msgs(h.t, evs...)); err != nil {
		h.t.Fatal(err)
	}
}

// setClock moves the clock to t: the stub's timers due by then run (late messages are
// created) before any sender can see the new time.
func (h *harness) setClock(t time.Time) {
	h.timers.Advance(t)
	h.clock.Set(t)
}

// advance moves the clock on by d, as setClock.
func (h *harness) advance(d time.Duration) { h.setClock(h.clock.Now().Add(d)) }

// runUntil moves the clock from due time to due time up to end, sending what falls due.
func (h *harness) runUntil(d *reminders.Dispatcher, end time.Time) {
	h.t.Helper()
	ctx := context.Background()
	for i := 0; i < 10000; i++ {
		if _, err := d.SendDue(ctx); err != nil {
			h.t.Fatal(err)
		}
		next, ok, err := d.NextDue(ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		if !ok || next.After(end) {
			h.setClock(end)
			return
		}
		if next.After(h.clock.Now()) {
			h.setClock(next)
		}
	}
	h.t.Fatal("queue did not drain")
}

// byReference groups the stub's messages.
func (h *harness) byReference() map[string][]notifystub.Message {
	out := map[string][]notifystub.Message{}
	for _, m := range h.stub.Messages() {
		out[m.Reference] = append(out[m.Reference], m)
	}
	return out
}

// memTopic is an in-memory failed-reminders topic.
type memTopic struct {
	mu   sync.Mutex
	msgs []kafka.Message
}

func (m *memTopic) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs = append(m.msgs, msgs...)
	return nil
}

func (m *memTopic) events(t *testing.T) []reminders.Failed {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []reminders.Failed
	for _, msg := range m.msgs {
		var f reminders.Failed
		if err := json.Unmarshal(msg.Value, &f); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(msg.Value), "07700") {
			t.Fatalf("failed event carries a phone number: %s", msg.Value)
		}
		out = append(out, f)
	}
	return out
}
