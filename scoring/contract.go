package scoring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/nhsx/dnarisk/featurestore"
)

// FeatureType says how the model treats a feature.
type FeatureType string

// Feature types in a contract.
const (
	Numeric     FeatureType = "numeric"
	Categorical FeatureType = "categorical"
)

// ExtraPrefix marks a contract feature taken from events.Booking.Extra: "extra.<key>".
const ExtraPrefix = "extra."

// Feature is one model input, in model order.
type Feature struct {
	// Name is one of featurestore.Names or ExtraPrefix + a booking extra key.
	Name string      `json:"name"`
	Type FeatureType `json:"type"`
	// Categories, on a categorical booking extra only, lists the texts the feature was
	// trained on: the i-th text is category code i (see CodeList). A booking extra value
	// whose text is not listed is missing.
	Categories []string `json:"categories,omitempty"`
}

// Band is a risk band: probabilities at or above MinProbability (and below the next band's)
// belong to it.
type Band struct {
	Name           string  `json:"name"`
	MinProbability float64 `json:"min_probability"`
}

// Window is the span of booking event times a model was trained on.
type Window struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Contract is contract.json: what a model expects as input and how its output is banded.
// Fields other than these are kept in the file for people (training/train.py writes a few)
// and ignored here.
type Contract struct {
	ModelID   string    `json:"model_id"`
	Features  []Feature `json:"features"`
	RiskBands []Band    `json:"risk_bands"`
	// TrainedAt, TrainingRows and TrainingWindow describe the training run; informational.
	TrainedAt      time.Time `json:"trained_at"`
	TrainingRows   int       `json:"training_rows"`
	TrainingWindow *Window   `json:"training_window,omitempty"`
	// ModelSHA256 is the hex SHA-256 of model.txt. When present, Load refuses a model.txt
	// with any other content, so a contract.json and model.txt from two different models
	// (a half-finished copy) are never served together.
	ModelSHA256 string `json:"model_sha256,omitempty"`
	// Calibration, when present, maps the trees' probability to the served one.
	Calibration *Calibration `json:"calibration,omitempty"`
}

// model IDs travel in risk events, logs and metric labels.
var modelIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func parseContract(b []byte) (Contract, error) {
	var c Contract
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("cannot decode: %v", err)
	}
	if dec.More() {
		return c, fmt.Errorf("trailing data after the JSON object")
	}
	return c, c.validate()
}

func (c *Contract) validate() error {
	if !modelIDRE.MatchString(c.ModelID) {
		return fmt.Errorf("model_id %q: want 1-128 characters from A-Z a-z 0-9 . _ - (it appears in risk events and metrics)", c.ModelID)
	}
	if len(c.Features) == 0 {
		return fmt.Errorf("no features: list the model's features in model order")
	}
	known := make(map[string]bool, len(featurestore.Names))
	for _, n := range featurestore.Names {
		known[n] = true
	}
	seen := map[string]bool{}
	for i, f := range c.Features {
		switch {
		case seen[f.Name]:
			return fmt.Errorf("features[%d]: %q listed twice", i, f.Name)
		case strings.HasPrefix(f.Name, ExtraPrefix):
			if len(f.Name) == len(ExtraPrefix) {
				return fmt.Errorf("features[%d]: %q names no booking extra key", i, f.Name)
			}
		case !known[f.Name]:
			return fmt.Errorf("features[%d]: unknown feature %q: use one of featurestore.Names %v or %s<key> for a booking extra", i, f.Name, featurestore.Names, ExtraPrefix)
		}
		if f.Type != Numeric && f.Type != Categorical {
			return fmt.Errorf("features[%d] %q: type %q, want %q or %q", i, f.Name, f.Type, Numeric, Categorical)
		}
		if f.Categories != nil {
			if f.Type != Categorical || !strings.HasPrefix(f.Name, ExtraPrefix) {
				return fmt.Errorf("features[%d] %q: categories are for categorical booking extras (%s<key>, type %q) only", i, f.Name, ExtraPrefix, Categorical)
			}
			if _, err := NewCodeList(f.Categories); err != nil {
				return fmt.Errorf("features[%d] %q: %w", i, f.Name, err)
			}
		}
		seen[f.Name] = true
	}
	if c.ModelSHA256 != "" && !sha256RE.MatchString(c.ModelSHA256) {
		return fmt.Errorf("model_sha256 %q: want 64 lower-case hex digits (sha256sum model.txt)", c.ModelSHA256)
	}
	if c.Calibration != nil {
		if err := c.Calibration.validate(); err != nil {
			return err
		}
	}
	return validateBands(c.RiskBands)
}

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func validateBands(bands []Band) error {
	if len(bands) == 0 {
		return fmt.Errorf("risk_bands is empty: give at least one band starting at min_probability 0")
	}
	if bands[0].MinProbability != 0 {
		return fmt.Errorf("risk_bands[0] %q starts at %v: the first band must start at 0 so every probability has a band", bands[0].Name, bands[0].MinProbability)
	}
	names := map[string]bool{}
	for i, b := range bands {
		if b.Name == "" {
			return fmt.Errorf("risk_bands[%d] has no name", i)
		}
		if names[b.Name] {
			return fmt.Errorf("risk_bands[%d]: band %q listed twice", i, b.Name)
		}
		names[b.Name] = true
		if math.IsNaN(b.MinProbability) || b.MinProbability < 0 || b.MinProbability > 1 {
			return fmt.Errorf("risk_bands[%d] %q: min_probability %v outside 0..1", i, b.Name, b.MinProbability)
		}
		if i > 0 && b.MinProbability <= bands[i-1].MinProbability {
			return fmt.Errorf("risk_bands[%d] %q: min_probability %v is not above %q's %v: list bands in strictly ascending order", i, b.Name, b.MinProbability, bands[i-1].Name, bands[i-1].MinProbability)
		}
	}
	return nil
}

func (c Contract) clone() Contract {
	c.Features = append([]Feature(nil), c.Features...)
	for i := range c.Features {
		if c.Features[i].Categories != nil {
			c.Features[i].Categories = append([]string(nil), c.Features[i].Categories...)
		}
	}
	c.RiskBands = append([]Band(nil), c.RiskBands...)
	c.Calibration = c.Calibration.clone()
	if c.TrainingWindow != nil {
		w := *c.TrainingWindow
		c.TrainingWindow = &w
	}
	return c
}

// Names returns the contract's feature names in model order.
func (c Contract) Names() []string {
	out := make([]string, len(c.Features))
	for i, f := range c.Features {
		out[i] = f.Name
	}
	return out
}

// featureNames lists the feature names in input order.
func (c *Contract) featureNames() []string {
	out := make([]string, len(c.Features))
	for i, f := range c.Features {
		out[i] = f.Name
	}
	return out
}
