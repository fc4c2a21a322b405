package scoring

import (
	"fmt"
	"slices"
	"strings"
)

// LiveFeed says which booking extras the live events carry, so a model that needs an extra
// nobody fills is refused at load instead of scoring every booking with it missing (a model
// trained with CSV extras and served without them lost 0.03 AUC, silently).
type LiveFeed struct {
	// Filled are the extras the live feed fills: the gateway's mapping file extras and the
	// ones the gateway fills itself (pas.ReservedExtras).
	Filled map[string]bool
	// Allowed are the extras the operator accepts unmapped (another producer fills them, or
	// they may be missing); "*" accepts any.
	Allowed map[string]bool
	// Source names where Filled came from, for the error ("--mapping gateway.json").
	Source string
}

// Check returns an error naming each booking extra m needs that f neither fills nor allows,
// and what to do about it; nil when there is none.
func (f LiveFeed) Check(m *Model) error {
	var unmapped []string
	for _, name := range m.FeatureNames() {
		key, ok := strings.CutPrefix(name, ExtraPrefix)
		if ok && !f.Filled[key] && !f.Allowed[key] && !f.Allowed["*"] {
			unmapped = append(unmapped, key)
		}
	}
	if len(unmapped) == 0 {
		return nil
	}
	slices.Sort(unmapped)
	src := f.Source
	if src == "" {
		src = "no mapping file"
	}
	return fmt.Errorf("model %s needs booking extra %s, which the live feed does not fill (%s): every live booking would score with it missing. Add it to the mapping file's extras (the gateway's and the scorer's --mapping), or accept that with --allow-unmapped-extras %s",
		m.ID(), quoteList(unmapped), src, strings.Join(unmapped, ","))
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}
