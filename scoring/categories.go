package scoring

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Text categories in booking extras.
//
// booking.extra carries numbers only (appointment.v1), but a trust's extract has text
// categories: sex "F"/"M", area names. csvimport puts a text cell into booking.extra as its
// TextCode, a number fixed by the text alone (the same in every file, for every model). A
// model trained on the column lists the texts it knows in its contract (Feature.Categories,
// learned by cmd/trainset); the scorer maps a TextCode, or a plain number, to the position
// of its text in that list, which is the category code the trees were trained on. Text the
// list does not hold is missing, as is any TextCode fed to a feature without a list.

// Text codes are the negative whole numbers -(2^52 + h) for a 48-bit hash h: exact in a
// float64, and never a category code (LightGBM reads negative categories as missing).
const (
	textCodeBase = 1 << 52
	textCodeBits = 48
)

// MaxCategories is the most texts a contract may list for one feature.
const MaxCategories = 100_000

// maxCategoryLen bounds one listed text, in bytes.
const maxCategoryLen = 256

// CategoryText is the form a category text is compared in: surrounding space trimmed, inner
// runs of white space as one space, lower case. " north  Leeds" and "North Leeds" are one
// category.
func CategoryText(s string) string {
	return strings.ToLower(strings.Join(strings.Fields(s), " "))
}

// TextCode is the booking.extra value of the text s: -(2^52 + the first 48 bits of the
// SHA-256 of CategoryText(s)).
func TextCode(s string) float64 {
	sum := sha256.Sum256([]byte(CategoryText(s)))
	h := binary.BigEndian.Uint64(sum[:8]) >> (64 - textCodeBits)
	return -float64(textCodeBase + h)
}

// IsTextCode reports whether x is a TextCode value.
func IsTextCode(x float64) bool {
	return x <= -textCodeBase && x > -(textCodeBase+1<<textCodeBits) && x == math.Trunc(x)
}

// CodeList maps booking extra values to the category codes of one feature: the i-th listed
// text has code i. A text is matched by its TextCode; a listed text that is a number
// ("3") also matches that number, which is how csvimport carries a numeric cell.
type CodeList struct {
	texts []string
	codes map[float64]float64
}

// NewCodeList checks a feature's category list and returns its mapping. Texts must be
// non-empty, at most 256 bytes, and distinct as CategoryText.
func NewCodeList(texts []string) (*CodeList, error) {
	if len(texts) == 0 || len(texts) > MaxCategories {
		return nil, fmt.Errorf("%d categories, want 1..%d", len(texts), MaxCategories)
	}
	c := &CodeList{texts: append([]string(nil), texts...), codes: make(map[float64]float64, len(texts))}
	for i, t := range texts {
		if len(t) > maxCategoryLen || CategoryText(t) == "" {
			return nil, fmt.Errorf("categories[%d] is empty or longer than %d bytes", i, maxCategoryLen)
		}
		keys := []float64{TextCode(t)}
		if v, err := strconv.ParseFloat(strings.TrimSpace(t), 64); err == nil && !math.IsNaN(v) && !math.IsInf(v, 0) {
			keys = append(keys, v)
		}
		for _, key := range keys {
			if j, dup := c.codes[key]; dup {
				return nil, fmt.Errorf("categories[%d] %q is categories[%d] %q again (texts are compared trimmed and in lower case, numbers by value)", i, firstN(t, 40), int(j), firstN(texts[int(j)], 40))
			}
			c.codes[key] = float64(i)
		}
	}
	return c, nil
}

// Code returns the category code of booking extra value x, or NaN (missing) when x is
// missing or its text is not listed.
func (c *CodeList) Code(x float64) float64 {
	if code, ok := c.codes[x]; ok {
		return code
	}
	return math.NaN()
}

// Len is the number of listed texts.
func (c *CodeList) Len() int { return len(c.texts) }
