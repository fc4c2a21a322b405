package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// services is the suite's own Kafka and Redis, run by scripts/kafka.sh and scripts/redis.sh
// on ports no one else uses. Redis keeps an append-only file, so a restart brings the data
// back, as it would for a production Redis with persistence; Kafka restarts on its data.
type services struct {
	root      string
	kafkaPort int
	// kafkaNodes is the size of the Kafka cluster: node N listens on kafkaPort + 2(N-1).
	kafkaNodes int
	redisPort  int
	log        *slog.Logger
}

// brokers are the bootstrap addresses of every Kafka node, so clients find the cluster while
// any one node is down.
func (s *services) brokers() []string {
	out := make([]string, max(s.kafkaNodes, 1))
	for i := range out {
		out[i] = "127.0.0.1:" + strconv.Itoa(s.kafkaPort+2*i)
	}
	return out
}

// proxiedPorts are where node 1 of a one-broker Kafka listens for the scorers' proxy (bind)
// and the port it tells them to dial (the proxy's).
func (s *services) proxiedPorts() (bind, advertised int) { return s.kafkaPort + 8, s.kafkaPort + 9 }

// brokerList is brokers() as a flag value.
func (s *services) brokerList() string { return strings.Join(s.brokers(), ",") }

func (s *services) redisAddr() string { return "127.0.0.1:" + strconv.Itoa(s.redisPort) }

func (s *services) env(extra ...string) []string {
	env := append(os.Environ(),
		"KAFKA_PORT="+strconv.Itoa(s.kafkaPort),
		"KAFKA_CONTROLLER_PORT="+strconv.Itoa(s.kafkaPort+1),
		"KAFKA_HEAP=512m",
		"KAFKA_NODES="+strconv.Itoa(max(s.kafkaNodes, 1)),
		"KAFKA_PROXIED="+s.proxied(),
		"REDIS_PORT="+strconv.Itoa(s.redisPort),
		"REDIS_CLUSTER_PORTS=none",
		"REDIS_APPENDONLY=yes",
	)
	return append(env, extra...)
}

// script runs scripts/<name>.sh with args and returns its last line of output.
func (s *services) script(ctx context.Context, name string, extraEnv []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.root, "scripts", name+".sh"), args...)
	cmd.Env = s.env(extraEnv...)
	cmd.Dir = s.root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	if err != nil {
		return text, fmt.Errorf("scripts/%s.sh %s: %w\n%s", name, strings.Join(args, " "), err, text)
	}
	lines := strings.Split(text, "\n")
	return lines[len(lines)-1], nil
}

// start starts Kafka and Redis afresh, wiping what an earlier run left.
func (s *services) start(ctx context.Context) error {
	s.stop()
	var wg sync.WaitGroup
	var kerr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		var line string
		line, kerr = s.script(ctx, "kafka", nil, "start")
		s.log.Info(line)
	}()
	line, rerr := s.script(ctx, "redis", nil, "start")
	s.log.Info(line)
	wg.Wait()
	if kerr != nil || rerr != nil {
		s.stop()
		return fmt.Errorf("start services: %w", errors.Join(kerr, rerr))
	}
	return nil
}

func (s *services) stop() {
	for _, name := range []string{"kafka", "redis"} {
		if _, err := s.script(context.Background(), name, nil, "stop"); err != nil {
			s.log.Warn("stop service", "service", name, "err", err)
		}
	}
}

// restartKafka stops the broker (controlled shutdown) and starts it on the same data.
func (s *services) restartKafka(ctx context.Context) (string, error) {
	return s.script(ctx, "kafka", nil, "restart")
}

// restartRedis shuts Redis down and starts it on its append-only file after down.
func (s *services) restartRedis(ctx context.Context, down time.Duration) (string, error) {
	return s.script(ctx, "redis", []string{"REDIS_DOWN_SECONDS=" + strconv.FormatFloat(down.Seconds(), 'f', 1, 64)}, "restart")
}

// crashRedis kills Redis with kill -9 (nothing synced on the way down) and starts it again
// on its append-only file after down.
func (s *services) crashRedis(ctx context.Context, down time.Duration) (string, error) {
	return s.script(ctx, "redis", []string{"REDIS_DOWN_SECONDS=" + strconv.FormatFloat(down.Seconds(), 'f', 1, 64)}, "crash")
}

// crashKafkaNode kills Kafka node n with kill -9 and starts it again on its data after down.
func (s *services) crashKafkaNode(ctx context.Context, n int, down time.Duration) (string, error) {
	return s.script(ctx, "kafka", []string{"KAFKA_DOWN_SECONDS=" + strconv.FormatFloat(down.Seconds(), 'f', 1, 64)}, "crash", strconv.Itoa(n))
}

// kafkaController is the node number of the active KRaft controller.
func (s *services) kafkaController(ctx context.Context) (int, error) {
	line, err := s.script(ctx, "kafka", nil, "controller")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(line))
}

// createTopics creates the pipeline's topics with enough partitions for rebalances to move
// work between members, replicated replication times (min.insync.replicas is the broker's).
func createTopics(ctx context.Context, brokers []string, topics map[string]int) error {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	var cfgs []kafka.TopicConfig
	replication := min(len(brokers), 3)
	for t, n := range topics {
		cfgs = append(cfgs, kafka.TopicConfig{Topic: t, NumPartitions: n, ReplicationFactor: replication})
	}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: cfgs, ValidateOnly: false})
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for t, err := range res.Errors {
		if err != nil {
			return fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	// Every partition must have a leader before producers and consumers start.
	deadline := time.Now().Add(30 * time.Second)
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
		ready := 0
		if err == nil {
			for _, t := range md.Topics {
				if n, ok := topics[t.Name]; ok && t.Error == nil && len(t.Partitions) == n {
					led := true
					for _, p := range t.Partitions {
						led = led && p.Error == nil && p.Leader.Host != ""
					}
					if led {
						ready++
					}
				}
			}
		}
		if ready == len(topics) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topics not ready after 30s (metadata error: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// endOffsets returns the sum over partitions of topic's end offsets: how many messages it
// has ever held (nothing is deleted during a run).
func endOffsets(ctx context.Context, brokers []string, topic string, partitions int) (int64, error) {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	reqs := make([]kafka.OffsetRequest, partitions)
	for p := range partitions {
		reqs[p] = kafka.LastOffsetOf(p)
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, err
	}
	var n int64
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return 0, p.Error
		}
		n += p.LastOffset
	}
	return n, nil
}

// proxied is KAFKA_PROXIED for scripts/kafka.sh: a listener for the scorers' proxy on one
// broker, none on a cluster.
func (s *services) proxied() string {
	if s.kafkaNodes > 1 {
		return ""
	}
	bind, adv := s.proxiedPorts()
	return strconv.Itoa(bind) + ":" + strconv.Itoa(adv)
}
