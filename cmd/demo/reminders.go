package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/reminders"
	"github.com/nhsx/dnarisk/reminders/clock"
	"github.com/nhsx/dnarisk/reminders/contacts"
	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
	"github.com/nhsx/dnarisk/reminders/policy"
	"github.com/nhsx/dnarisk/stream"
)

const (
	failedTopic = "reminders.failed"
	// demoNotifyKey signs requests to the in-process Notify stub; it opens nothing real.
	demoNotifyKey = "dnarisk_demo-0b6c4a4e-7a51-4a43-9f3c-2f4b8b1c6d10-5f1e2d3c-4b5a-4697-8887-796a5b4c3d2e"
	stdTemplate   = "9d3f5a7e-1c2b-4e6d-8f90-a1b2c3d4e5f6"
	extraTemplate = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
)

// remind is the demo's reminder stage: the dispatcher (the code cmd/dispatcher runs) consumes
// the appointments and risk topics from the in-process broker into the in-process Redis, then
// a manual clock jumps from one due time to the next over the simulated months, so every
// reminder falls due in seconds. Sends go to the Notify stub on a local HTTP server, which
// fails 2% of them with a 500 to show the retries. The contact store gets a number from
// Ofcom's drama range for every patient. It checks that no cancelled appointment was
// reminded, that extra reminders went only to high and very-high bands, and that Notify
// received exactly one message per reminder sent.
//
// The dispatcher's counts go to m (so the status page shows today's reminders) and its logs,
// with the Notify client's, to log.
func remind(ctx context.Context, brokers []string, rdb redis.UniversalClient, riskMsgs []kafka.Message, sum *Summary, m *metrics.Metrics, log *slog.Logger, pol policy.Policy) error {
	in, err := readOutputs(ctx, brokers, riskMsgs)
	if err != nil {
		return err
	}
	rd, err := newReminding(ctx, brokers, rdb, in, log, pol)
	if err != nil {
		return err
	}
	defer rd.close()
	d := rd.d
	m.Reminders(func() metrics.ReminderCounts {
		s := &d.Stats
		return metrics.ReminderCounts{Scheduled: s.Scheduled.Load(), Sent: s.Sent.Load(), Deferred: s.Deferred.Load(), Uncertain: s.Uncertain.Load(),
			Failed: s.Failed.Load(), Cancelled: s.Cancelled.Load()}
	}, time.Local)
	if err := rd.plan(ctx, brokers, in); err != nil {
		return err
	}
	if err := rd.sendAll(ctx); err != nil {
		return err
	}
	sum.RemindersScheduled = d.Stats.Scheduled.Load()
	sum.RemindersSent = d.Stats.Sent.Load()
	sum.RemindersCancelled = d.Stats.Cancelled.Load()
	sum.RemindersFailed = d.Stats.Failed.Load()
	return rd.check(ctx, rdb, in, sum)
}

// outputs is what the reminder stage needs from the topics: the appointments and risk events
// and what they say.
type outputs struct {
	apptMsgs, riskMsgs []kafka.Message
	first              time.Time                   // the earliest event time
	cancelled          map[string]bool             // appointment -> cancelled
	bands              map[string]string           // appointment/version -> band
	patients           map[string]contacts.Contact // every scored patient, with a drama-range number
}

// readOutputs reads the appointments topic back and goes through both topics.
func readOutputs(ctx context.Context, brokers []string, riskMsgs []kafka.Message) (*outputs, error) {
	apptMsgs, err := stream.ReadAll(ctx, brokers, apptTopic)
	if err != nil {
		return nil, err
	}
	in := &outputs{apptMsgs: apptMsgs, riskMsgs: riskMsgs, cancelled: map[string]bool{}, bands: map[string]string{}, patients: map[string]contacts.Contact{}}
	for _, m := range apptMsgs {
		ev, err := events.DecodeAppointment(m.Value)
		if err != nil {
			continue
		}
		if in.first.IsZero() || ev.EventTime.Before(in.first) {
			in.first = ev.EventTime
		}
		if ev.Type == events.Cancelled {
			in.cancelled[ev.AppointmentID] = true
		}
	}
	for _, m := range riskMsgs {
		var r events.Risk
		if err := json.Unmarshal(m.Value, &r); err != nil {
			return nil, fmt.Errorf("risk topic holds an unreadable event: %w", err)
		}
		in.bands[key(r.AppointmentID, r.Version)] = r.Band
		if _, ok := in.patients[r.Patient]; !ok {
			in.patients[r.Patient] = contacts.Contact{Phone: contacts.Drama(len(in.patients))}
		}
	}
	return in, nil
}

// reminding is the dispatcher with its contacts, the Notify stub it sends to and its clock.
type reminding struct {
	d       *reminders.Dispatcher
	holdout *policy.Holdout // withholds extra reminders; nil: none
	stub    *notifystub.Stub
	clock   *clock.Manual
	closers []func()
}

func (rd *reminding) close() {
	for i := len(rd.closers) - 1; i >= 0; i-- {
		rd.closers[i]()
	}
}

// newReminding stores every patient's contact, serves the Notify stub and builds the
// dispatcher on a manual clock set to the first event.
func newReminding(ctx context.Context, brokers []string, rdb redis.UniversalClient, in *outputs, log *slog.Logger, pol policy.Policy) (rd *reminding, err error) {
	rd = &reminding{}
	defer func() {
		if err != nil {
			rd.close()
		}
	}()
	contactKey := make([]byte, contacts.KeyBytes)
	_, _ = rand.Read(contactKey)
	store, err := contacts.NewStore(rdb, "", contactKey)
	if err != nil {
		return nil, err
	}
	if err := store.PutMany(ctx, in.patients); err != nil {
		return nil, err
	}
	nkey, err := notify.ParseKey(demoNotifyKey)
	if err != nil {
		return nil, err
	}
	rd.stub, err = notifystub.New(notifystub.Config{Key: nkey, Chaos: notifystub.Chaos{Error500: 0.02},
		Templates: map[string][]string{stdTemplate: {"appointment_date", "appointment_time"}, extraTemplate: {"appointment_date", "appointment_time"}}})
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(rd.stub)
	rd.closers = append(rd.closers, srv.Close)
	client, err := notify.New(notify.Config{BaseURL: srv.URL, Key: nkey, RetryWaitMin: time.Millisecond, RetryWaitMax: 20 * time.Millisecond, Log: log})
	if err != nil {
		return nil, err
	}
	if err := createTopic(ctx, brokers, failedTopic); err != nil {
		return nil, err
	}
	failed := stream.NewWriter(brokers, "")
	rd.closers = append(rd.closers, func() { failed.Close() })
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	rd.clock = clock.NewManual(in.first)
	rd.holdout = pol.ExtraHoldout
	rd.d, err = reminders.New(reminders.Config{
		Redis: rdb, Notifier: client, Contacts: store, Failed: failed,
		Policy:    pol,
		Templates: reminders.Templates{Standard: stdTemplate, Extra: extraTemplate},
		Topics:    reminders.Topics{Appointments: apptTopic, Risk: riskTopic, Failed: failedTopic},
		Secret:    secret, Clock: rd.clock, Workers: 8, Log: log,
	})
	if err != nil {
		return nil, err
	}
	return rd, nil
}

// plan is the dispatcher's intake: everything the PAS and the scorer published, through a
// consumer group, planned into reminders.
func (rd *reminding) plan(ctx context.Context, brokers []string, in *outputs) error {
	d := rd.d
	r := stream.NewGroupReader(brokers, "dna-reminders", []string{apptTopic, riskTopic})
	intake, stopIntake := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- reminders.Consume(intake, r, d, stream.Batching{}) }()
	total := int64(len(in.apptMsgs) + len(in.riskMsgs))
	for d.Stats.Consumed.Load() < total && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	stopIntake()
	if err := <-done; err != nil {
		return err
	}
	r.Close()
	if ctx.Err() != nil {
		return fmt.Errorf("dispatcher read %d of %d events before the time limit", d.Stats.Consumed.Load(), total)
	}
	say("dispatcher planned %d reminders for %d patients (%d dropped by cancellations and reschedules)",
		d.Stats.Scheduled.Load(), len(in.patients), d.Stats.Cancelled.Load())
	return nil
}

// sendAll jumps the clock to each due time in turn, sending what is due, until nothing is.
func (rd *reminding) sendAll(ctx context.Context) error {
	for ctx.Err() == nil {
		if _, err := rd.d.SendDue(ctx); err != nil {
			return err
		}
		next, ok, err := rd.d.NextDue(ctx)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		rd.clock.Set(next)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("reminders still pending at the time limit")
	}
	return nil
}

// check compares what was sent with what was booked, cancelled and scored, and with what
// the Notify stub received.
func (rd *reminding) check(ctx context.Context, rdb redis.UniversalClient, in *outputs, sum *Summary) error {
	var extra, extraWrong, toCancelled, extraHeldOut int
	iter := rdb.Scan(ctx, 0, "dna:{*}:rem:*", 1000).Iterator()
	for iter.Next(ctx) {
		h, err := rdb.HGetAll(ctx, iter.Val()).Result()
		if err != nil {
			return err
		}
		if h["state"] != "sent" {
			continue
		}
		v, _ := strconv.Atoi(h["ver"])
		if in.cancelled[h["appt"]] {
			toCancelled++
		}
		if h["kind"] == string(policy.Extra) {
			extra++
			if b := in.bands[key(h["appt"], v)]; b != "high" && b != "very_high" {
				extraWrong++
			}
			if rd.holdout.HeldOut(h["appt"]) {
				extraHeldOut++
			}
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	messages := rd.stub.Messages()
	refs := map[string]bool{}
	for _, m := range messages {
		refs[m.Reference] = true
		if !strings.HasPrefix(m.PhoneNumber, "07700900") {
			return fmt.Errorf("a reminder went to a number outside the drama range")
		}
	}
	say("dispatcher sent %d reminders (%d extra for high risk), cancelled %d, failed %d; Notify stub answered %d sends with 500 and got %d messages",
		sum.RemindersSent, extra, sum.RemindersCancelled, sum.RemindersFailed, rd.stub.Statuses()[500], len(messages))
	switch {
	case toCancelled > 0:
		return fmt.Errorf("%d reminders were sent for cancelled appointments", toCancelled)
	case extraWrong > 0:
		return fmt.Errorf("%d extra reminders went to appointments not in a high band", extraWrong)
	case extraHeldOut > 0:
		return fmt.Errorf("%d extra reminders went to appointments held out from them", extraHeldOut)
	case int64(len(messages)) != sum.RemindersSent || len(refs) != len(messages):
		return fmt.Errorf("the Notify stub got %d messages with %d references for %d reminders sent", len(messages), len(refs), sum.RemindersSent)
	case sum.RemindersSent == 0 || extra == 0:
		return fmt.Errorf("no reminders sent (%d, %d extra)", sum.RemindersSent, extra)
	}
	return nil
}

func createTopic(ctx context.Context, brokers []string, topic string) error {
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if err := res.Errors[topic]; err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}
