package monitor

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// ReferenceFile is the training reference's name in a model directory (written by make model).
const ReferenceFile = "reference.json"

// LoadReference reads dir/reference.json for the model modelID with inputs features (in
// contract order). A directory without one returns nil and no error (drift is then not
// measured); one that is malformed, or for another model, is an error that says what to fix.
func LoadReference(dir, modelID string, features []string) (*Reference, error) {
	path := filepath.Join(dir, ReferenceFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var raw struct {
		Schema  string `json:"schema"`
		ModelID string `json:"model_id"`
		Score   struct {
			Edges  []float64 `json:"edges"`
			Shares []float64 `json:"shares"`
		} `json:"score"`
		Features []struct {
			Name         string    `json:"name"`
			MissingShare float64   `json:"missing_share"`
			Edges        []float64 `json:"edges"`
			Categories   []float64 `json:"categories"`
			Shares       []float64 `json:"shares"`
		} `json:"features"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w (rebuild it with make model)", path, err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: %s; rebuild the model directory with make model", path, fmt.Sprintf(format, a...))
	}
	switch {
	case raw.Schema != "reference.v1":
		return nil, bad("schema %q, want reference.v1", raw.Schema)
	case raw.ModelID != modelID:
		return nil, bad("made for model %s, but the directory's model is %s", raw.ModelID, modelID)
	case len(raw.Features) != len(features):
		return nil, bad("%d features, the model has %d", len(raw.Features), len(features))
	}
	ref := &Reference{ModelID: modelID, Score: Bins{Edges: raw.Score.Edges, Shares: raw.Score.Shares}}
	if err := checkBins("score", ref.Score); err != nil {
		return nil, bad("%v", err)
	}
	for i, f := range raw.Features {
		if f.Name != features[i] {
			return nil, bad("feature %d is %q, the model's is %q", i+1, f.Name, features[i])
		}
		fb := FeatureBins{Name: f.Name, MissingShare: f.MissingShare, Bins: Bins{Edges: f.Edges, Categories: f.Categories, Shares: f.Shares}}
		if !(f.MissingShare >= 0 && f.MissingShare <= 1) {
			return nil, bad("%s missing_share %v out of 0..1", f.Name, f.MissingShare)
		}
		if f.MissingShare < 1 {
			if err := checkBins(f.Name, fb.Bins); err != nil {
				return nil, bad("%v", err)
			}
		}
		ref.Features = append(ref.Features, fb)
	}
	return ref, nil
}

func checkBins(name string, b Bins) error {
	want := len(b.Edges) + 1
	if len(b.Categories) > 0 {
		want = len(b.Categories) + 1
	}
	if len(b.Shares) != want {
		return fmt.Errorf("%s has %d shares for %d bins", name, len(b.Shares), want)
	}
	for i := 1; i < len(b.Edges); i++ {
		if !(b.Edges[i] > b.Edges[i-1]) {
			return fmt.Errorf("%s edges are not increasing", name)
		}
	}
	sum := 0.0
	for _, s := range b.Shares {
		if !(s >= 0) {
			return fmt.Errorf("%s has a negative share", name)
		}
		sum += s
	}
	if math.Abs(sum-1) > 1e-6 {
		return fmt.Errorf("%s shares sum to %v, not 1", name, sum)
	}
	return nil
}
