package main

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// StageQuantiles is one stage of the Go consumer's batches in its latency run, in ms over the
// events that went through it, each counting its batch's duration (cmd/consumer
// --stage-timings writes them at exit): fetch (a batch's oldest booking
// from its producer timestamp to being fetched: the broker's append and fetch, plus any wait
// behind the previous batch), fill, load (Redis), score (our CPU), publish (until Kafka
// acknowledged), save (Redis), commit (Kafka), total (load to save); batch_messages is in
// messages, over batches.
type StageQuantiles struct {
	Batches int     `json:"batches"`
	Events  int     `json:"events"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	Maxms   float64 `json:"max_ms"`
}

// Stages are the Go consumer's batch stages in its latency run, by stage name.
type Stages map[string]StageQuantiles

// stagesFile is where impl name's consumer writes its stage timings in the latency run
// ("" for an implementation that does not write them).
func stagesFile(name string) string {
	if name != "go" {
		return ""
	}
	return filepath.Join(os.TempDir(), "dnarisk-bench-stages.json")
}

// readStages reads what the Go consumer wrote at exit; nil if it wrote nothing.
func readStages(path string) (Stages, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st Stages
	return st, json.Unmarshal(b, &st)
}
