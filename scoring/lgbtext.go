package scoring

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// lgbText is what the scorer checks in a LightGBM text model before leaves reads it.
// LightGBM's writer (src/boosting/gbdt_model_text.cpp, SaveModelToString) lays the file out as:
//
//	tree
//	version=v4
//	key=value header lines (num_class, max_feature_idx, objective, feature_names,
//	feature_infos, tree_sizes, ...)
//	<blank line>
//	one block per tree, "Tree=<i>" first, exactly tree_sizes[i] bytes each
//	end of trees
//	feature_importances:, parameters: ... end of parameters, [parser: ... end of parser]
//	pandas_categorical:<json>   (appended by the Python package)
type lgbText struct {
	version       string
	numClass      int
	perIteration  int
	maxFeatureIdx int
	objective     string
	averageOutput bool
	featureNames  []string
	featureInfos  []string
	trees         int
	// catSplit and numSplit record, per feature, whether any tree splits on it as a
	// category or as a number.
	catSplit, numSplit []bool
	// pandasCategorical is the JSON after "pandas_categorical:", "" if the line is absent.
	pandasCategorical string
	// categoricalParam is the value of "[categorical_feature: ...]" in the parameters.
	categoricalParam string
	// leavesText is the text handed to leaves: the input, with version=v4 rewritten to v3.
	leavesText []byte
}

// parseLGBText validates a LightGBM text model and returns what Load checks against the
// contract. Every error says what is wrong with the file in terms a person can act on.
func parseLGBText(b []byte) (*lgbText, error) {
	m := &lgbText{}
	head, rest, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return nil, fmt.Errorf("no blank line after the header: truncated, or not a LightGBM text model")
	}
	lines := strings.Split(string(head), "\n")
	if lines[0] != "tree" {
		return nil, fmt.Errorf("first line is %q, want \"tree\": not a LightGBM text model (save it with Booster.save_model, not pickle, JSON or binary)", firstN(lines[0], 40))
	}
	hdr := map[string]string{}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, "=")
		hdr[k] = v
	}
	m.version = hdr["version"]
	switch m.version {
	case "v2", "v3", "v4":
	default:
		return nil, fmt.Errorf("model format version %q: only v2, v3 and v4 (LightGBM 2.x to 4.x) are supported", m.version)
	}
	var err error
	if m.numClass, err = headerInt(hdr, "num_class"); err != nil {
		return nil, err
	}
	if m.perIteration, err = headerInt(hdr, "num_tree_per_iteration"); err != nil {
		return nil, err
	}
	if m.maxFeatureIdx, err = headerInt(hdr, "max_feature_idx"); err != nil {
		return nil, err
	}
	if m.maxFeatureIdx < 0 {
		return nil, fmt.Errorf("max_feature_idx %d is negative", m.maxFeatureIdx)
	}
	m.objective = hdr["objective"]
	_, m.averageOutput = hdr["average_output"]
	m.featureNames = strings.Fields(hdr["feature_names"])
	m.featureInfos = strings.Fields(hdr["feature_infos"])
	nf := m.maxFeatureIdx + 1
	if len(m.featureNames) != nf {
		return nil, fmt.Errorf("feature_names has %d names but max_feature_idx says %d features", len(m.featureNames), nf)
	}
	if len(m.featureInfos) != nf {
		return nil, fmt.Errorf("feature_infos has %d entries but max_feature_idx says %d features", len(m.featureInfos), nf)
	}
	sizesField, ok := hdr["tree_sizes"]
	if !ok {
		return nil, fmt.Errorf("no tree_sizes line in the header: written by LightGBM older than 2.x, or edited by hand; re-save it with LightGBM 4")
	}
	sizes := strings.Fields(sizesField)
	if len(sizes) == 0 {
		return nil, fmt.Errorf("tree_sizes is empty: the model has no trees")
	}
	m.catSplit = make([]bool, nf)
	m.numSplit = make([]bool, nf)
	off := 0
	for i, s := range sizes {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("tree_sizes[%d] = %q is not a positive byte count", i, s)
		}
		if off+n > len(rest) {
			return nil, fmt.Errorf("truncated: tree %d of %d should end at byte %d of the tree section, which has only %d bytes; copy the file again", i, len(sizes), off+n, len(rest))
		}
		if err := m.checkTree(i, rest[off:off+n]); err != nil {
			return nil, fmt.Errorf("tree %d: %w", i, err)
		}
		off += n
	}
	m.trees = len(sizes)
	tail := rest[off:]
	if !bytes.HasPrefix(tail, []byte("end of trees\n")) {
		return nil, fmt.Errorf("no \"end of trees\" line after the %d trees listed in tree_sizes: truncated or edited by hand", len(sizes))
	}
	// LightGBM writes the feature importances and the training parameters after the trees,
	// the parameters ending with a line of their own. A file cut off in there still has
	// every tree, but the checks below read the parameters: refuse it as the partial copy
	// it is.
	if (bytes.Contains(tail, []byte("\nfeature_importances:")) || bytes.Contains(tail, []byte("\nparameters:"))) &&
		!bytes.Contains(tail, []byte("\nend of parameters\n")) {
		return nil, fmt.Errorf("truncated: the parameters after the trees have no \"end of parameters\" line; copy the file again")
	}
	for _, l := range strings.Split(string(tail), "\n") {
		if v, ok := strings.CutPrefix(l, "pandas_categorical:"); ok {
			m.pandasCategorical = v
		}
		if v, ok := strings.CutPrefix(l, "[categorical_feature: "); ok {
			m.categoricalParam = strings.TrimSuffix(v, "]")
		}
	}

	m.leavesText = b
	if m.version == "v4" {
		// leaves accepts v2 and v3 only. The v4 writer differs from v3 only in this line and
		// an optional "parser:" section after the parameters, which leaves never reads; the
		// header fields and tree blocks it reads are written by the same code (checked
		// against LightGBM 3.3.5 and 4.6.0, and proven by the parity test).
		m.leavesText = bytes.Replace(b, []byte("\nversion=v4\n"), []byte("\nversion=v3\n"), 1)
	}
	return m, nil
}

// checkTree validates one tree block so that leaves, which indexes its arrays without
// bounds checks of its own, cannot panic or silently mispredict on it.
func (m *lgbText) checkTree(i int, block []byte) error {
	want := "Tree=" + strconv.Itoa(i) + "\n"
	if !bytes.HasPrefix(block, []byte(want)) {
		return fmt.Errorf("block does not start with %q: tree_sizes do not match the file (truncated or edited by hand)", strings.TrimSpace(want))
	}
	if !bytes.HasSuffix(block, []byte("\n\n")) {
		return fmt.Errorf("block does not end with a blank line: tree_sizes do not match the file (truncated or edited by hand)")
	}
	kv := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(block[len(want):])), "\n") {
		if l == "" {
			return fmt.Errorf("blank line inside the tree block")
		}
		k, v, _ := strings.Cut(l, "=")
		kv[k] = v
	}
	leaves, err := headerInt(kv, "num_leaves")
	if err != nil {
		return err
	}
	numCat, err := headerInt(kv, "num_cat")
	if err != nil {
		return err
	}
	if leaves < 1 || numCat < 0 {
		return fmt.Errorf("num_leaves %d, num_cat %d out of range", leaves, numCat)
	}
	if v := kv["is_linear"]; v != "" && v != "0" {
		return fmt.Errorf("linear tree (linear_tree=true): leaves ignores the leaf coefficients and would mispredict; retrain with linear_tree=false")
	}
	if _, err := floats(kv, "leaf_value", leaves, false); err != nil {
		return err
	}
	if leaves == 1 {
		return nil
	}
	nodes := leaves - 1
	feat, err := ints(kv, "split_feature", nodes)
	if err != nil {
		return err
	}
	// LightGBM writes threshold=inf (or -inf) for a split that separates missing values from
	// every present one: the upper bound of a feature's last bin is +inf (bin.cpp), so
	// "x <= inf" sends all present values one way and missing ones (NaN, or zero with
	// missing_type Zero) the default way. Go's strconv and leaves read "inf" and "-inf";
	// the comparison is the same as LightGBM's (proven by TestParityInfiniteThresholds).
	thr, err := floats(kv, "threshold", nodes, true)
	if err != nil {
		return err
	}
	dt, err := ints(kv, "decision_type", nodes)
	if err != nil {
		return err
	}
	left, err := ints(kv, "left_child", nodes)
	if err != nil {
		return err
	}
	right, err := ints(kv, "right_child", nodes)
	if err != nil {
		return err
	}
	var bounds []int64
	var catWords int
	if numCat > 0 {
		if bounds, err = ints(kv, "cat_boundaries", numCat+1); err != nil {
			return err
		}
		words, err := ints(kv, "cat_threshold", -1)
		if err != nil {
			return err
		}
		catWords = len(words)
		for j := range words {
			if words[j] < 0 || words[j] > 1<<32-1 {
				return fmt.Errorf("cat_threshold[%d] = %d is not a 32-bit word", j, words[j])
			}
		}
		if bounds[0] != 0 || bounds[numCat] != int64(catWords) {
			return fmt.Errorf("cat_boundaries %v do not span cat_threshold (%d words)", bounds, catWords)
		}
		for j := 1; j <= numCat; j++ {
			if bounds[j] <= bounds[j-1] {
				return fmt.Errorf("cat_boundaries %v are not strictly increasing", bounds)
			}
		}
	}
	for n := range nodes {
		f := feat[n]
		if f < 0 || f > int64(m.maxFeatureIdx) {
			return fmt.Errorf("node %d splits on feature %d, but the model has %d features", n, f, m.maxFeatureIdx+1)
		}
		if (dt[n]>>2)&3 == 3 || dt[n] < 0 || dt[n] > 15 {
			return fmt.Errorf("node %d: decision_type %d unknown", n, dt[n])
		}
		if dt[n]&1 == 1 {
			c := int64(thr[n])
			if float64(c) != thr[n] || c < 0 || c >= int64(numCat) {
				return fmt.Errorf("node %d: categorical split names category set %v, tree has %d", n, thr[n], numCat)
			}
			m.catSplit[f] = true
		} else {
			m.numSplit[f] = true
		}
		for _, c := range []int64{left[n], right[n]} {
			if (c >= 0 && c >= int64(nodes)) || (c < 0 && ^c >= int64(leaves)) {
				return fmt.Errorf("node %d: child %d out of range for %d leaves", n, c, leaves)
			}
		}
	}
	return nil
}

func headerInt(kv map[string]string, key string) (int, error) {
	v, ok := kv[key]
	if !ok {
		return 0, fmt.Errorf("no %s line", key)
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not an integer", key, firstN(v, 40))
	}
	return n, nil
}

// ints parses a space-separated list of integers that must have n entries (n < 0: any).
func ints(kv map[string]string, key string, n int) ([]int64, error) {
	f := strings.Fields(kv[key])
	if n >= 0 && len(f) != n {
		return nil, fmt.Errorf("%s has %d values, want %d", key, len(f), n)
	}
	out := make([]int64, len(f))
	for i, s := range f {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s[%d] = %q is not an integer", key, i, firstN(s, 40))
		}
		out[i] = v
	}
	return out, nil
}

// floats parses a space-separated list of n numbers. NaN is always refused; infinities only
// when allowInf (thresholds), never in leaf values.
func floats(kv map[string]string, key string, n int, allowInf bool) ([]float64, error) {
	f := strings.Fields(kv[key])
	if len(f) != n {
		return nil, fmt.Errorf("%s has %d values, want %d", key, len(f), n)
	}
	out := make([]float64, n)
	for i, s := range f {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%s[%d] = %q is not a number", key, i, firstN(s, 40))
		}
		// LightGBM writes finite leaf values only; a NaN or infinite leaf would be served as
		// a NaN probability (inf - inf), which no risk event can carry. A NaN threshold
		// sends every value right in LightGBM and left in nothing: no writer produces it.
		if math.IsNaN(v) || !allowInf && math.IsInf(v, 0) {
			what := "a finite number"
			if allowInf {
				what = "a number or ±inf"
			}
			return nil, fmt.Errorf("%s[%d] = %q is not %s", key, i, firstN(s, 40), what)
		}
		out[i] = v
	}
	return out, nil
}

// categoricalInfo reports whether a feature_infos entry describes a categorical feature.
// LightGBM writes "[min:max]" for a numeric feature, the category values joined by ":" for
// a categorical one, and "none" for a feature it never used (then nothing can be told).
func categoricalInfo(info string) (categorical, known bool) {
	switch {
	case info == "none":
		return false, false
	case strings.HasPrefix(info, "["):
		return false, true
	default:
		return true, true
	}
}

func firstN(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
