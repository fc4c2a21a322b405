package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Topics says which topics a service needs and what to do while some do not exist.
type Topics struct {
	// Names of every topic the service reads or writes.
	Names []string
	// Create makes missing topics with Spec; otherwise the service waits for someone else
	// to (an operator, kafka-topics.sh, docker-compose's kafka-init).
	Create bool
	Spec   TopicSpec
	// Interval between checks while a topic is missing. Default 5s.
	Interval time.Duration
	// Log hears when topics are missing, created, and all there. Default slog.Default().
	Log *slog.Logger
}

// MissingTopicsError names the topics a TopicGate is waiting for. Its message names the
// --create-topics flag that every command here that reads or writes Kafka takes.
type MissingTopicsError struct{ Topics []string }

func (e *MissingTopicsError) Error() string {
	return fmt.Sprintf("waiting for topics that do not exist: %s (create them, or start with --create-topics)",
		strings.Join(e.Topics, ", "))
}

// errNotChecked is Err before the first check has answered.
var errNotChecked = errors.New("topics not checked yet")

// TopicGate holds a service back until every topic it reads or writes exists, creating them
// when told to, and says meanwhile which are missing, for /readyz. A service starts its
// readers only after Wait returns, for two reasons found in kafka-go v0.4.51's source
// (consumergroup.go, conn.go): a group member that joins while a topic is missing is
// assigned nothing of it and, unless it watches partitions, never rejoins, so it sits at
// full lag; and the join's metadata request asks the broker to auto-create the topic, so
// where auto.create.topics.enable is on a misspelt topic is created with the broker's
// defaults instead of being reported. Safe for concurrent use.
type TopicGate struct {
	admin *Admin
	cfg   Topics

	mu  sync.Mutex
	err error // nil once every topic was seen
}

// NewTopicGate returns a gate over cfg.Names, asking admin.
func NewTopicGate(admin *Admin, cfg Topics) *TopicGate {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &TopicGate{admin: admin, cfg: cfg, err: errNotChecked}
}

// Err is nil once Wait has seen every topic. Before, it is a *MissingTopicsError naming the
// missing ones, or why the last check could not tell.
func (g *TopicGate) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// Check is Err with the signature of a readiness check.
func (g *TopicGate) Check(context.Context) error { return g.Err() }

// Wait checks every Interval until every topic exists, creating missing ones first when
// Create is set, and returns nil then. It returns ctx.Err() if ctx ends first, and an error
// if Kafka refuses to create a topic for a reason that waiting will not change (a
// replication factor above the number of brokers, no permission to create): the message
// says which, fit for a person to act on. A check that cannot reach Kafka is retried.
func (g *TopicGate) Wait(ctx context.Context) error {
	for {
		final, err := g.check(ctx)
		g.set(err)
		if err == nil || final {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(g.cfg.Interval):
		}
	}
}

// check reports final for a refusal to create that retrying will not change.
func (g *TopicGate) check(ctx context.Context) (final bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	missing, err := g.admin.Missing(ctx, g.cfg.Names...)
	if err != nil {
		return false, fmt.Errorf("check topics: %w", err)
	}
	if len(missing) == 0 {
		return false, nil
	}
	if !g.cfg.Create {
		return false, &MissingTopicsError{Topics: missing}
	}
	if err := g.admin.CreateTopics(ctx, g.cfg.Spec, missing...); err != nil {
		var ke kafka.Error
		return errors.As(err, &ke) && !ke.Temporary(), err
	}
	g.cfg.Log.Info("created topics", "topics", missing, "partitions", g.cfg.Spec.Partitions, "replication", g.cfg.Spec.Replication)
	return false, nil
}

// set records the outcome of a check, logging it when it changed.
func (g *TopicGate) set(err error) {
	g.mu.Lock()
	prev := g.err
	g.err = err
	g.mu.Unlock()
	switch {
	case err == nil:
		g.cfg.Log.Info("topics ready", "topics", g.cfg.Names)
	case prev == nil || prev.Error() != err.Error():
		g.cfg.Log.Warn("not ready: topics", "err", err.Error(), "retry_in", g.cfg.Interval)
	}
}
