package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

func compile(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	s, err := c.Compile(filepath.Join("..", "schemas", name))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validate(t *testing.T, s *jsonschema.Schema, b []byte) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return s.Validate(v)
}

func readExample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "schemas", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The documented examples satisfy both the JSON Schema and the Go decoder, and what Go
// writes satisfies the schema: the two descriptions of the contract agree.
func TestExamplesMatchSchemasAndDecoder(t *testing.T) {
	appt := compile(t, "appointment.v1.schema.json")
	for _, name := range []string{"appointment.booked.json", "appointment.cancelled.json", "appointment.did_not_attend.json"} {
		b := readExample(t, name)
		if err := validate(t, appt, b); err != nil {
			t.Errorf("%s: schema: %v", name, err)
		}
		ev, err := DecodeAppointment(b)
		if err != nil {
			t.Errorf("%s: decode: %v", name, err)
		}
		out, _ := json.Marshal(ev)
		if err := validate(t, appt, out); err != nil {
			t.Errorf("%s re-encoded by Go: schema: %v", name, err)
		}
	}
	risk := compile(t, "risk.v1.schema.json")
	b := readExample(t, "risk.json")
	if err := validate(t, risk, b); err != nil {
		t.Errorf("risk example: %v", err)
	}
	var r Risk
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Errorf("risk example into Go: %v", err)
	}
	out, _ := json.Marshal(r)
	if err := validate(t, risk, out); err != nil {
		t.Errorf("risk re-encoded by Go: %v", err)
	}
	dl := compile(t, "deadletter.v1.schema.json")
	b = readExample(t, "deadletter.json")
	if err := validate(t, dl, b); err != nil {
		t.Errorf("dead-letter example: %v", err)
	}
	var d DeadLetter
	if err := json.Unmarshal(b, &d); err != nil || !strings.Contains(string(d.Value), "appointment.v9") {
		t.Errorf("dead-letter example into Go: %v (value %q)", err, d.Value)
	}
	if d.ReasonCode != ReasonUnknownSchema {
		t.Errorf("dead-letter example reason_code %q", d.ReasonCode)
	}
	for _, code := range DeadLetterReasons {
		out, _ = json.Marshal(DeadLetter{Schema: DeadLetterSchema, ReasonCode: code, Reason: "x", Value: []byte{0xff}, FailedAt: time.Now()})
		if err := validate(t, dl, out); err != nil {
			t.Errorf("dead letter written by Go with reason_code %s: %v", code, err)
		}
	}
	out, _ = json.Marshal(DeadLetter{Schema: DeadLetterSchema, ReasonCode: "bad_vibes", Reason: "x", FailedAt: time.Now()})
	if err := validate(t, dl, out); err == nil {
		t.Error("the schema accepts a reason_code outside its list")
	}
}

// The schema lists exactly the reason codes Go defines, in the same order.
func TestDeadLetterReasonsMatchSchema(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "schemas", "deadletter.v1.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties struct {
			ReasonCode struct {
				Enum []string `json:"enum"`
			} `json:"reason_code"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Properties.ReasonCode.Enum, DeadLetterReasons) {
		t.Fatalf("schema reason codes %v, Go's %v", s.Properties.ReasonCode.Enum, DeadLetterReasons)
	}
}

func TestDecodeRefusals(t *testing.T) {
	good := string(readExample(t, "appointment.booked.json"))
	cases := []struct {
		name, from, to string
		want           string
	}{
		{"unknown schema version", `"appointment.v1"`, `"appointment.v2"`, "schema"},
		{"unknown field", `"type": "booked",`, `"type": "booked", "nhs_number": "9434765919",`, "unknown field"},
		{"unknown type", `"type": "booked"`, `"type": "arrived"`, "unknown type"},
		{"raw identifier as patient", `"patient": "f230`, `"patient": "9434765919f230`, "pseudonym"},
		{"wrong type", `"booking_version": 1`, `"booking_version": "1"`, "json: field booking_version: want a number, got string"},
		{"wrong nested type", `"first_visit": true`, `"first_visit": "yes"`, "json: field booking.first_visit: want a boolean, got string"},
		{"not an object", `"booking": {`, `"booking": [], "x": {`, "json: field booking: want an object, got array"},
		{"syntax", `"type": "booked",`, `"type": "booked",,`, "json: invalid character"},
		{"booked as version 2", `"booking_version": 1`, `"booking_version": 2`, "booking_version"},
		{"absurd date", `"event_time": "2026-11-02T10:14:03Z"`, `"event_time": "0001-01-01T00:00:00Z"`, "event_time"},
		{"start before booking", `"start": "2026-11-24T09:40:00Z"`, `"start": "2025-11-24T09:40:00Z"`, "before booked_at"},
		{"bad age band", `"age_band": "25-34"`, `"age_band": "adult"`, "age_band"},
		{"deprivation out of range", `"deprivation_decile": 3`, `"deprivation_decile": 11`, "deprivation"},
		{"missing booking", `"booking": {`, `"ignored": {`, "unknown field"},
		{"trailing data", "\n}\n", "\n}\n{}", "trailing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := strings.Replace(good, c.from, c.to, 1)
			if in == good {
				t.Fatalf("test case did not change the input")
			}
			_, err := DecodeAppointment([]byte(in))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, c.want)
			}
			if strings.Count(err.Error(), "json:") > 1 {
				t.Fatalf("err = %q says json: twice", err)
			}
		})
	}
	if _, err := DecodeAppointment(append([]byte(good[:len(good)-3]), 0xff, '}')); !errors.Is(err, ErrInvalid) {
		t.Errorf("invalid UTF-8: %v", err)
	}
	if _, err := DecodeAppointment(bytes.Repeat([]byte(" "), MaxEventBytes+1)); !errors.Is(err, ErrInvalid) {
		t.Errorf("oversized: %v", err)
	}
}

func FuzzDecodeAppointment(f *testing.F) {
	for _, name := range []string{"appointment.booked.json", "appointment.cancelled.json", "appointment.did_not_attend.json"} {
		b, err := os.ReadFile(filepath.Join("..", "schemas", "examples", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"schema":"appointment.v1","booking":{"extra":{"x":1e999}}}`))
	for _, in := range edgeInputs {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// Differential: the fast decoder never changes what encoding/json accepts, refuses
		// (and why) or decodes (fastdecode.go).
		checkSameAsReference(t, b)
		ev, err := DecodeAppointment(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		// Anything accepted survives a round trip unchanged.
		out, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeAppointment(out)
		if err != nil {
			t.Fatalf("re-encoded accepted event refused: %v", err)
		}
		out2, _ := json.Marshal(again)
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the event:\n%s\n%s", out, out2)
		}
	})
}
