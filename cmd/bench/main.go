// Command bench measures the scorer end to end against real Kafka and Redis, next to a Python
// implementation of the same job (bench/peer) and a Kafka Streams one (bench/jvm), on the same
// broker, Redis, model and input.
// `make bench` starts the services and runs it; it writes out/bench.json.
//
// It simulates two years of a hospital, loads the first year into Redis as patient histories
// and publishes the second year's events (at least a million bookings by default) to a topic.
// Each implementation then consumes that topic as a separate process, from a fresh consumer
// group over freshly loaded histories, once per run:
//
//   - throughput: events per second from the first risk event written to the moment the
//     group's committed offsets reach the end of the input;
//   - peak RSS of the process (VmHWM);
//   - latency: p50/p99/p99.9 from a booking being produced to its risk event being readable,
//     at a fixed offered load (default 2,000 events/s).
//
// Each peer's risk events must match ours within 1e-9 on every booking both scored, or its
// comparison is reported as void. Every implementation also gets events per CPU-second: its
// events over the user+system CPU time its own process used (/proc/<pid>/stat), from its start
// to the end of the run.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/stream"
)

type config struct {
	brokers        []string
	redisAddr      string
	patients       int
	bookingsPerYr  float64
	runs           int
	peerEvents     int
	latencyRate    int
	latencySeconds int
	latencySamples string // "" or where the Go latency run writes each sample (--latency-samples)
	partitions     int
	modelDir       string
	out            string
	peerCmd        string
	skipPeer       bool
	jvmCmd         string
	skipJVM        bool
	challenger     string // the Go consumer's --challenger-model-dir ("": none)
	jvmEvents      int
	warmupEvents   int
	profile        string
	trace          string
	allocProfile   string
	batch          int
	workers        int
	batchWait      time.Duration
	consumerEnv    string // "NAME=value ..." added to the Go consumer's environment
	floor          bool   // --floor: floorRun only
}

// Result is one implementation's figures (medians over runs, with every run kept).
type Result struct {
	EventsPerS float64 `json:"events_per_s"`
	// EventsPerCPUs is events per CPU-second the process itself used (user+system): what the
	// implementation costs, apart from the broker and Redis sharing the machine.
	EventsPerCPUs float64   `json:"events_per_cpu_s"`
	P50ms         float64   `json:"p50_ms"`
	P99ms         float64   `json:"p99_ms"`
	P999ms        float64   `json:"p999_ms"`
	RSSMB         float64   `json:"rss_mb"`
	Events        int       `json:"events"`
	Runs          []float64 `json:"events_per_s_runs"`
	RSSRuns       []float64 `json:"rss_mb_runs"`
	// Cores is how the machine's cores were spent during the throughput runs (medians).
	Cores *Cores `json:"cores,omitempty"`
	Note  string `json:"note,omitempty"`
}

// Cores splits the machine's time during a throughput run, in cores on average, from the
// implementation's first commit to the commit that ends the run: the implementation itself,
// Redis, everything else busy (the Kafka broker, this harness, the kernel's own work), and
// idle. A run that leaves cores idle waits on something other than the CPU.
type Cores struct {
	Process float64 `json:"process"`
	Redis   float64 `json:"redis"`
	Other   float64 `json:"other"`
	Idle    float64 `json:"idle"`
}

// cpuSnapshot is the CPU time (s) used so far by the whole machine, by Redis and by the
// process under test.
type cpuSnapshot struct {
	at             time.Time
	busy, idle     float64
	redis, process float64
}

// snapshot reads the machine's CPU time from /proc/stat and Redis's from INFO cpu (NaN if
// rdb is nil or does not answer).
func snapshot(ctx context.Context, rdb *redis.Client, processCPU float64) cpuSnapshot {
	s := cpuSnapshot{at: time.Now(), redis: math.NaN(), process: processCPU}
	s.busy, s.idle = machineCPU()
	if rdb != nil {
		if info, err := rdb.Info(ctx, "cpu").Result(); err == nil {
			s.redis = redisCPU(info)
		}
	}
	return s
}

// machineCPU is the time (s) all cores have spent busy and idle since boot (/proc/stat's
// first line: user nice system idle iowait irq softirq steal ...; idle and iowait are idle).
func machineCPU() (busy, idle float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return math.NaN(), math.NaN()
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:min(len(f), 9)] {
		t, _ := strconv.ParseFloat(v, 64)
		if i == 3 || i == 4 {
			idle += t / 100
		} else {
			busy += t / 100
		}
	}
	return busy, idle
}

// redisCPU is used_cpu_sys + used_cpu_user from INFO cpu.
func redisCPU(info string) float64 {
	var sum float64
	n := 0
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			t, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return math.NaN()
			}
			sum += t
			n++
		}
	}
	if n != 2 {
		return math.NaN()
	}
	return sum
}

// coresBetween is the split of the machine's cores between two snapshots.
func coresBetween(a, b cpuSnapshot) *Cores {
	d := b.at.Sub(a.at).Seconds()
	if !(d > 0) {
		return nil
	}
	process, redis := (b.process-a.process)/d, (b.redis-a.redis)/d
	if math.IsNaN(redis) { // no Redis figure: it is in other
		redis = 0
	}
	other := (b.busy-a.busy)/d - process - redis
	return &Cores{Process: round(process, 2), Redis: round(redis, 2), Other: round(max(other, 0), 2), Idle: round((b.idle-a.idle)/d, 2)}
}

// Report is out/bench.json.
type Report struct {
	Go   Result  `json:"go"`
	Peer *Result `json:"peer,omitempty"`
	// GoPrefix is the Go consumer over the same prefix of the input as the Python peer, so
	// that ThroughputRatio compares the two on the same events (the rule: both over
	// the whole input or both over the same prefix). Go is the whole input.
	GoPrefix        *Result `json:"go_prefix,omitempty"`
	ThroughputRatio float64 `json:"throughput_ratio,omitempty"`
	// PeerCPURatio is the same comparison per CPU-second of the process itself.
	PeerCPURatio float64 `json:"throughput_ratio_per_cpu_s,omitempty"`
	Parity       *Parity `json:"parity,omitempty"`
	// JVM is the Kafka Streams peer (bench/jvm), measured as Peer is.
	JVM                *Result        `json:"jvm,omitempty"`
	JVMThroughputRatio float64        `json:"jvm_throughput_ratio,omitempty"`
	JVMParity          *Parity        `json:"jvm_parity,omitempty"`
	Machine            map[string]any `json:"machine"`
	Input              map[string]any `json:"input"`
	Command            string         `json:"command"`
	When               time.Time      `json:"when"`
	Stages             Stages         `json:"stages,omitempty"` // stages.go
	// BackfillEventsPerS is cmd/consumer --backfill over the whole input (backfill.go).
	BackfillEventsPerS float64 `json:"backfill_events_per_s,omitempty"`
}

// Parity compares the peer's probabilities with ours.
type Parity struct {
	Compared   int     `json:"bookings_compared"`
	MaxAbsDiff float64 `json:"max_abs_diff"`
	Valid      bool    `json:"valid"`
}

func main() {
	var c config
	brokers := flag.String("brokers", envOr("KAFKA_BROKERS", "127.0.0.1:19092"), "Kafka brokers (env KAFKA_BROKERS)")
	flag.StringVar(&c.redisAddr, "redis", envOr("REDIS_ADDR", "127.0.0.1:16379"), "Redis address (env REDIS_ADDR)")
	flag.IntVar(&c.patients, "patients", 110_000, "simulated patients (all get a year of history)")
	flag.Float64Var(&c.bookingsPerYr, "bookings-per-year", 10, "mean bookings per patient per year")
	flag.IntVar(&c.runs, "runs", 3, "throughput runs per implementation")
	flag.IntVar(&c.warmupEvents, "warmup-events", 500_000, "events of an unmeasured Go run before any measured one, to warm the broker's JIT (0: none)")
	flag.IntVar(&c.peerEvents, "peer-events", 200_000, "events the peer consumes per run (a prefix of the same input; it is slow)")
	flag.IntVar(&c.latencyRate, "latency-rate", 2000, "offered load of the latency run, events/s")
	flag.IntVar(&c.latencySeconds, "latency-seconds", 30, "length of the latency run")
	flag.StringVar(&c.latencySamples, "latency-samples", "", "write the Go latency run's samples to this CSV file (booking handed over, s from the first; latency, in, out, ms): where in the run the tail sits")
	flag.IntVar(&c.partitions, "partitions", 4, "partitions of the input topic")
	flag.IntVar(&c.batch, "batch-size", 500, "the Go consumer's --batch-size")
	flag.IntVar(&c.workers, "workers", 2, "the Go consumer's --workers")
	flag.DurationVar(&c.batchWait, "batch-wait", 10*time.Millisecond, "the Go consumer's --batch-wait")
	flag.StringVar(&c.consumerEnv, "consumer-env", "GOGC=400 GOMEMLIMIT=80MiB", "environment added to the Go consumer's: the garbage collector's settings docker-compose.yml deploys it with (docs/performance.md)")
	flag.StringVar(&c.modelDir, "model-dir", "models/default", "model directory")
	flag.StringVar(&c.out, "out", "out/bench.json", "report file")
	flag.StringVar(&c.peerCmd, "peer", ".venv-peer/bin/python bench/peer/peer.py", "command that runs the Python peer")
	flag.BoolVar(&c.skipPeer, "skip-peer", false, "do not measure the Python peer")
	flag.StringVar(&c.jvmCmd, "jvm", "java -Xmx512m -jar bench/jvm/target/jvm-peer.jar", "command that runs the Kafka Streams peer (make jvm-peer builds the jar)")
	flag.BoolVar(&c.skipJVM, "skip-jvm", false, "do not measure the Kafka Streams peer")
	flag.StringVar(&c.challenger, "challenger-model-dir", "", "run the Go consumer with this shadow challenger (its --challenger-model-dir), to measure what a challenger costs end to end")
	flag.IntVar(&c.jvmEvents, "jvm-events", 0, "events the Kafka Streams peer must commit per run (0: the whole input, as the Go consumer)")
	flag.BoolVar(&c.floor, "floor", false, "measure only the Kafka round trip the latency run rides on (floor.go): --latency-rate messages a second for --latency-seconds, read by --workers group members; no scorer, no Redis, no report file")
	flag.StringVar(&c.profile, "profile", "", "write a CPU profile of the Go consumer's throughput runs to this file (the last run's survives)")
	flag.StringVar(&c.allocProfile, "alloc-profile", "", "write the allocations of the Go consumer's throughput runs to this file (the last run's survives; go tool pprof -sample_index=alloc_space)")
	flag.StringVar(&c.trace, "trace", "", "write an execution trace of the Go consumer's throughput runs to this file (the last run's survives; go tool trace)")
	flag.Parse()
	c.brokers = strings.Split(*brokers, ",")
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	job := run
	if c.floor {
		job = floorRun
	}
	if err := job(context.Background(), c, log); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

// world is the pre-generated benchmark input.
type world struct {
	histories map[string]*featurestore.History
	input     []kafka.Message
	bookings  int
	cut       time.Time
}

func generate(c config) (*world, error) {
	ps, _ := pseudo.New([]byte("benchmark-only-secret-0123456789abcdef"))
	start := time.Date(2023, 6, 1, 0, 0, 0, 0, time.UTC) // so the input ends before today: the consumer refuses future-dated events
	g, err := sim.New(sim.Config{Seed: 2026, Patients: c.patients, Start: start, Days: 730, BookingsPerYear: c.bookingsPerYr}, ps)
	if err != nil {
		return nil, err
	}
	w := &world{histories: map[string]*featurestore.History{}, cut: start.AddDate(1, 0, 0)}
	for ev := range g.All() {
		if ev.EventTime.Before(w.cut) {
			h := w.histories[ev.Patient]
			if h == nil {
				h = &featurestore.History{}
				w.histories[ev.Patient] = h
			}
			h.Apply(&ev, featurestore.Policy{})
			continue
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		w.input = append(w.input, kafka.Message{Key: []byte(ev.Patient), Value: b})
		if ev.Type == events.Booked || ev.Type == events.Rescheduled {
			w.bookings++
		}
	}
	return w, nil
}

func run(ctx context.Context, c config, log *slog.Logger) error {
	t0 := time.Now()
	w, err := generate(c)
	if err != nil {
		return err
	}
	log.Info("input generated", "patients_with_history", len(w.histories), "events", len(w.input), "bookings", w.bookings, "took", time.Since(t0).Round(time.Millisecond))

	rdb := redis.NewClient(&redis.Options{Addr: c.redisAddr})
	defer rdb.Close()
	tag := strconv.FormatInt(time.Now().Unix(), 36)
	inTopic := "bench.in." + tag
	if err := createTopic(ctx, c.brokers, inTopic, c.partitions); err != nil {
		return err
	}
	t0 = time.Now()
	if err := publish(ctx, c.brokers, inTopic, w.input); err != nil {
		return err
	}
	log.Info("input published", "topic", inTopic, "took", time.Since(t0).Round(time.Millisecond))

	bin := filepath.Join(os.TempDir(), "dnarisk-bench-consumer")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/consumer").CombinedOutput(); err != nil {
		return fmt.Errorf("build consumer: %v\n%s", err, out)
	}

	rep := Report{
		Machine: machine(),
		Input: map[string]any{"events": len(w.input), "bookings": w.bookings, "patients_with_history": len(w.histories),
			"partitions": c.partitions, "history_window": "1 year simulated before the input year"},
		Command: "make bench",
		When:    time.Now().UTC(),
	}
	if !c.skipJVM {
		rep.Machine["java"] = javaVersion(c.jvmCmd)
	}
	if n := min(c.warmupEvents, len(w.input)); n > 0 {
		// The broker was started for this run and runs its code interpreted until the JIT
		// has compiled it: unwarmed, the first implementation measured pays for that (Go's
		// first run here was 38k events/s against 45k and 48k after it, the broker's
		// compiler threads busy beside it).
		log.Info("warm-up: the Go consumer over a prefix of the input, not measured", "events", n)
		wc := c
		wc.runs, wc.profile, wc.trace, wc.allocProfile = 1, "", "", ""
		warm := goConsumer(wc, bin)
		warm.name = "go-warmup"
		if _, _, err := throughputRuns(ctx, wc, log, rdb, w, warm, inTopic, n); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	var goRisk map[string]float64
	rep.Go, goRisk, err = measure(ctx, c, log, rdb, w, goConsumer(c, bin), inTopic, len(w.input))
	if c.consumerEnv != "" {
		rep.Go.Note = "consumer environment: " + c.consumerEnv
	}
	if err != nil {
		return err
	}
	if rep.Stages, err = readStages(stagesFile("go")); err != nil {
		return fmt.Errorf("stage timings: %w", err)
	}
	if rep.BackfillEventsPerS, err = backfillRun(ctx, c, rdb, bin, inTopic, len(w.input)); err != nil {
		return err
	}
	log.Info("backfill", "events", len(w.input), "events_per_s", rep.BackfillEventsPerS)
	if !c.skipPeer {
		n := min(c.peerEvents, len(w.input))
		peer, peerRisk, err := measure(ctx, c, log, rdb, w, pythonPeer(c), inTopic, n)
		if err != nil {
			return fmt.Errorf("peer: %w", err)
		}
		peer.Note = fmt.Sprintf("consumes the first %d events of the same input per run", n)
		rep.Peer = &peer
		goPrefix, _, err := throughputRuns(ctx, c, log, rdb, w, goConsumer(c, bin), inTopic, n)
		if err != nil {
			return fmt.Errorf("go over the peer's prefix: %w", err)
		}
		goPrefix.Note = fmt.Sprintf("the Go consumer over the peer's input: the first %d events, timed to the commit that covers them", n)
		rep.GoPrefix = &goPrefix
		rep.ThroughputRatio = round(goPrefix.EventsPerS/peer.EventsPerS, 2)
		rep.PeerCPURatio = round(goPrefix.EventsPerCPUs/peer.EventsPerCPUs, 2)
		rep.Parity = compare(goRisk, peerRisk)
		if !rep.Parity.Valid {
			log.Error("peer outputs differ from ours: the comparison is void", "max_abs_diff", rep.Parity.MaxAbsDiff)
		}
	}
	if !c.skipJVM {
		n := len(w.input)
		if c.jvmEvents > 0 {
			n = min(c.jvmEvents, n)
		}
		jvm, jvmRisk, err := measure(ctx, c, log, rdb, w, jvmPeer(c), inTopic, n)
		if err != nil {
			return fmt.Errorf("jvm: %w", err)
		}
		jvm.Note = "Kafka Streams (bench/jvm); the whole input per run, as the Go consumer"
		if n < len(w.input) {
			jvm.Note = fmt.Sprintf("Kafka Streams (bench/jvm); a run ends when it has committed the first %d events of the same input", n)
		}
		rep.JVM = &jvm
		rep.JVMThroughputRatio = round(rep.Go.EventsPerS/jvm.EventsPerS, 2)
		rep.JVMParity = compare(goRisk, jvmRisk)
		if !rep.JVMParity.Valid {
			log.Error("Kafka Streams peer outputs differ from ours: the comparison is void", "max_abs_diff", rep.JVMParity.MaxAbsDiff)
		}
	}
	if err := os.MkdirAll(filepath.Dir(c.out), 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(c.out, b, 0o644); err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

type implArgs struct {
	group, in, risk, dlq, prefix string
	stages                       string // "" or the Go consumer's --stage-timings file
	maxEvents                    int
}

type impl struct {
	name  string
	start func(implArgs) *exec.Cmd
}

// goConsumer runs cmd/consumer, built as bin, with the benchmark's settings.
func goConsumer(c config, bin string) impl {
	return impl{name: "go", start: func(a implArgs) *exec.Cmd {
		args := []string{"--brokers", strings.Join(c.brokers, ","), "--redis", c.redisAddr,
			"--group", a.group, "--topic-appointments", a.in, "--topic-risk", a.risk, "--topic-dlq", a.dlq,
			"--redis-prefix", a.prefix, "--model-dir", c.modelDir, "--metrics-addr", "off", "--batch-size", strconv.Itoa(c.batch), "--workers", strconv.Itoa(c.workers),
			"--batch-wait", c.batchWait.String()}
		if a.stages != "" {
			args = append(args, "--stage-timings", a.stages)
		}
		if c.challenger != "" {
			args = append(args, "--challenger-model-dir", c.challenger, "--topic-shadow", a.risk+".shadow")
		}
		if c.trace != "" && a.maxEvents < 1<<30 {
			args = append(args, "--trace", c.trace)
		}
		if c.profile != "" && a.maxEvents < 1<<30 {
			args = append(args, "--cpu-profile", c.profile)
		}
		if c.allocProfile != "" && a.maxEvents < 1<<30 {
			args = append(args, "--alloc-profile", c.allocProfile)
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), strings.Fields(c.consumerEnv)...)
		return cmd
	}}
}

// pythonPeer runs the Python peer (--peer); it stops by itself after a.maxEvents events.
func pythonPeer(c config) impl {
	parts := strings.Fields(c.peerCmd)
	return impl{name: "peer", start: func(a implArgs) *exec.Cmd {
		args := append(parts[1:], "--brokers", strings.Join(c.brokers, ","), "--redis", c.redisAddr,
			"--group", a.group, "--topic-in", a.in, "--topic-risk", a.risk, "--topic-dlq", a.dlq,
			"--redis-prefix", a.prefix, "--model-dir", c.modelDir, "--max-events", strconv.Itoa(a.maxEvents))
		return exec.Command(parts[0], args...)
	}}
}

// jvmPeer runs the Kafka Streams peer (--jvm). It does not stop by itself: a run ends on the
// group's committed offsets, then it gets SIGTERM. One-row LightGBM predictions run on one
// OpenMP thread (bench/jvm/README.md).
func jvmPeer(c config) impl {
	parts := strings.Fields(c.jvmCmd)
	return impl{name: "jvm", start: func(a implArgs) *exec.Cmd {
		args := append(parts[1:], "--brokers", strings.Join(c.brokers, ","), "--redis", c.redisAddr,
			"--group", a.group, "--topic-in", a.in, "--topic-risk", a.risk, "--topic-dlq", a.dlq,
			"--redis-prefix", a.prefix, "--model-dir", c.modelDir)
		cmd := exec.Command(parts[0], args...)
		cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
		return cmd
	}}
}

// measure runs impl c.runs times over the first n events of the input for throughput and RSS
// (throughputRuns), then once at a fixed load for latency. It returns the probabilities of the
// last throughput run by booking.
func measure(ctx context.Context, c config, log *slog.Logger, rdb *redis.Client, w *world, im impl, inTopic string, n int) (Result, map[string]float64, error) {
	res, risks, err := throughputRuns(ctx, c, log, rdb, w, im, inTopic, n)
	if err != nil {
		return res, nil, err
	}
	lat, err := latencyRun(ctx, c, log, rdb, w, im)
	if err != nil {
		return res, nil, err
	}
	res.P50ms, res.P99ms, res.P999ms = round(pct(lat, 50), 2), round(pct(lat, 99), 2), round(pct(lat, 99.9), 2)
	log.Info("latency run", "impl", im.name, "rate", c.latencyRate, "samples", len(lat), "p50_ms", res.P50ms, "p99_ms", res.P99ms, "p999_ms", res.P999ms)
	return res, risks, nil
}

// throughputRuns runs impl c.runs times over the first n events of the input, each into an
// empty group, fresh output topics and the preloaded year of history, and returns the
// medians with every run kept and the probabilities of the last run by booking.
func throughputRuns(ctx context.Context, c config, log *slog.Logger, rdb *redis.Client, w *world, im impl, inTopic string, n int) (Result, map[string]float64, error) {
	var res Result
	res.Events = n
	var risks map[string]float64
	var cpuRuns []float64
	var coreRuns []Cores
	for r := 1; r <= c.runs; r++ {
		a := implArgs{group: fmt.Sprintf("bench-%s-%d-%d", im.name, r, time.Now().UnixNano()), in: inTopic, maxEvents: n}
		a.risk, a.dlq, a.prefix = a.group+".risk", a.group+".dlq", a.group+":"
		for _, t := range []string{a.risk, a.dlq, a.risk + ".shadow"} {
			if err := createTopic(ctx, c.brokers, t, c.partitions); err != nil {
				return res, nil, err
			}
		}
		if err := preload(ctx, rdb, a.prefix, w.histories); err != nil {
			return res, nil, err
		}
		eps, rss, cpu, cores, err := throughputRun(ctx, c, log, rdb, im, a, n)
		if err != nil {
			return res, nil, err
		}
		log.Info("throughput run", "impl", im.name, "run", r, "events", n, "events_per_s", round(eps, 0), "rss_mb", round(rss, 1), "cpu_s", round(cpu, 1), "cores", cores)
		if cores != nil {
			coreRuns = append(coreRuns, *cores)
		}
		cpuRuns = append(cpuRuns, float64(n)/cpu)
		res.Runs = append(res.Runs, round(eps, 0))
		res.RSSRuns = append(res.RSSRuns, round(rss, 1))
		if r == c.runs {
			risks, err = readRisks(ctx, c.brokers, a.risk)
			if err != nil {
				return res, nil, err
			}
		}
		_ = rdbFlushPrefix(ctx, rdb, a.prefix)
	}
	res.EventsPerS = median(res.Runs)
	res.EventsPerCPUs = round(median(cpuRuns), 0)
	res.RSSMB = maxOf(res.RSSRuns)
	res.Cores = medianCores(coreRuns)
	return res, risks, nil
}

// throughputRun runs im over the first n events of the input and times it from the first
// risk event written to the moment the group's committed offsets reach n. The peer stops by
// itself at --max-events, right after committing its last batch, so it may exit between two
// polls: then the run still counts if its committed offsets, read once more after the exit,
// reach n (the end is its exit, just after that commit). It is the count that ends a run,
// never the exit. cores splits the machine's time from the first commit the harness sees to
// the end (Cores; rdb nil: Redis is counted in Other).
func throughputRun(ctx context.Context, c config, log *slog.Logger, rdb *redis.Client, im impl, a implArgs, n int) (eventsPerS, rssMB, cpuS float64, cores *Cores, err error) {
	defer settle()()
	cmd := im.start(a)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, nil, err
	}
	var exitedAt time.Time
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); exitedAt = time.Now(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	deadline := time.Now().Add(30 * time.Minute)
	var done time.Time
	var peakRSS float64
	var from, to cpuSnapshot
	for done.IsZero() {
		if time.Now().After(deadline) {
			return 0, 0, 0, nil, fmt.Errorf("%s did not finish within 30 minutes\n%s", im.name, tail(stderr.String()))
		}
		peakRSS = max(peakRSS, vmHWM(cmd.Process.Pid))
		total, err := committed(ctx, c, a)
		if err == nil && total > 0 && from.at.IsZero() {
			from = snapshot(ctx, rdb, cpuSeconds(cmd.Process.Pid))
		}
		if err == nil && total >= int64(n) {
			done, to = time.Now(), snapshot(ctx, rdb, math.NaN())
			break
		}
		select {
		case <-exited:
			total, err := committed(ctx, c, a)
			if err != nil {
				return 0, 0, 0, nil, fmt.Errorf("%s exited; reading its committed offsets: %w\n%s", im.name, err, tail(stderr.String()))
			}
			if total < int64(n) {
				return 0, 0, 0, nil, fmt.Errorf("%s exited having committed %d of its %d events\n%s", im.name, total, n, tail(stderr.String()))
			}
			done, to = exitedAt, snapshot(ctx, rdb, math.NaN())
			log.Info("exited between two polls; its committed offsets, read after the exit, reach its input: the run ends at its exit", "impl", im.name, "committed", total)
		case <-time.After(25 * time.Millisecond):
		}
	}
	rss, cpu := usage(cmd, exited, peakRSS)
	if to.process = cpu; !from.at.IsZero() {
		cores = coresBetween(from, to)
	}
	first, err := firstTimestamp(ctx, c.brokers, a.risk)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	return float64(n) / done.Sub(first).Seconds(), rss, cpu, cores, nil
}

// committed sums the group's committed offsets over the input topic's partitions.
func committed(ctx context.Context, c config, a implArgs) (int64, error) {
	client := &kafka.Client{Addr: kafka.TCP(c.brokers...)}
	parts := make([]int, c.partitions)
	for i := range parts {
		parts[i] = i
	}
	off, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: a.group, Topics: map[string][]int{a.in: parts}})
	if err != nil {
		return 0, err
	}
	var total int64
	for _, p := range off.Topics[a.in] {
		if p.CommittedOffset > 0 {
			total += p.CommittedOffset
		}
	}
	return total, nil
}

// usage is the process's peak resident memory (MB, at least peakRSS: its VmHWM, sampled while
// it runs) and the CPU time it used (user+system, s): from /proc while it runs, from the
// kernel's account of it (wait4's rusage) once it has exited.
func usage(cmd *exec.Cmd, exited <-chan struct{}, peakRSS float64) (rssMB, cpuS float64) {
	select {
	case <-exited:
	default:
		rssMB = max(peakRSS, vmHWM(cmd.Process.Pid))
		if cpuS = cpuSeconds(cmd.Process.Pid); !math.IsNaN(cpuS) {
			return rssMB, cpuS
		}
		<-exited // it exited while we looked; it is gone from /proc once reaped
	}
	// Not wait4's ru_maxrss: Go starts a process with vfork, so the child's mm before exec is
	// this process's, and Linux carries that mm's high-water mark into the child's maxrss
	// (fs/exec.c, exec_mmap): it reported this harness's 6.7 GB as the Python peer's.
	st := cmd.ProcessState
	return peakRSS, (st.UserTime() + st.SystemTime()).Seconds()
}

// settle collects this process's garbage before a measured run starts and holds the
// collector off until the returned func is called at the run's end. The harness holds the
// whole input (about 2 GB live at the default size): a collection of it marks all of it on
// the two cores the run has, for about a second. Collections inside the latency run's window
// showed as clusters of slow bookings, and one whole-input run's latency p99 was 15.1 ms
// against 7.2 ms in the next identical run (2026-12-04, `GODEBUG=gctrace=1`: a 0.95 s
// collection at the latency run's start). A run allocates little (the latency run's samples
// and risk events read, about 100 MB), so no collection is needed until it ends; a memory
// limit 4 GiB above what the process holds stays as the backstop.
func settle() (resume func()) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	limit := debug.SetMemoryLimit(int64(ms.Sys-ms.HeapReleased) + 4<<30)
	percent := debug.SetGCPercent(-1)
	return func() {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	}
}

// latencyRun offers bookings at a fixed rate to a running consumer and times each one from
// the moment it is handed to the Kafka producer to the moment its risk event is read.
func latencyRun(ctx context.Context, c config, log *slog.Logger, rdb *redis.Client, w *world, im impl) ([]float64, error) {
	a := implArgs{group: fmt.Sprintf("bench-lat-%s-%d", im.name, time.Now().UnixNano()), maxEvents: 1 << 30}
	a.in, a.risk, a.dlq, a.prefix = a.group+".in", a.group+".risk", a.group+".dlq", a.group+":"
	if a.stages = stagesFile(im.name); a.stages != "" {
		_ = os.Remove(a.stages)
	}
	for _, t := range []string{a.in, a.risk, a.dlq, a.risk + ".shadow"} {
		if err := createTopic(ctx, c.brokers, t, c.partitions); err != nil {
			return nil, err
		}
	}
	if err := preload(ctx, rdb, a.prefix, w.histories); err != nil {
		return nil, err
	}
	bookings := newBookings(w.input, c.latencyRate*(c.latencySeconds+1))
	defer settle()()
	defer rdbFlushPrefix(ctx, rdb, a.prefix)
	cmd := im.start(a)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer stop(cmd)

	// Warm-up, not measured: the first second of load at the offered rate. Joining the group,
	// the first fetch of each partition, the writer's and Redis's connection pools growing
	// to what the rate needs all happen in it (with one warm-up booking, 0.3 s of such
	// start-up stayed in the samples and made p99 69 ms; 15 ms without it).
	warm := min(c.latencyRate, len(bookings)/2)
	total := min(c.latencyRate*c.latencySeconds, len(bookings)-warm)
	lt := newLatencies(warm + total)
	readCtx, stopRead := context.WithCancel(ctx)
	defer stopRead()
	lt.read(readCtx, c.brokers, a.risk, c.partitions)
	wr := stream.NewWriter(c.brokers, a.in)
	wr.BatchTimeout = stream.AckedLinger // as cmd/pasgateway's, whose place the load generator takes
	defer wr.Close()
	send := func(batch []kafka.Message) error {
		lt.sending(batch)
		return wr.WriteMessages(ctx, batch...)
	}

	var start time.Time
	warmed := func() error {
		if a.stages != "" { // the consumer's stage timings start again too (cmd/consumer --stage-timings)
			if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
				return fmt.Errorf("reset stage timings: %w", err)
			}
		}
		start = time.Now()
		return nil
	}
	if err := lt.run(send, bookings[:warm+total], warm, c.latencyRate, warmed); err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", im.name, err, tail(stderr.String()))
	}
	log.Info("latency load offered", "impl", im.name, "bookings", total, "warm_up", warm, "seconds", round(time.Since(start).Seconds(), 1))
	lt.mu.Lock()
	log.Info("latency split", "impl", im.name, "in_p50", round(pct(lt.in, 50), 2), "in_p99", round(pct(lt.in, 99), 2), "in_p999", round(pct(lt.in, 99.9), 2),
		"out_p50", round(pct(lt.out, 50), 2), "out_p99", round(pct(lt.out, 99), 2), "out_p999", round(pct(lt.out, 99.9), 2))
	lt.mu.Unlock()
	if c.latencySamples != "" && im.name == "go" {
		if err := lt.writeCSV(c.latencySamples); err != nil {
			return nil, err
		}
	}
	return lt.samples(), nil
}

// newBookings are the first n new bookings of the input (fewer if it has fewer): each
// produces exactly one risk event to wait for.
func newBookings(input []kafka.Message, n int) []kafka.Message {
	bookings := make([]kafka.Message, 0, n)
	for _, m := range input {
		if len(bookings) == n {
			break
		}
		if bytes.Contains(m.Value, []byte(`"type":"booked"`)) {
			bookings = append(bookings, m)
		}
	}
	return bookings
}

// offer sends bookings at rate a second: every tick, the bookings due by now, so the
// offered rate holds even when a write takes longer than a tick.
func offer(send func([]kafka.Message) error, bookings []kafka.Message, rate int) error {
	total := len(bookings)
	start := time.Now()
	next := 0
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for next < total {
		<-ticker.C
		due := min(1+int(time.Since(start).Seconds()*float64(rate)), total)
		if due <= next {
			continue
		}
		if err := send(bookings[next:due]); err != nil {
			return err
		}
		next = due
	}
	return nil
}

// latencies times bookings from their hand-over to the producer to their risk event read.
type latencies struct {
	mu   sync.Mutex
	sent map[string]time.Time // event id -> handed to the producer
	lat  []float64            // ms
	in   []float64            // ms, hand-over -> risk event's timestamp (arrivedSplit)
	out  []float64            // ms, risk event's timestamp -> read
	at   []time.Time          // when each of lat's bookings was handed to the producer
	got  chan struct{}        // one per risk event read
}

func newLatencies(total int) *latencies {
	return &latencies{sent: make(map[string]time.Time, total), lat: make([]float64, 0, total), got: make(chan struct{}, total)}
}

// read reads every partition of the risk topic until ctx ends, timing each risk event
// against its booking.
func (lt *latencies) read(ctx context.Context, brokers []string, topic string, partitions int) {
	for p := 0; p < partitions; p++ {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: stream.FetchMaxWait})
		go func() {
			defer r.Close()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					return
				}
				at := time.Now()
				var risk events.Risk
				if json.Unmarshal(m.Value, &risk) != nil {
					continue
				}
				lt.arrivedSplit(risk.SourceEventID, m.Time, at)
			}
		}()
	}
}

// arrived times the event id's arrival at at against its hand-over to the producer.
func (lt *latencies) arrived(id string, at time.Time) {
	lt.arrivedSplit(id, time.Time{}, at)
}

// arrivedSplit is arrived for a risk event with its Kafka timestamp (when the consumer handed
// it to its producer), which splits each latency in two: in (bookings' producer, broker,
// consumer) and out (the risk event's producer, broker, this reader).
func (lt *latencies) arrivedSplit(id string, mid, at time.Time) {
	lt.mu.Lock()
	if t, ok := lt.sent[id]; ok {
		lt.lat = append(lt.lat, float64(at.Sub(t).Microseconds())/1000)
		lt.at = append(lt.at, t)
		if !mid.IsZero() {
			lt.in = append(lt.in, float64(mid.Sub(t).Microseconds())/1000)
			lt.out = append(lt.out, float64(at.Sub(mid).Microseconds())/1000)
		}
		delete(lt.sent, id)
	}
	lt.mu.Unlock()
	lt.got <- struct{}{}
}

// run offers msgs through send at rate a second and waits for each to arrive. The first warm
// are a warm-up, not measured: warmed runs once they have all arrived, before the rest are
// offered.
func (lt *latencies) run(send func([]kafka.Message) error, msgs []kafka.Message, warm, rate int, warmed func() error) error {
	if err := offer(send, msgs[:warm], rate); err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	if err := lt.await(warm, 90*time.Second); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	lt.reset()
	if warmed != nil {
		if err := warmed(); err != nil {
			return err
		}
	}
	if err := offer(send, msgs[warm:], rate); err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	return lt.await(len(msgs)-warm, 60*time.Second)
}

// sending notes the moment batch is handed to the producer.
func (lt *latencies) sending(batch []kafka.Message) {
	now := time.Now()
	lt.mu.Lock()
	for _, m := range batch {
		lt.sent[eventID(m.Value)] = now
	}
	lt.mu.Unlock()
}

// reset forgets the samples so far (the warm-up's).
func (lt *latencies) reset() {
	lt.mu.Lock()
	lt.lat, lt.in, lt.out, lt.at = lt.lat[:0], lt.in[:0], lt.out[:0], lt.at[:0]
	lt.mu.Unlock()
}

// await waits for n more risk events, for at most d.
func (lt *latencies) await(n int, d time.Duration) error {
	deadline := time.After(d)
	for received := 0; received < n; received++ {
		select {
		case <-lt.got:
		case <-deadline:
			lt.mu.Lock()
			defer lt.mu.Unlock()
			return fmt.Errorf("%d of %d awaited events arrived within %.0fs of the last one offered", len(lt.lat), n, d.Seconds())
		}
	}
	return nil
}

// samples is a copy of the latencies measured, in ms.
func (lt *latencies) samples() []float64 {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return append([]float64(nil), lt.lat...)
}

// writeCSV writes the samples a line each: when the booking was handed to the producer (s
// after the first sample's), its latency, and the split of it (ms; in and out empty when the
// risk event carried no timestamp).
func (lt *latencies) writeCSV(path string) error {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	var b strings.Builder
	b.WriteString("sent_s,latency_ms,in_ms,out_ms\n")
	for i, l := range lt.lat {
		in, out := "", ""
		if len(lt.in) == len(lt.lat) {
			in, out = strconv.FormatFloat(lt.in[i], 'f', 3, 64), strconv.FormatFloat(lt.out[i], 'f', 3, 64)
		}
		fmt.Fprintf(&b, "%.4f,%.3f,%s,%s\n", lt.at[i].Sub(lt.at[0]).Seconds(), l, in, out)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func eventID(v []byte) string {
	var e struct {
		ID string `json:"event_id"`
	}
	_ = json.Unmarshal(v, &e)
	return e.ID
}

func createTopic(ctx context.Context, brokers []string, topic string, partitions int) error {
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return err
	}
	cc, err := kafka.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", ctrl.Host, ctrl.Port))
	if err != nil {
		return err
	}
	defer cc.Close()
	if err := cc.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}); err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	for i := 0; i < 100; i++ {
		parts, err := conn.ReadPartitions(topic)
		if err == nil && len(parts) == partitions {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("topic %s not ready", topic)
}

func publish(ctx context.Context, brokers []string, topic string, msgs []kafka.Message) error {
	w := stream.NewWriter(brokers, topic)
	w.BatchSize = 5000
	defer w.Close()
	for len(msgs) > 0 {
		n := min(len(msgs), 5000)
		if err := w.WriteMessages(ctx, msgs[:n]...); err != nil {
			return fmt.Errorf("publish input: %w", err)
		}
		msgs = msgs[n:]
	}
	return nil
}

// preload writes the year of history under prefix, as the consumer would have left it.
func preload(ctx context.Context, rdb *redis.Client, prefix string, hs map[string]*featurestore.History) error {
	store := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: prefix, TTL: 24 * time.Hour})
	batch := map[string]*featurestore.History{}
	flush := func() error {
		for _, h := range batch {
			h.Rev = 0
		}
		err := store.Save(ctx, batch)
		clear(batch)
		return err
	}
	for p, h := range hs {
		batch[p] = &featurestore.History{Facts: h.Facts}
		if len(batch) == 2000 {
			if err := flush(); err != nil {
				return fmt.Errorf("preload histories: %w", err)
			}
		}
	}
	return flush()
}

func rdbFlushPrefix(ctx context.Context, rdb *redis.Client, prefix string) error {
	iter := rdb.Scan(ctx, 0, prefix+"*", 5000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 5000 {
			rdb.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		rdb.Unlink(ctx, keys...)
	}
	return iter.Err()
}

func readRisks(ctx context.Context, brokers []string, topic string) (map[string]float64, error) {
	msgs, err := stream.ReadAll(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64, len(msgs))
	for _, m := range msgs {
		var r events.Risk
		if err := json.Unmarshal(m.Value, &r); err != nil {
			return nil, fmt.Errorf("unreadable risk event on %s: %w", topic, err)
		}
		out[fmt.Sprintf("%s/%d", r.AppointmentID, r.Version)] = r.Probability
	}
	return out, nil
}

// firstTimestamp is the earliest producer timestamp on topic: when the first risk event was
// written, i.e. just after the first batch was consumed and scored.
func firstTimestamp(ctx context.Context, brokers []string, topic string) (time.Time, error) {
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return time.Time{}, err
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return time.Time{}, err
	}
	var first time.Time
	for _, p := range parts {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MaxWait: stream.FetchMaxWait})
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := r.ReadMessage(rctx)
		cancel()
		r.Close()
		if err != nil {
			continue // an empty partition
		}
		if first.IsZero() || m.Time.Before(first) {
			first = m.Time
		}
	}
	if first.IsZero() {
		return first, errors.New("no risk event was written")
	}
	return first, nil
}

func compare(ours, peer map[string]float64) *Parity {
	p := &Parity{}
	for k, q := range peer {
		if o, ok := ours[k]; ok {
			p.Compared++
			p.MaxAbsDiff = math.Max(p.MaxAbsDiff, math.Abs(o-q))
		}
	}
	p.Valid = p.Compared > 0 && p.MaxAbsDiff <= 1e-9 && p.Compared >= len(peer)*99/100
	return p
}

// vmHWM is the process's peak resident set in MB, from /proc.
func vmHWM(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// cpuSeconds is the user+system CPU time the process has used, from /proc (clock ticks of
// 1/100 s on Linux).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return math.NaN()
	}
	// Fields after the command name (which may hold spaces) start after the last ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

// javaVersion is the first line `java -version` prints for the JVM peer's command.
func javaVersion(jvmCmd string) string {
	out, err := exec.Command(strings.Fields(jvmCmd)[0], "-version").CombinedOutput()
	if err != nil {
		return "unknown: " + err.Error()
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func machine() map[string]any {
	m := map[string]any{"cores": runtime.NumCPU(), "go": runtime.Version(), "note": "Kafka broker, Redis and the consumer share the machine"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				m["cpu"] = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	return m
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// medianCores is the median of each field over runs (nil for none).
func medianCores(runs []Cores) *Cores {
	if len(runs) == 0 {
		return nil
	}
	field := func(f func(Cores) float64) float64 {
		xs := make([]float64, len(runs))
		for i, r := range runs {
			xs[i] = f(r)
		}
		return median(xs)
	}
	return &Cores{Process: field(func(c Cores) float64 { return c.Process }), Redis: field(func(c Cores) float64 { return c.Redis }),
		Other: field(func(c Cores) float64 { return c.Other }), Idle: field(func(c Cores) float64 { return c.Idle })}
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = math.Max(m, x)
	}
	return m
}

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}
