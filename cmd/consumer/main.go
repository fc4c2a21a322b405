// Command consumer is the DNA risk scorer: it consumes PAS appointment events from Kafka,
// enriches bookings with the patient's history from Redis, scores them with the LightGBM
// model in MODEL_DIR and publishes risk events; outcomes update the history. Malformed
// events go to the dead-letter topic. SIGTERM or SIGINT finishes the batch in hand, commits
// and exits 0; SIGHUP reloads the model directory (a model that fails validation is refused
// and the current one keeps serving). With --challenger-model-dir a second model scores every
// booking in the shadow and publishes to risk.shadow, which nothing acts on (for comparing
// models before cmd/promote swaps one in). The directory is also polled every --model-poll
// (default 5s), so copying a new model into it swaps the model without a restart or a lost
// event; a model that does not load is refused with a log line (see hotswap.go).
//
// Every setting is a flag with an environment variable fallback; run with --help. An
// invalid setting is one line on stderr and exit status 2. Metrics, health, readiness and the
// status page are served on --metrics-addr (package ops). Kafka TLS and SASL/SCRAM, and
// Redis TLS and ACL credentials, are set by the flags of package secconfig; passwords come
// from files or the environment only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/authn"
	"github.com/nhsx/dnarisk/internal/envflag"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/internal/ops"
	"github.com/nhsx/dnarisk/internal/secconfig"
	"github.com/nhsx/dnarisk/pas"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

type config struct {
	brokers     []string
	redisAddrs  []string
	modelDir    string
	modelPoll   time.Duration
	group       string
	inTopic     string
	topics      scorer.Topics
	batch       stream.Batching
	retention   time.Duration
	maxAhead    time.Duration
	historyTTL  time.Duration
	redisPrefix string
	// feed says which booking extras live events carry (--mapping, --allow-unmapped-extras):
	// a model needing another is refused at load.
	feed scoring.LiveFeed
	// rescore scores open bookings again when an outcome or cancellation changes the
	// patient's history, as of no earlier than decisionLead before the start, with the model
	// in decisionModelDir ("" for the main model).
	rescore          bool
	decisionLead     time.Duration
	decisionModelDir string
	// challengerDir is a shadow challenger's model directory ("" for none), loaded, checked
	// and watched like modelDir; its risk events go to topics.Shadow.
	challengerDir string

	metricsAddr string // "" or "off": no operations endpoint
	access      ops.Access
	insecure    bool // --insecure-listeners: demos only
	statusPage  bool
	// remindersURL is the dispatcher's /metrics, read for the status page's reminders, with
	// the bearer token in remindersToken (a file) when the dispatcher asks for one.
	remindersURL, remindersToken string
	// monitorURL is the model monitor's /monitor.json, read for the status page's live
	// performance panel, with the bearer token in monitorToken (a file).
	monitorURL, monitorToken string
	lagEvery                 time.Duration
	cpuProfile               string // "" or a file for a CPU profile of the whole run (make bench)
	trace                    string // "" or a file for an execution trace of the whole run
	allocProfile             string // "" or a file for the allocations of the whole run
	stageTimings             string // "" or a file for every stage's p50/p99 over the run, written at exit (make bench)
	backfill                 bool   // rebuild histories from the topic and exit (backfill.go)
	workers                  int
	logLevel                 slog.Level
	kafkaOpts                []stream.Option
	redisOpts                redis.UniversalOptions

	// createTopics makes missing topics with topicSpec; otherwise the consumer waits for them.
	createTopics bool
	topicSpec    stream.TopicSpec
}

// usage is the --help text's first line.
const usage = "usage: consumer [flags]\n\nScores PAS appointment events from Kafka for DNA risk. Flags (flag > environment > default):"

// parseConfig reads flags, then the environment for flags not given, then checks the
// result. An error is one line, fit to print as is; flag.ErrHelp means --help was asked for
// and the usage is already on stderr.
func parseConfig(args []string) (config, error) {
	return parseConfigEnv(args, os.LookupEnv, os.Stderr)
}

func parseConfigEnv(args []string, lookup func(string) (string, bool), stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // a bad flag is reported in one line below, without the usage
	fs.Usage = func() {}
	var c config
	env := envflag.Env{
		"brokers": "KAFKA_BROKERS", "redis": "REDIS_ADDR", "model-dir": "MODEL_DIR", "model-poll": "MODEL_POLL", "group": "KAFKA_GROUP",
		"topic-appointments": "TOPIC_APPOINTMENTS", "topic-risk": "TOPIC_RISK", "topic-dlq": "TOPIC_DLQ",
		"batch-size": "BATCH_SIZE", "batch-wait": "BATCH_WAIT", "history-retention": "HISTORY_RETENTION", "max-ahead": "MAX_EVENT_AHEAD", "workers": "CONSUMER_WORKERS",
		"redis-prefix": "REDIS_PREFIX", "metrics-addr": "METRICS_ADDR", "status-page": "STATUS_PAGE",
		"lag-interval": "LAG_INTERVAL", "log-level": "LOG_LEVEL", "reminders-metrics-url": "REMINDERS_METRICS_URL",
		"create-topics": "CREATE_TOPICS", "topic-partitions": "TOPIC_PARTITIONS", "topic-replication": "TOPIC_REPLICATION",
		"reminders-metrics-token-file": "REMINDERS_METRICS_TOKEN_FILE", "insecure-listeners": "INSECURE_LISTENERS",
		"monitor-url": "MONITOR_URL", "monitor-token-file": "MONITOR_TOKEN_FILE",
		"mapping": "PAS_MAPPING", "allow-unmapped-extras": "ALLOW_UNMAPPED_EXTRAS",
		"rescore": "RESCORE", "decision-lead": "DECISION_LEAD", "decision-model-dir": "DECISION_MODEL_DIR",
		"challenger-model-dir": "CHALLENGER_MODEL_DIR", "topic-shadow": "TOPIC_RISK_SHADOW",
		"pipeline": "PIPELINE",
	}
	brokers := fs.String("brokers", "127.0.0.1:9092", "Kafka bootstrap brokers, comma-separated")
	redisAddrs := fs.String("redis", "127.0.0.1:6379", "Redis address; several comma-separated addresses mean a Redis Cluster")
	fs.StringVar(&c.modelDir, "model-dir", "models/default", "model directory with model.txt and contract.json")
	fs.DurationVar(&c.modelPoll, "model-poll", 5*time.Second, "how often to check the model directory for a new model (swapped in without a restart); 0 turns it off")
	fs.BoolVar(&c.rescore, "rescore", false, "score a patient's open bookings again when an outcome or cancellation changes their history (risk events with reason history_changed), so the extra reminder uses current risk")
	fs.DurationVar(&c.decisionLead, "decision-lead", scorer.DefaultDecisionLead, "with --rescore: re-scores are as of no earlier than this before the appointment start (the decision point the decision-time model was trained at)")
	fs.StringVar(&c.decisionModelDir, "decision-model-dir", "", "with --rescore: a decision-time model directory for the re-scores (default: --model-dir's model)")
	fs.StringVar(&c.challengerDir, "challenger-model-dir", "", "a shadow challenger's model directory: it scores every booking the model scores, from the same features, and its risk events go to --topic-shadow, where nothing acts on them (default: no challenger); watched like --model-dir")
	fs.StringVar(&c.group, "group", "dna-scorer", "Kafka consumer group")
	fs.StringVar(&c.inTopic, "topic-appointments", "appointments", "input topic")
	fs.StringVar(&c.topics.Risk, "topic-risk", "risk", "risk event topic")
	fs.StringVar(&c.topics.DeadLetter, "topic-dlq", "appointments.dlq", "dead-letter topic")
	fs.StringVar(&c.topics.Shadow, "topic-shadow", "risk.shadow", "with --challenger-model-dir: the challenger's risk events (nothing downstream acts on them)")
	fs.BoolVar(&c.createTopics, "create-topics", false, "create missing topics at start (otherwise wait for them, not ready, naming them)")
	fs.IntVar(&c.topicSpec.Partitions, "topic-partitions", 0, "partitions of a topic --create-topics makes; 0: the broker's num.partitions")
	fs.IntVar(&c.topicSpec.Replication, "topic-replication", 0, "replication factor of a topic --create-topics makes; 0: the broker's default.replication.factor")
	fs.IntVar(&c.batch.MaxMessages, "batch-size", 500, "most messages per batch")
	fs.IntVar(&c.workers, "workers", 1, "consumer-group members in this process, each owning some partitions; more overlap one member's Kafka and Redis round trips with another's work")
	fs.DurationVar(&c.batch.MaxWait, "batch-wait", 10*time.Millisecond, "longest wait to fill a batch (a batch stops filling as soon as nothing more is buffered)")
	fs.BoolVar(&c.batch.Pipeline, "pipeline", true, "prepare (decode, load, score) the next batch while this one is published, saved and committed; offsets are still committed in order and only after both; off with --rescore")
	fs.DurationVar(&c.retention, "history-retention", 3*365*24*time.Hour, "how long facts are kept in a patient's history")
	fs.DurationVar(&c.maxAhead, "max-ahead", scorer.DefaultMaxAhead, "dead-letter events dated further than this past the clock (a mis-dated event would prune the patient's history); 0 for no limit, e.g. to replay a simulated future")
	fs.StringVar(&c.redisPrefix, "redis-prefix", "dna:", "prefix of every Redis key")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "127.0.0.1:9464", "address for /metrics, /healthz, /readyz and /status; off to disable; off loopback it needs --metrics-token-file or mutual TLS")
	c.access.Register(fs, env)
	fs.BoolVar(&c.insecure, "insecure-listeners", false, "DEMOS ONLY: serve listeners off loopback without TLS or authentication")
	fs.BoolVar(&c.statusPage, "status-page", true, "serve the status page (/status) on --metrics-addr")
	fs.StringVar(&c.remindersURL, "reminders-metrics-url", "", "the reminder dispatcher's /metrics URL, for today's reminders on the status page (default: not connected)")
	fs.StringVar(&c.remindersToken, "reminders-metrics-token-file", "", "file whose first token is sent to --reminders-metrics-url as a bearer token")
	fs.StringVar(&c.monitorURL, "monitor-url", "", "the model monitor's /monitor.json URL, for live performance on the status page (default: not connected)")
	fs.StringVar(&c.monitorToken, "monitor-token-file", "", "file whose first token is sent to --monitor-url as a bearer token")
	fs.DurationVar(&c.lagEvery, "lag-interval", 15*time.Second, "how often to measure consumer lag")
	fs.StringVar(&c.cpuProfile, "cpu-profile", "", "write a CPU profile of the whole run to this file (for go tool pprof)")
	fs.StringVar(&c.allocProfile, "alloc-profile", "", "write a profile of the whole run's allocations to this file when it ends (go tool pprof -sample_index=alloc_space)")
	fs.StringVar(&c.trace, "trace", "", "write an execution trace of the whole run to this file (go tool trace; -pprof=net or sync shows what the members wait on); about 0.5 MB a second at full speed")
	fs.BoolVar(&c.backfill, "backfill", false, "rebuild the patient histories in Redis from --topic-appointments, every partition from its first offset to its end now, then exit: history only, nothing scored or published (recovery after losing Redis, a new deployment); prints a JSON summary with events/s")
	fs.StringVar(&c.stageTimings, "stage-timings", "", "write each batch stage's p50/p99/max over the whole run (fetch, fill, load, score, publish, save, commit) to this JSON file at exit (for cmd/bench); SIGUSR1 forgets the samples so far (cmd/bench's warm-up)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	mappingFile := fs.String("mapping", "", "the gateway's JSON mapping file (cmd/pasgateway --mapping): a model needing a booking extra it does not fill is refused at load")
	allowUnmapped := fs.String("allow-unmapped-extras", "", "booking extras a model may need that --mapping does not fill (comma-separated, or * for any): another producer fills them, or they may be missing")
	var ksec secconfig.Kafka
	ksec.Register(fs, env)
	var rsec secconfig.Redis
	rsec.Register(fs, env)
	if err := env.Parse(fs, args, lookup, stderr, usage); err != nil {
		return c, err
	}
	c.brokers = envflag.List(*brokers)
	c.redisAddrs = envflag.List(*redisAddrs)
	var err error
	if c.feed, err = liveFeed(*mappingFile, envflag.List(*allowUnmapped)); err != nil {
		return c, err
	}
	c.historyTTL = c.retention + 30*24*time.Hour
	if err := c.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return c, fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	if c.metricsAddr == "off" {
		c.metricsAddr = ""
	}
	if c.metricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.metricsAddr); err != nil {
			return c, fmt.Errorf("--metrics-addr %q: want host:port, :port or off", c.metricsAddr)
		}
	}
	if err := c.access.Check(c.metricsAddr, c.insecure); err != nil {
		return c, err
	}
	if c.kafkaOpts, err = ksec.Options(lookup); err != nil {
		return c, err
	}
	c.redisOpts.Addrs = c.redisAddrs
	if err := rsec.Apply(&c.redisOpts, lookup); err != nil {
		return c, err
	}
	switch {
	case c.lagEvery < time.Second:
		return c, fmt.Errorf("--lag-interval %s is under a second", c.lagEvery)
	case c.modelPoll < 0 || c.modelPoll > 0 && c.modelPoll < 100*time.Millisecond:
		return c, fmt.Errorf("--model-poll %s: want 0 (off) or at least 100ms", c.modelPoll)
	case len(c.brokers) == 0:
		return c, errors.New("no Kafka brokers: set --brokers or KAFKA_BROKERS")
	case len(c.redisAddrs) == 0:
		return c, errors.New("no Redis address: set --redis or REDIS_ADDR")
	case c.batch.MaxMessages < 1 || c.batch.MaxMessages > 100000:
		return c, fmt.Errorf("--batch-size %d out of range 1..100000", c.batch.MaxMessages)
	case c.retention < 24*time.Hour:
		return c, fmt.Errorf("--history-retention %s is under a day", c.retention)
	case c.workers < 1 || c.workers > 64:
		return c, fmt.Errorf("--workers %d out of range 1..64", c.workers)
	case c.topicSpec.Partitions < 0 || c.topicSpec.Partitions > 10000:
		return c, fmt.Errorf("--topic-partitions %d out of range 0..10000", c.topicSpec.Partitions)
	case c.topicSpec.Replication < 0 || c.topicSpec.Replication > 32:
		return c, fmt.Errorf("--topic-replication %d out of range 0..32", c.topicSpec.Replication)
	case c.maxAhead < 0:
		return c, fmt.Errorf("--max-ahead %s is negative", c.maxAhead)
	case c.decisionLead < 0 || c.decisionLead > 90*24*time.Hour:
		return c, fmt.Errorf("--decision-lead %s out of range 0..2160h", c.decisionLead)
	case c.decisionModelDir != "" && !c.rescore:
		return c, errors.New("--decision-model-dir needs --rescore (the decision-time model scores only re-scores)")
	case c.group == "" || c.inTopic == "" || c.topics.Risk == "" || c.topics.DeadLetter == "" || c.topics.Shadow == "":
		return c, errors.New("group and topic names must not be empty")
	case c.challengerDir != "" && c.topics.Shadow == c.topics.Risk:
		return c, fmt.Errorf("--topic-shadow %q is the risk topic: the reminder dispatcher would act on the challenger's scores", c.topics.Shadow)
	}
	return c, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer: invalid configuration:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	if cfg.backfill {
		if err := backfill(cfg, os.Stdout, log); err != nil {
			log.Error("backfill failed", "err", err)
			os.Exit(1)
		}
		return
	}
	model, err := cfg.loadModel(cfg.modelDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer: cannot load model:", err)
		os.Exit(2)
	}
	var challenger *scoring.Model
	if cfg.challengerDir != "" {
		if challenger, err = cfg.loadModel(cfg.challengerDir); err != nil {
			fmt.Fprintln(os.Stderr, "consumer: cannot load challenger model (--challenger-model-dir):", err)
			os.Exit(2)
		}
	}
	if cfg.cpuProfile != "" {
		startRecording(cfg.cpuProfile, "cpu profile", pprof.StartCPUProfile)
	}
	if cfg.trace != "" {
		startRecording(cfg.trace, "trace", trace.Start)
	}
	err = run(cfg, model, challenger, log)
	if cfg.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if cfg.trace != "" {
		trace.Stop()
	}
	if cfg.allocProfile != "" {
		startRecording(cfg.allocProfile, "alloc profile", func(w io.Writer) error {
			return pprof.Lookup("allocs").WriteTo(w, 0)
		})
	}
	if err != nil {
		log.Error("consumer stopped", "err", err)
		os.Exit(1)
	}
}

// startRecording creates path and starts start (a CPU profile, an execution trace) writing to
// it; if either fails, the consumer exits saying which.
func startRecording(path, what string, start func(io.Writer) error) {
	f, err := os.Create(path)
	if err == nil {
		err = start(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "consumer: %s: %v\n", what, err)
		os.Exit(2)
	}
}

// run runs the consumer with model, and challenger in the shadow if not nil.
func run(cfg config, model, challenger *scoring.Model, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	m := metrics.New()
	// Redis 7.0 (Debian 12's) has no CLIENT SETINFO: go-redis would send it on every new
	// connection and the hook would count a failed command each time.
	cfg.redisOpts.DisableIdentity = true
	rdb := redis.NewUniversalClient(&cfg.redisOpts)
	defer rdb.Close()
	rdb.AddHook(m.RedisHook())
	store := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: cfg.redisPrefix, TTL: cfg.historyTTL})
	w := stream.NewWriter(cfg.brokers, "", cfg.kafkaOpts...)
	// Each batch hands all its messages to one WriteMessages and waits for the
	// acknowledgement, so lingering for more only delays it.
	w.BatchTimeout = stream.AckedLinger
	defer w.Close()
	admin := stream.NewAdmin(cfg.brokers, cfg.kafkaOpts...)
	defer admin.Close()
	topics := stream.NewTopicGate(admin, stream.Topics{Names: cfg.topicNames(), Create: cfg.createTopics, Spec: cfg.topicSpec, Log: log})

	// The status page asks proc for its model, so proc exists before the endpoint serves.
	var proc *scorer.Processor
	m.SetModel(model.ID())
	observers := []scorer.Observer{m}
	loopObservers := []func(stream.LoopTimes){m.LoopDone}
	if cfg.stageTimings != "" {
		st := newStageTimes()
		st.resetOn(syscall.SIGUSR1)
		observers = append(observers, st)
		loopObservers = append(loopObservers, st.loopDone)
		defer func() {
			if err := st.write(cfg.stageTimings); err != nil {
				log.Error("cannot write --stage-timings", "err", err)
			}
		}()
	}
	if cfg.batch.Pipeline && cfg.rescore {
		log.Info("--pipeline is off with --rescore: re-scores read open bookings the batch ahead may not have saved yet")
		cfg.batch.Pipeline = false
	}
	cfg.batch.Timed = func(lt stream.LoopTimes) {
		for _, f := range loopObservers {
			f(lt)
		}
	}
	var status *ops.Status
	if cfg.metricsAddr != "" && cfg.statusPage {
		sc := ops.StatusConfig{
			Metrics:  m.Registry,
			Model:    func() *scoring.Model { mm, _ := proc.Model().(*scoring.Model); return mm },
			ModelDir: cfg.modelDir,
		}
		if cfg.remindersURL != "" {
			sc.Reminders = ops.RemindersFromURL(cfg.remindersURL, cfg.remindersToken)
		}
		if cfg.monitorURL != "" {
			sc.Monitor = ops.MonitorFromURL(cfg.monitorURL, cfg.monitorToken)
		}
		status = ops.NewStatus(sc)
		observers = append(observers, status)
	}
	maxAhead := cfg.maxAhead
	if maxAhead == 0 {
		maxAhead = -1 // --max-ahead 0: no limit
	}
	rescore, err := cfg.rescoring(rdb, log)
	if err != nil {
		return err
	}
	var chal scorer.Scorer // a nil *scoring.Model in the interface would be a challenger
	if challenger != nil {
		chal = challenger
		m.SetChallenger(challenger.ID())
		log.Info("shadow challenger scoring every booking; its risk events go to the shadow topic, where nothing acts on them",
			"challenger_model_id", challenger.ID(), "dir", cfg.challengerDir, "topic", cfg.topics.Shadow)
	}
	proc, err = scorer.New(scorer.Config{
		Store: store, Output: w, Model: model, Challenger: chal, Topics: cfg.topics,
		Policy:   featurestore.Policy{Retention: cfg.retention},
		MaxAhead: maxAhead, Observer: scorer.Observers(observers...), Log: log, Rescore: rescore,
	})
	if err != nil {
		return err
	}
	if cfg.metricsAddr != "" {
		ln, auth, err := cfg.access.Listen(cfg.metricsAddr, log)
		if err != nil {
			return err
		}
		h := ops.Handler(ops.Config{Registry: m.Registry, Status: status, Log: log, Auth: auth, Checks: []ops.Check{
			{Name: "topics", Func: topics.Check},
			{Name: "kafka", Func: func(ctx context.Context) error {
				return admin.Ping(ctx, cfg.topicNames()...)
			}},
			{Name: "redis", Func: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
			{Name: "model", Func: func(context.Context) error {
				if proc.Model() == nil {
					return errors.New("no model loaded")
				}
				return nil
			}},
		}})
		// The endpoint outlives the signal: /readyz and /metrics answer until the last batch
		// is committed.
		opsCtx, stopOps := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- ops.Serve(opsCtx, ln, h) }()
		defer func() { stopOps(); <-served }()
		log.Info("operations endpoint listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz /status", "authenticated", auth != nil)
		if auth == nil && !authn.Loopback(cfg.metricsAddr) {
			log.Warn("--insecure-listeners: the operations endpoint is open to every machine that can reach it; for demos only", "addr", cfg.metricsAddr)
		}
	}
	go reloadOnHUP(ctx, cfg, proc, m, log)
	go watchModelDir(ctx, cfg.modelDir, cfg.modelPoll, cfg.feed, model, proc, log, func(next *scoring.Model, err error) {
		if err != nil {
			m.ModelReload(false)
			return
		}
		m.SetModel(next.ID())
		m.ModelReload(true)
	})
	if challenger != nil {
		go watchChallengerDir(ctx, cfg.challengerDir, cfg.modelPoll, cfg.feed, challenger, proc, log, func(next *scoring.Model, err error) {
			if err != nil {
				m.ChallengerReload(false)
				return
			}
			m.SetChallenger(next.ID())
			m.ChallengerReload(true)
		})
	}
	// Readers start only over topics that exist (see stream.TopicGate).
	if err := topics.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			log.Info("consumer stopped cleanly before its topics existed")
			return nil
		}
		return err
	}
	go m.PollLag(ctx, admin, cfg.group, cfg.inTopic, cfg.lagEvery, log)
	log.Info("consumer started", "group", cfg.group, "topic", cfg.inTopic, "model_id", model.ID())
	if err := consume(ctx, cfg, proc, log); err != nil {
		return err
	}
	log.Info("consumer stopped cleanly", "consumed", proc.Stats.Consumed.Load(), "scored", proc.Stats.Scored.Load(),
		"dead_lettered", proc.Stats.DeadLettered.Load(), "rescored", proc.Stats.Rescored.Load(), "shadow", proc.Stats.Shadow.Load())
	return nil
}

// topicNames are the topics the consumer reads and writes: the shadow topic only with a
// challenger.
func (c config) topicNames() []string {
	names := []string{c.inTopic, c.topics.Risk, c.topics.DeadLetter}
	if c.challengerDir != "" {
		names = append(names, c.topics.Shadow)
	}
	return names
}

// loadModel loads the model directory dir and checks that the live feed fills every booking
// extra it needs.
func (c config) loadModel(dir string) (*scoring.Model, error) {
	m, err := scoring.Load(dir)
	if err != nil {
		return nil, err
	}
	if err := c.feed.Check(m); err != nil {
		return nil, err
	}
	return m, nil
}

// rescoring is the scorer's re-scoring setup (nil without --rescore), with the decision-time
// model loaded and checked like the main one.
func (c config) rescoring(rdb redis.UniversalClient, log *slog.Logger) (*scorer.Rescore, error) {
	if !c.rescore {
		return nil, nil
	}
	r := &scorer.Rescore{
		Open:         featurestore.NewOpenBookings(rdb, featurestore.RedisOptions{Prefix: c.redisPrefix, TTL: c.historyTTL}),
		DecisionLead: c.decisionLead,
	}
	if c.decisionModelDir != "" {
		m, err := c.loadModel(c.decisionModelDir)
		if err != nil {
			return nil, fmt.Errorf("--decision-model-dir: %w", err)
		}
		r.Model = m
	}
	log.Info("re-scoring open bookings when history changes", "decision_lead", c.decisionLead.String(), "decision_model_dir", c.decisionModelDir)
	return r, nil
}

// liveFeed is what the gateway's mapping file fills, plus the extras the operator allows
// unmapped.
func liveFeed(mappingFile string, allow []string) (scoring.LiveFeed, error) {
	f := scoring.LiveFeed{Filled: map[string]bool{}, Allowed: map[string]bool{}, Source: "no --mapping given"}
	for name := range pas.ReservedExtras {
		f.Filled[name] = true
	}
	if mappingFile != "" {
		mp, err := pas.LoadMapping(mappingFile)
		if err != nil {
			return f, err
		}
		for _, e := range mp.Extras {
			f.Filled[e.Name] = true
		}
		f.Source = "--mapping " + mappingFile
	}
	for _, name := range allow {
		f.Allowed[name] = true
	}
	return f, nil
}

// reloadOnHUP swaps in the model directory's current contents on SIGHUP, keeping the old
// model when the new one does not load; then the challenger's likewise, if there is one.
func reloadOnHUP(ctx context.Context, cfg config, proc *scorer.Processor, m *metrics.Metrics, log *slog.Logger) {
	dir := cfg.modelDir
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if next, err := cfg.loadModel(dir); err != nil {
				log.Error("model reload refused; keeping the current model", "dir", dir, "current_model_id", proc.Model().ID(), "err", err)
				m.ModelReload(false)
			} else {
				proc.SetModel(next)
				m.SetModel(next.ID())
				m.ModelReload(true)
				log.Info("model reloaded", "model_id", next.ID())
			}
			if cfg.challengerDir == "" {
				continue
			}
			chal, err := cfg.loadModel(cfg.challengerDir)
			if err != nil {
				log.Error("challenger reload refused; keeping the current challenger", "dir", cfg.challengerDir, "err", err)
				m.ChallengerReload(false)
				continue
			}
			proc.SetChallenger(chal)
			m.SetChallenger(chal.ID())
			m.ChallengerReload(true)
			log.Info("challenger reloaded", "challenger_model_id", chal.ID())
		}
	}
}

// consume runs cfg.workers members of the consumer group, sharing one Processor (it is safe
// for concurrent use), until ctx ends. Each member owns its partitions, so a patient's events
// are still processed in order by one member. The first member to fail stops the others.
func consume(ctx context.Context, cfg config, proc *scorer.Processor, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, cfg.workers)
	for i := 0; i < cfg.workers; i++ {
		r := stream.NewReader(cfg.brokers, cfg.group, cfg.inTopic, cfg.kafkaOpts...)
		go func() {
			defer r.Close()
			err := stream.Run(ctx, r, proc, cfg.batch, log)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var first error
	for i := 0; i < cfg.workers; i++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
