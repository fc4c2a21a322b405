// Command monitor measures, live, whether the model still works (package monitor). It is a
// consumer group of its own over the appointments topic (outcomes), the risk topic (the
// champion's served scores) and the risk.shadow topic (a shadow challenger's): the scorer's
// hot path stays as it is, the monitor can be restarted, replayed or scaled without touching
// it, and the group spreads partitions over instances as the scorer's does. Its state is in
// Redis; every write is idempotent, so a redelivered outcome is never counted twice.
//
// Every --report-interval it computes the rolling windows, serves them on /monitor.json and
// as Prometheus gauges on /metrics (README "Monitoring"), and evaluates the same alert rules
// as deploy/prometheus/alerts.yml. The champion's model directory (contract.json, card.json,
// reference.json) is re-read when it changes.
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
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/internal/envflag"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/internal/ops"
	"github.com/nhsx/dnarisk/monitor"
	"github.com/nhsx/dnarisk/reminders/policy"
	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

type config struct {
	brokers      []string
	redisAddrs   []string
	prefix       string
	group        string
	topics       monitor.Topics
	modelDir     string
	interval     time.Duration
	metricsAddr  string
	access       ops.Access
	holdout      *policy.Holdout
	extraBands   []string
	createTopics bool
	topicSpec    stream.TopicSpec
}

func env(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

func parseConfig(args []string, getenv func(string) string) (config, error) {
	fs := flag.NewFlagSet("monitor", flag.ContinueOnError)
	var c config
	brokers := fs.String("brokers", env(getenv, "KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka bootstrap brokers, comma-separated (env KAFKA_BROKERS)")
	redisAddrs := fs.String("redis", env(getenv, "REDIS_ADDR", "127.0.0.1:6379"), "Redis address; several comma-separated addresses mean a Redis Cluster (env REDIS_ADDR)")
	fs.StringVar(&c.prefix, "redis-prefix", env(getenv, "MONITOR_REDIS_PREFIX", monitor.DefaultPrefix), "prefix of every monitor key in Redis (env MONITOR_REDIS_PREFIX)")
	fs.StringVar(&c.group, "group", env(getenv, "MONITOR_GROUP", "dna-monitor"), "Kafka consumer group (env MONITOR_GROUP)")
	fs.StringVar(&c.topics.Appointments, "topic-appointments", env(getenv, "TOPIC_APPOINTMENTS", "appointments"), "appointment events, for the outcomes (env TOPIC_APPOINTMENTS)")
	fs.StringVar(&c.topics.Risk, "topic-risk", env(getenv, "TOPIC_RISK", "risk"), "the champion's risk events (env TOPIC_RISK)")
	fs.StringVar(&c.topics.Shadow, "topic-shadow", env(getenv, "TOPIC_RISK_SHADOW", "risk.shadow"), "the shadow challenger's risk events; off when the scorer runs no challenger (env TOPIC_RISK_SHADOW)")
	fs.StringVar(&c.modelDir, "model-dir", env(getenv, "MODEL_DIR", ""), "the champion's model directory, the scorer's --model-dir: contract, card (AUC the alerts compare with) and reference.json (drift); re-read when it changes (env MODEL_DIR)")
	fs.DurationVar(&c.interval, "report-interval", 30*time.Second, "how often the windows and alerts are computed (env MONITOR_REPORT_INTERVAL)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", env(getenv, "METRICS_ADDR", "127.0.0.1:9468"), "address for /metrics, /monitor.json, /healthz and /readyz; off to disable; off loopback it needs --metrics-token-file or mutual TLS (env METRICS_ADDR)")
	share := fs.Float64("holdout-share", 0, "the dispatcher's policy.extra_holdout.share; with DNA_HOLDOUT_KEY, measures the extra reminder's effect (env HOLDOUT_SHARE)")
	bands := fs.String("extra-bands", env(getenv, "EXTRA_BANDS", "high,very_high"), "the dispatcher's policy.extra_bands: the bands the reminder effect is measured in (env EXTRA_BANDS)")
	fs.BoolVar(&c.createTopics, "create-topics", false, "create missing topics at start (otherwise wait for them, not ready, naming them)")
	fs.IntVar(&c.topicSpec.Partitions, "topic-partitions", 0, "partitions of a topic --create-topics makes; 0: the broker's num.partitions")
	fs.IntVar(&c.topicSpec.Replication, "topic-replication", 0, "replication factor of a topic --create-topics makes; 0: the broker's default.replication.factor")
	accessEnv := envflag.Env{"insecure-listeners": "INSECURE_LISTENERS", "report-interval": "MONITOR_REPORT_INTERVAL",
		"holdout-share": "HOLDOUT_SHARE", "create-topics": "CREATE_TOPICS", "topic-partitions": "TOPIC_PARTITIONS", "topic-replication": "TOPIC_REPLICATION"}
	c.access.Register(fs, accessEnv)
	insecure := fs.Bool("insecure-listeners", false, "DEMOS ONLY: serve the operations endpoint off loopback without a token or TLS (env INSECURE_LISTENERS)")
	accessEnv.Annotate(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: monitor --model-dir DIR [flags]\n\nSecrets (file variable preferred):\n"+
			"  DNA_HOLDOUT_KEY_FILE / DNA_HOLDOUT_KEY   the dispatcher's hold-out key, with --holdout-share\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	lookupEnv := func(k string) (string, bool) { v := getenv(k); return v, v != "" }
	if err := accessEnv.Apply(fs, lookupEnv); err != nil {
		return c, err
	}
	c.brokers, c.redisAddrs = envflag.List(*brokers), envflag.List(*redisAddrs)
	c.extraBands = envflag.List(*bands)
	if c.topics.Shadow == "off" {
		c.topics.Shadow = ""
	}
	switch {
	case len(c.brokers) == 0:
		return c, errors.New("no Kafka brokers: set --brokers or KAFKA_BROKERS")
	case len(c.redisAddrs) == 0:
		return c, errors.New("no Redis address: set --redis or REDIS_ADDR")
	case c.modelDir == "":
		return c, errors.New("no model directory: set --model-dir or MODEL_DIR to the scorer's")
	case c.group == "" || c.topics.Appointments == "" || c.topics.Risk == "":
		return c, errors.New("group and topic names must not be empty")
	case c.interval < time.Second:
		return c, fmt.Errorf("--report-interval %s: want at least 1s", c.interval)
	case c.topicSpec.Partitions < 0 || c.topicSpec.Replication < 0:
		return c, errors.New("--topic-partitions and --topic-replication must not be negative")
	}
	if c.metricsAddr == "off" {
		c.metricsAddr = ""
	}
	if _, _, err := net.SplitHostPort(c.metricsAddr); c.metricsAddr != "" && err != nil {
		return c, fmt.Errorf("--metrics-addr %q: want host:port, :port or off", c.metricsAddr)
	}
	if err := c.access.Check(c.metricsAddr, *insecure); err != nil {
		return c, err
	}
	if *share != 0 {
		c.holdout = &policy.Holdout{Share: *share}
		k, err := secretValue(getenv, "DNA_HOLDOUT_KEY_FILE", "DNA_HOLDOUT_KEY")
		if err != nil {
			return c, fmt.Errorf("--holdout-share %v needs the dispatcher's hold-out key: %w", *share, err)
		}
		c.holdout.Key = []byte(k)
		if err := c.holdout.Validate(); err != nil {
			return c, err
		}
	}
	if _, err := loadChampion(c.modelDir); err != nil {
		return c, err
	}
	return c, nil
}

func secretValue(getenv func(string) string, fileVar, secretVar string) (string, error) {
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

// champion is what the monitor reads from the champion's model directory.
type champion struct {
	model    *scoring.Model
	card     monitor.Card
	ref      *scoring.Reference
	features []string
}

// loadChampion reads the model, its card's AUC and efficacy, and its training reference.
// A directory without card.json or reference.json still loads: the AUC alert and drift are
// then off, and the log says so.
func loadChampion(dir string) (*champion, error) {
	m, err := scoring.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("--model-dir: %w", err)
	}
	return championOf(m, dir)
}

func championOf(m *scoring.Model, dir string) (*champion, error) {
	c := &champion{model: m, features: m.FeatureNames(), card: monitor.Card{ModelID: m.ID()}}
	if b, err := os.ReadFile(filepath.Join(dir, "card.json")); err == nil {
		var card struct {
			ModelID  string  `json:"model_id"`
			AUC      float64 `json:"auc"`
			Efficacy float64 `json:"reminder_efficacy"`
		}
		if err := json.Unmarshal(b, &card); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "card.json"), err)
		}
		if card.ModelID == m.ID() {
			c.card.AUC, c.card.Efficacy = card.AUC, card.Efficacy
		}
	}
	ref, err := scoring.LoadReference(dir)
	if err != nil {
		return nil, err
	}
	if ref != nil {
		if err := ref.Check(m.Contract()); err != nil {
			return nil, fmt.Errorf("%s: %w (rebuild it with make model, or training/reference.py)", filepath.Join(dir, scoring.ReferenceFile), err)
		}
	}
	c.ref = ref
	return c, nil
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "monitor: invalid configuration:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("monitor stopped", "err", err)
		os.Exit(1)
	}
}

// service is a running monitor: the consumer side and the latest report.
type service struct {
	cfg      config
	mon      *monitor.Monitor
	store    *monitor.Store
	champ    atomic.Pointer[champion]
	latest   atomic.Pointer[monitor.Report]
	failures atomic.Int64
	log      *slog.Logger
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cfg.redisAddrs, DisableIdentity: true})
	defer rdb.Close()
	met := metrics.New()
	rdb.AddHook(met.RedisHook())
	champ, err := loadChampion(cfg.modelDir)
	if err != nil {
		return err
	}
	s := &service{cfg: cfg, store: monitor.NewStore(rdb, cfg.prefix), log: log}
	s.champ.Store(champ)
	if s.mon, err = monitor.New(monitor.Config{Store: s.store, Topics: cfg.topics, Model: champ.model.ID(),
		Features: champ.features, Holdout: cfg.holdout, Log: log}); err != nil {
		return err
	}
	met.Monitor(s.latest.Load, s.counts)
	names := []string{cfg.topics.Appointments, cfg.topics.Risk}
	if cfg.topics.Shadow != "" {
		names = append(names, cfg.topics.Shadow)
	}
	admin := stream.NewAdmin(cfg.brokers)
	defer admin.Close()
	topics := stream.NewTopicGate(admin, stream.Topics{Names: names, Create: cfg.createTopics, Spec: cfg.topicSpec, Log: log})
	if cfg.metricsAddr != "" {
		ln, auth, err := cfg.access.Listen(cfg.metricsAddr, log)
		if err != nil {
			return err
		}
		h := ops.Handler(ops.Config{Registry: met.Registry, Log: log, Auth: auth, Checks: []ops.Check{
			{Name: "topics", Func: topics.Check},
			{Name: "kafka", Func: func(ctx context.Context) error { return admin.Ping(ctx, names...) }},
			{Name: "redis", Func: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
		}, Extra: map[string]http.Handler{"/monitor.json": http.HandlerFunc(s.serveJSON)}})
		opsCtx, stopOps := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- ops.Serve(opsCtx, ln, h) }()
		defer func() { stopOps(); <-served }()
		log.Info("operations endpoint listening", "addr", ln.Addr().String(), "paths", "/metrics /monitor.json /healthz /readyz", "authenticated", auth != nil)
	}
	if err := topics.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	r := stream.NewGroupReader(cfg.brokers, cfg.group, names)
	defer r.Close()
	log.Info("monitor started", "group", cfg.group, "topics", names, "model_id", champ.model.ID(),
		"drift_reference", champ.ref != nil, "card_auc", champ.card.AUC, "holdout_share", cfg.holdout != nil)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		scoring.Watch(ctx, cfg.modelDir, 10*time.Second, champ.model, func(m *scoring.Model) {
			c, err := championOf(m, cfg.modelDir)
			if err != nil {
				log.Error("monitor: champion changed but its directory is unreadable; keeping the previous", "err", err)
				return
			}
			s.champ.Store(c)
			s.mon.SetChampion(m.ID(), c.features)
			log.Info("monitor: champion changed", "model_id", m.ID())
		}, func(err error) { log.Error("monitor: model directory", "err", err) })
	}()
	go func() { defer wg.Done(); s.reportLoop(ctx) }()
	err = stream.Run(ctx, r, s.mon, stream.Batching{}, log)
	stop := ctx.Err() != nil
	wg.Wait()
	if err != nil && !stop {
		return err
	}
	log.Info("monitor stopped cleanly", "scores", s.mon.Stats.Scores.Load(), "outcomes", s.mon.Stats.Outcomes.Load())
	return nil
}

func (s *service) counts() metrics.MonitorCounts {
	st := &s.mon.Stats
	return metrics.MonitorCounts{Scores: st.Scores.Load(), Shadow: st.Shadow.Load(), Outcomes: st.Outcomes.Load(),
		Ignored: st.Ignored.Load(), Refused: st.Refused.Load(), ReportErrors: s.failures.Load()}
}

// report computes a report now with the current champion.
func (s *service) report(ctx context.Context) (*monitor.Report, error) {
	c := s.champ.Load()
	card := c.card
	card.ExtraBands = s.cfg.extraBands
	share := 0.0
	if s.cfg.holdout != nil {
		share = s.cfg.holdout.Share
	}
	r := &monitor.Reporter{Store: s.store, Card: card, Reference: c.ref, Holdout: share}
	return r.Report(ctx)
}

func (s *service) reportLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.interval)
	defer t.Stop()
	alerting := map[string]bool{}
	for {
		rep, err := s.report(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.failures.Add(1)
			s.log.Error("monitor: report failed; serving the previous one", "err", err)
		case err == nil:
			s.latest.Store(rep)
			now := map[string]bool{}
			for _, a := range rep.Alerts {
				now[a.Detail] = true
				if !alerting[a.Detail] {
					s.log.Warn("monitor: alert", "alert", a.Name, "window_days", a.Window, "detail", a.Detail)
				}
			}
			alerting = now
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// serveJSON serves the latest report on /monitor.json.
func (s *service) serveJSON(w http.ResponseWriter, _ *http.Request) {
	rep := s.latest.Load()
	if rep == nil {
		http.Error(w, "no report yet: the first is computed at start", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(rep)
}
