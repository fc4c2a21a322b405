package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/stream"
)

// --backfill rebuilds every patient's history from the topic into an empty Redis, publishes
// nothing, and a second run over the same store changes nothing (Apply is idempotent).
func TestBinaryBackfillRebuildsHistories(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	in := testenv.Topic(t, brokers, 3)
	risk := testenv.Topic(t, brokers, 1)
	dlq := testenv.Topic(t, brokers, 1)
	prefix := fmt.Sprintf("backfill-%d:", time.Now().UnixNano())
	bin := consumerBinary(t)
	s := newSimStream(t, 21, 1500, 60)
	ctx := context.Background()
	w := stream.NewWriter(brokers, in)
	if err := w.WriteMessages(ctx, s.msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	run := func() backfillSummary {
		t.Helper()
		cmd := exec.Command(bin, "--backfill", "--brokers", strings.Join(brokers, ","), "--redis", redisAddr,
			"--topic-appointments", in, "--topic-risk", risk, "--topic-dlq", dlq, "--redis-prefix", prefix,
			"--model-dir", "/nonexistent", "--metrics-addr", "off")
		cmd.Env = os.Environ()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("backfill: %v", err)
		}
		var sum backfillSummary
		if err := json.Unmarshal(out, &sum); err != nil {
			t.Fatalf("backfill summary %q: %v", out, err)
		}
		return sum
	}
	first := run()
	if first.Events != int64(len(s.msgs)) || first.Applied == 0 || first.EventsPerSec <= 0 {
		t.Fatalf("backfill summary %+v, want all %d events", first, len(s.msgs))
	}
	s.checkHistories(t, redisAddr, prefix)
	for _, topic := range []string{risk, dlq} {
		if n, err := endOffsets(ctx, brokers, topic); err != nil || n != 0 {
			t.Fatalf("backfill published %d messages to %s (%v)", n, topic, err)
		}
	}
	again := run()
	if again.Events != first.Events || again.Applied != 0 {
		t.Fatalf("second backfill %+v: want the same events and nothing applied", again)
	}
	s.checkHistories(t, redisAddr, prefix)
}
