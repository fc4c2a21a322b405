package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/pas/hl7"
	"github.com/nhsx/dnarisk/pas/mllp"
)

// BenchmarkMLLPThroughput measures the gateway end to end on real Kafka and Redis: S12s over
// MLLP, each answered AA only after Kafka acknowledged its event (acks=all) and the booking
// state is saved in Redis, the contact store written. conns connections send at once, each
// waiting for its ACK before the next message (as engines do). Reports msgs/s.
//
//	go test -run XXX -bench MLLPThroughput -benchtime 2000x ./cmd/pasgateway/
func BenchmarkMLLPThroughput(b *testing.B) {
	for _, conns := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) { benchMLLP(b, conns) })
	}
}

func benchMLLP(b *testing.B, conns int) {
	brokers := testenv.Kafka(b)
	redisAddr := testenv.Redis(b)
	topic := testenv.Topic(b, brokers, 8)
	prefix := fmt.Sprintf("pasbench-%d:", time.Now().UnixNano())
	cfg, err := parseConfig([]string{"--mllp-addr", "127.0.0.1:0", "--fhir-addr", "off", "--redis-prefix", prefix, "--topic-appointments", topic,
		"--max-conns-per-host", "64"},
		lookupIn(map[string]string{"KAFKA_BROKERS": strings.Join(brokers, ","), "REDIS_ADDR": redisAddr, "DNA_CONTACT_KEY": contactKeyHex}), io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	ps, _ := pseudo.New([]byte(secret))
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, ps, slog.New(slog.DiscardHandler), func(m, _ string) { ready <- m })
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		b.Fatal(err)
	}
	defer func() {
		cancel()
		<-done
	}()
	now := time.Now().UTC().Truncate(time.Second)
	send := func(c net.Conn, rd *mllp.Reader, i int) error {
		msg := siuMsg("S12", fmt.Sprintf("B%d", i), fmt.Sprintf("BENCH%d-%d", now.UnixNano(), i), now, now.Add(14*24*time.Hour), "")
		if err := mllp.Write(c, []byte(strings.ReplaceAll(msg, "\n", "\r"))); err != nil {
			return err
		}
		ack, err := rd.Read()
		if err != nil {
			return err
		}
		m, err := hl7.Parse(ack)
		if err != nil {
			return err
		}
		if msa, _ := m.Segment("MSA"); msa.Get(1, 1) != "AA" {
			return fmt.Errorf("ack %s %q", msa.Get(1, 1), msa.Get(3, 1))
		}
		return nil
	}
	// One message per connection first, so connection set-up and the first metadata
	// round trips are not measured.
	clients := make([]net.Conn, conns)
	readers := make([]*mllp.Reader, conns)
	for i := range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		clients[i], readers[i] = c, mllp.NewReader(bufio.NewReader(c), 0)
		if err := send(c, readers[i], -1-i); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < b.N; i += conns {
				if err := send(clients[w], readers[w], i); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}
