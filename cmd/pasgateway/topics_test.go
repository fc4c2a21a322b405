package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/stream"
)

func TestTopicSettingsRefused(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"TOPIC_PARTITIONS": "-1"}, "--topic-partitions"},
		{[]string{"--topic-replication", "99"}, nil, "--topic-replication"},
		{nil, map[string]string{"CREATE_TOPICS": "perhaps"}, "CREATE_TOPICS"},
	} {
		if _, err := parseConfig(c.args, lookupIn(c.env), io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: err %v, want %q", c.args, c.env, err, c.want)
		}
	}
}

// With --create-topics the gateway makes its topic at start, with --topic-partitions.
func TestGatewayCreatesTopic(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	topic := fmt.Sprintf("test.later.gateway.%d", time.Now().UnixNano())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = (&kafka.Client{Addr: kafka.TCP(brokers...)}).DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	})
	cfg, err := parseConfig([]string{"--mllp-addr", "127.0.0.1:0", "--fhir-addr", "off", "--metrics-addr", "off", "--topic-appointments", topic, "--create-topics", "--contacts", "off"},
		lookupIn(map[string]string{"KAFKA_BROKERS": strings.Join(brokers, ","), "REDIS_ADDR": redisAddr, "TOPIC_PARTITIONS": "3"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := pseudo.New([]byte(secret))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, ps, slog.New(slog.NewTextHandler(os.Stderr, nil)), nil) }()
	admin := stream.NewAdmin(brokers)
	defer admin.Close()
	testenv.Eventually(t, 30*time.Second, func() bool {
		missing, err := admin.Missing(ctx, topic)
		return err == nil && len(missing) == 0
	}, "the gateway to create its topic")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("gateway: %v", err)
	}
	// A transport of its own: the shared default one answers from a cache that may predate the topic.
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	md, err := (&kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}).Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(md.Topics) != 1 || md.Topics[0].Error != nil || len(md.Topics[0].Partitions) != 3 {
		t.Fatalf("topic metadata %+v, %v: want 3 partitions", md, err)
	}
}
