package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/scorer"
	"github.com/nhsx/dnarisk/stream"
)

func TestStageTimingsQuantilesPerStage(t *testing.T) {
	st := newStageTimes()
	for i := 1; i <= 100; i++ {
		d := time.Duration(i) * time.Millisecond
		st.BatchDone(&scorer.BatchReport{Messages: 1, Took: 5 * d, Load: d, Score: d, Publish: d, Save: d, Published: map[string]int{"risk": 1}})
		at := time.Now()
		st.loopDone(stream.LoopTimes{Batch: []kafka.Message{{Time: at.Add(-d)}}, FetchedAt: at, Fill: d, Commit: d})
	}
	st.BatchDone(&scorer.BatchReport{Messages: 1}) // nothing published: no publish sample
	path := filepath.Join(t.TempDir(), "stages.json")
	if err := st.write(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]StageQuantiles
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"fetch", "fill", "publish", "commit"} {
		q := got[name]
		if q.Batches != 100 || q.P50ms != 50 || q.P99ms != 99 || q.Maxms != 100 {
			t.Errorf("%s: %+v, want 100 batches, p50 50, p99 99, max 100", name, q)
		}
	}
	for _, name := range []string{"load", "score", "save"} {
		if q := got[name]; q.Batches != 101 || q.P50ms != 50 {
			t.Errorf("%s %+v: want the unpublished batch counted too", name, q)
		}
	}
	if q := got["total"]; q.P99ms != 495 {
		t.Errorf("total %+v, want p99 495", q)
	}
	if q := got["batch_messages"]; q.Batches != 100 || q.Maxms != 1 {
		t.Errorf("batch_messages %+v", q)
	}
}

// Each message counts its batch's duration: one slow batch of 99 messages among 99 fast
// batches of one is the p99 and the median.
func TestStageTimingsWeighMessages(t *testing.T) {
	st := newStageTimes()
	for range 99 {
		st.BatchDone(&scorer.BatchReport{Messages: 1, Load: time.Millisecond})
	}
	st.BatchDone(&scorer.BatchReport{Messages: 99, Load: 200 * time.Millisecond})
	q := st.summary()["load"]
	if q.Batches != 100 || q.Events != 198 || q.P50ms != 1 || q.P99ms != 200 {
		t.Fatalf("load %+v, want the slow batch at p99 of 198 events and the fast ones at p50", q)
	}
}
