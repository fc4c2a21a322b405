// Package producer delivers a stream of appointment events: onto Kafka at a steady rate,
// keyed by patient pseudonym so one partition carries one patient's events in order, or as
// JSON Lines into a file; and it reads JSON Lines back. Sources (sim, csvimport) make the
// events; cmd/producer and the demo wire them to a sink.
package producer

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
)

// SchemaHeader is the Kafka header naming the value's contract (events.AppointmentSchema).
const SchemaHeader = "schema"

// Writer is the part of *kafka.Writer that Publish uses. WriteMessages must return only
// once every message is acknowledged (kafka-go's synchronous default), so that the counts
// Publish reports are messages Kafka holds.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Options control pacing and batching. The zero value writes as fast as the sink accepts,
// 500 events at a time.
type Options struct {
	// Rate is events per second; 0 means no limit.
	Rate float64
	// BatchSize bounds the events per write (one WriteMessages call, or one file flush).
	// Default 500.
	BatchSize int
	// Progress, if not nil, is called after each batch is written with its size.
	Progress func(n int)
	// FlushTimeout bounds writing the batch in hand once ctx is cancelled. Default 10 s.
	FlushTimeout time.Duration
	// RetryFor is how long Publish keeps writing a batch again after the sink failed it
	// (a broker restarting, a leader moving), with backoff, before giving up. Kafka's own
	// client retries for only a few seconds, and a PAS feed must outlast a broker restart.
	// A batch written again may have been partly written already, so Kafka can hold some
	// events twice; every consumer of the topic is idempotent. Default 2 minutes; negative:
	// fail at the first error. Retries stop once ctx is cancelled.
	RetryFor time.Duration
	// Retrying, if not nil, hears about every failed write that will be retried.
	Retrying func(err error, wait time.Duration)
}

func (o *Options) setDefaults() {
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = 10 * time.Second
	}
	if o.RetryFor == 0 {
		o.RetryFor = 2 * time.Minute
	}
}

// Backoff between writes of a failed batch.
const (
	retryWaitMin = 250 * time.Millisecond
	retryWaitMax = 5 * time.Second
)

// writeRetrying writes msgs, again and again while the error looks transient, opt.RetryFor
// allows and ctx is not cancelled.
func writeRetrying(ctx, wctx context.Context, w Writer, msgs []kafka.Message, opt Options) error {
	deadline := time.Now().Add(opt.RetryFor)
	wait := retryWaitMin
	for {
		err := w.WriteMessages(wctx, msgs...)
		if err == nil || permanent(err) || ctx.Err() != nil || opt.RetryFor < 0 || time.Now().Add(wait).After(deadline) {
			return err
		}
		if opt.Retrying != nil {
			opt.Retrying(err, wait)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, retryWaitMax)
	}
}

// permanent reports a Kafka refusal that writing again cannot cure (a message too large,
// an authorisation failure).
func permanent(err error) bool {
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		return true
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		return !ke.Temporary()
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && permanent(e) {
				return true
			}
		}
	}
	return false
}

// Counts are the events written, by type.
type Counts struct {
	Events int
	ByType map[events.Type]int
}

// Bookings counts booking versions (booked and rescheduled events): what the scorer scores.
func (c Counts) Bookings() int { return c.ByType[events.Booked] + c.ByType[events.Rescheduled] }

// Outcomes counts attended and did-not-attend events.
func (c Counts) Outcomes() int { return c.ByType[events.Attended] + c.ByType[events.DidNotAttend] }

// String is a one-line summary, e.g. "events=10 booked=5 ... bookings=5 outcomes=4".
func (c Counts) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "events=%d", c.Events)
	for _, t := range []events.Type{events.Booked, events.Rescheduled, events.Cancelled, events.Attended, events.DidNotAttend} {
		fmt.Fprintf(&b, " %s=%d", t, c.ByType[t])
	}
	fmt.Fprintf(&b, " bookings=%d outcomes=%d", c.Bookings(), c.Outcomes())
	return b.String()
}

func (c *Counts) add(batch []events.Appointment) {
	if c.ByType == nil {
		c.ByType = map[events.Type]int{}
	}
	c.Events += len(batch)
	for i := range batch {
		c.ByType[batch[i].Type]++
	}
}

// Message is the Kafka message of one event: key the patient pseudonym, value the event's
// JSON, header schema=appointment.v1. Its timestamp is left for the writer to set (now):
// a historical event time would make the broker's retention delete the message at once.
func Message(ev *events.Appointment) (kafka.Message, error) {
	v, err := json.Marshal(ev)
	if err != nil {
		return kafka.Message{}, fmt.Errorf("encode event %s: %w", ev.EventID, err)
	}
	return kafka.Message{
		Key:     []byte(ev.Patient),
		Value:   v,
		Headers: []kafka.Header{{Key: SchemaHeader, Value: []byte(events.AppointmentSchema)}},
	}, nil
}

// Publish writes evs to w in batches, at most opt.Rate events a second, until evs ends or
// ctx is cancelled. A batch the writer fails is written again for up to opt.RetryFor. On cancellation the batch already taken from evs is still written
// (within opt.FlushTimeout) and the error is ctx's; the counts are of events acknowledged.
func Publish(ctx context.Context, w Writer, evs iter.Seq[events.Appointment], opt Options) (Counts, error) {
	opt.setDefaults()
	msgs := make([]kafka.Message, 0, opt.BatchSize)
	return run(ctx, evs, opt, func(wctx context.Context, batch []events.Appointment) error {
		msgs = msgs[:0]
		for i := range batch {
			m, err := Message(&batch[i])
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
		}
		if err := writeRetrying(ctx, wctx, w, msgs, opt); err != nil {
			return fmt.Errorf("publish %d events: %w", len(msgs), err)
		}
		return nil
	})
}

// WriteJSONL writes evs to w as JSON Lines (one event per line), paced and batched like
// Publish; each batch is flushed, so a reader following the file sees whole lines.
func WriteJSONL(ctx context.Context, w io.Writer, evs iter.Seq[events.Appointment], opt Options) (Counts, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	return run(ctx, evs, opt, func(_ context.Context, batch []events.Appointment) error {
		for i := range batch {
			if err := enc.Encode(&batch[i]); err != nil {
				return fmt.Errorf("write event: %w", err)
			}
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("write events: %w", err)
		}
		return nil
	})
}

// ReadJSONL yields the events of a JSON Lines stream, decoded and validated with
// events.DecodeAppointment. Blank lines are skipped. A bad line yields an error naming its
// line number, and reading carries on; a read failure yields an error and stops.
func ReadJSONL(r io.Reader) iter.Seq2[events.Appointment, error] {
	return func(yield func(events.Appointment, error) bool) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), events.MaxEventBytes+1)
		line := 0
		for sc.Scan() {
			line++
			b := sc.Bytes()
			if len(strings.TrimSpace(string(b))) == 0 {
				continue
			}
			ev, err := events.DecodeAppointment(b)
			if err != nil {
				err = fmt.Errorf("line %d: %w", line, err)
			}
			if !yield(ev, err) {
				return
			}
		}
		if err := sc.Err(); err != nil {
			yield(events.Appointment{}, fmt.Errorf("read events after line %d: %w", line, err))
		}
	}
}

// run takes events from evs in batches, paces them and hands each batch to write.
func run(ctx context.Context, evs iter.Seq[events.Appointment], opt Options, write func(context.Context, []events.Appointment) error) (Counts, error) {
	opt.setDefaults()
	var c Counts
	p := newPacer(opt.Rate, opt.BatchSize)
	defer p.stop()
	batch := make([]events.Appointment, 0, p.batch)
	// A write in progress when ctx is cancelled runs to completion (the Kafka writer bounds
	// it with its own retries), so a batch is never left half-acknowledged.
	writeCtx := context.WithoutCancel(ctx)
	flush := func(wctx context.Context) error {
		if len(batch) == 0 {
			return nil
		}
		if err := write(wctx, batch); err != nil {
			return err
		}
		c.add(batch)
		if opt.Progress != nil {
			opt.Progress(len(batch))
		}
		batch = batch[:0]
		return nil
	}
	for ev := range evs {
		batch = append(batch, ev)
		if len(batch) < p.batch {
			continue
		}
		if p.wait(ctx) != nil {
			break
		}
		if err := flush(writeCtx); err != nil {
			return c, err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(batch) > 0 && ctx.Err() == nil && p.wait(ctx) == nil {
		return c, flush(writeCtx)
	}
	if ctx.Err() != nil {
		final, cancel := context.WithTimeout(writeCtx, opt.FlushTimeout)
		defer cancel()
		if err := flush(final); err != nil {
			return c, fmt.Errorf("flush on shutdown: %w", err)
		}
		return c, ctx.Err()
	}
	return c, nil
}

// pacer releases one batch per tick: batch/rate seconds apart, about 20 batches a second
// when the rate allows. A slow sink makes the ticker drop ticks rather than burst later.
type pacer struct {
	t     *time.Ticker
	batch int
}

func newPacer(rate float64, maxBatch int) pacer {
	if !(rate > 0) {
		return pacer{batch: maxBatch}
	}
	b := min(max(int(rate/20), 1), maxBatch)
	return pacer{t: time.NewTicker(time.Duration(float64(b) / rate * float64(time.Second))), batch: b}
}

func (p pacer) wait(ctx context.Context) error {
	if p.t == nil {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-p.t.C:
		return nil
	}
}

func (p pacer) stop() {
	if p.t != nil {
		p.t.Stop()
	}
}
