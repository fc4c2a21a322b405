package scoring

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/dmitryikh/leaves"
	"github.com/dmitryikh/leaves/transformation"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
)

// Files in a model directory.
const (
	ModelFile    = "model.txt"
	ContractFile = "contract.json"
)

// Size limits: a model far larger than these is a mistake, and reading it would hurt the
// process that is serving the current model.
const (
	maxModelBytes    = 256 << 20
	maxContractBytes = 1 << 20
)

// ErrInvalidModel wraps every reason Load refuses a model directory.
var ErrInvalidModel = errors.New("invalid model")

// Model is a loaded, validated model. It is immutable and safe for concurrent use.
type Model struct {
	contract Contract
	ens      *leaves.Ensemble
	inputs   []input
	cal      *Calibration // nil: serve the trees' probability
	digest   string       // see Digest
	names    []string     // contract feature names, in input order
	byName   []int        // input indices in name order (AppendFeatures)
}

// input says where one contract feature comes from.
type input struct {
	store       int    // index into featurestore.Vector, or -1 for a booking extra
	extra       string // booking extra key when store < 0
	categorical bool
	codes       *CodeList // a text category's code list, nil if the contract has none
}

// newInputs maps a validated contract's features to their sources.
func newInputs(c Contract) []input {
	index := make(map[string]int, len(featurestore.Names))
	for i, n := range featurestore.Names {
		index[n] = i
	}
	out := make([]input, len(c.Features))
	for i, f := range c.Features {
		in := input{store: -1, categorical: f.Type == Categorical}
		if key, ok := strings.CutPrefix(f.Name, ExtraPrefix); ok {
			in.extra = key
		} else {
			in.store = index[f.Name]
		}
		if f.Categories != nil {
			in.codes, _ = NewCodeList(f.Categories) // validate checked it
		}
		out[i] = in
	}
	return out
}

// Load reads and validates the model directory dir (model.txt and contract.json). Any
// mismatch between the two, or anything the scorer cannot reproduce exactly, is an error
// wrapping ErrInvalidModel that says what to fix.
func Load(dir string) (*Model, error) {
	m, err := load(dir)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w: %w", dir, ErrInvalidModel, err)
	}
	return m, nil
}

func load(dir string) (*Model, error) {
	cb, err := readLimited(filepath.Join(dir, ContractFile), maxContractBytes)
	if err != nil {
		return nil, err
	}
	c, err := parseContract(cb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ContractFile, err)
	}
	mb, err := readLimited(filepath.Join(dir, ModelFile), maxModelBytes)
	if err != nil {
		return nil, err
	}
	return build(cb, c, mb)
}

// parse validates a contract and a model text given as bytes: load without the files (the
// fuzz target uses it).
func parse(cb, mb []byte) (*Model, error) {
	c, err := parseContract(cb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ContractFile, err)
	}
	return build(cb, c, mb)
}

// build checks the model text mb against the contract c (parsed from cb) and loads it.
func build(cb []byte, c Contract, mb []byte) (*Model, error) {
	modelSum := sha256.Sum256(mb)
	if c.ModelSHA256 != "" && c.ModelSHA256 != hex.EncodeToString(modelSum[:]) {
		return nil, fmt.Errorf("%s has SHA-256 %s but %s says model_sha256 %s: the two files come from different models (a copy still in progress?); copy both files of one model directory",
			ModelFile, hex.EncodeToString(modelSum[:])[:16]+"…", ContractFile, c.ModelSHA256[:16]+"…")
	}
	t, err := parseLGBText(mb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ModelFile, err)
	}
	if err := checkAgainstContract(t, &c); err != nil {
		return nil, err
	}
	ens, err := leavesLoad(t.leavesText)
	if err != nil {
		return nil, fmt.Errorf("%s: leaves: %w", ModelFile, err)
	}
	if n := ens.NFeatures(); n != len(c.Features) {
		return nil, fmt.Errorf("%s has %d features, %s lists %d: leaves would score short vectors as 0", ModelFile, n, ContractFile, len(c.Features))
	}
	if ens.NOutputGroups() != 1 || ens.Transformation().Type() != transformation.Logistic {
		return nil, fmt.Errorf("%s: leaves reads it as %s with %d outputs, want a logistic (binary) model with 1", ModelFile, ens.Transformation().Name(), ens.NOutputGroups())
	}
	m := &Model{contract: c.clone(), ens: ens, inputs: newInputs(c), digest: digest(cb, mb)}
	m.cal = m.contract.Calibration
	m.names = c.featureNames()
	m.byName = nameOrder(m.names)
	// A model that cannot score "nothing known" is broken in a way the checks above missed.
	x := make([]float64, len(m.inputs))
	for i := range x {
		x[i] = math.NaN()
	}
	if p := m.Score(m.normalise(x)); !(p > 0 && p < 1) {
		return nil, fmt.Errorf("%s scores an all-missing row as %v, want a probability in (0, 1)", ModelFile, p)
	}
	return m, nil
}

// digest identifies a model directory's serving content: contract.json and model.txt.
func digest(contract, model []byte) string {
	c, m := sha256.Sum256(contract), sha256.Sum256(model)
	return sumHex(append(c[:], m[:]...))
}

func sumHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d MiB", path, limit>>20)
	}
	return b, nil
}

// leavesLoad runs the leaves loader, turning a panic on input it did not expect into an
// error: a model swap must never take down the process serving the current model.
func leavesLoad(text []byte) (ens *leaves.Ensemble, err error) {
	defer func() {
		if r := recover(); r != nil {
			ens, err = nil, fmt.Errorf("loader panicked: %v", r)
		}
	}()
	return leaves.LGEnsembleFromReader(bufio.NewReader(bytes.NewReader(text)), true)
}

func checkAgainstContract(t *lgbText, c *Contract) error {
	if t.numClass != 1 || t.perIteration != 1 || !strings.HasPrefix(t.objective, "binary ") {
		return fmt.Errorf("%s objective %q with num_class=%d: the scorer serves binary classification only (objective=binary)", ModelFile, t.objective, t.numClass)
	}
	if t.objective != "binary sigmoid:1" {
		return fmt.Errorf("%s objective %q: leaves applies the logistic with sigmoid 1 only; retrain with the default sigmoid=1", ModelFile, t.objective)
	}
	if t.averageOutput {
		return fmt.Errorf("%s is a random forest (average_output): train with boosting=gbdt", ModelFile)
	}
	if p := t.pandasCategorical; p != "" && p != "null" && p != "[]" {
		return fmt.Errorf("%s was trained on pandas category columns (pandas_categorical=%s): the Go scorer cannot reproduce pandas' category codes; pass categorical features as integer codes and name them in categorical_feature", ModelFile, firstN(p, 80))
	}
	if len(t.featureNames) != len(c.Features) {
		return fmt.Errorf("%s has %d features (max_feature_idx=%d), %s lists %d: leaves would score short vectors as 0", ModelFile, len(t.featureNames), t.maxFeatureIdx, ContractFile, len(c.Features))
	}
	if names := c.Names(); !slices.Equal(t.featureNames, names) {
		return fmt.Errorf("%s feature_names=%s differs from %s features %s: the contract must list the model's features in model order", ModelFile, strings.Join(t.featureNames, " "), ContractFile, strings.Join(names, " "))
	}
	paramCat := map[int]bool{}
	for _, s := range strings.Split(t.categoricalParam, ",") {
		if i, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
			paramCat[i] = true
		}
	}
	for i, f := range c.Features {
		cat := f.Type == Categorical
		if modelCat, known := categoricalInfo(t.featureInfos[i]); known && modelCat != cat {
			return fmt.Errorf("feature %q is %s in %s but the model's feature_infos %q says %s", f.Name, f.Type, ContractFile, firstN(t.featureInfos[i], 60), kindName(modelCat))
		}
		if paramCat[i] && !cat {
			return fmt.Errorf("feature %q is numeric in %s but the model was trained with it in categorical_feature", f.Name, ContractFile)
		}
		if cat && t.numSplit[i] || !cat && t.catSplit[i] {
			return fmt.Errorf("feature %q is %s in %s but the model's trees split on it as %s", f.Name, f.Type, ContractFile, kindName(!cat))
		}
		if f.Categories != nil {
			if top, ok := maxCategory(t.featureInfos[i]); ok && top >= len(f.Categories) {
				return fmt.Errorf("feature %q: the model was trained on category code %d but %s lists %d categories (codes 0..%d): the contract is not the one written with this model", f.Name, top, ContractFile, len(f.Categories), len(f.Categories)-1)
			}
		}
	}
	return nil
}

// maxCategory returns the largest category code in a categorical feature_infos entry
// ("0:3:1"); ok is false for anything else.
func maxCategory(info string) (top int, ok bool) {
	if cat, known := categoricalInfo(info); !cat || !known {
		return 0, false
	}
	top = -1
	for _, s := range strings.Split(info, ":") {
		v, err := strconv.Atoi(s)
		if err != nil {
			return 0, false
		}
		top = max(top, v)
	}
	return top, top >= 0
}

func kindName(categorical bool) string {
	if categorical {
		return string(Categorical)
	}
	return string(Numeric)
}

// ID returns the model's identifier from its contract.
func (m *Model) ID() string { return m.contract.ModelID }

// Digest identifies what was loaded: a SHA-256 over the bytes of contract.json and model.txt.
// Two models with the same Digest score and band identically.
func (m *Model) Digest() string { return m.digest }

// Calibrated reports whether the model applies a calibration map after the trees.
func (m *Model) Calibrated() bool { return m.cal != nil }

// Contract returns a copy of the model's contract.
func (m *Model) Contract() Contract { return m.contract.clone() }

// NumFeatures is the length of the model's input vector.
func (m *Model) NumFeatures() int { return len(m.inputs) }

// Vector builds the model input for booking ev from its computed features v, in contract
// order, appending to dst[:0] (no allocation when dst has the capacity). Booking extras the
// event does not carry are missing (NaN); a text category (TextCode) is mapped to its code
// by the feature's Categories, and is missing when not listed or when the feature has no
// list. Missing categorical values are encoded as -1, see normalise.
func (m *Model) Vector(ev *events.Appointment, v featurestore.Vector, dst []float64) []float64 {
	dst = dst[:0]
	for _, in := range m.inputs {
		var x float64
		switch {
		case in.store >= 0:
			x = v[in.store]
		default:
			x = ExtraInput(ev, in.extra, in.codes)
		}
		if in.categorical {
			x = category(x)
		}
		dst = append(dst, x)
	}
	return dst
}

// ExtraValue is booking.extra[key] of ev as carried (a number, or a TextCode), or NaN
// (missing) when the event does not carry it. ExtraInput turns it into a model input.
func ExtraValue(ev *events.Appointment, key string) float64 {
	if ev != nil && ev.Booking != nil {
		if x, ok := ev.Booking.Extra[key]; ok {
			return x
		}
	}
	return math.NaN()
}

// ExtraInput is booking extra key of ev as a model input: with a code list (a text
// category), the code of its text, or NaN when the text is not listed; without one, the
// number, or NaN when the event carries a text (a TextCode) or nothing. cmd/trainset writes
// the training set's extras with it, so training and serving read them the same way.
func ExtraInput(ev *events.Appointment, key string, codes *CodeList) float64 {
	x := ExtraValue(ev, key)
	if codes != nil {
		return codes.Code(x)
	}
	if IsTextCode(x) {
		return math.NaN()
	}
	return x
}

// normalise applies Vector's categorical encoding to a row built elsewhere (the parity test).
func (m *Model) normalise(x []float64) []float64 {
	for i, in := range m.inputs {
		if in.categorical {
			x[i] = category(x[i])
		}
	}
	return x
}

// category maps a missing or unrepresentable category to -1. LightGBM (4.x, tree.h
// CategoricalDecision) sends NaN and negative categories down the right branch. leaves sends
// negatives right too, but turns NaN into int32(NaN), which Go leaves to the platform: a
// negative number on amd64, 0 (a real category) on arm64. -1 means "missing" on every
// platform, and values past int32 (undefined in both) become missing as well.
func category(x float64) float64 {
	if math.IsNaN(x) || x < 0 || x >= math.MaxInt32 {
		return -1
	}
	return x
}

// Score returns the probability of did-not-attend for input x (as built by Vector). It
// panics if len(x) is not NumFeatures: leaves would silently return 0.
func (m *Model) Score(x []float64) float64 {
	if len(x) != len(m.inputs) {
		panic(fmt.Sprintf("scoring: model %s got %d features, want %d", m.contract.ModelID, len(x), len(m.inputs)))
	}
	if hasTiny(x) {
		x = zeroTiny(slices.Clone(x))
	}
	p := m.ens.PredictSingle(x, 0)
	if m.cal != nil {
		p = m.cal.apply(p)
	}
	return p
}

// ScoreBatch scores len(out) rows laid out one after another in xs (row-major, NumFeatures
// values each) into out, on the calling goroutine. It panics if len(xs) is not
// len(out)*NumFeatures.
func (m *Model) ScoreBatch(xs, out []float64) {
	n := len(m.inputs)
	if len(xs) != len(out)*n {
		panic(fmt.Sprintf("scoring: model %s got %d values for %d rows of %d features", m.contract.ModelID, len(xs), len(out), n))
	}
	if len(out) == 0 {
		return
	}
	if hasTiny(xs) {
		xs = zeroTiny(slices.Clone(xs))
	}
	if err := m.ens.PredictDense(xs, len(out), n, out, 0, 1); err != nil {
		panic(fmt.Sprintf("scoring: model %s: %v", m.contract.ModelID, err))
	}
	if m.cal != nil {
		for i, p := range out {
			out[i] = m.cal.apply(p)
		}
	}
}

// kZeroThreshold is LightGBM's zero: the float 1e-35f widened to a double (meta.h), so
// 1.0000000180025095e-35. LightGBM's predict passes a dense row to the trees as (index,
// value) pairs, leaving out every value with |v| <= kZeroThreshold (c_api.cpp,
// RowPairFunctionFromDenseMatric), so the trees see such a value as exactly 0. leaves
// compares the raw value, and its own zero test uses the double 1e-35: a value between the
// two, or a tiny value beside a split at ±kZeroThreshold (LightGBM's bin bound around zero),
// would go the other way. Scoring zeroes them first, as LightGBM does; NaN stays NaN.
const kZeroThreshold = float64(float32(1e-35))

func hasTiny(x []float64) bool {
	for _, v := range x {
		if v != 0 && math.Abs(v) <= kZeroThreshold {
			return true
		}
	}
	return false
}

func zeroTiny(x []float64) []float64 {
	for i, v := range x {
		if math.Abs(v) <= kZeroThreshold {
			x[i] = 0
		}
	}
	return x
}

// Band returns the name of the highest risk band whose min_probability is at most p.
func (m *Model) Band(p float64) string {
	b := m.contract.RiskBands
	for i := len(b) - 1; i > 0; i-- {
		if p >= b[i].MinProbability {
			return b[i].Name
		}
	}
	return b[0].Name
}

// FeatureNames returns the contract's feature names in input order; callers must not
// modify the slice.
func (m *Model) FeatureNames() []string { return m.names }

// CountMissing adds one to counts[i] for each input i of x that is missing (NaN, or -1 for a
// categorical: what FeatureMap leaves out). counts has one entry per feature.
func (m *Model) CountMissing(x []float64, counts []int) {
	for i, in := range m.inputs {
		if i < len(x) && i < len(counts) && (math.IsNaN(x[i]) || in.categorical && x[i] < 0) {
			counts[i]++
		}
	}
}

// nameOrder is the indices of names in the order encoding/json writes map keys (bytewise).
func nameOrder(names []string) []int {
	idx := make([]int, len(names))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return strings.Compare(names[a], names[b]) })
	return idx
}

// AppendFeatures appends what FeatureMap holds to names and values as two slices in name
// order, the order a JSON object of them is written in (events.Risk.FeatureNames), without
// a map: the scorer builds one per risk event.
func (m *Model) AppendFeatures(x []float64, names []string, values []float64) ([]string, []float64) {
	order := m.byName
	if order == nil {
		order = nameOrder(m.names)
	}
	for _, i := range order {
		if i >= len(x) || math.IsNaN(x[i]) || m.inputs[i].categorical && x[i] < 0 {
			continue
		}
		names = append(names, m.contract.Features[i].Name)
		values = append(values, x[i])
	}
	return names, values
}

// FeatureMap returns the model inputs of x by contract name, for the risk event's record of
// the features used. Missing features (NaN, or -1 for a categorical) are omitted, because
// JSON cannot carry NaN: a name absent from the map means "not known at booking time".
func (m *Model) FeatureMap(x []float64) map[string]float64 {
	out := make(map[string]float64, len(x))
	for i, in := range m.inputs {
		if i >= len(x) || math.IsNaN(x[i]) || in.categorical && x[i] < 0 {
			continue
		}
		out[m.contract.Features[i].Name] = x[i]
	}
	return out
}
