package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/nhsx/dnarisk/internal/envflag"
	"github.com/nhsx/dnarisk/stream"
)

// topicConfig is what the gateway does when its topic does not exist.
type topicConfig struct {
	create bool
	spec   stream.TopicSpec
}

// register adds --create-topics, --topic-partitions and --topic-replication to fs, with
// their variables in env.
func (c *topicConfig) register(fs *flag.FlagSet, env envflag.Env) {
	env["create-topics"], env["topic-partitions"], env["topic-replication"] = "CREATE_TOPICS", "TOPIC_PARTITIONS", "TOPIC_REPLICATION"
	fs.BoolVar(&c.create, "create-topics", false, "create the topic if it does not exist (otherwise wait for it, naming it in the log)")
	fs.IntVar(&c.spec.Partitions, "topic-partitions", 0, "partitions of a topic --create-topics makes; 0: the broker's num.partitions")
	fs.IntVar(&c.spec.Replication, "topic-replication", 0, "replication factor of a topic --create-topics makes; 0: the broker's default.replication.factor")
}

func (c *topicConfig) validate() error {
	switch {
	case c.spec.Partitions < 0 || c.spec.Partitions > 10000:
		return fmt.Errorf("--topic-partitions %d out of range 0..10000", c.spec.Partitions)
	case c.spec.Replication < 0 || c.spec.Replication > 32:
		return fmt.Errorf("--topic-replication %d out of range 0..32", c.spec.Replication)
	}
	return nil
}

// topicGate checks the gateway's topic until it exists, creating it when told to. Messages
// that arrive meanwhile are refused (their events cannot be published), so the sender
// retries them; gate.Check says why, for a readiness check. Wait's error is one a person
// must act on (Kafka refused to create the topic); the caller stops the gateway with it.
func topicGate(cfg config, log *slog.Logger) (gate *stream.TopicGate, closeAdmin func()) {
	admin := stream.NewAdmin(cfg.brokers, cfg.kafkaOpts...)
	return stream.NewTopicGate(admin, stream.Topics{Names: []string{cfg.topic}, Create: cfg.topics.create, Spec: cfg.topics.spec, Log: log}), admin.Close
}

// waitTopics runs gate.Wait and reports a final error on errs, cancelling the gateway.
func waitTopics(ctx context.Context, gate *stream.TopicGate, errs chan<- error, cancel func()) {
	if err := gate.Wait(ctx); err != nil && ctx.Err() == nil {
		errs <- fmt.Errorf("topics: %w", err)
		cancel()
	}
}
