package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/pas/hl7"
	"github.com/nhsx/dnarisk/pas/mllp"
	"github.com/nhsx/dnarisk/reminders"
	"github.com/nhsx/dnarisk/reminders/policy"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

// lookupIn is an environment of m. The contact store key, which every gateway with the
// default --contacts on needs, defaults to the tests' key unless m sets it (even to "").
func lookupIn(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		if !ok && k == "DNA_CONTACT_KEY" {
			return contactKeyHex, true
		}
		return v, ok
	}
}

func TestConfig(t *testing.T) {
	c, err := parseConfig([]string{"--mllp-addr", "127.0.0.1:0", "--patient-id-type", "NH, MR", "--mapping", "mapping.example.json"},
		lookupIn(map[string]string{"KAFKA_BROKERS": "k1:9092,k2:9092", "FHIR_ADDR": "off", "HL7_PROCESSING_ID": "P,T", "DNA_CONTACT_KEY": contactKeyHex}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.fhirAddr != "" || strings.Join(c.brokers, ",") != "k1:9092,k2:9092" || strings.Join(c.patientIDTypes, ",") != "NH,MR" ||
		strings.Join(c.processingIDs, ",") != "P,T" || c.location.String() != "Europe/London" || c.mapping == nil || len(c.mapping.Extras) != 2 {
		t.Fatalf("config %+v", c)
	}
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--mllp-addr", "off", "--fhir-addr", "off"}, nil, "nothing to listen on"},
		{[]string{"--timezone", "Mars/Olympus"}, nil, "--timezone"},
		{nil, map[string]string{"MLLP_IDLE_TIMEOUT": "soon"}, "MLLP_IDLE_TIMEOUT"},
		{[]string{"--max-message-bytes", "10"}, nil, "--max-message-bytes"},
		{[]string{"--patient-id-type", " , "}, nil, "--patient-id-type"},
		{[]string{"stray"}, nil, "unexpected arguments"},
		{[]string{"--contacts", "maybe"}, nil, "--contacts"},
		{nil, map[string]string{"DNA_CONTACT_KEY": ""}, "no contact store key"},
		{nil, map[string]string{"DNA_CONTACT_KEY": "short"}, "DNA_CONTACT_KEY"},
		{[]string{"--max-ahead", "-1h"}, nil, "--max-ahead"},
		{[]string{"--mapping", "no-such-file.json"}, nil, "mapping file"},
		{[]string{"--max-conns", "4", "--max-conns-per-host", "5"}, nil, "--max-conns-per-host"},
	} {
		env := map[string]string{"DNA_CONTACT_KEY": contactKeyHex}
		for k, v := range c.env {
			env[k] = v
		}
		if _, err := parseConfig(c.args, lookupIn(env), io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: err %v, want %q", c.args, c.env, err, c.want)
		}
	}
}

// world is the gateway and the scorer wired to the real Kafka and Redis on fresh topics and
// key prefixes.
type world struct {
	t                 *testing.T
	brokers           []string
	in, risk, dlq     string
	rdb               redis.UniversalClient
	store             *featurestore.RedisStore
	ps                *pseudo.Pseudonymiser
	mllpAddr, fhirURL string
	prefix            string
	// logs holds everything the gateway and the scorer logged (at info and above).
	logs *syncBuf
}

// syncBuf is a bytes.Buffer safe for the loggers of several goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const secret = "pasgateway-test-secret-0123456789abcdef"

// contactKeyHex is the contact store's key in the tests (the dispatcher's DNA_CONTACT_KEY).
const contactKeyHex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func newWorld(t *testing.T, args ...string) *world {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	w := &world{t: t, brokers: brokers,
		in: testenv.Topic(t, brokers, 2), risk: testenv.Topic(t, brokers, 1), dlq: testenv.Topic(t, brokers, 1)}
	prefix := fmt.Sprintf("pasgw-%d:", time.Now().UnixNano())
	w.rdb = redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{redisAddr}, DisableIdentity: true})
	t.Cleanup(func() { w.rdb.Close() })
	w.store = featurestore.NewRedisStore(w.rdb, featurestore.RedisOptions{Prefix: prefix, TTL: time.Hour})
	w.ps, _ = pseudo.New([]byte(secret))
	w.prefix, w.logs = prefix, &syncBuf{}
	log := slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", w.logs)
		}
	})

	cfg, err := parseConfig(append([]string{"--mllp-addr", "127.0.0.1:0", "--fhir-addr", "127.0.0.1:0", "--metrics-addr", "off",
		"--redis-prefix", prefix, "--topic-appointments", w.in}, args...),
		lookupIn(map[string]string{"KAFKA_BROKERS": strings.Join(brokers, ","), "REDIS_ADDR": redisAddr, "DNA_CONTACT_KEY": contactKeyHex}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, w.ps, log, func(m, f string) { ready <- [2]string{m, f} }) }()
	select {
	case a := <-ready:
		w.mllpAddr, w.fhirURL = a[0], "http://"+a[1]+"/fhir"
	case err := <-done:
		t.Fatalf("gateway: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})

	// The scorer, exactly as cmd/consumer wires it, with the shipped model.
	model, err := scoring.Load("../../models/default")
	if err != nil {
		t.Fatal(err)
	}
	out := stream.NewWriter(brokers, "")
	r := stream.NewReader(brokers, prefix+"scorer", w.in)
	proc, err := scorer.New(scorer.Config{Store: w.store, Output: out, Model: model, Topics: scorer.Topics{Risk: w.risk, DeadLetter: w.dlq}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	sdone := make(chan error, 1)
	go func() { sdone <- stream.Run(sctx, r, proc, stream.Batching{MaxMessages: 50}, log) }()
	t.Cleanup(func() {
		scancel()
		if err := <-sdone; err != nil {
			t.Errorf("scorer: %v", err)
		}
		r.Close()
		out.Close()
	})
	return w
}

// send writes one message over a new MLLP connection and returns the acknowledgement.
func (w *world) send(msg string) (code, text string) {
	w.t.Helper()
	c, err := net.Dial("tcp", w.mllpAddr)
	if err != nil {
		w.t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := mllp.Write(c, []byte(strings.ReplaceAll(msg, "\n", "\r"))); err != nil {
		w.t.Fatal(err)
	}
	ack, err := mllp.NewReader(bufio.NewReader(c), 0).Read()
	if err != nil {
		w.t.Fatalf("no acknowledgement: %v", err)
	}
	m, err := hl7.Parse(ack)
	if err != nil {
		w.t.Fatalf("acknowledgement does not parse: %v", err)
	}
	msa, _ := m.Segment("MSA")
	return msa.Get(1, 1), msa.Get(3, 1)
}

func (w *world) read(topic string) []kafka.Message {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := stream.ReadAll(ctx, w.brokers, topic)
	if err != nil {
		w.t.Fatal(err)
	}
	return msgs
}

func (w *world) appointments() []events.Appointment {
	var out []events.Appointment
	for _, m := range w.read(w.in) {
		ev, err := events.DecodeAppointment(m.Value)
		if err != nil {
			w.t.Fatalf("gateway published an invalid event: %v", err)
		}
		if string(m.Key) != ev.Patient {
			w.t.Fatalf("event keyed %q, patient %s", m.Key, ev.Patient)
		}
		out = append(out, ev)
	}
	return out
}

// waitRisk waits for the risk event of appointment/version.
func (w *world) waitRisk(appt string, version int) events.Risk {
	w.t.Helper()
	var found events.Risk
	testenv.Eventually(w.t, 60*time.Second, func() bool {
		for _, m := range w.read(w.risk) {
			var r events.Risk
			if json.Unmarshal(m.Value, &r) == nil && r.AppointmentID == appt && r.Version == version {
				found = r
				return true
			}
		}
		return false
	}, fmt.Sprintf("risk event for %s v%d", appt, version))
	return found
}

func ts(t time.Time) string { return hl7.FormatTime(t) }

// ns is the appointment id the gateway publishes for SCH-2 appt from siuMsg's facility.
func ns(appt string) string { return "RXX01:" + appt }

func siuMsg(trigger, ctrl, appt string, at, start time.Time, extra string) string {
	return fmt.Sprintf(`MSH|^~\&|PAS|RXX01|DNARISK|RXX01|%s||SIU^%s^SIU_S12|%s|P|2.5.1
SCH||%s^PAS||||%s|ROUTINE|NEW^New patient
TQ1|1||||||%s
PID|1||9434765919^^^NHS^NH~A123456^^^RXX01^MR||SMITH^JANE||19800615|F|||||^ORN^CP^^44^7700^900123
PV1|1|O|ORTHO1|||||||110
RGS|1
AIS|1|A|110^Trauma and Orthopaedics^NHSTFC
AIL|1|A|ORTHO1
`, ts(at), trigger, ctrl, appt, extra, ts(start))
}

// TestRoundTrip: SIU messages over MLLP through the gateway and the real scorer on real
// Kafka and Redis. An S12 becomes a risk event; a retransmission changes nothing; an S13 is
// version 2 and is scored again; an S15 publishes a cancellation (and the reminder
// dispatcher drops that appointment's pending reminders); an S26 puts a did-not-attend fact
// in the patient's history; a FHIR booking for the same patient is scored with it.
func TestRoundTrip(t *testing.T) {
	w := newWorld(t)
	now := time.Now().UTC().Truncate(time.Second)
	run := now.UnixNano()
	apptA, apptB := fmt.Sprintf("A%d", run), fmt.Sprintf("B%d", run)
	patient := w.ps.Pseudonym("9434765919")

	// Appointment A: booked today for two weeks on.
	startA := now.Add(14 * 24 * time.Hour)
	if code, text := w.send(siuMsg("S12", "C1", apptA, now, startA, "")); code != "AA" || text != "booked version 1 published" {
		t.Fatalf("S12: %s %q", code, text)
	}
	r1 := w.waitRisk(ns(apptA), 1)
	if r1.Patient != patient || !r1.AppointmentStart.Equal(startA) || r1.Features["first_visit"] != 1 {
		t.Fatalf("risk %+v", r1)
	}
	// The engine resends the same message (its ACK was lost): accepted, nothing new.
	if code, text := w.send(siuMsg("S12", "C1", apptA, now, startA, "")); code != "AA" || !strings.HasPrefix(text, "ignored:") {
		t.Fatalf("resent S12: %s %q", code, text)
	}
	// Rescheduled a day later.
	if code, text := w.send(siuMsg("S13", "C2", apptA, now.Add(time.Minute), startA.Add(24*time.Hour), "")); code != "AA" || text != "rescheduled version 2 published" {
		t.Fatalf("S13: %s %q", code, text)
	}
	w.waitRisk(ns(apptA), 2)

	// The reminder dispatcher, fed the same topics, plans reminders for A.
	d := newDispatcher(t, w)
	feed := func() {
		msgs := append(w.read(w.in), w.read(w.risk)...)
		if err := d.Process(context.Background(), msgs); err != nil {
			t.Fatal(err)
		}
	}
	feed()
	if n, _ := d.Pending(context.Background()); n == 0 {
		t.Fatal("no reminders planned for the booking")
	}

	// Cancelled by the patient (NHS Data Dictionary code 2 in SCH-6).
	if code, text := w.send(siuMsg("S15", "C3", apptA, now.Add(2*time.Minute), startA, "2^Cancelled by patient")); code != "AA" || text != "cancelled version 2 published" {
		t.Fatalf("S15: %s %q", code, text)
	}
	feed()
	if n, _ := d.Pending(context.Background()); n != 0 {
		t.Fatalf("%d reminders still pending after the S15", n)
	}

	// Appointment B: booked a month ago for an hour ago; the patient did not come.
	bookedB, startB := now.Add(-30*24*time.Hour), now.Add(-time.Hour)
	if code, text := w.send(siuMsg("S12", "C4", apptB, bookedB, startB, "")); code != "AA" {
		t.Fatalf("S12 B: %s %q", code, text)
	}
	if code, text := w.send(siuMsg("S26", "C5", apptB, now.Add(3*time.Minute), startB, "")); code != "AA" || text != "did_not_attend version 1 published" {
		t.Fatalf("S26: %s %q", code, text)
	}
	testenv.Eventually(t, 60*time.Second, func() bool {
		hs, err := w.store.Load(context.Background(), []string{patient})
		if err != nil {
			t.Fatal(err)
		}
		var dna, cancelled bool
		for _, f := range hs[patient].Facts {
			dna = dna || f.Appointment == ns(apptB) && f.Kind == featurestore.KindDidNotAttend
			cancelled = cancelled || f.Appointment == ns(apptA) && f.Kind == featurestore.KindPatientCancel
		}
		return dna && cancelled
	}, "history with the S26 did-not-attend and the S15 patient cancellation")

	var types []string
	for _, ev := range w.appointments() {
		if ev.AppointmentID == ns(apptA) || ev.AppointmentID == ns(apptB) {
			types = append(types, fmt.Sprintf("%s:%s:v%d:%s", ev.AppointmentID[len("RXX01:"):][:1], ev.Type, ev.Version, ev.CancelledBy))
		}
	}
	if got := strings.Join(types, " "); got != "A:booked:v1: A:rescheduled:v2: A:cancelled:v2:patient B:booked:v1: B:did_not_attend:v1:" {
		t.Fatalf("events on the topic: %s", got)
	}

	// A FHIR booking for the same patient is scored with the history the SIU feed built.
	apptC := fmt.Sprintf("C%d", run)
	body := fmt.Sprintf(`{"resourceType":"Appointment","status":"booked","identifier":[{"value":%q}],
	  "start":%q,"meta":{"lastUpdated":%q},"specialty":[{"coding":[{"code":"110"}]}],
	  "contained":[{"resourceType":"Patient","id":"p","birthDate":"1980-06-15",
	    "identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]}],
	  "participant":[{"actor":{"reference":"#p"},"status":"accepted"}]}`,
		apptC, now.Add(10*24*time.Hour).Format(time.RFC3339), now.Add(4*time.Minute).Format(time.RFC3339))
	resp, err := http.Post(w.fhirURL+"/Appointment", "application/fhir+json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Location") == "" || !strings.Contains(string(b), "booked version 1 published") {
		t.Fatalf("FHIR: %d %s", resp.StatusCode, b)
	}
	rc := w.waitRisk(apptC, 1)
	if rc.Patient != patient || rc.Features["prior_dna"] != 1 || rc.Features["prior_patient_cancellations"] != 1 {
		t.Fatalf("FHIR booking scored without the SIU history: %+v", rc.Features)
	}
	if dl := w.read(w.dlq); len(dl) != 0 {
		t.Fatalf("%d events dead-lettered", len(dl))
	}
}

// TestRefusedMessagesPublishNothing: malformed and unacceptable frames over the real
// listener get AE/AR and leave the topic empty.
func TestRefusedMessagesPublishNothing(t *testing.T) {
	w := newWorld(t)
	now := time.Now().UTC()
	good := siuMsg("S12", "X1", "R1", now, now.Add(48*time.Hour), "")
	for name, c := range map[string]struct{ msg, code string }{
		"missing MSH":   {strings.SplitN(good, "\n", 2)[1], "AR"},
		"wrong version": {strings.Replace(good, "|P|2.5.1", "|P|2.1", 1), "AR"},
		"ADT":           {strings.Replace(good, "SIU^S12^SIU_S12", "ADT^A04", 1), "AR"},
		"bad start":     {strings.Replace(good, "TQ1|1||||||", "TQ1|1||||||2025023", 1), "AE"},
		"bad NHS no.":   {strings.Replace(good, "9434765919", "9434765918", 1), "AE"},
	} {
		if code, text := w.send(c.msg); code != c.code || text == "" {
			t.Errorf("%s: %s %q, want %s with a reason", name, code, text, c.code)
		}
	}
	if msgs := w.read(w.in); len(msgs) != 0 {
		t.Fatalf("%d events published for refused messages", len(msgs))
	}
}

func newDispatcher(t *testing.T, w *world) *reminders.Dispatcher {
	t.Helper()
	d, err := reminders.New(reminders.Config{
		Redis:     w.rdb,
		Policy:    policy.DefaultPolicy(),
		Templates: reminders.Templates{Standard: "f33517ff-2a88-4f6e-b855-c550268ce08a", Extra: "aa46d7b7-0c3b-4f5c-9b2a-0c2f8d5f7b11"},
		Topics:    reminders.Topics{Appointments: w.in, Risk: w.risk},
		Secret:    []byte(secret),
		Prefix:    fmt.Sprintf("pasgw-rem-%d:", time.Now().UnixNano()),
		Log:       slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}
