package scoring

import (
	"math"
	"strings"
	"testing"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/featurestore"
)

func TestTextCode(t *testing.T) {
	if CategoryText("  North \t Leeds ") != "north leeds" {
		t.Fatalf("CategoryText = %q", CategoryText("  North \t Leeds "))
	}
	if TextCode("F") != TextCode(" f ") || TextCode("F") == TextCode("M") {
		t.Fatal("TextCode does not follow CategoryText")
	}
	seen := map[float64]string{}
	for _, s := range []string{"f", "m", "u", "leeds", "bradford", "", "1", strings.Repeat("x", 300)} {
		c := TextCode(s)
		if !IsTextCode(c) || c != math.Trunc(c) || float64(int64(c)) != c {
			t.Errorf("TextCode(%q) = %v is not an exact text code", s, c)
		}
		if other, dup := seen[c]; dup {
			t.Errorf("TextCode(%q) = TextCode(%q)", s, other)
		}
		seen[c] = s
	}
	for _, x := range []float64{0, -1, 1 << 52, -(1 << 52) + 1, -(1<<52 + 1<<48), -(1<<51 + 0.5), math.NaN(), math.Inf(-1), -1e300} {
		if IsTextCode(x) {
			t.Errorf("IsTextCode(%v) = true", x)
		}
	}
}

func TestCodeList(t *testing.T) {
	c, err := NewCodeList([]string{"F", "M", "7"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in   float64
		want float64
	}{{TextCode("f"), 0}, {TextCode(" M"), 1}, {7, 2}, {TextCode("7"), 2}, {TextCode("u"), math.NaN()}, {0, math.NaN()}, {math.NaN(), math.NaN()}} {
		if got := c.Code(tc.in); !same(got, tc.want) {
			t.Errorf("Code(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, bad := range [][]string{nil, {}, {"a", "A"}, {"1", "1.0"}, {"a", " "}, {strings.Repeat("x", 257)}} {
		if _, err := NewCodeList(bad); err == nil {
			t.Errorf("NewCodeList(%q) accepted", bad)
		}
	}
}

// A text category travels as a TextCode in booking.extra and reaches the trees as the code
// its contract lists; unlisted text, and text on a feature without a list, is missing.
func TestVectorTextCategories(t *testing.T) {
	m := testModel(
		Feature{Name: "extra.sex", Type: Categorical, Categories: []string{"f", "m"}},
		Feature{Name: "extra.area", Type: Categorical},
		Feature{Name: "extra.distance_km", Type: Numeric},
		Feature{Name: "extra.band", Type: Categorical, Categories: []string{"2", "low", "high"}},
	)
	ev := booking(events.Extra{"sex": TextCode("M"), "area": TextCode("Leeds"), "distance_km": TextCode("far"), "band": 2})
	x := m.Vector(ev, featurestore.Compute(ev, nil), nil)
	want := []float64{1, -1, math.NaN(), 0}
	for i := range want {
		if !same(x[i], want[i]) {
			t.Fatalf("Vector = %v, want %v", x, want)
		}
	}
	ev.Booking.Extra = events.Extra{"sex": TextCode("x"), "area": 3, "distance_km": 2.5, "band": TextCode("HIGH")}
	x = m.Vector(ev, featurestore.Compute(ev, nil), x)
	want = []float64{-1, 3, 2.5, 2}
	for i := range want {
		if !same(x[i], want[i]) {
			t.Fatalf("Vector = %v, want %v", x, want)
		}
	}
	ev.Booking.Extra = nil
	dst := make([]float64, 0, m.NumFeatures())
	if n := testing.AllocsPerRun(100, func() { dst = m.Vector(ev, featurestore.Vector{}, dst) }); n != 0 {
		t.Fatalf("Vector allocates %v times per call", n)
	}
}

func TestContractCategories(t *testing.T) {
	base := func(f Feature) Contract {
		return Contract{ModelID: "m", Features: []Feature{f}, RiskBands: []Band{{"low", 0}}}
	}
	ok := base(Feature{Name: "extra.sex", Type: Categorical, Categories: []string{"f", "m"}})
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]Feature{
		"numeric":        {Name: "extra.sex", Type: Numeric, Categories: []string{"f"}},
		"not an extra":   {Name: "specialty", Type: Categorical, Categories: []string{"110"}},
		"duplicate":      {Name: "extra.sex", Type: Categorical, Categories: []string{"F", "f "}},
		"empty list":     {Name: "extra.sex", Type: Categorical, Categories: []string{}},
		"blank category": {Name: "extra.sex", Type: Categorical, Categories: []string{"f", ""}},
	} {
		c := base(f)
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), "features[0]") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if top, ok := maxCategory("0:4:2"); !ok || top != 4 {
		t.Errorf("maxCategory = %d %v", top, ok)
	}
	for _, info := range []string{"[0:4]", "none", "a:b"} {
		if _, ok := maxCategory(info); ok {
			t.Errorf("maxCategory(%q) ok", info)
		}
	}
}
