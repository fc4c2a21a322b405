// Command dispatcher sends appointment reminders by SMS through GOV.UK Notify. It consumes
// appointment events and risk events (one consumer group over both topics), keeps each
// appointment's planned reminders in Redis, and sends them as they fall due, each exactly
// once; reminders Notify refuses go to the failed-reminders topic with the reason. The
// reminder policy, Notify templates and sending limits come from a JSON config file
// (config.example.json); secrets come from files or the environment, never from the file.
// SIGHUP re-reads the file's SMS budget (the caps on messages per hour, per day and per
// patient) and applies it at once; every other setting needs a restart. SIGTERM or SIGINT
// finishes the batch and the sends in hand, commits and exits 0.
//
// Every setting is a flag with an environment variable fallback; run with --help.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/envflag"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/internal/ops"
	"github.com/nhsx/dnarisk/reminders"
	"github.com/nhsx/dnarisk/reminders/contacts"
	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/policy"
	"github.com/nhsx/dnarisk/stream"
)

// fileConfig is the JSON config file. Durations are strings: "10s", "36h", "7d".
type fileConfig struct {
	NotifyBaseURL string `json:"notify_base_url"`
	Notify        struct {
		Timeout      policy.Duration `json:"timeout"`
		MaxRetries   int             `json:"max_retries"`
		RetryWaitMin policy.Duration `json:"retry_wait_min"`
		RetryWaitMax policy.Duration `json:"retry_wait_max"`
	} `json:"notify"`
	Templates reminders.Templates `json:"templates"`
	Policy    *policy.Policy      `json:"policy"`
	Sending   struct {
		Workers      int             `json:"workers"`
		Lease        policy.Duration `json:"lease"`
		PollInterval policy.Duration `json:"poll_interval"`
		MaxAttempts  int             `json:"max_attempts"`
		RetryBackoff policy.Duration `json:"retry_backoff"`
		LookupFirst  bool            `json:"lookup_first"`
		// UncertainRecheck: reminders.Config.UncertainRecheck.
		UncertainRecheck policy.Duration `json:"uncertain_recheck"`
	} `json:"sending"`
	Budget    reminders.Budget `json:"budget"`
	KeepAfter policy.Duration  `json:"keep_after"`
}

type config struct {
	brokers     []string
	redisAddrs  []string
	metricsAddr string // "" or "off": no operations endpoint
	access      ops.Access
	group       string
	clockFile   string // "": the system clock
	configFile  string // re-read for the budget on SIGHUP
	notify      notify.Config
	contactKeys contacts.Keys
	opts        reminders.Config

	// createTopics makes missing topics with topicSpec; otherwise the dispatcher waits for them.
	createTopics bool
	topicSpec    stream.TopicSpec
}

func env(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// secret reads a secret from the file named by fileVar, else from secretVar.
func secret(getenv func(string) string, fileVar, secretVar string) (string, error) {
	if path := getenv(fileVar); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read %s=%s: %w", fileVar, path, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if v := getenv(secretVar); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("set %s to a file or %s", fileVar, secretVar)
}

func parseConfig(args []string, getenv func(string) string) (config, error) {
	fs := flag.NewFlagSet("dispatcher", flag.ContinueOnError)
	var c config
	cfgPath := fs.String("config", env(getenv, "DISPATCHER_CONFIG", ""), "JSON config file: policy, templates, Notify and sending settings (env DISPATCHER_CONFIG)")
	brokers := fs.String("brokers", env(getenv, "KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka bootstrap brokers, comma-separated (env KAFKA_BROKERS)")
	redisAddrs := fs.String("redis", env(getenv, "REDIS_ADDR", "127.0.0.1:6379"), "Redis address; several comma-separated addresses mean a Redis Cluster (env REDIS_ADDR)")
	fs.StringVar(&c.group, "group", env(getenv, "REMINDER_GROUP", "dna-reminders"), "Kafka consumer group (env REMINDER_GROUP)")
	fs.StringVar(&c.opts.Topics.Appointments, "topic-appointments", env(getenv, "TOPIC_APPOINTMENTS", "appointments"), "appointment events (env TOPIC_APPOINTMENTS)")
	fs.StringVar(&c.opts.Topics.Risk, "topic-risk", env(getenv, "TOPIC_RISK", "risk"), "risk events (env TOPIC_RISK)")
	fs.StringVar(&c.opts.Topics.Failed, "topic-failed", env(getenv, "TOPIC_REMINDERS_FAILED", "reminders.failed"), "failed-reminder events (env TOPIC_REMINDERS_FAILED)")
	fs.StringVar(&c.opts.Prefix, "redis-prefix", env(getenv, "REDIS_PREFIX", "dna:"), "prefix of every Redis key (env REDIS_PREFIX)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", env(getenv, "METRICS_ADDR", "127.0.0.1:9466"), "address for /metrics, /healthz and /readyz; off to disable; off loopback it needs --metrics-token-file or mutual TLS (env METRICS_ADDR)")
	accessEnv := envflag.Env{"insecure-listeners": "INSECURE_LISTENERS"}
	c.access.Register(fs, accessEnv)
	insecure := fs.Bool("insecure-listeners", false, "DEMOS ONLY: serve the operations endpoint off loopback without a token or TLS (env INSECURE_LISTENERS)")
	accessEnv.Annotate(fs)
	notifyURL := fs.String("notify-url", env(getenv, "NOTIFY_BASE_URL", ""), "Notify API base URL, overriding the config file (env NOTIFY_BASE_URL)")
	maxAhead := fs.String("max-ahead", env(getenv, "MAX_EVENT_AHEAD", events.DefaultMaxAhead.String()), "skip appointment events dated further than this past their Kafka timestamp, as the scorer dead-letters them; 0 for no limit; must equal the scorer's and the gateway's (env MAX_EVENT_AHEAD)")
	fs.StringVar(&c.clockFile, "clock-file", env(getenv, "DISPATCHER_CLOCK_FILE", ""), "simulations and tests only: plan and send by the RFC 3339 time in this file, read every 10ms, instead of the system clock (env DISPATCHER_CLOCK_FILE)")
	fs.BoolVar(&c.createTopics, "create-topics", false, "create missing topics at start (otherwise wait for them, not ready, naming them)")
	fs.IntVar(&c.topicSpec.Partitions, "topic-partitions", 0, "partitions of a topic --create-topics makes; 0: the broker's num.partitions")
	fs.IntVar(&c.topicSpec.Replication, "topic-replication", 0, "replication factor of a topic --create-topics makes; 0: the broker's default.replication.factor")
	topicEnv := envflag.Env{"create-topics": "CREATE_TOPICS", "topic-partitions": "TOPIC_PARTITIONS", "topic-replication": "TOPIC_REPLICATION"}
	topicEnv.Annotate(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: dispatcher --config FILE [flags]\n\nSecrets (file variable preferred):\n"+
			"  NOTIFY_API_KEY_FILE / NOTIFY_API_KEY              GOV.UK Notify API key\n"+
			"  DNA_REMINDER_SECRET_FILE / DNA_REMINDER_SECRET    HMAC key of reminder ids, >= 32 bytes\n"+
			"  DNA_CONTACT_KEY_FILE / DNA_CONTACT_KEY            AES-256 key of the contact store (64 hex digits)\n"+
			"  DNA_CONTACT_KEY_PREVIOUS_FILE / …_PREVIOUS        previous contact keys, read-only, while the store is re-keyed (docs/security.md)\n"+
			"  DNA_HOLDOUT_KEY_FILE / DNA_HOLDOUT_KEY            key of the extra-reminder hold-out, >= 16 bytes; only with policy.extra_holdout (the monitor's must be the same)\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	lookupEnv := func(k string) (string, bool) { v := getenv(k); return v, v != "" }
	if err := topicEnv.Apply(fs, lookupEnv); err != nil {
		return c, err
	}
	if err := accessEnv.Apply(fs, lookupEnv); err != nil {
		return c, err
	}
	c.brokers, c.redisAddrs = envflag.List(*brokers), envflag.List(*redisAddrs)
	switch {
	case len(c.brokers) == 0:
		return c, errors.New("no Kafka brokers: set --brokers or KAFKA_BROKERS")
	case len(c.redisAddrs) == 0:
		return c, errors.New("no Redis address: set --redis or REDIS_ADDR")
	case c.group == "" || c.opts.Topics.Appointments == "" || c.opts.Topics.Risk == "" || c.opts.Topics.Failed == "":
		return c, errors.New("group and topic names must not be empty")
	case c.topicSpec.Partitions < 0 || c.topicSpec.Partitions > 10000:
		return c, fmt.Errorf("--topic-partitions %d out of range 0..10000", c.topicSpec.Partitions)
	case c.topicSpec.Replication < 0 || c.topicSpec.Replication > 32:
		return c, fmt.Errorf("--topic-replication %d out of range 0..32", c.topicSpec.Replication)
	case *cfgPath == "":
		return c, errors.New("no config file: set --config or DISPATCHER_CONFIG")
	}
	if c.metricsAddr == "off" {
		c.metricsAddr = ""
	}
	if d, err := time.ParseDuration(*maxAhead); err != nil || d < 0 {
		return c, fmt.Errorf("--max-ahead %q: want a duration such as 168h, 0 for no limit", *maxAhead)
	} else if c.opts.MaxAhead = d; d == 0 {
		c.opts.MaxAhead = -1
	}
	if c.clockFile != "" {
		if _, err := readClockFile(c.clockFile); err != nil {
			return c, err
		}
	}
	if _, _, err := net.SplitHostPort(c.metricsAddr); c.metricsAddr != "" && err != nil {
		return c, fmt.Errorf("--metrics-addr %q: want host:port, :port or off", c.metricsAddr)
	}
	c.configFile = *cfgPath
	if err := c.access.Check(c.metricsAddr, *insecure); err != nil {
		return c, err
	}
	fc, err := readConfigFile(*cfgPath)
	if err != nil {
		return c, err
	}

	apiKey, err := secret(getenv, "NOTIFY_API_KEY_FILE", "NOTIFY_API_KEY")
	if err != nil {
		return c, fmt.Errorf("no Notify API key: %w", err)
	}
	key, err := notify.ParseKey(apiKey)
	if err != nil {
		return c, err
	}
	c.notify = notify.Config{BaseURL: fc.NotifyBaseURL, Key: key, Timeout: time.Duration(fc.Notify.Timeout),
		MaxRetries: fc.Notify.MaxRetries, RetryWaitMin: time.Duration(fc.Notify.RetryWaitMin), RetryWaitMax: time.Duration(fc.Notify.RetryWaitMax)}
	if *notifyURL != "" {
		c.notify.BaseURL = *notifyURL
	}
	// The client is made here only so Validate checks the lease against its worst case;
	// run makes the one it sends with.
	if c.opts.Notifier, err = notify.New(c.notify); err != nil {
		return c, err
	}
	rs, err := secret(getenv, "DNA_REMINDER_SECRET_FILE", "DNA_REMINDER_SECRET")
	if err != nil {
		return c, fmt.Errorf("no reminder id secret: %w", err)
	}
	if c.contactKeys, err = contacts.KeysFromEnv(func(k string) (string, bool) { v := getenv(k); return v, v != "" }); err != nil {
		return c, fmt.Errorf("no contact encryption key: %w", err)
	}
	c.opts.Secret = []byte(rs)
	c.opts.Templates = fc.Templates
	c.opts.Policy = policy.DefaultPolicy()
	if fc.Policy != nil {
		c.opts.Policy = *fc.Policy
	}
	if h := c.opts.Policy.ExtraHoldout; h != nil && h.Share > 0 {
		k, err := secret(getenv, "DNA_HOLDOUT_KEY_FILE", "DNA_HOLDOUT_KEY")
		if err != nil {
			return c, fmt.Errorf("policy extra_holdout share %v needs the hold-out key: %w", h.Share, err)
		}
		h.Key = []byte(k)
	}
	c.opts.Workers, c.opts.MaxAttempts, c.opts.LookupFirst = fc.Sending.Workers, fc.Sending.MaxAttempts, fc.Sending.LookupFirst
	c.opts.Lease, c.opts.PollInterval = time.Duration(fc.Sending.Lease), time.Duration(fc.Sending.PollInterval)
	c.opts.RetryBackoff, c.opts.KeepAfter = time.Duration(fc.Sending.RetryBackoff), time.Duration(fc.KeepAfter)
	c.opts.UncertainRecheck = time.Duration(fc.Sending.UncertainRecheck)
	c.opts.Budget = fc.Budget
	if err := c.opts.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", *cfgPath, err)
	}
	return c, nil
}

func readConfigFile(path string) (fileConfig, error) {
	var fc fileConfig
	f, err := os.Open(path)
	if err != nil {
		return fc, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return fc, fmt.Errorf("config file %s: %w", path, err)
	}
	return fc, nil
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher: invalid configuration:", err)
		os.Exit(2)
	}
	if err := run(cfg, log); err != nil {
		log.Error("dispatcher stopped", "err", err)
		os.Exit(1)
	}
}

func run(cfg config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup, stopHUP := watchHUP()
	defer stopHUP()

	m := metrics.New()
	// DisableIdentity: Redis 7.0 refuses CLIENT SETINFO, which the hook would count as an error.
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cfg.redisAddrs, DisableIdentity: true})
	defer rdb.Close()
	rdb.AddHook(m.RedisHook())
	cfg.notify.Log = log
	client, err := notify.New(cfg.notify)
	if err != nil {
		return err
	}
	store, err := cfg.contactKeys.Open(rdb, cfg.opts.Prefix)
	if err != nil {
		return err
	}
	w := stream.NewWriter(cfg.brokers, "")
	defer w.Close()
	cfg.opts.Log = log
	if cfg.clockFile != "" {
		if cfg.opts.Clock, err = fileClock(ctx, cfg.clockFile, log); err != nil {
			return err
		}
	}
	cfg.opts.Redis, cfg.opts.Notifier, cfg.opts.Contacts, cfg.opts.Failed = rdb, client, store, w
	d, err := reminders.New(cfg.opts)
	if err != nil {
		return err
	}
	registerBudget(m.Registry, d)
	m.Reminders(func() metrics.ReminderCounts {
		s := &d.Stats
		return metrics.ReminderCounts{Scheduled: s.Scheduled.Load(), Sent: s.Sent.Load(), Deferred: s.Deferred.Load(), Uncertain: s.Uncertain.Load(),
			Failed: s.Failed.Load(), Cancelled: s.Cancelled.Load()}
	}, london)
	admin := stream.NewAdmin(cfg.brokers)
	defer admin.Close()
	topics := stream.NewTopicGate(admin, stream.Topics{Names: []string{cfg.opts.Topics.Appointments, cfg.opts.Topics.Risk, cfg.opts.Topics.Failed},
		Create: cfg.createTopics, Spec: cfg.topicSpec, Log: log})
	if cfg.metricsAddr != "" {
		ln, auth, err := cfg.access.Listen(cfg.metricsAddr, log)
		if err != nil {
			return err
		}
		h := ops.Handler(ops.Config{Registry: m.Registry, Log: log, Auth: auth, Checks: []ops.Check{
			{Name: "topics", Func: topics.Check},
			{Name: "kafka", Func: func(ctx context.Context) error {
				return admin.Ping(ctx, cfg.opts.Topics.Appointments, cfg.opts.Topics.Risk, cfg.opts.Topics.Failed)
			}},
			{Name: "redis", Func: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
		}})
		// The endpoint outlives the signal, so /metrics answers until the last send is done.
		opsCtx, stopOps := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- ops.Serve(opsCtx, ln, h) }()
		defer func() { stopOps(); <-served }()
		log.Info("operations endpoint listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz", "authenticated", auth != nil)
	}

	// Readers start only over topics that exist (see stream.TopicGate).
	if err := topics.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			log.Info("dispatcher stopped cleanly before its topics existed")
			return nil
		}
		return err
	}
	// NewGroupReader joins the group at once, so it comes after the wait.
	r := stream.NewGroupReader(cfg.brokers, cfg.group, []string{cfg.opts.Topics.Appointments, cfg.opts.Topics.Risk})
	defer r.Close()
	log.Info("dispatcher started", "group", cfg.group, "topics", []string{cfg.opts.Topics.Appointments, cfg.opts.Topics.Risk},
		"notify", cfg.notify.BaseURL, "notify_key", cfg.notify.Key)
	logBudget(log, "SMS budget", d.Budget())
	go reloadBudget(ctx, hup, cfg.configFile, d, log)
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errc <- reminders.Consume(ctx, r, d, stream.Batching{}) }()
	go func() { defer wg.Done(); errc <- d.RunSender(ctx) }()
	go report(ctx, d, log)
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil {
			first = err
			stop() // one side failing stops the other
		}
	}
	wg.Wait()
	if first != nil {
		return first
	}
	log.Info("dispatcher stopped cleanly", stats(d)...)
	return nil
}

// report logs the counters once a minute.
func report(ctx context.Context, d *reminders.Dispatcher, log *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			log.Info("dispatcher progress", stats(d)...)
		}
	}
}

func stats(d *reminders.Dispatcher) []any {
	s := &d.Stats
	return []any{"consumed", s.Consumed.Load(), "scheduled", s.Scheduled.Load(), "sent", s.Sent.Load(),
		"recovered", s.Recovered.Load(), "cancelled", s.Cancelled.Load(), "retimed", s.Retimed.Load(),
		"deferred", s.Deferred.Load(), "uncertain", s.Uncertain.Load(), "failed", s.Failed.Load(),
		"held", s.HeldHour.Load() + s.HeldDay.Load() + s.HeldPatient.Load(), "budget_cancelled", s.BudgetCancelled.Load()}
}

// london is the zone in which "reminders today" starts at midnight.
var london = func() *time.Location {
	l, err := time.LoadLocation("Europe/London")
	if err != nil {
		return time.UTC
	}
	return l
}()
