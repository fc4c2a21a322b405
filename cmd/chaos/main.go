// Command chaos proves the pipeline's fault tolerance end to end. It starts its own real
// Kafka (KRaft) and Redis on ports of its own (scripts/kafka.sh, scripts/redis.sh), builds
// and runs the real binaries as OS processes — the producer (the simulated PAS), two or more
// scorer instances in one consumer group and the reminder dispatcher — with the GOV.UK Notify
// stub in this process, and injects faults while more than 100,000 appointment events flow:
// kill -9 of scorers mid-batch, members joining and leaving the group, a Redis restart, a
// Kafka broker restart, slow Redis, malformed events, a dispatcher killed mid-send, and
// Notify answering 500, 429 or nothing. Afterwards it checks the outputs against a ground
// truth computed from the input with the project's own feature and reminder code: every
// booking scored for its latest version, every patient history exactly as the input implies,
// every due reminder sent exactly once, and the dead-letter topic holding exactly the
// malformed events. It writes out/chaos.json and exits 1 on any violation (docs/chaos.md).
//
//	go run ./cmd/chaos                    # the full run (make chaos)
//	go run ./cmd/chaos --profile ci       # about 12,000 events, every fault kind once
//	go run ./cmd/chaos --scenario backpressure --outage 60s
//	go run ./cmd/chaos --scenario budget
//
// --scenario backpressure instead measures one scorer under load through a Redis outage and
// an output-topic outage: no commits and no intake while either lasts, bounded memory, and
// everything scored once it ends. --scenario budget checks the SMS budget under the same
// Notify faults, a killed dispatcher and a Redis restart: never more messages in an hour
// than the cap, the rest held and sent, each once, when the cap is raised.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

type config struct {
	scenario   string
	profile    string
	seed       int64
	patients   int
	days       int
	rate       float64
	consumers  int
	kafkaPort  int
	kafkaNodes int
	redisPort  int
	out        string
	work       string
	timeout    time.Duration
	outage     time.Duration
	reminders  int // budget: reminders due, all in one clock hour
	keep       bool
	root       string
}

// profiles size a run. full is `make chaos` (over 100,000 events); ci is the short variant
// `make test` runs, with every fault kind at least once.
var profiles = map[string]struct {
	patients int
	rate     float64
}{
	"full": {patients: 30000, rate: 1000},
	"ci":   {patients: 3500, rate: 300},
}

func parseConfig(args []string) (config, error) {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	var c config
	fs.StringVar(&c.scenario, "scenario", "pipeline", "pipeline (the chaos run), backpressure (one scorer through Redis and output outages) or budget (the SMS cap under faults)")
	fs.StringVar(&c.profile, "profile", "full", "full (over 100,000 events) or ci (about 12,000)")
	fs.Int64Var(&c.seed, "seed", 11, "simulator seed")
	fs.IntVar(&c.patients, "patients", 0, "simulated patients (default: the profile's)")
	fs.IntVar(&c.days, "days", 120, "days of simulated bookings")
	fs.Float64Var(&c.rate, "rate", 0, "producer events per second (default: the profile's)")
	fs.IntVar(&c.consumers, "consumers", 2, "scorer instances at the start (at least 2)")
	fs.IntVar(&c.kafkaPort, "kafka-port", 30192, "port of the suite's own Kafka (the controller takes the next one; a 3-node cluster the next five; keep it below the ephemeral range, 32768)")
	fs.IntVar(&c.kafkaNodes, "kafka-nodes", 1, "Kafka nodes: 1, or 3 for a KRaft cluster (replication factor 3, min.insync.replicas 2) whose partition leader and controller are killed")
	fs.IntVar(&c.redisPort, "redis-port", 30379, "port of the suite's own Redis")
	fs.StringVar(&c.out, "out", "", "report file (default out/chaos.json, out/backpressure.json)")
	fs.StringVar(&c.work, "work", "out/chaos", "directory for binaries, logs, the dispatcher's config and clock")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Minute, "the whole run must finish within this")
	fs.IntVar(&c.reminders, "reminders", 0, "budget: reminders due in one hour, under an hourly cap of 2/5 of them (default: full 1000, ci 200)")
	fs.DurationVar(&c.outage, "outage", 60*time.Second, "backpressure: length of the Redis outage (the output-topic outage is half of it)")
	fs.BoolVar(&c.keep, "keep-services", false, "leave Kafka and Redis running afterwards (stop them with scripts/kafka.sh stop and scripts/redis.sh stop and the same ports)")
	fs.StringVar(&c.root, "root", ".", "repository root (scripts/, models/default)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	p, ok := profiles[c.profile]
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	case !ok:
		return c, fmt.Errorf("--profile %q: want full or ci", c.profile)
	case c.scenario != "pipeline" && c.scenario != "backpressure" && c.scenario != "budget":
		return c, fmt.Errorf("--scenario %q: want pipeline, backpressure or budget", c.scenario)
	case c.kafkaNodes != 1 && c.kafkaNodes != 3:
		return c, fmt.Errorf("--kafka-nodes %d: want 1 or 3", c.kafkaNodes)
	case c.consumers < 2:
		return c, fmt.Errorf("--consumers %d: the suite needs a group of at least 2", c.consumers)
	}
	if c.patients == 0 {
		c.patients = p.patients
	}
	if c.rate == 0 {
		c.rate = p.rate
		if c.scenario == "backpressure" {
			c.rate = 700 // the input lasts through both outages and the recoveries
		}
	}
	if c.reminders == 0 {
		c.reminders = map[string]int{"full": 1000, "ci": 200}[c.profile]
	}
	if c.out == "" {
		c.out = "out/chaos.json"
		if c.scenario != "pipeline" {
			c.out = "out/" + c.scenario + ".json"
		}
	}
	var err error
	if c.root, err = filepath.Abs(c.root); err != nil {
		return c, err
	}
	for _, p := range []*string{&c.work, &c.out} {
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(c.root, *p)
		}
	}
	if _, err := os.Stat(filepath.Join(c.root, "scripts", "kafka.sh")); err != nil {
		return c, fmt.Errorf("--root %s is not the repository root: %w", c.root, err)
	}
	return c, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var ok bool
	switch cfg.scenario {
	case "backpressure":
		ok, err = runBackpressure(ctx, cfg, log)
	case "budget":
		ok, err = runBudget(ctx, cfg, log)
	default:
		var rep *report
		rep, err = runPipeline(ctx, cfg, log)
		ok = rep != nil && rep.OK
	}
	if err != nil {
		log.Error("chaos run failed", "err", err)
		os.Exit(1)
	}
	if !ok {
		log.Error("chaos run found violations; see the report", "report", cfg.out)
		os.Exit(1)
	}
	log.Info("chaos run passed", "report", cfg.out)
}
