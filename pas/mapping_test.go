package pas

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nhsx/dnarisk/events"
)

func TestLoadMappingExample(t *testing.T) {
	m, err := LoadMapping("../cmd/pasgateway/mapping.example.json")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m.Specialty(" ortho "); !ok || v != "110" {
		t.Errorf("specialty %q %v", v, ok)
	}
	if v, ok := m.CancelCode("pt"); !ok || v != events.ByPatient {
		t.Errorf("code %q %v", v, ok)
	}
	for text, want := range map[string]events.CancelledBy{
		"Patient requested cancellation":         events.ByPatient,
		"CLINIC CANCELLED - consultant on leave": events.ByHospital,
		"Clinic cancelled by patient":            events.ByPatient, // the longer phrase wins
		"Patient informed":                       "",
		"outpatient requested":                   "", // whole words only
	} {
		got, ok := m.CancelText(text)
		if want == "" && ok || want != "" && (!ok || got != want) {
			t.Errorf("%q: %q %v, want %q", text, got, ok, want)
		}
	}
	if len(m.Extras) != 2 || m.Extras[0].Segment != "ZPI" || m.Extras[0].Field != 3 || m.Extras[0].Component != 1 {
		t.Fatalf("extras %+v", m.Extras)
	}
	if v, ok := m.Extras[0].Value("y"); !ok || v != 1 {
		t.Errorf("Y → %v %v", v, ok)
	}
	if _, ok := m.Extras[1].Value("far"); ok {
		t.Error("a non-number was read as a distance")
	}
}

func TestLoadMappingRefusals(t *testing.T) {
	for want, body := range map[string]string{
		"unknown field":                `{"specialty": {}}`,
		"three-digit":                  `{"specialties": {"ORTHO": "11"}}`,
		"want patient or hospital":     `{"cancellation": {"codes": {"X": "nurse"}}}`,
		"filled by the gateway itself": `{"extras": [{"name": "duration_minutes", "hl7": "ZAP-1"}]}`,
		"want SEG-F":                   `{"extras": [{"name": "a", "hl7": "zap2"}]}`,
		"give hl7":                     `{"extras": [{"name": "a"}]}`,
		"appears twice":                `{"extras": [{"name": "a", "hl7": "ZAP-1"}, {"name": "a", "hl7": "ZAP-2"}]}`,
		"lower-case letters":           `{"extras": [{"name": "Bad Name", "hl7": "ZAP-1"}]}`,
	} {
		p := filepath.Join(t.TempDir(), "m.json")
		_ = os.WriteFile(p, []byte(body), 0o600)
		if _, err := LoadMapping(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
}
