package fhirin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/pas"
)

// A booked appointment as a UK FHIR R4 facade over a PAS might send it: the PAS id as an
// identifier, the Patient contained with NHS number, birth date and a mobile, a Location
// participant for the clinic, the treatment function code as specialty.
const booked = `{
  "resourceType": "Appointment",
  "id": "apt-100234",
  "meta": {"versionId": "1", "lastUpdated": "2025-03-10T09:15:00Z"},
  "contained": [{
    "resourceType": "Patient", "id": "p1",
    "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}],
    "birthDate": "1980-06-15",
    "telecom": [{"system": "phone", "value": "0113 496 0000", "use": "home"},
                {"system": "phone", "value": "07700 900123", "use": "mobile"}]
  }],
  "identifier": [{"system": "https://trust.example.nhs.uk/Id/pas-appointment", "value": "APT100234"}],
  "status": "booked",
  "serviceType": [{"text": "Orthopaedic new patient clinic"}],
  "specialty": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/Specialty-1", "code": "110", "display": "Trauma and Orthopaedics"}]}],
  "appointmentType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0276", "code": "ROUTINE"}], "text": "New patient"},
  "start": "2025-04-02T09:30:00+01:00",
  "end": "2025-04-02T10:00:00+01:00",
  "created": "2025-03-10",
  "participant": [
    {"actor": {"reference": "#p1"}, "status": "accepted"},
    {"actor": {"reference": "Location/ORTHO1", "display": "Fracture clinic"}, "status": "accepted"},
    {"actor": {"reference": "Practitioner/C1234"}, "status": "accepted"}
  ]
}`

var secret = []byte("fhir-test-secret-0123456789abcdef-0123")

func newMapper(t testing.TB, cfg Config) *Mapper {
	t.Helper()
	ps, err := pseudo.New(secret)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pseudonymiser = ps
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return time.Date(2025, 3, 11, 12, 0, 0, 0, time.UTC) }
	}
	m, err := NewMapper(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// edit returns booked with JSON edits applied: key paths set to values (nil deletes).
func edit(t testing.TB, base string, set map[string]any) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal([]byte(base), &doc); err != nil {
		t.Fatal(err)
	}
	for path, v := range set {
		parts := strings.Split(path, ".")
		cur := doc
		for _, p := range parts[:len(parts)-1] {
			cur = cur[p].(map[string]any)
		}
		if v == nil {
			delete(cur, parts[len(parts)-1])
		} else {
			cur[parts[len(parts)-1]] = v
		}
	}
	b, _ := json.Marshal(doc)
	return b
}

// bookingOf is the booking a change makes for an appointment the gateway does not know.
func bookingOf(t *testing.T, c *pas.Change) *events.Booking {
	t.Helper()
	b, _, err := c.Facts(nil)
	if err != nil {
		t.Fatalf("booking: %v", err)
	}
	return b
}

func TestMapBooked(t *testing.T) {
	m := newMapper(t, Config{})
	c, _, err := m.Map([]byte(booked), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := pseudo.New(secret)
	at := time.Date(2025, 3, 10, 9, 15, 0, 0, time.UTC)
	if c.Kind != pas.Book || c.AppointmentID != "APT100234" || c.EventID != "fhir:Appointment/apt-100234/_history/1" ||
		!c.EventTime.Equal(at) || c.Patient != ps.Pseudonym("9434765919") {
		t.Fatalf("change %+v", c)
	}
	b := bookingOf(t, c)
	if !b.Start.Equal(time.Date(2025, 4, 2, 8, 30, 0, 0, time.UTC)) || !b.BookedAt.Equal(at) || b.Specialty != "110" ||
		b.Clinic != "ORTHO1" || !b.FirstVisit || b.AgeBand != "35-44" || b.Contact != (events.Contact{SMS: true}) ||
		b.Extra[ExtraDuration] != 30 {
		t.Fatalf("booking %+v", b)
	}
}

func TestMapStatuses(t *testing.T) {
	m := newMapper(t, Config{})
	for _, c := range []struct {
		status string
		reason any
		kind   pas.Kind
		by     events.CancelledBy
	}{
		{"cancelled", map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason", "code": "pat-crs"}}}, pas.Cancel, events.ByPatient},
		{"cancelled", map[string]any{"coding": []any{map[string]any{"code": "prov-hosp"}}}, pas.Cancel, events.ByHospital},
		{"cancelled", map[string]any{"text": "Patient rang to cancel"}, pas.Cancel, events.ByPatient},
		{"cancelled", nil, pas.Cancel, events.ByHospital},
		{"entered-in-error", nil, pas.Cancel, events.ByHospital},
		{"noshow", nil, pas.DidNotAttend, ""},
		{"fulfilled", nil, pas.Attend, ""},
	} {
		t.Run(c.status, func(t *testing.T) {
			set := map[string]any{"status": c.status}
			if c.reason != nil {
				set["cancelationReason"] = c.reason
			}
			ch, _, err := m.Map(edit(t, booked, set), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if ch.Kind != c.kind || ch.CancelledBy != c.by || ch.Build != nil || ch.Patient == "" {
				t.Fatalf("change %+v", ch)
			}
		})
	}
	for _, s := range []string{"proposed", "pending", "arrived", "checked-in", "waitlist"} {
		ch, why, err := m.Map(edit(t, booked, map[string]any{"status": s}), "", nil)
		if err != nil || ch != nil || !strings.Contains(why, s) {
			t.Errorf("%s: %+v %q %v", s, ch, why, err)
		}
	}
}

func TestMapRefuses(t *testing.T) {
	m := newMapper(t, Config{})
	noPatientID := map[string]any{"contained": []any{map[string]any{"resourceType": "Patient", "id": "p1", "birthDate": "1980-06-15"}}}
	for _, c := range []struct {
		name string
		body []byte
		code fhir.IssueType
		expr string
	}{
		{"not JSON object", []byte(`[1]`), fhir.IssueTypeStructure, "Appointment"},
		{"wrong resource", []byte(`{"resourceType":"Patient"}`), fhir.IssueTypeNotSupported, ""},
		{"no status", edit(t, booked, map[string]any{"status": nil}), fhir.IssueTypeRequired, "Appointment.status"},
		{"unknown status", edit(t, booked, map[string]any{"status": "done"}), fhir.IssueTypeStructure, "Appointment.status"},
		{"start is a number", edit(t, booked, map[string]any{"start": 5}), fhir.IssueTypeStructure, "Appointment.start"},
		{"no start", edit(t, booked, map[string]any{"start": nil}), fhir.IssueTypeRequired, "Appointment.start"},
		{"start without zone", edit(t, booked, map[string]any{"start": "2025-04-02T09:30:00"}), fhir.IssueTypeValue, "Appointment.start"},
		{"bad lastUpdated", edit(t, booked, map[string]any{"meta.lastUpdated": "2025-02-30T00:00:00Z"}), fhir.IssueTypeValue, "Appointment.meta.lastUpdated"},
		{"modifier extension", edit(t, booked, map[string]any{"modifierExtension": []any{map[string]any{"url": "http://x", "valueBoolean": true}}}), fhir.IssueTypeExtension, "Appointment.modifierExtension"},
		{"no patient identifier", edit(t, booked, noPatientID), fhir.IssueTypeRequired, "Appointment.participant[0].actor.identifier"},
		{"no participants", edit(t, booked, map[string]any{"participant": []any{}}), fhir.IssueTypeRequired, "Appointment.participant"},
		{"bad NHS number", []byte(strings.Replace(booked, "9434765919", "9434765918", 1)), fhir.IssueTypeValue, "Appointment.participant[0].actor.identifier"},
		{"no birth date", []byte(strings.Replace(booked, `"birthDate": "1980-06-15",`, "", 1)), fhir.IssueTypeRequired, "Patient.birthDate"},
		{"bad birth date", []byte(strings.Replace(booked, `1980-06-15`, "1980-13-15", 1)), fhir.IssueTypeValue, "Patient.birthDate"},
		{"PUT id differs", nil, fhir.IssueTypeInvariant, "Appointment.id"},
		{"group appointment", edit(t, booked, map[string]any{"participant": []any{
			map[string]any{"actor": map[string]any{"reference": "#p1"}, "status": "accepted"},
			map[string]any{"actor": map[string]any{"reference": "Patient/2"}, "status": "accepted"}}}), fhir.IssueTypeNotSupported, "Appointment.participant[1]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			body, urlID := c.body, ""
			if body == nil {
				body, urlID = []byte(booked), "other-id"
			}
			ch, _, err := m.Map(body, urlID, nil)
			if err == nil && ch != nil {
				_, _, err = ch.Facts(nil) // the Patient's facts are checked when built
			}
			var is *Issue
			ok := errors.As(err, &is)
			if !ok {
				t.Fatalf("change %+v, err %v; want an *Issue", ch, err)
			}
			if is.Code != c.code || is.Expression != c.expr {
				t.Fatalf("issue %s at %q (%s); want %s at %q", is.Code.Code(), is.Expression, is.Diagnostics, c.code.Code(), c.expr)
			}
			for _, v := range []string{"9434765919", "943476591", "1980"} {
				if strings.Contains(is.Diagnostics, v) {
					t.Fatalf("diagnostics quote the input: %s", is.Diagnostics)
				}
			}
		})
	}
}

func TestMapPatientFromActorIdentifierAndBundle(t *testing.T) {
	m := newMapper(t, Config{})
	ps, _ := pseudo.New(secret)
	// Cancellation naming the patient only by identifier: no Patient resource needed.
	cancel := edit(t, booked, map[string]any{"status": "cancelled", "contained": nil, "participant": []any{
		map[string]any{"actor": map[string]any{"type": "Patient", "identifier": map[string]any{"system": NHSNumberSystem, "value": "943 476 5919"}}, "status": "accepted"}}})
	ch, _, err := m.Map(cancel, "", nil)
	if err != nil || ch.Patient != ps.Pseudonym("9434765919") {
		t.Fatalf("%+v %v", ch, err)
	}
	// A trust that keys patients by its own hospital number.
	local := newMapper(t, Config{PatientSystem: "https://trust.example.nhs.uk/Id/mrn"})
	body := []byte(strings.Replace(booked, `{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}`,
		`{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}, {"system": "https://trust.example.nhs.uk/Id/mrn", "value": "A123456"}`, 1))
	ch, _, err = local.Map(body, "", nil)
	if err != nil || ch.Patient != ps.Pseudonym("A123456") {
		t.Fatalf("%+v %v", ch, err)
	}
}

// recorder is an Applier double.
type recorder struct {
	mu      sync.Mutex
	changes []pas.Change
	fail    map[string]error // appointment id -> error
}

func (r *recorder) Apply(_ context.Context, c pas.Change) (pas.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.fail[c.AppointmentID]; err != nil {
		return pas.Result{}, err
	}
	r.changes = append(r.changes, c)
	return pas.Result{Event: &events.Appointment{Type: events.Booked, Version: 1, EventID: c.EventID}}, nil
}

// Check answers as a gateway that knows no appointment would.
func (r *recorder) Check(ctx context.Context, c pas.Change) error {
	return pas.NewGateway(&pas.MemoryTracker{}, nil, nil).Check(ctx, c)
}

func serve(t *testing.T, rec *recorder) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(NewHandler("/fhir", newMapper(t, Config{}), rec, nil))
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url, ctype string, body []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("response is not JSON: %v", err)
	}
	if resp.Header.Get("Content-Type") != "application/fhir+json" {
		t.Errorf("content type %q", resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, out
}

func diagnostics(oo map[string]any) string {
	var b strings.Builder
	for _, i := range oo["issue"].([]any) {
		is := i.(map[string]any)
		fmt.Fprintf(&b, "%s/%s %v: %v; ", is["severity"], is["code"], is["expression"], is["diagnostics"])
	}
	return b.String()
}

func TestHTTPSingleResource(t *testing.T) {
	rec := &recorder{}
	srv := serve(t, rec)
	for _, c := range []struct {
		name, method, path, ctype string
		body                      []byte
		status                    int
		want                      string
	}{
		{"POST", "POST", "/fhir/Appointment", "application/fhir+json", []byte(booked), 201, "information/informational <nil>: booked version 1 published"},
		{"PUT", "PUT", "/fhir/Appointment/apt-100234", "application/fhir+json; charset=utf-8", []byte(booked), 201, "booked version 1 published"},
		{"PUT other id", "PUT", "/fhir/Appointment/x", "application/json", []byte(booked), 422, "Appointment.id"},
		{"ignored status", "POST", "/fhir/Appointment", "", edit(t, booked, map[string]any{"status": "arrived"}), 200, "ignored: status arrived"},
		{"XML", "POST", "/fhir/Appointment", "application/fhir+xml", []byte("<Appointment/>"), 415, `Content-Type "application/fhir+xml" is not supported: send FHIR JSON as application/fhir+json`},
		{"text", "POST", "/fhir/Appointment", "text/plain", []byte(booked), 415, `Content-Type "text/plain" is not supported`},
		{"not JSON", "POST", "/fhir/Appointment", "", []byte("{"), 400, "not valid JSON"},
		{"bundle to /Appointment", "POST", "/fhir/Appointment", "", []byte(`{"resourceType":"Bundle","type":"batch"}`), 400, "base URL"},
		{"bad start", "POST", "/fhir/Appointment", "", edit(t, booked, map[string]any{"start": "tomorrow"}), 422, "[Appointment.start]"},
		{"GET", "GET", "/fhir/Appointment/1", "", nil, 404, "not served"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, oo := do(t, c.method, srv.URL+c.path, c.ctype, c.body)
			if oo["resourceType"] != "OperationOutcome" {
				t.Fatalf("response %v", oo)
			}
			if d := diagnostics(oo); status != c.status || !strings.Contains(d, c.want) {
				t.Fatalf("%d %s; want %d with %q", status, d, c.status, c.want)
			}
		})
	}
	if len(rec.changes) != 2 {
		t.Fatalf("%d changes applied", len(rec.changes))
	}
}

func TestHTTPUnavailable(t *testing.T) {
	rec := &recorder{fail: map[string]error{"APT100234": fmt.Errorf("%w: kafka down", pas.ErrUnavailable)}}
	srv := serve(t, rec)
	req, _ := http.NewRequest("POST", srv.URL+"/fhir/Appointment", strings.NewReader(booked))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d retry-after %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// bundleOf builds a Bundle: the Patient once, then one Appointment per id, each referring
// to the Patient by its fullUrl.
func bundleOf(t *testing.T, typ string, apptIDs ...string) []byte {
	t.Helper()
	patient := map[string]any{"resourceType": "Patient", "id": "p9",
		"identifier": []any{map[string]any{"system": NHSNumberSystem, "value": "4010232137"}},
		"birthDate":  "2007-01-01", "telecom": []any{map[string]any{"system": "sms", "value": "07700900123"}}}
	entries := []any{map[string]any{"fullUrl": "urn:uuid:8f9b2c1e-0000-4000-8000-000000000001", "resource": patient,
		"request": map[string]any{"method": "PUT", "url": "Patient/p9"}}}
	for _, id := range apptIDs {
		a := edit(t, booked, map[string]any{"contained": nil, "id": nil, "meta": nil,
			"identifier":  []any{map[string]any{"value": id}},
			"participant": []any{map[string]any{"actor": map[string]any{"reference": "urn:uuid:8f9b2c1e-0000-4000-8000-000000000001"}, "status": "accepted"}}})
		var doc any
		_ = json.Unmarshal(a, &doc)
		entries = append(entries, map[string]any{"resource": doc, "request": map[string]any{"method": "POST", "url": "Appointment"}})
	}
	b, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": typ, "entry": entries})
	return b
}

func TestHTTPTransaction(t *testing.T) {
	rec := &recorder{}
	srv := serve(t, rec)
	status, resp := do(t, "POST", srv.URL+"/fhir", "application/fhir+json", bundleOf(t, "transaction", "A1", "A2"))
	if status != 200 || resp["type"] != "transaction-response" || len(resp["entry"].([]any)) != 3 {
		t.Fatalf("%d %v", status, resp)
	}
	if len(rec.changes) != 2 || rec.changes[0].AppointmentID != "A1" || bookingOf(t, &rec.changes[1]).AgeBand != "18-24" || !bookingOf(t, &rec.changes[1]).Contact.SMS {
		t.Fatalf("changes %+v", rec.changes)
	}
	// One bad entry refuses the whole transaction, naming the entry.
	bad := bytes.Replace(bundleOf(t, "transaction", "B1", "B2"), []byte(`"2025-04-02T09:30:00+01:00"`), []byte(`"2025-04-02"`), 1)
	status, oo := do(t, "POST", srv.URL+"/fhir/", "", bad)
	if status != 422 || !strings.Contains(diagnostics(oo), "Bundle.entry[1].resource.start") {
		t.Fatalf("%d %s", status, diagnostics(oo))
	}
	if len(rec.changes) != 2 {
		t.Fatalf("a refused transaction applied %d changes", len(rec.changes)-2)
	}
	// A contract violation found only by the event validation (start years after booking).
	late := bytes.Replace(bundleOf(t, "transaction", "C1"), []byte(`"2025-04-02T09:30:00+01:00"`), []byte(`"2031-04-02T09:30:00+01:00"`), 1)
	status, oo = do(t, "POST", srv.URL+"/fhir", "", late)
	if status != 422 || !strings.Contains(diagnostics(oo), "three years") {
		t.Fatalf("%d %s", status, diagnostics(oo))
	}
}

func TestHTTPBatch(t *testing.T) {
	rec := &recorder{fail: map[string]error{"D2": fmt.Errorf("%w: kafka down", pas.ErrUnavailable)}}
	srv := serve(t, rec)
	var doc map[string]any
	_ = json.Unmarshal(bundleOf(t, "batch", "D1", "D2", "D3"), &doc)
	doc["entry"].([]any)[3].(map[string]any)["resource"].(map[string]any)["start"] = "bad"
	body, _ := json.Marshal(doc)
	status, resp := do(t, "POST", srv.URL+"/fhir", "", body)
	if status != 200 || resp["type"] != "batch-response" {
		t.Fatalf("%d %v", status, resp)
	}
	var got []string
	for _, e := range resp["entry"].([]any) {
		got = append(got, e.(map[string]any)["response"].(map[string]any)["status"].(string))
	}
	if strings.Join(got, ",") != "200 OK,201 Created,503 Service Unavailable,422 Unprocessable Entity" {
		t.Fatalf("entry statuses %v", got)
	}
	for name, b := range map[string]string{
		"collection":  `{"resourceType":"Bundle","type":"collection"}`,
		"no type":     `{"resourceType":"Bundle"}`,
		"Observation": `{"resourceType":"Observation"}`,
	} {
		if status, oo := do(t, "POST", srv.URL+"/fhir", "", []byte(b)); status != 400 {
			t.Errorf("%s: %d %s", name, status, diagnostics(oo))
		}
	}
}

func TestHTTPLogsNoPersonalData(t *testing.T) {
	var mu sync.Mutex
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := httptest.NewServer(NewHandler("/fhir", newMapper(t, Config{}), &recorder{}, log))
	defer srv.Close()
	for _, body := range [][]byte{
		[]byte(booked),
		[]byte(strings.Replace(booked, "9434765919", "9434765918", 1)),
		[]byte(strings.Replace(booked, "1980-06-15", "1980-02-30", 1)),
		edit(t, booked, map[string]any{"status": "bogus"}),
		bundleOf(t, "batch", "L1"),
	} {
		path := "/fhir/Appointment"
		if bytes.Contains(body, []byte(`"Bundle"`)) {
			path = "/fhir"
		}
		do(t, "POST", srv.URL+path, "", body)
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if !strings.Contains(out, "APT100234") {
		t.Fatalf("expected useful logs:\n%s", out)
	}
	for _, pii := range []string{"943476591", "4010232137", "1980", "2007-01-01", "07700", "0113"} {
		if strings.Contains(out, pii) {
			t.Fatalf("log contains %q:\n%s", pii, out)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// One rule for event times (events.CheckAhead): a resource dated further past the server's
// clock than the scorer accepts is refused with 422, naming the element the time came from.
func TestMapRefusesResourcesDatedTooFarAhead(t *testing.T) {
	clock := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC) // booked's lastUpdated is 9 days later
	m := newMapper(t, Config{Now: func() time.Time { return clock }})
	_, _, err := m.Map([]byte(booked), "", nil)
	is, ok := err.(*Issue)
	if !ok || is.Expression != "Appointment.meta.lastUpdated" || statusOf(is.Code) != 422 || !strings.Contains(is.Diagnostics, "ahead of this server's clock") {
		t.Fatalf("%v", err)
	}
	_, _, err = m.Map(edit(t, booked, map[string]any{"meta": nil, "created": "2025-03-20"}), "", nil)
	if is, ok := err.(*Issue); !ok || is.Expression != "Appointment.created" {
		t.Fatalf("%v", err)
	}
	if c, _, err := newMapper(t, Config{Now: func() time.Time { return clock.Add(2 * 24 * time.Hour) }}).Map([]byte(booked), "", nil); err != nil || !c.Received.Equal(clock.Add(48*time.Hour)) {
		t.Fatalf("within the limit: %v", err)
	}
}

// kept records published events for the merge test.
type kept struct {
	mu  sync.Mutex
	evs []events.Appointment
}

func (k *kept) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, m := range msgs {
		var ev events.Appointment
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			return err
		}
		k.evs = append(k.evs, ev)
	}
	return nil
}

// A FHIR update replaces the Appointment, but the Patient is another resource: an update that
// does not send it keeps the age band and contact preference held from an earlier one, and an
// update for an appointment the gateway does not know is refused naming Patient.birthDate.
func TestUpdateWithoutPatientKeepsItsFacts(t *testing.T) {
	out := &kept{}
	g := pas.NewGateway(&pas.MemoryTracker{}, out, nil)
	srv := httptest.NewServer(NewHandler("/fhir", newMapper(t, Config{}), g, nil))
	defer srv.Close()
	if status, oo := do(t, "PUT", srv.URL+"/fhir/Appointment/apt-100234", "", []byte(booked)); status != 201 && status != 200 {
		t.Fatalf("%d %s", status, diagnostics(oo))
	}
	update := edit(t, booked, map[string]any{"contained": nil, "start": "2025-04-03T09:30:00+01:00", "meta": map[string]any{"versionId": "2", "lastUpdated": "2025-03-11T10:00:00Z"},
		"participant": []any{map[string]any{"actor": map[string]any{"type": "Patient", "identifier": map[string]any{"system": NHSNumberSystem, "value": "9434765919"}}, "status": "accepted"}}})
	if status, oo := do(t, "PUT", srv.URL+"/fhir/Appointment/apt-100234", "", update); status != 200 || !strings.Contains(diagnostics(oo), "rescheduled version 2") {
		t.Fatalf("%d %s", status, diagnostics(oo))
	}
	b := out.evs[len(out.evs)-1].Booking
	if b.AgeBand != "35-44" || !b.Contact.SMS || b.Clinic != "" {
		// The Location participant is not in the update: the Appointment is replaced whole.
		t.Fatalf("update without the Patient: %+v", b)
	}
	fresh := bytes.Replace(update, []byte("APT100234"), []byte("APT999"), 1)
	status, oo := do(t, "PUT", srv.URL+"/fhir/Appointment/apt-100234", "", fresh)
	if status != 422 || !strings.Contains(diagnostics(oo), "[Patient.birthDate]") {
		t.Fatalf("unknown appointment without Patient: %d %s", status, diagnostics(oo))
	}
}

// The mobile and the opt-out from Patient.telecom and Patient.meta.security, for the contact
// store; nothing when the Patient is not sent.
func TestMapContact(t *testing.T) {
	m := newMapper(t, Config{})
	patient := func(set map[string]any) []byte {
		var doc map[string]any
		_ = json.Unmarshal([]byte(booked), &doc)
		p := doc["contained"].([]any)[0].(map[string]any)
		for k, v := range set {
			p[k] = v
		}
		b, _ := json.Marshal(doc)
		return b
	}
	for _, c := range []struct {
		name   string
		body   []byte
		mobile string
		optOut bool
	}{
		{"use mobile", []byte(booked), "07700900123", false},
		{"sms system", patient(map[string]any{"telecom": []any{map[string]any{"system": "sms", "value": "+447700900555"}}}), "07700900555", false},
		{"mobile preferred to an unmarked mobile number", patient(map[string]any{"telecom": []any{
			map[string]any{"system": "phone", "value": "07700900001"}, map[string]any{"system": "phone", "use": "mobile", "value": "07700900002"}}}), "07700900002", false},
		{"ended period", patient(map[string]any{"telecom": []any{map[string]any{"system": "phone", "use": "mobile", "value": "07700900003", "period": map[string]any{"end": "2020-01-01"}}}}), "", false},
		{"restricted record", patient(map[string]any{"meta": map[string]any{"security": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}}}}), "07700900123", true},
	} {
		ch, _, err := m.Map(c.body, "", nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if ch.Contact == nil || ch.Contact.Mobile.Reveal() != c.mobile || ch.Contact.OptOut != c.optOut || bookingOf(t, ch).Contact.OptOut != c.optOut {
			t.Errorf("%s: %+v", c.name, ch.Contact)
		}
	}
	ch, _, _ := m.Map(edit(t, booked, map[string]any{"contained": nil, "participant": []any{map[string]any{"actor": map[string]any{"type": "Patient",
		"identifier": map[string]any{"system": NHSNumberSystem, "value": "9434765919"}}, "status": "accepted"}}}), "", nil)
	if ch == nil || ch.Contact != nil {
		t.Fatalf("no Patient sent, but a contact: %+v", ch)
	}
}

// Appointment ids are namespaced by facility, so two feeds' ids cannot collide: the
// configured one (the HL7 feed's MSH-4), else the identifier's assigner.
func TestMapAppointmentNamespace(t *testing.T) {
	withAssigner := edit(t, booked, map[string]any{"identifier": []any{map[string]any{"value": "APT100234",
		"assigner": map[string]any{"identifier": map[string]any{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RYY"}}}}})
	for _, c := range []struct {
		facility string
		body     []byte
		want     string
	}{
		{"", []byte(booked), "APT100234"},
		{"RXX01", []byte(booked), "RXX01:APT100234"},
		{"", withAssigner, "RYY:APT100234"},
		{"RXX01", withAssigner, "RXX01:APT100234"},
		{"A:B", []byte(booked), "A%3AB:APT100234"},
	} {
		ch, _, err := newMapper(t, Config{Facility: c.facility}).Map(c.body, "", nil)
		if err != nil || ch.AppointmentID != c.want {
			t.Errorf("facility %q: %v %v, want %s", c.facility, ch, err, c.want)
		}
	}
}

// OperationOutcome expressions name the element at fault, not the resource.
func TestIssuesAtElementLevel(t *testing.T) {
	m := newMapper(t, Config{})
	for _, c := range []struct {
		body []byte
		want string
	}{
		{edit(t, booked, map[string]any{"status": "bogus"}), "Appointment.status"},
		{edit(t, booked, map[string]any{"participant": []any{map[string]any{"actor": map[string]any{"reference": "#p1"}, "status": "accepted"},
			map[string]any{"actor": map[string]any{"reference": "Location/X"}, "status": "maybe"}}}), "Appointment.participant[1].status"},
		{edit(t, booked, map[string]any{"minutesDuration": "thirty"}), "Appointment.minutesDuration"},
		{[]byte(strings.Replace(booked, `"use": "mobile"`, `"use": "cell"`, 1)), "Appointment.contained[0].telecom[1].use"},
	} {
		_, _, err := m.Map(c.body, "", nil)
		var is *Issue
		if !errors.As(err, &is) || is.Expression != c.want {
			t.Errorf("%v, want expression %s", err, c.want)
		}
	}
}

// Create answers 201 with a Location; an update 200; GET metadata is the CapabilityStatement;
// a batch entry's OperationOutcome names the element at fault.
func TestHTTPCreateMetadataAndBatchExpressions(t *testing.T) {
	g := pas.NewGateway(&pas.MemoryTracker{}, &kept{}, nil)
	srv := httptest.NewServer(NewHandler("/fhir", newMapper(t, Config{Facility: "RXX01"}), g, nil))
	defer srv.Close()
	post := func(body []byte) *http.Response {
		t.Helper()
		resp, err := http.Post(srv.URL+"/fhir/Appointment", "application/fhir+json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := post([]byte(booked)); resp.StatusCode != 201 || resp.Header.Get("Location") != "/fhir/Appointment/RXX01:APT100234/_history/1" {
		t.Fatalf("create: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	moved := edit(t, booked, map[string]any{"start": "2025-04-03T09:30:00+01:00", "meta": map[string]any{"versionId": "2", "lastUpdated": "2025-03-11T09:00:00Z"}})
	if resp := post(moved); resp.StatusCode != 200 || resp.Header.Get("Location") != "" {
		t.Fatalf("update: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	resp, err := http.Get(srv.URL + "/fhir/metadata")
	if err != nil {
		t.Fatal(err)
	}
	var cs map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&cs)
	resp.Body.Close()
	if resp.StatusCode != 200 || cs["resourceType"] != "CapabilityStatement" || cs["fhirVersion"] != "4.0.1" || cs["kind"] != "instance" {
		t.Fatalf("metadata: %d %v", resp.StatusCode, cs)
	}

	var doc map[string]any
	_ = json.Unmarshal(bundleOf(t, "batch", "E1", "E2"), &doc)
	doc["entry"].([]any)[2].(map[string]any)["resource"].(map[string]any)["status"] = "bogus"
	body, _ := json.Marshal(doc)
	status, out := do(t, "POST", srv.URL+"/fhir", "", body)
	entries := out["entry"].([]any)
	if status != 200 || len(entries) != 3 {
		t.Fatalf("%d %v", status, out)
	}
	first := entries[1].(map[string]any)["response"].(map[string]any)
	if first["status"] != "201 Created" || first["location"] != "/fhir/Appointment/RXX01:E1/_history/1" {
		t.Fatalf("created entry %v", first)
	}
	oo := entries[2].(map[string]any)["response"].(map[string]any)["outcome"].(map[string]any)
	if got := diagnostics(oo); !strings.Contains(got, "[Bundle.entry[2].resource.status]") {
		t.Fatalf("batch entry outcome %s", got)
	}
}

// The mapping file in FHIR: local specialty codes, cancellation phrases in
// cancelationReason.text, and extensions carrying extras.
func TestMapWithMappingFile(t *testing.T) {
	mp, err := pas.LoadMapping("../../cmd/pasgateway/mapping.example.json")
	if err != nil {
		t.Fatal(err)
	}
	m := newMapper(t, Config{Mapping: mp})
	body := edit(t, booked, map[string]any{
		"specialty": []any{map[string]any{"coding": []any{map[string]any{"system": "https://trust.example.nhs.uk/specialty", "code": "derm"}}}},
		"extension": []any{
			map[string]any{"url": "https://fhir.example-trust.nhs.uk/StructureDefinition/interpreter-needed", "valueBoolean": true},
			map[string]any{"url": "https://fhir.example-trust.nhs.uk/StructureDefinition/travel-distance-km", "valueDecimal": 3.5}},
	})
	ch, _, err := m.Map(body, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if b := bookingOf(t, ch); b.Specialty != "330" || b.Extra["interpreter_needed"] != 1 || b.Extra["travel_distance_km"] != 3.5 {
		t.Fatalf("booking %+v", b)
	}
	cancelled := edit(t, booked, map[string]any{"status": "cancelled", "cancelationReason": map[string]any{"text": "Clinic cancelled - consultant unavailable"}})
	if ch, _, err := m.Map(cancelled, "", nil); err != nil || ch.CancelledBy != events.ByHospital {
		t.Fatalf("%v %v", ch, err)
	}
	byPatient := edit(t, booked, map[string]any{"status": "cancelled", "cancelationReason": map[string]any{"text": "Cancelled by patient via portal"}})
	if ch, _, err := m.Map(byPatient, "", nil); err != nil || ch.CancelledBy != events.ByPatient {
		t.Fatalf("%v %v", ch, err)
	}
}
