package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/scoring"
)

// modelWithExtra writes into dir the default model with its deprivation_decile input read
// from booking extra key instead: a model a trust trained with a CSV extra.
func modelWithExtra(t *testing.T, dir, key string) {
	t.Helper()
	mb, err := os.ReadFile("../../models/default/model.txt")
	if err != nil {
		t.Fatal(err)
	}
	mb = []byte(strings.Replace(string(mb), " deprivation_decile ", " extra."+key+" ", 1))
	cb, err := os.ReadFile("../../models/default/contract.json")
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(cb, &c); err != nil {
		t.Fatal(err)
	}
	for _, f := range c["features"].([]any) {
		if f := f.(map[string]any); f["name"] == "deprivation_decile" {
			f["name"] = scoring.ExtraPrefix + key
		}
	}
	sum := sha256.Sum256(mb)
	c["model_sha256"] = hex.EncodeToString(sum[:])
	c["model_id"] = "dna-gbm-with-" + key
	cb, _ = json.Marshal(c)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, scoring.ModelFile), mb, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, scoring.ContractFile), cb, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A model needing a booking extra the live mapping does not fill is refused at start with a
// message naming the extra and both remedies; the mapping or an explicit allowance admits it.
func TestModelNeedingAnUnmappedExtraIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	modelWithExtra(t, dir, "imd_decile")
	mapping := filepath.Join(t.TempDir(), "mapping.json")
	if err := os.WriteFile(mapping, []byte(`{"extras": [{"name": "imd_decile", "hl7": "ZAP-2"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	none := func(string) (string, bool) { return "", false }
	load := func(args ...string) error {
		c, err := parseConfigEnv(args, none, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		_, err = c.loadModel(dir)
		return err
	}
	err := load()
	for _, want := range []string{`"imd_decile"`, "dna-gbm-with-imd_decile", "--allow-unmapped-extras imd_decile", "mapping file"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("no mapping: %v; want it to say %s", err, want)
		}
	}
	if err := load("--mapping", mapping); err != nil {
		t.Errorf("the mapping fills it: %v", err)
	}
	if err := load("--allow-unmapped-extras", "imd_decile"); err != nil {
		t.Errorf("allowed by name: %v", err)
	}
	if err := load("--allow-unmapped-extras", "other"); err == nil {
		t.Error("allowing another extra admitted it")
	}
	env := func(k string) (string, bool) {
		if k == "ALLOW_UNMAPPED_EXTRAS" {
			return "*", true
		}
		return "", false
	}
	if c, err := parseConfigEnv(nil, env, io.Discard); err != nil {
		t.Fatal(err)
	} else if _, err := c.loadModel(dir); err != nil {
		t.Errorf("ALLOW_UNMAPPED_EXTRAS=*: %v", err)
	}
	if _, err := parseConfigEnv([]string{"--mapping", filepath.Join(t.TempDir(), "absent.json")}, none, io.Discard); err == nil {
		t.Error("a missing mapping file accepted")
	}
}

type discard struct{}

func (discard) WriteMessages(context.Context, ...kafka.Message) error { return nil }

// A model with an unmapped extra copied into the watched directory is refused as a broken
// one is: the current model keeps serving.
func TestWatchRefusesAModelNeedingAnUnmappedExtra(t *testing.T) {
	dir := t.TempDir()
	current, err := scoring.Load("../../models/default")
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never called: nothing is processed
	defer rdb.Close()
	proc, err := scorer.New(scorer.Config{Store: featurestore.NewRedisStore(rdb, featurestore.RedisOptions{}), Output: discard{}, Model: current})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := make(chan error, 4)
	feed := scoring.LiveFeed{Filled: map[string]bool{"duration_minutes": true}}
	go watchModelDir(ctx, dir, 50*time.Millisecond, feed, current, proc, slog.New(slog.DiscardHandler), func(_ *scoring.Model, err error) { results <- err })
	modelWithExtra(t, dir, "clinic_load")
	select {
	case err := <-results:
		if err == nil || !strings.Contains(err.Error(), `"clinic_load"`) {
			t.Fatalf("watch: %v, want a refusal naming clinic_load", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher never reported the new model")
	}
	if id := proc.Model().ID(); id != current.ID() {
		t.Fatalf("serving %s after the refusal, want %s", id, current.ID())
	}
}
