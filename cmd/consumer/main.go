// Command consumer is the DNA risk scorer: it consumes PAS appointment events from Kafka,
// enriches bookings with the patient's history from Redis, scores them with the LightGBM
// model in MODEL_DIR and publishes risk events; outcomes update the history. Malformed
// events go to the dead-letter topic. SIGTERM or SIGINT finishes the batch in hand, commits
// and exits 0; SIGHUP reloads the model directory (a model that fails validation is refused
// and the current one keeps serving).
//
// Every setting is a flag with an environment variable fallback; run with --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

type config struct {
	brokers     []string
	redisAddrs  []string
	modelDir    string
	group       string
	inTopic     string
	topics      stream.Topics
	batch       stream.Batching
	retention   time.Duration
	historyTTL  time.Duration
	redisPrefix string
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

func parseConfig(args []string) (config, error) {
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	var c config
	brokers := fs.String("brokers", env("KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka bootstrap brokers, comma-separated (env KAFKA_BROKERS)")
	redisAddrs := fs.String("redis", env("REDIS_ADDR", "127.0.0.1:6379"), "Redis address; several comma-separated addresses mean a Redis Cluster (env REDIS_ADDR)")
	fs.StringVar(&c.modelDir, "model-dir", env("MODEL_DIR", "models/default"), "model directory with model.txt and contract.json (env MODEL_DIR)")
	fs.StringVar(&c.group, "group", env("KAFKA_GROUP", "dna-scorer"), "Kafka consumer group (env KAFKA_GROUP)")
	fs.StringVar(&c.inTopic, "topic-appointments", env("TOPIC_APPOINTMENTS", "appointments"), "input topic (env TOPIC_APPOINTMENTS)")
	fs.StringVar(&c.topics.Risk, "topic-risk", env("TOPIC_RISK", "risk"), "risk event topic (env TOPIC_RISK)")
	fs.StringVar(&c.topics.DeadLetter, "topic-dlq", env("TOPIC_DLQ", "appointments.dlq"), "dead-letter topic (env TOPIC_DLQ)")
	fs.IntVar(&c.batch.MaxMessages, "batch-size", 500, "most messages per batch")
	fs.DurationVar(&c.batch.MaxWait, "batch-wait", 10*time.Millisecond, "longest wait to fill a batch")
	fs.DurationVar(&c.retention, "history-retention", envDuration("HISTORY_RETENTION", 3*365*24*time.Hour), "how long facts are kept in a patient's history (env HISTORY_RETENTION)")
	fs.StringVar(&c.redisPrefix, "redis-prefix", env("REDIS_PREFIX", "dna:"), "prefix of every Redis key (env REDIS_PREFIX)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.brokers = splitList(*brokers)
	c.redisAddrs = splitList(*redisAddrs)
	c.historyTTL = c.retention + 30*24*time.Hour
	switch {
	case len(c.brokers) == 0:
		return c, errors.New("no Kafka brokers: set --brokers or KAFKA_BROKERS")
	case len(c.redisAddrs) == 0:
		return c, errors.New("no Redis address: set --redis or REDIS_ADDR")
	case c.batch.MaxMessages < 1 || c.batch.MaxMessages > 100000:
		return c, fmt.Errorf("--batch-size %d out of range 1..100000", c.batch.MaxMessages)
	case c.retention < 24*time.Hour:
		return c, fmt.Errorf("--history-retention %s is under a day", c.retention)
	case c.group == "" || c.inTopic == "" || c.topics.Risk == "" || c.topics.DeadLetter == "":
		return c, errors.New("group and topic names must not be empty")
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := parseConfig(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer: invalid configuration:", err)
		os.Exit(2)
	}
	model, err := scoring.Load(cfg.modelDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer: cannot load model:", err)
		os.Exit(2)
	}
	if err := run(cfg, model, log); err != nil {
		log.Error("consumer stopped", "err", err)
		os.Exit(1)
	}
}

func run(cfg config, model *scoring.Model, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cfg.redisAddrs})
	defer rdb.Close()
	store := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: cfg.redisPrefix, TTL: cfg.historyTTL})
	w := stream.NewWriter(cfg.brokers, "")
	defer w.Close()
	r := stream.NewReader(cfg.brokers, cfg.group, cfg.inTopic)
	defer r.Close()

	proc := stream.NewProcessor(store, w, model, cfg.topics, featurestore.Policy{Retention: cfg.retention}, log)
	go reloadOnHUP(ctx, cfg.modelDir, proc, log)
	log.Info("consumer started", "group", cfg.group, "topic", cfg.inTopic, "model_id", model.ID())
	if err := stream.Run(ctx, r, proc, cfg.batch, log); err != nil {
		return err
	}
	log.Info("consumer stopped cleanly", "consumed", proc.Stats.Consumed.Load(), "scored", proc.Stats.Scored.Load(),
		"dead_lettered", proc.Stats.DeadLettered.Load())
	return nil
}

// reloadOnHUP swaps in the model directory's current contents on SIGHUP, keeping the old
// model when the new one does not load.
func reloadOnHUP(ctx context.Context, dir string, proc *stream.Processor, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			m, err := scoring.Load(dir)
			if err != nil {
				log.Error("model reload refused; keeping the current model", "dir", dir, "current_model_id", proc.Model().ID(), "err", err)
				continue
			}
			proc.SetModel(m)
			log.Info("model reloaded", "model_id", m.ID())
		}
	}
}
