// Command goref is a test-only reference for bench/peer/test_peer.py: it replays a JSONL file
// of appointment.v1 events through the Go consumer's own code — scorer.Processor with a
// featurestore.RedisStore on an in-process Redis (miniredis, so histories go through the real
// binary codec and compare-and-set) and scoring.Load — in batches of -batch messages, the
// way cmd/consumer does, and writes what it published so the Python peer can be compared
// with it event by event. It is not part of the product.
//
//	goref -in events.jsonl -model models/default [-batch 500] [-retention 26280h] [-max-facts 1000]
//	      -out published.jsonl [-histories histories.jsonl]
//
// Each input line is one Kafka message: offset = line number (0-based), key = the line's
// "patient" string when the line is a JSON object that has one, else empty.
//
// -out has one JSON object per published message, in publication order:
//
//	{"kind":"risk","value":<risk.v1 event>,"raw":[19 featurestore.Compute values, null = NaN],"x":[model input]}
//	{"kind":"dead_letter","offset":N,"reason":"..."}
//
// -histories has one object per patient history left in Redis, sorted by key:
// {"key":"dna:{…}:history","rev":N,"facts_hex":"…"}.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/scoring"
)

// recorder wraps the model and remembers, per scored booking, the featurestore.Compute vector
// and the model input the processor built (Processor calls Vector then Score once per booking).
type recorder struct {
	*scoring.Model
	raw [][]float64
	x   [][]float64
}

func (r *recorder) Vector(ev *events.Appointment, v featurestore.Vector, dst []float64) []float64 {
	r.raw = append(r.raw, slices.Clone(v[:]))
	dst = r.Model.Vector(ev, v, dst)
	r.x = append(r.x, slices.Clone(dst))
	return dst
}

type capture struct{ msgs []kafka.Message }

func (c *capture) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	c.msgs = append(c.msgs, msgs...)
	return nil
}

func nullNaN(xs []float64) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		if !math.IsNaN(x) {
			out[i] = x
		}
	}
	return out
}

func main() {
	in := flag.String("in", "", "JSONL appointment events")
	modelDir := flag.String("model", "models/default", "model directory")
	batch := flag.Int("batch", 500, "messages per batch")
	retention := flag.Duration("retention", 0, "history retention (0: featurestore default, 3 years)")
	maxFacts := flag.Int("max-facts", 0, "facts kept per patient (0: featurestore default, 1000)")
	outPath := flag.String("out", "", "published messages, JSONL")
	histPath := flag.String("histories", "", "final histories, JSONL (optional)")
	flag.Parse()
	if err := run(*in, *modelDir, *batch, featurestore.Policy{Retention: *retention, MaxFacts: *maxFacts}, *outPath, *histPath); err != nil {
		fmt.Fprintln(os.Stderr, "goref:", err)
		os.Exit(1)
	}
}

func run(in, modelDir string, batch int, policy featurestore.Policy, outPath, histPath string) error {
	model, err := scoring.Load(modelDir)
	if err != nil {
		return err
	}
	rec := &recorder{Model: model}
	mr, err := miniredis.Run()
	if err != nil {
		return err
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	store := featurestore.NewRedisStore(rdb, featurestore.RedisOptions{Prefix: "dna:"})
	out := &capture{}
	// MaxAhead < 0: the simulated events lie in the future of the wall clock, and the peer
	// (like the consumer's --max-ahead 0 for replays) applies no event-time limit.
	proc, err := scorer.New(scorer.Config{Store: store, Output: out, Model: rec, Topics: scorer.Topics{Risk: "risk", DeadLetter: "dlq"}, Policy: policy, MaxAhead: -1})
	if err != nil {
		return err
	}

	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var msgs []kafka.Message
	ctx := context.Background()
	flush := func() error {
		if len(msgs) == 0 {
			return nil
		}
		err := proc.Process(ctx, msgs)
		msgs = nil
		return err
	}
	for off := int64(0); sc.Scan(); off++ {
		value := slices.Clone(sc.Bytes())
		var probe struct {
			Patient any `json:"patient"`
		}
		var key []byte
		if json.Unmarshal(value, &probe) == nil {
			if s, ok := probe.Patient.(string); ok {
				key = []byte(s)
			}
		}
		msgs = append(msgs, kafka.Message{Topic: "appointments", Offset: off, Key: key, Value: value, Time: time.Unix(0, 0)})
		if len(msgs) == batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}

	w, err := os.Create(outPath)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	scored := 0
	for _, m := range out.msgs {
		var rowErr error
		switch m.Topic {
		case "risk":
			if scored >= len(rec.raw) {
				return fmt.Errorf("more risk events than scored bookings")
			}
			rowErr = enc.Encode(map[string]any{"kind": "risk", "value": json.RawMessage(m.Value),
				"raw": nullNaN(rec.raw[scored]), "x": nullNaN(rec.x[scored])})
			scored++
		case "dlq":
			var d events.DeadLetter
			if err := json.Unmarshal(m.Value, &d); err != nil {
				return err
			}
			rowErr = enc.Encode(map[string]any{"kind": "dead_letter", "offset": d.Offset, "reason": d.Reason})
		}
		if rowErr != nil {
			return rowErr
		}
	}
	if scored != len(rec.raw) {
		return fmt.Errorf("%d risk events for %d scored bookings", scored, len(rec.raw))
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if histPath == "" {
		return nil
	}
	keys := mr.Keys()
	slices.Sort(keys)
	hw, err := os.Create(histPath)
	if err != nil {
		return err
	}
	hb := bufio.NewWriter(hw)
	henc := json.NewEncoder(hb)
	for _, k := range keys {
		rev, facts := mr.HGet(k, "rev"), mr.HGet(k, "facts")
		if err := henc.Encode(map[string]any{"key": k, "rev": rev, "facts_hex": hex.EncodeToString([]byte(facts))}); err != nil {
			return err
		}
	}
	if err := hb.Flush(); err != nil {
		return err
	}
	return hw.Close()
}
