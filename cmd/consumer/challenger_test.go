package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/scoring"
	"github.com/nhsx/dnarisk/stream"
)

func TestChallengerFlags(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	c, err := parseConfigEnv(nil, none, io.Discard)
	if err != nil || c.challengerDir != "" || c.topics.Shadow != "risk.shadow" || slices.Contains(c.topicNames(), "risk.shadow") {
		t.Fatalf("defaults: challenger %q, shadow topic %q, topics %v, %v", c.challengerDir, c.topics.Shadow, c.topicNames(), err)
	}
	env := map[string]string{"CHALLENGER_MODEL_DIR": "models/decision", "TOPIC_RISK_SHADOW": "shadow.x"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	c, err = parseConfigEnv(nil, lookup, io.Discard)
	if err != nil || c.challengerDir != "models/decision" || !slices.Equal(c.topicNames(), []string{"appointments", "risk", "appointments.dlq", "shadow.x"}) {
		t.Fatalf("from the environment: challenger %q, topics %v, %v", c.challengerDir, c.topicNames(), err)
	}
	if _, err := parseConfigEnv([]string{"--challenger-model-dir", "x", "--topic-shadow", "risk"}, none, io.Discard); err == nil {
		t.Fatal("a shadow topic equal to the risk topic accepted")
	}
}

// copyModel copies the model directory from into to (created if need be).
func copyModel(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{scoring.ContractFile, scoring.ModelFile} {
		b, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// The challenger's directory is watched like the model's: a new challenger copied in
// replaces it; the model is untouched.
func TestWatchSwapsTheChallenger(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "challenger")
	copyModel(t, "../../models/default", dir)
	champ, err := scoring.Load("../../models/default")
	if err != nil {
		t.Fatal(err)
	}
	current, err := scoring.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	next, err := scoring.Load("../../models/decision")
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never called: nothing is processed
	defer rdb.Close()
	proc, err := scorer.New(scorer.Config{Store: featurestore.NewRedisStore(rdb, featurestore.RedisOptions{}), Output: discard{}, Model: champ, Challenger: current})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := make(chan *scoring.Model, 4)
	logs := &syncBuffer{}
	go watchChallengerDir(ctx, dir, 50*time.Millisecond, scoring.LiveFeed{Allowed: map[string]bool{"*": true}}, current, proc,
		slog.New(slog.NewJSONHandler(logs, nil)), func(m *scoring.Model, err error) {
			if err != nil {
				t.Errorf("refused: %v", err)
			}
			results <- m
		})
	copyModel(t, "../../models/decision", dir)
	select {
	case m := <-results:
		if m.ID() != next.ID() {
			t.Fatalf("swapped in %s, want %s", m.ID(), next.ID())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher never reported the new challenger")
	}
	if proc.Challenger().ID() != next.ID() || proc.Model().ID() != champ.ID() {
		t.Fatalf("challenger %s, model %s; want %s and %s", proc.Challenger().ID(), proc.Model().ID(), next.ID(), champ.ID())
	}
	if !strings.Contains(logs.String(), `"msg":"challenger swapped"`) {
		t.Fatalf("no swap log line:\n%s", logs.String())
	}
}

// The binary with --challenger-model-dir on real Kafka and Redis: it creates the shadow
// topic with the others, and for a booking publishes the champion's risk event to the risk
// topic and the challenger's to the shadow topic, describing the same booking at the same
// moment; /metrics names the challenger and counts its events.
func TestBinaryPublishesShadowEvents(t *testing.T) {
	brokers := testenv.Kafka(t)
	redisAddr := testenv.Redis(t)
	bin := consumerBinary(t)
	names := laterTopics(t, brokers, 4)
	in, risk, dlq, shadow := names[0], names[1], names[2], names[3]
	group := fmt.Sprintf("consumer-shadow-%d", time.Now().UnixNano())
	opsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	r := startScorer(t, bin, []string{"KAFKA_BROKERS=" + strings.Join(brokers, ","), "REDIS_ADDR=" + redisAddr, "CREATE_TOPICS=true"},
		"--group", group, "--redis-prefix", group+":", "--topic-appointments", in, "--topic-risk", risk, "--topic-dlq", dlq,
		"--topic-shadow", shadow, "--challenger-model-dir", "../../models/decision", "--metrics-addr", opsAddr)
	defer r.stop(t)
	champ, _ := scoring.Load("../../models/default")
	chal, _ := scoring.Load("../../models/decision")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin := stream.NewAdmin(brokers)
	defer admin.Close()
	testenv.Eventually(t, 30*time.Second, func() bool {
		missing, err := admin.Missing(ctx, names...)
		return err == nil && len(missing) == 0
	}, "the consumer to create its topics, the shadow topic among them")
	ev, m := oneBooking(t, 7)
	w := stream.NewWriter(brokers, in)
	defer w.Close()
	if err := w.WriteMessages(ctx, m); err != nil {
		t.Fatal(err)
	}
	read := func(topic string) []events.Risk {
		msgs, err := stream.ReadAll(ctx, brokers, topic)
		if err != nil {
			return nil
		}
		var out []events.Risk
		for _, m := range msgs {
			var r events.Risk
			if json.Unmarshal(m.Value, &r) == nil && string(m.Key) == r.Patient {
				out = append(out, r)
			}
		}
		return out
	}
	var rs, ss []events.Risk
	testenv.Eventually(t, 90*time.Second, func() bool {
		rs, ss = read(risk), read(shadow)
		return len(rs) >= 1 && len(ss) >= 1
	}, "a risk event and a shadow event")
	c, s := rs[0], ss[0]
	if len(rs) != 1 || len(ss) != 1 || c.AppointmentID != ev.AppointmentID || s.AppointmentID != ev.AppointmentID ||
		s.Version != c.Version || !s.ScoredAt.Equal(c.ScoredAt) || s.Patient != c.Patient {
		t.Fatalf("risk %+v, shadow %+v: want one each for booking %s, scored at the same moment", rs, ss, ev.AppointmentID)
	}
	if c.ModelID != champ.ID() || s.ModelID != chal.ID() {
		t.Fatalf("model ids %s (risk) and %s (shadow), want %s and %s", c.ModelID, s.ModelID, champ.ID(), chal.ID())
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		body := httpGet(t, "http://"+opsAddr+"/metrics")
		return strings.Contains(body, fmt.Sprintf(`dnarisk_challenger_model_info{model_id=%q} 1`, chal.ID())) &&
			strings.Contains(body, fmt.Sprintf(`dnarisk_shadow_events_total{band=%q} 1`, s.Band)) &&
			strings.Contains(body, fmt.Sprintf(`dnarisk_events_published_total{topic=%q} 1`, shadow))
	}, "/metrics to name the challenger and count its shadow event")
}
