package producer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"iter"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/stream"
)

func simEvents(t *testing.T, patients, days int) []events.Appointment {
	t.Helper()
	ps, err := pseudo.New([]byte("producer-test-secret-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := sim.New(sim.Config{Seed: 5, Patients: patients, Days: days}, ps)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Collect(g.Events(nil))
}

// endless yields copies of a template event until the consumer stops.
func endless(ev events.Appointment) iter.Seq[events.Appointment] {
	return func(yield func(events.Appointment) bool) {
		for yield(ev) {
		}
	}
}

type recorder struct {
	mu      sync.Mutex
	batches [][]kafka.Message
	at      []time.Time
	fail    error
	failN   int // fail this many writes with fail, then succeed; 0: fail them all
	delay   time.Duration
	ctxErrs []error
}

func (r *recorder) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	time.Sleep(r.delay)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ctxErrs = append(r.ctxErrs, ctx.Err())
	if r.fail != nil && (r.failN == 0 || len(r.ctxErrs) <= r.failN) {
		return r.fail
	}
	r.batches = append(r.batches, slices.Clone(msgs))
	r.at = append(r.at, time.Now())
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.batches {
		n += len(b)
	}
	return n
}

func TestPublishToKafka(t *testing.T) {
	const topic = "appointments"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	evs := simEvents(t, 150, 60)
	w := stream.NewWriter(c.ListenAddrs(), topic)
	defer w.Close()
	progress := 0
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	counts, err := Publish(ctx, w, slices.Values(evs), Options{BatchSize: 100, Progress: func(n int) { progress += n }})
	if err != nil {
		t.Fatal(err)
	}
	if counts.Events != len(evs) || progress != len(evs) {
		t.Fatalf("counts %v, progress %d, want %d events", counts, progress, len(evs))
	}
	msgs, err := stream.ReadAll(ctx, c.ListenAddrs(), topic)
	if err != nil {
		t.Fatal(err)
	}
	checkKafka(t, evs, msgs)
}

// checkKafka checks that msgs hold exactly evs, keyed by patient pseudonym, with the schema
// header, each patient on one partition with its events in the order they were produced.
func checkKafka(t *testing.T, evs []events.Appointment, msgs []kafka.Message) {
	t.Helper()
	if len(msgs) != len(evs) {
		t.Fatalf("read back %d messages, published %d", len(msgs), len(evs))
	}
	order := map[string]int{}
	for i, ev := range evs {
		order[ev.EventID] = i
	}
	partition := map[string]int{}
	last := map[string]int{} // patient -> position in evs of the latest message read
	partitions := map[int]bool{}
	for _, m := range msgs {
		ev, err := events.DecodeAppointment(m.Value)
		if err != nil {
			t.Fatalf("message %d/%d: %v", m.Partition, m.Offset, err)
		}
		if string(m.Key) != ev.Patient {
			t.Fatalf("message key %q, patient %q", m.Key, ev.Patient)
		}
		if len(m.Headers) != 1 || m.Headers[0].Key != SchemaHeader || string(m.Headers[0].Value) != events.AppointmentSchema {
			t.Fatalf("headers %v", m.Headers)
		}
		partitions[m.Partition] = true
		if p, ok := partition[ev.Patient]; ok && p != m.Partition {
			t.Fatalf("patient %s on partitions %d and %d", ev.Patient[:8], p, m.Partition)
		}
		partition[ev.Patient] = m.Partition
		pos, ok := order[ev.EventID]
		if !ok {
			t.Fatalf("event %s was never published", ev.EventID)
		}
		if prev, seen := last[ev.Patient]; seen && pos <= prev {
			t.Fatalf("patient %s: event %d read after event %d", ev.Patient[:8], pos, prev)
		}
		last[ev.Patient] = pos
		delete(order, ev.EventID)
	}
	if len(partitions) < 2 {
		t.Errorf("all patients landed on %d partition(s)", len(partitions))
	}
}

func TestPublishRate(t *testing.T) {
	evs := simEvents(t, 100, 30)[:100]
	var w recorder
	start := time.Now()
	counts, err := Publish(context.Background(), &w, slices.Values(evs), Options{Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if counts.Events != 100 || w.count() != 100 {
		t.Fatalf("published %d, writer saw %d", counts.Events, w.count())
	}
	// 100 events at 200/s: 10 batches of 10, 50 ms apart.
	if elapsed < 450*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("100 events at 200/s took %s", elapsed)
	}
	for _, b := range w.batches {
		if len(b) > 10 {
			t.Fatalf("batch of %d at 200/s, want at most 10", len(b))
		}
	}
}

func TestPublishStopsCleanlyOnCancel(t *testing.T) {
	template := simEvents(t, 20, 30)[0]
	w := recorder{delay: 30 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	counts, err := Publish(ctx, &w, endless(template), Options{Rate: 1000})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if counts.Events == 0 || counts.Events != w.count() {
		t.Fatalf("reported %d events, writer acknowledged %d", counts.Events, w.count())
	}
	for i, e := range w.ctxErrs {
		if e != nil {
			t.Fatalf("write %d was given a cancelled context: a batch could be half written", i)
		}
	}
}

func TestPublishWriteError(t *testing.T) {
	evs := simEvents(t, 50, 30)
	for _, tc := range []struct {
		name string
		fail error
		opt  Options
	}{
		{"no retries", errors.New("broker down"), Options{RetryFor: -1}},
		{"retries run out", errors.New("broker down"), Options{RetryFor: 300 * time.Millisecond}},
		{"refusal that retrying cannot cure", kafka.MessageSizeTooLarge, Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := recorder{fail: tc.fail}
			start := time.Now()
			counts, err := Publish(context.Background(), &w, slices.Values(evs), tc.opt)
			if err == nil || !errors.Is(err, tc.fail) {
				t.Fatalf("error %v", err)
			}
			if counts.Events != 0 {
				t.Fatalf("counted %d events the writer refused", counts.Events)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("gave up after %s", time.Since(start))
			}
		})
	}
}

// A broker restart outlasts the Kafka client's own retries: Publish writes the batch again
// until the broker is back, and every event is then written and counted.
func TestPublishRetriesThroughAnOutage(t *testing.T) {
	evs := simEvents(t, 50, 30)
	w := recorder{fail: errors.New("dial tcp 127.0.0.1:9092: connect: connection refused"), failN: 3}
	var retried int
	counts, err := Publish(context.Background(), &w, slices.Values(evs), Options{BatchSize: 40,
		Retrying: func(error, time.Duration) { retried++ }})
	if err != nil {
		t.Fatal(err)
	}
	if retried != 3 || counts.Events != len(evs) || w.count() != len(evs) {
		t.Fatalf("%d retries, counted %d, written %d, want 3, %d, %d", retried, counts.Events, w.count(), len(evs), len(evs))
	}
}

func TestJSONLRoundTrip(t *testing.T) {
	evs := simEvents(t, 100, 30)
	var buf bytes.Buffer
	counts, err := WriteJSONL(context.Background(), &buf, slices.Values(evs), Options{BatchSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	if counts.Events != len(evs) || strings.Count(buf.String(), "\n") != len(evs) {
		t.Fatalf("wrote %d events in %d lines, want %d", counts.Events, strings.Count(buf.String(), "\n"), len(evs))
	}
	var got []events.Appointment
	for ev, err := range ReadJSONL(&buf) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	a, _ := json.Marshal(evs)
	b, _ := json.Marshal(got)
	if !bytes.Equal(a, b) {
		t.Fatal("events changed in a round trip through JSON Lines")
	}

	in := string(a[1:bytes.IndexByte(a, '}')]) // not an event
	line, _ := json.Marshal(evs[0])
	var errs []string
	n := 0
	for _, err := range ReadJSONL(strings.NewReader(string(line) + "\n\n{" + in + "\n" + string(line) + "\n")) {
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		n++
	}
	if n != 2 || len(errs) != 1 || !strings.HasPrefix(errs[0], "line 3:") {
		t.Fatalf("read %d events and errors %q; want 2 events and an error on line 3", n, errs)
	}
}

func TestCountsString(t *testing.T) {
	var c Counts
	c.add([]events.Appointment{{Type: events.Booked}, {Type: events.Rescheduled}, {Type: events.DidNotAttend}, {Type: events.Cancelled}})
	want := "events=4 booked=1 rescheduled=1 cancelled=1 attended=0 did_not_attend=1 bookings=2 outcomes=1"
	if c.String() != want {
		t.Errorf("Counts.String() = %q, want %q", c, want)
	}
}
