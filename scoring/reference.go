package scoring

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"sort"
	"time"
)

// The training reference (reference.json, written by training/train.py and
// training/reference.py): the distribution of a model's served probability and of each of its
// inputs over the most recent held-out rows of its training data, binned, so a monitor can
// compute the PSI of live scores and inputs against it, and the live missing-value rate per
// feature. Values are in the representation of the risk event's "features" map
// (Model.FeatureMap): numeric inputs as numbers, a categorical input as its category code
// (the specialty's treatment function code; a categorical booking extra's position in the
// contract's Categories), missing ones absent.

// ReferenceFile is the training reference's file name in a model directory.
const ReferenceFile = "reference.json"

// ReferenceSchema is the reference.json layout this package reads.
const ReferenceSchema = "reference.v1"

// maxReferenceBytes bounds reference.json: a few hundred numbers per feature.
const maxReferenceBytes = 4 << 20

// maxEdges is the most cut points of a binned distribution (deciles).
const maxEdges = 9

// shareTolerance is how far a distribution's shares may sum from 1 (they are rounded floats).
const shareTolerance = 1e-6

// Reference is a model's training reference.
type Reference struct {
	Schema  string `json:"schema"`
	ModelID string `json:"model_id"`
	// Rows is the number of rows the reference was computed on.
	Rows int `json:"rows"`
	// Window is the span of UK appointment dates of those rows, YYYY-MM-DD.
	Window struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"window"`
	// How says which rows, in one sentence, for people.
	How string `json:"how"`
	// Score is the distribution of the served (calibrated) probability: deciles as edges.
	Score Bins `json:"score"`
	// Features has one entry per contract feature, in contract order.
	Features []FeatureReference `json:"features"`
}

// Bins is a binned distribution: value v falls in bin Bin(v), the number of Edges strictly
// less than v, and Shares[i] is the share of the reference rows in bin i (len(Edges)+1 of
// them).
type Bins struct {
	Edges  []float64 `json:"edges"`
	Shares []float64 `json:"shares"`
}

// Bin returns the bin of v: the number of edges strictly less than v (what
// numpy.searchsorted(edges, v, side="left") gives the training side).
func (b Bins) Bin(v float64) int { return sort.SearchFloat64s(b.Edges, v) }

// FeatureReference is the reference distribution of one model input.
type FeatureReference struct {
	Name string      `json:"name"`
	Type FeatureType `json:"type"`
	// MissingShare is the share of reference rows where the input was missing (absent from
	// the risk event's features map).
	MissingShare float64 `json:"missing_share"`
	// Edges (numeric inputs): up to 9 increasing quantile cut points of the non-missing
	// values.
	Edges []float64 `json:"edges,omitempty"`
	// Categories (categorical inputs): the category codes listed, each with its own bin; any
	// other code falls in a last "other" bin.
	Categories []float64 `json:"categories,omitempty"`
	// Shares over the non-missing values: len(Edges)+1 for a numeric input,
	// len(Categories)+1 for a categorical one. They sum to 1, or are all 0 when every
	// reference row was missing.
	Shares []float64 `json:"shares"`
}

// Bin returns the bin of a non-missing value v: for a numeric input the number of edges
// strictly less than v, for a categorical one the position of v in Categories, or
// len(Categories) ("other") when it is not listed.
func (f FeatureReference) Bin(v float64) int {
	if f.Type != Categorical {
		return sort.SearchFloat64s(f.Edges, v)
	}
	for i, c := range f.Categories {
		if c == v {
			return i
		}
	}
	return len(f.Categories)
}

// LoadReference reads and validates dir/reference.json. A directory without one (a model
// built before references existed) gives nil and no error. A reference that does not check
// out is refused with what is wrong and how to rebuild it.
func LoadReference(dir string) (*Reference, error) {
	path := filepath.Join(dir, ReferenceFile)
	b, err := readLimited(path, maxReferenceBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("training reference: %w", err)
	}
	r, err := ParseReference(b)
	if err != nil {
		return nil, fmt.Errorf("training reference %s: %w; rebuild it with `training/reference.py --model-dir %s --trainset <the training set>` or `make model`", path, err, dir)
	}
	return r, nil
}

// ParseReference decodes and validates a reference.json.
func ParseReference(b []byte) (*Reference, error) {
	var r Reference
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("cannot decode: %v", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

func (r *Reference) validate() error {
	switch {
	case r.Schema != ReferenceSchema:
		return fmt.Errorf("schema %q, want %q", r.Schema, ReferenceSchema)
	case !modelIDRE.MatchString(r.ModelID):
		return fmt.Errorf("model_id %q is not a model id", r.ModelID)
	case r.Rows < 1:
		return fmt.Errorf("rows %d: a reference needs at least one row", r.Rows)
	case len(r.Features) == 0:
		return errors.New("no features")
	}
	from, errF := time.Parse(time.DateOnly, r.Window.From)
	to, errT := time.Parse(time.DateOnly, r.Window.To)
	if errF != nil || errT != nil || to.Before(from) {
		return fmt.Errorf("window %q to %q: want two dates YYYY-MM-DD, from not after to", r.Window.From, r.Window.To)
	}
	if len(r.Score.Edges) == 0 {
		return errors.New("score: no edges")
	}
	if err := checkBins(r.Score.Edges, r.Score.Shares, false); err != nil {
		return fmt.Errorf("score: %w", err)
	}
	seen := make(map[string]bool, len(r.Features))
	for i, f := range r.Features {
		if err := f.validate(); err != nil {
			return fmt.Errorf("features[%d] (%s): %w", i, f.Name, err)
		}
		if seen[f.Name] {
			return fmt.Errorf("features[%d]: %s is listed twice", i, f.Name)
		}
		seen[f.Name] = true
	}
	return nil
}

func (f FeatureReference) validate() error {
	if f.Name == "" {
		return errors.New("no name")
	}
	if !(f.MissingShare >= 0 && f.MissingShare <= 1) {
		return fmt.Errorf("missing_share %v out of range 0..1", f.MissingShare)
	}
	allMissing := f.MissingShare == 1
	switch f.Type {
	case Numeric:
		if f.Categories != nil {
			return errors.New("a numeric feature has categories")
		}
		return checkBins(f.Edges, f.Shares, allMissing)
	case Categorical:
		if f.Edges != nil {
			return errors.New("a categorical feature has edges")
		}
		if len(f.Categories) > MaxCategories {
			return fmt.Errorf("%d categories, at most %d", len(f.Categories), MaxCategories)
		}
		codes := make(map[float64]bool, len(f.Categories))
		for j, c := range f.Categories {
			if !(c >= 0 && c < math.MaxInt32) || c != math.Trunc(c) || codes[c] {
				return fmt.Errorf("categories[%d] %v: want distinct whole-number category codes 0..2147483646", j, c)
			}
			codes[c] = true
		}
		if len(f.Shares) != len(f.Categories)+1 {
			return fmt.Errorf("%d shares for %d categories, want one per category and a last one for other codes", len(f.Shares), len(f.Categories))
		}
		return checkShares(f.Shares, allMissing)
	default:
		return fmt.Errorf("type %q, want %q or %q", f.Type, Numeric, Categorical)
	}
}

// checkBins checks edges (at most 9, finite, strictly increasing) and their len(edges)+1
// shares.
func checkBins(edges, shares []float64, allMissing bool) error {
	if len(edges) > maxEdges {
		return fmt.Errorf("%d edges, at most %d", len(edges), maxEdges)
	}
	for j, e := range edges {
		if math.IsNaN(e) || math.IsInf(e, 0) || j > 0 && e <= edges[j-1] {
			return fmt.Errorf("edges[%d] %v: want finite, strictly increasing edges", j, e)
		}
	}
	if len(shares) != len(edges)+1 {
		return fmt.Errorf("%d shares for %d edges, want %d", len(shares), len(edges), len(edges)+1)
	}
	return checkShares(shares, allMissing)
}

// checkShares checks that shares are in 0..1 and sum to 1 (or are all 0 when every reference
// row was missing).
func checkShares(shares []float64, allMissing bool) error {
	sum := 0.0
	for j, s := range shares {
		if !(s >= 0 && s <= 1) {
			return fmt.Errorf("shares[%d] %v out of range 0..1", j, s)
		}
		sum += s
	}
	if allMissing && sum == 0 {
		return nil
	}
	if math.Abs(sum-1) > shareTolerance {
		return fmt.Errorf("shares sum to %v, want 1", sum)
	}
	return nil
}

// Check reports whether r is the reference of the model with contract c: the same model id,
// and the contract's features, names and types, in contract order. A mismatch means the
// reference belongs to another model (a half-copied model directory, or a model rebuilt
// without its reference).
func (r *Reference) Check(c Contract) error {
	if r.ModelID != c.ModelID {
		return fmt.Errorf("training reference is for model %s, the contract for %s", r.ModelID, c.ModelID)
	}
	if len(r.Features) != len(c.Features) {
		return fmt.Errorf("training reference has %d features, the contract of %s %d", len(r.Features), c.ModelID, len(c.Features))
	}
	for i, f := range c.Features {
		if g := r.Features[i]; g.Name != f.Name || g.Type != f.Type {
			return fmt.Errorf("training reference features[%d] is %s (%s), the contract's %s (%s)", i, g.Name, g.Type, f.Name, f.Type)
		}
	}
	return nil
}
