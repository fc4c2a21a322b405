package events

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// referenceDecode is DecodeAppointment as it was before decodeFast: size, UTF-8, then
// encoding/json, strict. decodeFast must never change what it returns.
func referenceDecode(b []byte) (Appointment, error) {
	var a Appointment
	if len(b) > MaxEventBytes {
		return a, invalid("event is %d bytes, limit %d", len(b), MaxEventBytes)
	}
	if !utf8.Valid(b) {
		return a, invalid("event is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return a, invalid("%s", jsonError(err))
	}
	if dec.More() {
		return a, invalid("trailing data after the event")
	}
	return a, a.Validate()
}

// checkSameAsReference fails unless DecodeAppointment and referenceDecode agree on b: both
// accept or both refuse, with the same error text, and the same value either way.
func checkSameAsReference(t *testing.T, b []byte) {
	t.Helper()
	got, gerr := DecodeAppointment(b)
	want, werr := referenceDecode(b)
	switch {
	case (gerr == nil) != (werr == nil):
		t.Fatalf("accept/refuse differ on %q:\n got err %v\nwant err %v", b, gerr, werr)
	case gerr != nil && gerr.Error() != werr.Error():
		t.Fatalf("errors differ on %q:\n got %v\nwant %v", b, gerr, werr)
	case !reflect.DeepEqual(got, want):
		t.Fatalf("values differ on %q:\n got %+v\nwant %+v", b, got, want)
	}
	// Where the fast path takes an input, encoding/json must decode it alike, with only
	// the contract (Validate) left to refuse it.
	var fast Appointment
	if utf8.Valid(b) && decodeFast(b, &fast) {
		std, serr := decodeStd(b)
		ferr := fast.Validate()
		if (serr == nil) != (ferr == nil) || serr != nil && serr.Error() != ferr.Error() || !reflect.DeepEqual(fast, std) {
			t.Fatalf("fast path took %q differently:\n got %+v, %v\nwant %+v, %v", b, fast, ferr, std, serr)
		}
	}
}

// Inputs at the edges of what the fast path takes: each must decode exactly as
// encoding/json does (most by falling back to it).
var edgeInputs = []string{
	`{}`, `null`, ``, ` `, `[]`, `{"schema":null}`, `{"Schema":"appointment.v1"}`,
	`{"schema":"appointment.v1","schema":"appointment.v1"}`,
	`{"schema":"appointment.v1"}}`, `{"schema":"appointment.v1"}]`, `{"schema":"appointment.v1"} {}`,
	`{"schema":"appointment.v1",}`, `{"schema":"appointment\u002ev1"}`, `{"schema":"appointment.v1\n"}`,
	`{"booking_version":1.0}`, `{"booking_version":1e0}`, `{"booking_version":-0}`, `{"booking_version":01}`,
	`{"booking_version":99999999999999999999}`, `{"booking_version":"1"}`, `{"booking_version":true}`,
	`{"booking":null}`, `{"booking":{}}`, `{"booking":{"extra":{}}}`, `{"booking":{"extra":null}}`,
	`{"booking":{"extra":{"a":1,"a":2}}}`, `{"booking":{"extra":{"a":1e400}}}`, `{"booking":{"extra":{"a":-1.5E-3}}}`,
	`{"booking":{"extra":{"A":1,"a":2}}}`, `{"booking":{"extra":{"a":.5}}}`, `{"booking":{"extra":{"a":+1}}}`,
	`{"booking":{"contact":{"sms":true,"SMS":false}}}`, `{"booking":{"contact":{"sms":1}}}`,
	`{"booking":{"deprivation_decile":null}}`, `{"booking":{"deprivation_decile":3.0}}`,
	`{"booking":{"first_visit":tru}}`, `{"booking":{"first_visit":nul}}`,
	`{"booking":{"start":"2026-11-24T09:40:00Z","start":"2026-11-24T09:40:00Z"}}`,
	`{"event_time":"2026-11-02T10:14:03+01:00"}`, `{"event_time":"2026-11-02 10:14:03Z"}`,
	`{"event_time":"2026-11-02T10:14:03.123456789Z"}`, `{"event_time":null}`, `{"event_time":1}`,
	"{\t\"type\" :\r\n \"booked\" }", `{"type":"BOOKED"}`, `{"unknown":1}`, `{"booking":{"unknown":1}}`,
	"\ufeff{}", `{"schema":"appointment.v1"`, `{"schema"`, `{"schema":`, `{"schema" "x"}`,
}

func TestDecodeMatchesEncodingJSONOnEdges(t *testing.T) {
	for _, in := range edgeInputs {
		checkSameAsReference(t, []byte(in))
	}
}

// The fast path takes the events the simulator and the examples produce (otherwise it
// would be no faster).
func TestFastPathTakesCommonEvents(t *testing.T) {
	b := []byte(`{"schema":"appointment.v1","event_id":"e1","type":"booked","event_time":"2026-11-02T10:14:03Z",` +
		`"appointment_id":"A1","booking_version":1,"patient":"f23090a36451bfa74057a971b116cdad5a9d5c7377e58349eaf336b19a372a5d",` +
		`"booking":{"specialty":"130","clinic":"OPH","first_visit":true,"start":"2026-11-24T09:40:00Z","booked_at":"2026-11-02T10:14:03Z",` +
		`"age_band":"25-34","deprivation_decile":3,"contact":{"sms":true,"opt_out":false},"extra":{"distance_km":12.5}}}`)
	var a Appointment
	if !decodeFast(b, &a) {
		t.Fatal("fast path refused a plain booking")
	}
	if a.Booking == nil || *a.Booking.Deprivation != 3 || a.Booking.Extra["distance_km"] != 12.5 || !a.Booking.Contact.SMS {
		t.Fatalf("decoded %+v", a)
	}
	checkSameAsReference(t, b)
}

// IsPseudonym is exactly ^[0-9a-f]{64}$.
func TestIsPseudonymIsTheRegexp(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{64}$`)
	hex64 := strings.Repeat("0123456789abcdef", 4)
	cases := []string{"", hex64, hex64[:63], hex64 + "0", strings.ToUpper(hex64), hex64[:63] + "g", hex64[:63] + "\n",
		"\n" + hex64[:63], hex64[:32] + " " + hex64[33:], hex64[:63] + "é"[:1]}
	for i := range 256 {
		cases = append(cases, hex64[:10]+string(rune(i))+hex64[11:])
	}
	for _, c := range cases {
		if got, want := IsPseudonym(c), re.MatchString(c); got != want {
			t.Errorf("IsPseudonym(%q) = %v, regexp says %v", c, got, want)
		}
	}
}

// BenchmarkDecodeAppointment compares DecodeAppointment (the fast path, as the scorer runs it)
// with its definition, decodeStd (encoding/json), on the schema's examples: the issue's
// "faster than encoding/json", with allocations per event (make bench, out/bench-stages.txt).
func BenchmarkDecodeAppointment(b *testing.B) {
	var inputs [][]byte
	for _, name := range []string{"appointment.booked.json", "appointment.cancelled.json", "appointment.did_not_attend.json"} {
		in, err := os.ReadFile(filepath.Join("..", "schemas", "examples", name))
		if err != nil {
			b.Fatal(err)
		}
		inputs = append(inputs, in)
	}
	for _, c := range []struct {
		name   string
		decode func([]byte) (Appointment, error)
	}{{"fast", DecodeAppointment}, {"encoding-json", decodeStd}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := c.decode(inputs[i%len(inputs)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
