package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/stream"
)

// privateRedis is a redis-server this test owns, so it can take it away: one with an
// append-only file, so a restart brings the histories back.
type privateRedis struct {
	t    *testing.T
	port int
	dir  string
	cmd  *exec.Cmd
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if testenv.CI() {
			t.Fatalf("redis-server is required under CI=true: %v", err)
		}
		t.Skipf("SKIPPING: redis-server not installed (%v)", err)
	}
	r := &privateRedis{t: t, port: testenv.FreePort(t), dir: t.TempDir()}
	r.start()
	t.Cleanup(func() {
		if r.cmd != nil {
			_ = r.cmd.Process.Kill()
			_ = r.cmd.Wait()
		}
	})
	return r
}

func (r *privateRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *privateRedis) start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(r.port), "--dir", r.dir,
		"--save", "", "--appendonly", "yes", "--logfile", filepath.Join(r.dir, "redis.log"))
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	testenv.Eventually(r.t, 15*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", r.addr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "the private redis-server to listen")
}

// stop shuts the server down as an operator would (SIGTERM: the append-only file is synced).
func (r *privateRedis) stop() {
	r.t.Helper()
	_ = r.cmd.Process.Signal(os.Interrupt)
	_ = r.cmd.Wait()
	r.cmd = nil
}

func rssKB(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// While Redis or the risk topic is unavailable, the real binary takes no new work: it
// commits nothing, publishes nothing and its memory stays flat while the backlog builds up
// in Kafka; when the dependency returns it carries on, and in the end every booking is
// scored and every history is the input's. The output topic is made unavailable by making
// the broker refuse every write to it (max.message.bytes below a risk event's size) while
// the input stays readable. (min.insync.replicas above the replication factor would be the
// classic way, but Kafka 4 no longer refuses writes for it on a one-replica topic.)
func TestBinaryStopsIntakeWhileRedisOrOutputIsDown(t *testing.T) {
	brokers := testenv.Kafka(t)
	rds := startPrivateRedis(t)
	const parts = 4
	in := testenv.Topic(t, brokers, parts)
	risk := testenv.Topic(t, brokers, 1)
	dlq := testenv.Topic(t, brokers, 1)
	group := fmt.Sprintf("consumer-backpressure-%d", time.Now().UnixNano())
	bin := consumerBinary(t)
	s := newSimStream(t, 4, 6000, 60)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	w := stream.NewWriter(brokers, in)
	defer w.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	pubErr := make(chan error, 1)
	go func() { // about 400 events a second: the load keeps coming through both outages
		defer wg.Done()
		for i := 0; i < len(s.msgs); i += 40 {
			if err := w.WriteMessages(ctx, s.msgs[i:min(i+40, len(s.msgs))]...); err != nil {
				pubErr <- err
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	sc := startScorer(t, bin, []string{"KAFKA_BROKERS=" + strings.Join(brokers, ","), "REDIS_ADDR=" + rds.addr()},
		"--group", group, "--topic-appointments", in, "--topic-risk", risk, "--topic-dlq", dlq, "--redis-prefix", "bp:", "--batch-size", "200")
	committed := func() int64 {
		var n int64
		for _, c := range committedOffsets(t, brokers, group, in, parts) {
			n += c
		}
		return n
	}
	published := func() int64 {
		n, err := endOffsets(ctx, brokers, risk)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	testenv.Eventually(t, time.Minute, func() bool { return committed() > 500 }, "the scorer to commit some work")

	outage := func(what string, down, up func()) {
		t.Helper()
		down()
		time.Sleep(time.Second) // the batch in hand may still finish
		c0, p0, m0 := committed(), published(), rssKB(sc.cmd.Process.Pid)
		time.Sleep(6 * time.Second)
		c1, p1, m1 := committed(), published(), rssKB(sc.cmd.Process.Pid)
		arrived, _ := endOffsets(ctx, brokers, in)
		t.Logf("%s: committed %d -> %d, risk events %d -> %d, RSS %d -> %d kB, %d events arrived by then", what, c0, c1, p0, p1, m0, m1, arrived)
		if c1 != c0 || p1 != p0 {
			t.Errorf("%s: the scorer committed %d offsets and published %d risk events while it lasted", what, c1-c0, p1-p0)
		}
		if m1-m0 > 32<<10 {
			t.Errorf("%s: RSS grew %d kB in 6s: the scorer is buffering", what, m1-m0)
		}
		up()
		testenv.Eventually(t, time.Minute, func() bool { return committed() > c1 }, "the scorer to resume after the "+what)
	}
	outage("Redis outage", rds.stop, rds.start)
	outage("output topic outage",
		func() { setTopicConfig(t, brokers, risk, "max.message.bytes", "64") },
		func() { setTopicConfig(t, brokers, risk, "max.message.bytes", "1048588") })

	wg.Wait()
	select {
	case err := <-pubErr:
		t.Fatal(err)
	default:
	}
	testenv.Eventually(t, 2*time.Minute, func() bool { return committed() == int64(len(s.msgs)) }, "the scorer to work off the backlog")
	sc.stop(t)
	got := riskCounts(t, brokers, risk)
	for _, k := range s.scored {
		if got[k] == 0 {
			t.Errorf("booking %s never scored", k)
		}
	}
	s.checkHistories(t, rds.addr(), "bp:")
}

func setTopicConfig(t *testing.T, brokers []string, topic, name, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := (&kafka.Client{Addr: kafka.TCP(brokers...)}).IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{
		Resources: []kafka.IncrementalAlterConfigsRequestResource{{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
			Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: name, Value: value, ConfigOperation: kafka.ConfigOperationSet}}}},
	})
	if err == nil && len(res.Resources) > 0 && res.Resources[0].Error != nil {
		err = res.Resources[0].Error
	}
	if err != nil {
		t.Fatalf("set %s=%s on %s: %v", name, value, topic, err)
	}
}
