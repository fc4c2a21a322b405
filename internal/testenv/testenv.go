// Package testenv connects integration tests to the real Kafka and Redis that
// `make test` (or `make services-up`) starts, and gives them the small helpers
// they share: a throwaway topic per test and a polling wait instead of sleeps.
//
// Services are found through KAFKA_BROKERS, REDIS_ADDR and REDIS_CLUSTER_ADDRS.
// When one is missing or unreachable the test is skipped loudly, except under
// CI=true, where a missing service fails the test: CI must never go green by
// skipping the integration tests.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
)

// Environment variables read by this package.
const (
	KafkaBrokersVar      = "KAFKA_BROKERS"       // comma-separated host:port list
	RedisAddrVar         = "REDIS_ADDR"          // standalone redis-server host:port
	RedisClusterAddrsVar = "REDIS_CLUSTER_ADDRS" // comma-separated seed nodes of a Redis Cluster
)

// dialTimeout bounds each reachability check so a missing service costs a
// test seconds, not minutes.
const dialTimeout = 5 * time.Second

// CI reports whether the tests run under CI (CI=true), where a missing service
// is a failure rather than a skip.
func CI() bool {
	ok, _ := strconv.ParseBool(os.Getenv("CI"))
	return ok
}

// unavailable fails the test under CI and skips it otherwise.
func unavailable(tb testing.TB, service, format string, args ...any) {
	tb.Helper()
	reason := fmt.Sprintf(format, args...)
	if CI() {
		tb.Fatalf("%s is required under CI=true but is not available: %s", service, reason)
	}
	tb.Skipf("SKIPPING INTEGRATION TEST: %s not available (%s). "+
		"Run `make test`, or `make services-up` and export the variables it prints.", service, reason)
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Kafka returns the brokers in KAFKA_BROKERS after checking that one of them
// answers a metadata request.
func Kafka(tb testing.TB) []string {
	tb.Helper()
	brokers := splitAddrs(os.Getenv(KafkaBrokersVar))
	if len(brokers) == 0 {
		unavailable(tb, "Kafka", "%s is not set", KafkaBrokersVar)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	conn, err := dialAny(ctx, brokers)
	if err != nil {
		unavailable(tb, "Kafka", "%s=%s: %v", KafkaBrokersVar, strings.Join(brokers, ","), err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := conn.Brokers(); err != nil {
		unavailable(tb, "Kafka", "metadata from %s: %v", conn.RemoteAddr(), err)
	}
	return brokers
}

func dialAny(ctx context.Context, brokers []string) (*kafka.Conn, error) {
	var errs []error
	for _, b := range brokers {
		conn, err := kafka.DialContext(ctx, "tcp", b)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("dial %s: %w", b, err))
	}
	return nil, errors.Join(errs...)
}

// Redis returns REDIS_ADDR after checking that the server answers PING.
func Redis(tb testing.TB) string {
	tb.Helper()
	addr := strings.TrimSpace(os.Getenv(RedisAddrVar))
	if addr == "" {
		unavailable(tb, "Redis", "%s is not set", RedisAddrVar)
	}
	if err := ping(addr); err != nil {
		unavailable(tb, "Redis", "%s=%s: %v", RedisAddrVar, addr, err)
	}
	return addr
}

// RedisCluster returns the seed nodes in REDIS_CLUSTER_ADDRS after checking
// that each answers PING and reports cluster_state:ok.
func RedisCluster(tb testing.TB) []string {
	tb.Helper()
	addrs := splitAddrs(os.Getenv(RedisClusterAddrsVar))
	if len(addrs) == 0 {
		unavailable(tb, "Redis Cluster", "%s is not set", RedisClusterAddrsVar)
	}
	for _, addr := range addrs {
		if err := clusterOK(addr); err != nil {
			unavailable(tb, "Redis Cluster", "%s=%s: %v", RedisClusterAddrsVar, strings.Join(addrs, ","), err)
		}
	}
	return addrs
}

func ping(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: dialTimeout})
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping %s: %w", addr, err)
	}
	return nil
}

func clusterOK(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: dialTimeout})
	defer c.Close()
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return fmt.Errorf("cluster info from %s: %w", addr, err)
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return fmt.Errorf("node %s is not part of a healthy cluster (cluster_state is not ok)", addr)
	}
	return nil
}

var unsafeTopicChars = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// Topic creates a topic with a unique name and the given number of
// partitions, waits until every partition has a leader, and deletes the topic
// when the test ends.
func Topic(tb testing.TB, brokers []string, partitions int) string {
	tb.Helper()
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	name := unsafeTopicChars.ReplaceAllString(tb.Name(), "_")
	if len(name) > 180 {
		name = name[:180]
	}
	topic := fmt.Sprintf("test.%s.%s", name, hex.EncodeToString(suffix[:]))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctrl, err := dialController(ctx, brokers)
	if err != nil {
		tb.Fatalf("create topic %s: %v", topic, err)
	}
	defer ctrl.Close()
	err = ctrl.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1})
	if err != nil {
		tb.Fatalf("create topic %s: %v", topic, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ctrl, err := dialController(ctx, brokers)
		if err != nil {
			tb.Logf("delete topic %s: %v", topic, err)
			return
		}
		defer ctrl.Close()
		if err := ctrl.DeleteTopics(topic); err != nil {
			tb.Logf("delete topic %s: %v", topic, err)
		}
	})

	var lastErr error
	if !poll(30*time.Second, func() bool {
		lastErr = partitionsLed(ctx, brokers, topic, partitions)
		return lastErr == nil
	}) {
		tb.Fatalf("topic %s not ready: %v", topic, lastErr)
	}
	return topic
}

// dialController opens a connection to the cluster's controller: topic
// administration must go there.
func dialController(ctx context.Context, brokers []string) (*kafka.Conn, error) {
	conn, err := dialAny(ctx, brokers)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	ctrl, err := conn.Controller()
	if err != nil {
		return nil, fmt.Errorf("find controller via %s: %w", conn.RemoteAddr(), err)
	}
	c, err := kafka.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return nil, fmt.Errorf("dial controller %s:%d: %w", ctrl.Host, ctrl.Port, err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(deadline)
	}
	return c, nil
}

func partitionsLed(ctx context.Context, brokers []string, topic string, want int) error {
	conn, err := dialAny(ctx, brokers)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(dialTimeout))
	parts, err := conn.ReadPartitions(topic)
	if err != nil {
		return err
	}
	led := 0
	for _, p := range parts {
		if p.Leader.Host != "" && p.Error == nil {
			led++
		}
	}
	if led != want {
		return fmt.Errorf("%d of %d partitions have a leader", led, want)
	}
	return nil
}

// Eventually polls cond until it returns true, failing the test with msg if
// timeout passes first.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, msg string) {
	tb.Helper()
	if !poll(timeout, cond) {
		tb.Fatalf("condition not met within %s: %s", timeout, msg)
	}
}

// poll calls cond with a growing pause (5ms up to 100ms) until it returns
// true or timeout passes, and reports which.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	wait := 5 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		wait = min(2*wait, 100*time.Millisecond)
	}
	return true
}
