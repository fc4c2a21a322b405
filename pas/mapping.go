package pas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/nhsx/dnarisk/events"
)

// Mapping is what a trust sets without code (a JSON file, --mapping): its local specialty
// codes, how it says who cancelled, and where its feeds carry the model's extra features. The
// zero Mapping (no file) maps nothing beyond the built-in rules.
type Mapping struct {
	// Specialties maps local specialty or clinic codes (AIS-3, PV1-10, SCH-7; FHIR specialty
	// and serviceType codes) to NHS treatment function codes (three digits). Codes are matched
	// ignoring case and surrounding space.
	Specialties map[string]string `json:"specialties"`
	// Cancellation says who cancelled from the trust's reason codes (SCH-6.1, FHIR
	// cancelationReason codes) and from phrases in the reason's text or a note (SCH-6.2, NTE on
	// an S15, cancelationReason.text): "patient" or "hospital". Codes win over the built-in
	// codes; phrases are matched as whole words, ignoring case, the longest first.
	Cancellation struct {
		Codes   map[string]events.CancelledBy `json:"codes"`
		Phrases map[string]events.CancelledBy `json:"phrases"`
	} `json:"cancellation"`
	// Extras are the model's extra features the feeds carry: each becomes booking.extra[name].
	Extras []Extra `json:"extras"`

	phrases [][]string // Cancellation.Phrases keys as words, longest first
}

// Extra says where a feed carries one extra feature.
type Extra struct {
	// Name is the key in booking.extra, as in the model's contract and a training CSV.
	Name string `json:"name"`
	// HL7 is the field, "SEG-F" or "SEG-F.C" (component C; default 1), e.g. "ZAP-2" or
	// "PV2-22". The first segment of that name is read; empty or "" means missing.
	HL7 string `json:"hl7,omitempty"`
	// FHIRExtension is the url of an Appointment extension carrying it (valueDecimal,
	// valueInteger, valueBoolean, valueCode, valueString, or valueCoding.code).
	FHIRExtension string `json:"fhir_extension,omitempty"`
	// Values maps codes to numbers ("Y": 1, "N": 0); without it the value must be a number.
	// A value neither maps nor parses: the feature is missing (and logged as such by name).
	Values map[string]float64 `json:"values,omitempty"`

	Segment   string `json:"-"`
	Field     int    `json:"-"`
	Component int    `json:"-"`
}

var (
	extraNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	hl7LocRE    = regexp.MustCompile(`^([A-Z][A-Z0-9]{2})-([1-9][0-9]{0,2})(?:\.([1-9][0-9]?))?$`)
	tfcRE       = regexp.MustCompile(`^[0-9]{3}$`)
)

// ReservedExtras are the extra names the gateway fills itself.
var ReservedExtras = map[string]bool{"duration_minutes": true}

// LoadMapping reads and checks a mapping file. Unknown keys, a specialty that is not a
// three-digit code, a side other than patient or hospital, or a malformed extra are refused
// with a message naming the entry.
func LoadMapping(path string) (*Mapping, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mapping file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Mapping
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("mapping file %s: %w", path, err)
	}
	if err := m.Prepare(); err != nil {
		return nil, fmt.Errorf("mapping file %s: %w", path, err)
	}
	return &m, nil
}

// Prepare checks m and readies it for use; LoadMapping calls it.
func (m *Mapping) Prepare() error {
	spec := map[string]string{}
	for k, v := range m.Specialties {
		if !tfcRE.MatchString(v) {
			return fmt.Errorf("specialties[%q] = %q: want a three-digit NHS treatment function code", k, v)
		}
		spec[norm(k)] = v
	}
	m.Specialties = spec
	for where, set := range map[string]map[string]events.CancelledBy{"codes": m.Cancellation.Codes, "phrases": m.Cancellation.Phrases} {
		for k, v := range set {
			if v != events.ByPatient && v != events.ByHospital {
				return fmt.Errorf("cancellation.%s[%q] = %q: want patient or hospital", where, k, v)
			}
			if strings.TrimSpace(k) == "" {
				return fmt.Errorf("cancellation.%s has an empty key", where)
			}
		}
	}
	codes := map[string]events.CancelledBy{}
	for k, v := range m.Cancellation.Codes {
		codes[norm(k)] = v
	}
	m.Cancellation.Codes = codes
	m.phrases = nil
	phrases := map[string]events.CancelledBy{}
	for k, v := range m.Cancellation.Phrases {
		w := Words(k)
		if len(w) == 0 {
			return fmt.Errorf("cancellation.phrases[%q] has no words", k)
		}
		phrases[strings.Join(w, " ")] = v
		m.phrases = append(m.phrases, w)
	}
	m.Cancellation.Phrases = phrases
	// Longest first, so "clinic cancelled at patient request" beats "clinic cancelled".
	for i := 1; i < len(m.phrases); i++ {
		for j := i; j > 0 && len(m.phrases[j]) > len(m.phrases[j-1]); j-- {
			m.phrases[j], m.phrases[j-1] = m.phrases[j-1], m.phrases[j]
		}
	}
	seen := map[string]bool{}
	for i := range m.Extras {
		e := &m.Extras[i]
		switch {
		case !extraNameRE.MatchString(e.Name):
			return fmt.Errorf("extras[%d].name %q: want lower-case letters, digits and _, starting with a letter", i, e.Name)
		case ReservedExtras[e.Name]:
			return fmt.Errorf("extras[%d].name %q is filled by the gateway itself", i, e.Name)
		case seen[e.Name]:
			return fmt.Errorf("extras[%d].name %q appears twice", i, e.Name)
		case e.HL7 == "" && e.FHIRExtension == "":
			return fmt.Errorf("extras[%d] (%s): give hl7 (a field such as ZAP-2) or fhir_extension (a url), or both", i, e.Name)
		}
		seen[e.Name] = true
		if e.HL7 != "" {
			p := hl7LocRE.FindStringSubmatch(e.HL7)
			if p == nil {
				return fmt.Errorf("extras[%d].hl7 %q: want SEG-F or SEG-F.C, e.g. ZAP-2 or PV2-22.1", i, e.HL7)
			}
			e.Segment = p[1]
			e.Field, _ = strconv.Atoi(p[2])
			e.Component = 1
			if p[3] != "" {
				e.Component, _ = strconv.Atoi(p[3])
			}
		}
		for k, v := range e.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("extras[%d].values[%q] is not a finite number", i, k)
			}
		}
	}
	if len(m.Extras)+len(ReservedExtras) > 64 {
		return errors.New("more than 63 extras: the event contract allows 64 booking extras")
	}
	return nil
}

func norm(s string) string { return strings.ToUpper(strings.TrimSpace(s)) }

// Specialty returns the treatment function code of a local code, if the mapping has one.
func (m *Mapping) Specialty(code string) (string, bool) {
	if m == nil || code == "" {
		return "", false
	}
	v, ok := m.Specialties[norm(code)]
	return v, ok
}

// CancelCode returns who cancelled according to a trust's reason code, if the mapping says.
func (m *Mapping) CancelCode(code string) (events.CancelledBy, bool) {
	if m == nil || code == "" {
		return "", false
	}
	v, ok := m.Cancellation.Codes[norm(code)]
	return v, ok
}

// CancelText returns who cancelled according to the first (longest) configured phrase found
// in text as whole words, if any. The text is only searched, never kept or logged.
func (m *Mapping) CancelText(text string) (events.CancelledBy, bool) {
	if m == nil || len(m.phrases) == 0 || text == "" {
		return "", false
	}
	words := Words(text)
	for _, p := range m.phrases {
		for i := 0; i+len(p) <= len(words); i++ {
			match := true
			for j := range p {
				match = match && words[i+j] == p[j]
			}
			if match {
				return m.Cancellation.Phrases[strings.Join(p, " ")], true
			}
		}
	}
	return "", false
}

// Value reads an extra's raw value: through Values when given, else as a number.
func (e *Extra) Value(raw string) (float64, bool) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return 0, false
	}
	if e.Values != nil {
		for k, v := range e.Values {
			if strings.EqualFold(k, raw) {
				return v, true
			}
		}
		return 0, false
	}
	v, err := strconv.ParseFloat(raw, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}
