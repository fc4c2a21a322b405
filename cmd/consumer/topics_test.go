package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/stream"
)

// laterTopics returns n topic names nobody has created yet, and deletes whatever exists of
// them when the test ends.
func laterTopics(t *testing.T, brokers []string, n int) []string {
	t.Helper()
	names := make([]string, n)
	for i := range names {
		var b [6]byte
		_, _ = rand.Read(b[:])
		names[i] = "test.later." + hex.EncodeToString(b[:])
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = (&kafka.Client{Addr: kafka.TCP(brokers...)}).DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: names})
	})
	return names
}

// partitionsOf asks Kafka how many partitions topic has, through a transport of its own (the
// shared default one answers from a cache that may predate the topic).
func partitionsOf(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	md, err := (&kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}).Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range md.Topics {
		if tp.Name == topic && tp.Error == nil {
			return len(tp.Partitions)
		}
	}
	return 0
}

// oneBooking is a valid booking event as a Kafka message keyed by its patient.
func oneBooking(t *testing.T, seed int64) (events.Appointment, kafka.Message) {
	t.Helper()
	ps, _ := pseudo.New([]byte("topics-test-secret-0123456789abcdefghijkl"))
	g, err := sim.New(sim.Config{Seed: seed, Patients: 20, Days: 10}, ps)
	if err != nil {
		t.Fatal(err)
	}
	for ev := range g.Events(nil) {
		if ev.Type == events.Booked {
			b, _ := json.Marshal(ev)
			return ev, kafka.Message{Key: []byte(ev.Patient), Value: b}
		}
	}
	t.Fatal("the simulator made no booking")
	return events.Appointment{}, kafka.Message{}
}

// readyz returns /readyz's status code and body (0 and the error when it does not answer).
func readyz(addr string) (int, string) {
	res, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// scoredOnce waits until the risk topic holds a risk event for ev.
func scoredOnce(t *testing.T, brokers []string, risk string, ev events.Appointment) {
	t.Helper()
	testenv.Eventually(t, 90*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		msgs, err := stream.ReadAll(ctx, brokers, risk)
		if err != nil {
			return false
		}
		for _, m := range msgs {
			var r events.Risk
			if json.Unmarshal(m.Value, &r) == nil && r.AppointmentID == ev.AppointmentID && string(m.Key) == ev.Patient {
				return true
			}
		}
		return false
	}, "a risk event for the booking")
}

// Issue 12, item 3: a consumer started before its topics exist says so on /readyz, naming
// them, does not create them by asking (the test broker would auto-create), and scores a
// booking once they are created, without a restart. With --create-topics it makes them
// itself, with --topic-partitions.
func TestBinaryTopicsCreatedAfterStart(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	bin := consumerBinary(t)
	env := []string{"KAFKA_BROKERS=" + strings.Join(brokers, ","), "REDIS_ADDR=" + redisAddr}
	group := fmt.Sprintf("consumer-topics-%d", time.Now().UnixNano())

	t.Run("waits", func(t *testing.T) {
		names := laterTopics(t, brokers, 3)
		in, risk, dlq := names[0], names[1], names[2]
		opsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		r := startScorer(t, bin, env, "--metrics-addr", opsAddr, "--group", group+"-a", "--redis-prefix", group+"-a:",
			"--topic-appointments", in, "--topic-risk", risk, "--topic-dlq", dlq)
		var body string
		testenv.Eventually(t, 30*time.Second, func() bool {
			var code int
			code, body = readyz(opsAddr)
			return code == http.StatusServiceUnavailable && strings.Contains(body, "do not exist")
		}, "/readyz to answer 503 naming the missing topics")
		var rd struct {
			Ready  bool
			Checks map[string]string
		}
		if err := json.Unmarshal([]byte(body), &rd); err != nil {
			t.Fatalf("/readyz body %q: %v", body, err)
		}
		for _, name := range names {
			if !strings.Contains(rd.Checks["topics"], name) {
				t.Errorf("/readyz topics check %q does not name %s", rd.Checks["topics"], name)
			}
		}
		time.Sleep(2 * time.Second) // several checks more
		admin := stream.NewAdmin(brokers)
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if missing, err := admin.Missing(ctx, names...); err != nil || len(missing) != 3 {
			t.Fatalf("the waiting consumer created topics: missing %v, %v", missing, err)
		}

		if err := admin.CreateTopics(ctx, stream.TopicSpec{Partitions: 2, Replication: 1}, names...); err != nil {
			t.Fatal(err)
		}
		ev, msg := oneBooking(t, 5)
		w := stream.NewWriter(brokers, in)
		defer w.Close()
		if err := w.WriteMessages(ctx, msg); err != nil {
			t.Fatal(err)
		}
		scoredOnce(t, brokers, risk, ev)
		testenv.Eventually(t, 30*time.Second, func() bool { code, _ := readyz(opsAddr); return code == http.StatusOK }, "/readyz to answer 200")
		r.stop(t)
		if !strings.Contains(r.logs.String(), `"msg":"topics ready"`) {
			t.Errorf("no topics-ready log line:\n%s", r.logs.String())
		}
	})

	t.Run("creates", func(t *testing.T) {
		names := laterTopics(t, brokers, 3)
		in, risk, dlq := names[0], names[1], names[2]
		r := startScorer(t, bin, append(env, "CREATE_TOPICS=true"), "--topic-partitions", "3", "--group", group+"-b", "--redis-prefix", group+"-b:",
			"--topic-appointments", in, "--topic-risk", risk, "--topic-dlq", dlq)
		admin := stream.NewAdmin(brokers)
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		testenv.Eventually(t, 30*time.Second, func() bool {
			missing, err := admin.Missing(ctx, names...)
			return err == nil && len(missing) == 0
		}, "the consumer to create its topics")
		for _, name := range names {
			if n := partitionsOf(t, brokers, name); n != 3 {
				t.Errorf("topic %s has %d partitions, want 3 (--topic-partitions)", name, n)
			}
		}
		ev, msg := oneBooking(t, 6)
		w := stream.NewWriter(brokers, in)
		defer w.Close()
		if err := w.WriteMessages(ctx, msg); err != nil {
			t.Fatal(err)
		}
		scoredOnce(t, brokers, risk, ev)
		r.stop(t)
	})
}
