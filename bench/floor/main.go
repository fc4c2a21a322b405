// Command floor measures the Kafka round trip alone on this machine: bookings-sized messages
// produced at a fixed rate (stream.NewWriter, 1 ms linger, as cmd/bench's load generator) and
// read back by a consumer group of two members (stream.NewReader, as cmd/consumer), timed from
// hand-over to the producer to read. No scorer, no Redis: the floor under cmd/bench's latency
// figures (docs/performance.md, "The latency tail").
//
//	go run ./bench/floor [--brokers 127.0.0.1:19092] [--rate 2000] [--seconds 15]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/stream"
)

func main() {
	brokers := flag.String("brokers", envOr("KAFKA_BROKERS", "127.0.0.1:19092"), "Kafka brokers (env KAFKA_BROKERS)")
	rate := flag.Int("rate", 2000, "messages a second")
	seconds := flag.Int("seconds", 15, "length of the run")
	flag.Parse()
	if err := run(strings.Split(*brokers, ","), *rate, *seconds); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(brokers []string, rate, seconds int) error {
	ctx := context.Background()
	topic := fmt.Sprintf("floor-%d", time.Now().UnixNano())
	conn, err := kafka.Dial("tcp", brokers[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: 4, ReplicationFactor: 1}); err != nil {
		return fmt.Errorf("create %s: %w", topic, err)
	}
	defer func() { _ = conn.DeleteTopics(topic) }()

	total := rate * seconds
	var mu sync.Mutex
	sent := make(map[string]time.Time, rate+total)
	lat := make([]float64, 0, total)
	got := make(chan struct{}, rate+total)
	for range 2 {
		r := stream.NewReader(brokers, topic+"-group", topic)
		defer r.Close()
		go func() {
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					return
				}
				at := time.Now()
				mu.Lock()
				if t, ok := sent[string(m.Key)]; ok {
					lat = append(lat, float64(at.Sub(t).Microseconds())/1000)
				}
				mu.Unlock()
				got <- struct{}{}
			}
		}()
	}
	time.Sleep(8 * time.Second) // both members joined and assigned

	w := stream.NewWriter(brokers, topic)
	w.BatchTimeout = time.Millisecond
	defer w.Close()
	// The first second of load warms up (group assignment, first fetches, connections) and is
	// not measured, as in cmd/bench's latency run.
	warm := rate
	msgs := make([]kafka.Message, warm+total)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte("k" + strconv.Itoa(i)), Value: make([]byte, 400)}
	}
	offer := func(msgs []kafka.Message) error {
		start := time.Now()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for next := 0; next < len(msgs); {
			<-tick.C
			due := min(int(time.Since(start).Seconds()*float64(rate)), len(msgs))
			if due <= next {
				continue
			}
			now := time.Now()
			mu.Lock()
			for _, m := range msgs[next:due] {
				sent[string(m.Key)] = now
			}
			mu.Unlock()
			if err := w.WriteMessages(ctx, msgs[next:due]...); err != nil {
				return err
			}
			next = due
		}
		deadline := time.After(30 * time.Second)
		for i := range msgs {
			select {
			case <-got:
			case <-deadline:
				return fmt.Errorf("%d of %d messages read within 30 s of the last", i, len(msgs))
			}
		}
		return nil
	}
	if err := offer(msgs[:warm]); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	mu.Lock()
	lat = lat[:0]
	mu.Unlock()
	if err := offer(msgs[warm:]); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	q := func(p float64) float64 { return lat[int(p*float64(len(lat)-1))] }
	fmt.Printf("messages %d at %d/s: p50 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, max %.1f ms\n", len(lat), rate, q(.5), q(.99), q(.999), lat[len(lat)-1])
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
