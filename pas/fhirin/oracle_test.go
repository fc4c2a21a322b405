package fhirin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/pas"
)

// TestFHIRValidatesInFHIRResources: the example resources (testdata/examples, in the style a
// PAS's FHIR facade sends), every response the endpoint gives them and some bad input
// (OperationOutcomes, the transaction-response Bundle) and the CapabilityStatement validate in
// PyPI's fhir.resources; and the examples are accepted here.
func TestFHIRValidatesInFHIRResources(t *testing.T) {
	py := testenv.OraclePython(t)
	examples, err := filepath.Glob("testdata/examples/*.json")
	if err != nil || len(examples) < 4 {
		t.Fatalf("examples: %v %v", examples, err)
	}
	g := pas.NewGateway(&pas.MemoryTracker{}, &kept{}, nil)
	srv := httptest.NewServer(NewHandler("/fhir", newMapper(t, Config{Facility: "RXX01", Now: time.Now}), g, nil))
	defer srv.Close()
	dir := t.TempDir()
	files := append([]string(nil), examples...)
	save := func(name string, body []byte) {
		p := filepath.Join(dir, name+".json")
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	send := func(method, path, ctype string, body []byte) (int, []byte) {
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, ex := range examples {
		body, _ := os.ReadFile(ex)
		path := "/fhir/Appointment"
		if strings.Contains(ex, "bundle") {
			path = "/fhir"
		}
		status, resp := send("POST", path, "application/fhir+json", body)
		if status != 200 && status != 201 {
			t.Fatalf("%s refused: %d %s", ex, status, resp)
		}
		save("response-"+strings.TrimSuffix(filepath.Base(ex), ".json"), resp)
	}
	bad := map[string]struct {
		method, path, ctype string
		body                []byte
	}{
		"unknown-status": {"POST", "/fhir/Appointment", "", edit(t, booked, map[string]any{"status": "done"})},
		"bad-start":      {"POST", "/fhir/Appointment", "", edit(t, booked, map[string]any{"start": "2025-04-02"})},
		"xml":            {"POST", "/fhir/Appointment", "application/fhir+xml", []byte("<Appointment/>")},
		"get":            {"GET", "/fhir/Appointment/1", "", nil},
		"batch":          {"POST", "/fhir", "", bundleOf(t, "batch", "O1")},
	}
	for name, c := range bad {
		_, resp := send(c.method, c.path, c.ctype, c.body)
		save("response-"+name, resp)
	}
	status, cs := send("GET", "/fhir/metadata", "", nil)
	if status != 200 {
		t.Fatalf("metadata: %d", status)
	}
	save("capability-statement", cs)
	var kinds []string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		var r struct{ ResourceType string }
		_ = json.Unmarshal(b, &r)
		kinds = append(kinds, r.ResourceType)
	}
	for _, want := range []string{"Appointment", "Bundle", "OperationOutcome", "CapabilityStatement"} {
		if !strings.Contains(strings.Join(kinds, " "), want) {
			t.Fatalf("no %s among the files checked: %v", want, kinds)
		}
	}
	res, err := exec.Command(py, append([]string{"../testdata/oracles/fhir_validate.py"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("fhir.resources refused: %v\n%s", err, res)
	}
	if want := fmt.Sprintf("%d passed, 0 failed", len(files)); !strings.Contains(string(res), want) {
		t.Fatalf("fhir.resources: want %q:\n%s", want, res)
	}
	t.Logf("fhir.resources validated %d resources: %v", len(files), kinds)
}
