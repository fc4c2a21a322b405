package fhirin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/authn"
	"github.com/nhsx/dnarisk/pas"
)

// MaxBody bounds a request body (8 MiB; larger: 413): a Bundle of a day's bookings for a
// clinic fits easily.
const MaxBody = 8 << 20

// Applier publishes a change; *pas.Gateway is the implementation. Apply must return only
// once the change's event is acknowledged by Kafka (or there is nothing to publish). Check
// says whether Apply would accept the change, without publishing anything.
type Applier interface {
	Apply(ctx context.Context, c pas.Change) (pas.Result, error)
	Check(ctx context.Context, c pas.Change) error
}

// Handler is the FHIR endpoint: POST <base>/Appointment and PUT <base>/Appointment/<id> take
// one Appointment; POST <base> takes a transaction or batch Bundle. It answers 200 with an
// OperationOutcome (or a transaction-/batch-response Bundle) once the events are on Kafka,
// 400/422 with an OperationOutcome for input it cannot accept, and 503 when Kafka or Redis
// failed (retry: every resource is idempotent).
type Handler struct {
	Mapper  *Mapper
	Gateway Applier
	Log     *slog.Logger
	// Auth, when set, authenticates every request before anything is read: no or bad
	// credentials are a 401, a token without the write scope a 403, each with an
	// OperationOutcome. Every accepted request gets an audit log line naming the client.
	Auth *authn.HTTP
	// Observe, when set, is told how each request ended (see Observer).
	Observe Observer
	mux     *http.ServeMux
	base    string
}

// Observer learns how each request ended: the interaction ("create", "update", "bundle" or
// "other"), the HTTP status, and for a refusal (status >= 400) a short reason code:
// no_credentials, malformed, bad_token, expired, wrong_issuer, wrong_audience, wrong_scope,
// untrusted_certificate (authentication), invalid, not_found, too_large,
// unsupported_media_type, business_rule, unavailable.
type Observer func(interaction string, status int, reason string)

type clientKey struct{}

// client is the authenticated caller of the request ctx belongs to ("" without Auth).
func client(ctx context.Context) string {
	id, _ := ctx.Value(clientKey{}).(string)
	return id
}

// NewHandler serves the endpoint under base (for example "/fhir").
func NewHandler(base string, m *Mapper, g Applier, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base = "/" + strings.Trim(base, "/")
	if base == "/" {
		base = ""
	}
	h := &Handler{Mapper: m, Gateway: g, Log: log, mux: http.NewServeMux(), base: base}
	h.mux.HandleFunc("GET "+base+"/metadata", h.metadata)
	h.mux.HandleFunc("POST "+base+"/Appointment", func(w http.ResponseWriter, r *http.Request) { h.appointment(w, r, "") })
	h.mux.HandleFunc("PUT "+base+"/Appointment/{id}", func(w http.ResponseWriter, r *http.Request) { h.appointment(w, r, r.PathValue("id")) })
	h.mux.HandleFunc("POST "+base+"/{$}", h.bundle)
	if base != "" {
		h.mux.HandleFunc("POST "+base, h.bundle)
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeOutcome(w, http.StatusNotFound, fhir.IssueTypeNotSupported,
			fmt.Sprintf("%s %s is not served: POST %s/Appointment, PUT %s/Appointment/<id>, POST a Bundle to %s/, or GET %s/metadata", r.Method, r.URL.Path, base, base, base, base), "")
	})
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusWriter{ResponseWriter: w}
	interaction := interactionOf(r)
	if h.Auth != nil {
		id, err := h.Auth.Authenticate(r)
		if err != nil {
			f := err.(*authn.Failure)
			h.Log.Warn("fhir request refused: not authenticated", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr,
				"status", f.Status, "reason", f.Reason)
			code := fhir.IssueTypeLogin
			if f.Status == http.StatusForbidden {
				code = fhir.IssueTypeForbidden
			}
			w.Header().Set("WWW-Authenticate", h.Auth.Challenge(f))
			writeOutcome(w, f.Status, code, f.Detail, "")
			h.observe(interaction, f.Status, f.Reason)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), clientKey{}, string(id)))
	}
	h.mux.ServeHTTP(rec, r)
	if h.Auth != nil {
		h.Log.Info("fhir request", "client", client(r.Context()), "method", r.Method, "path", r.URL.Path, "status", rec.status, "remote", r.RemoteAddr)
	}
	h.observe(interaction, rec.status, refusalReason(rec.status))
}

func (h *Handler) observe(interaction string, status int, reason string) {
	if h.Observe != nil {
		h.Observe(interaction, status, reason)
	}
}

// interactionOf names the FHIR interaction a request asks for, for metrics.
func interactionOf(r *http.Request) string {
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/Appointment"):
		return "create"
	case r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/Appointment/"):
		return "update"
	case r.Method == http.MethodPost:
		return "bundle"
	}
	return "other"
}

func refusalReason(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid"
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return "not_found"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	case http.StatusUnprocessableEntity:
		return "business_rule"
	case http.StatusServiceUnavailable:
		return "unavailable"
	}
	if status >= 400 {
		return "other"
	}
	return ""
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (h *Handler) read(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/fhir+json" && mt != "application/json" {
			got := "unreadable"
			if err == nil {
				got = mt
			}
			writeOutcome(w, http.StatusUnsupportedMediaType, fhir.IssueTypeNotSupported,
				fmt.Sprintf("Content-Type %s is not supported: send FHIR JSON as application/fhir+json (or application/json); FHIR XML is not accepted", quote(got)), "")
			return nil, false
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeOutcome(w, http.StatusRequestEntityTooLarge, fhir.IssueTypeTooCostly, fmt.Sprintf("body larger than %d bytes", MaxBody), "")
		} else {
			writeOutcome(w, http.StatusBadRequest, fhir.IssueTypeStructure, "could not read the request body", "")
		}
		return nil, false
	}
	if !json.Valid(body) {
		writeOutcome(w, http.StatusBadRequest, fhir.IssueTypeStructure, "the body is not valid JSON", "")
		return nil, false
	}
	return body, true
}

func (h *Handler) appointment(w http.ResponseWriter, r *http.Request, urlID string) {
	body, ok := h.read(w, r)
	if !ok {
		return
	}
	if rt := resourceType(body); rt == "Bundle" {
		writeOutcome(w, http.StatusBadRequest, fhir.IssueTypeNotSupported, "a Bundle goes to the base URL, not to /Appointment", "")
		return
	}
	c, ignored, err := h.Mapper.Map(body, urlID, nil)
	if err != nil {
		h.refuse(w, err)
		return
	}
	status, msg, expr, loc := h.apply(r.Context(), c, ignored)
	if loc != "" {
		w.Header().Set("Location", loc)
	}
	writeOutcome(w, status, outcomeType(status), msg, expr)
}

// location is where a created appointment's version would be read, for the Location of a 201.
// The gateway keeps no resources, so it is a name, not a link it serves.
func (h *Handler) location(ev *events.Appointment) string {
	return fmt.Sprintf("%s/Appointment/%s/_history/%d", h.base, url.PathEscape(ev.AppointmentID), ev.Version)
}

// apply publishes c (nil: nothing to publish) and says how it went, as an HTTP status (201
// for an appointment it created), a message, the element at fault of a refusal, and the
// Location of a creation.
func (h *Handler) apply(ctx context.Context, c *pas.Change, ignored string) (int, string, string, string) {
	if c == nil {
		h.Log.Info("fhir appointment accepted; nothing to publish", "reason", ignored)
		return http.StatusOK, "ignored: " + ignored, "", ""
	}
	log := h.Log.With("source", c.Source, "appointment_id", c.AppointmentID)
	if id := client(ctx); id != "" {
		log = log.With("client", id)
	}
	res, err := h.Gateway.Apply(ctx, *c)
	var is *Issue
	switch {
	case errors.Is(err, pas.ErrUnavailable):
		log.Error("fhir appointment not accepted: publishing failed; the sender should retry", "err", err)
		return http.StatusServiceUnavailable, "temporarily unable to publish the event; send it again later", "", ""
	case errors.As(err, &is):
		log.Warn("fhir appointment refused", "reason", is.Error())
		return statusOf(is.Code), is.Diagnostics, is.Expression, ""
	case err != nil:
		log.Warn("fhir appointment refused", "reason", err.Error())
		return http.StatusUnprocessableEntity, err.Error(), contractElement(err), ""
	case res.Event == nil:
		log.Info("fhir appointment accepted; nothing to publish", "reason", res.Ignored)
		return http.StatusOK, "ignored: " + res.Ignored, "", ""
	}
	log.Info("fhir appointment accepted", "event_type", string(res.Event.Type), "booking_version", res.Event.Version, "event_id", res.Event.EventID)
	msg := fmt.Sprintf("%s version %d published", res.Event.Type, res.Event.Version)
	if res.Event.Type == events.Booked {
		return http.StatusCreated, msg, "", h.location(res.Event)
	}
	return http.StatusOK, msg, "", ""
}

// contractElement names the Appointment element behind an appointment.v1 contract violation
// the gateway found (its text names the event field).
func contractElement(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "booking.start"), strings.Contains(msg, "lead time"):
		return "Appointment.start"
	case strings.Contains(msg, "booking.clinic"):
		return "Appointment.participant"
	case strings.Contains(msg, "booking.specialty"):
		return "Appointment.specialty"
	case strings.Contains(msg, "names no patient"):
		return "Appointment.participant"
	}
	return "Appointment"
}

// metadata answers GET [base]/metadata with the CapabilityStatement: what an engine's FHIR
// connector asks first. It states only what this endpoint does.
func (h *Handler) metadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, CapabilityStatement(h.base))
}

// CapabilityStatement describes the endpoint served under base: FHIR R4 (4.0.1) JSON, create
// and update of Appointment, transaction and batch Bundles.
func CapabilityStatement(base string) map[string]any {
	return map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         "2025-03-01",
		"publisher":    "dnarisk",
		"kind":         "instance",
		"software":     map[string]any{"name": "dnarisk pasgateway"},
		"implementation": map[string]any{
			"description": "DNA risk scorer intake: FHIR R4 Appointments become appointment events; nothing is stored or served back",
			"url":         base,
		},
		"fhirVersion": "4.0.1",
		"format":      []string{"application/fhir+json", "json"},
		"rest": []any{map[string]any{
			"mode":          "server",
			"documentation": fmt.Sprintf("POST a Bundle (transaction or batch) to the base; bodies up to %d bytes; application/fhir+json only", MaxBody),
			"resource": []any{
				map[string]any{
					"type":         "Appointment",
					"interaction":  []any{map[string]any{"code": "create"}, map[string]any{"code": "update"}},
					"versioning":   "no-version",
					"updateCreate": true,
					"documentation": "status booked, cancelled, entered-in-error, noshow and fulfilled become events; " +
						"the Patient (contained, or in the same Bundle) gives the age band, mobile and opt-out",
				},
				map[string]any{"type": "Patient", "documentation": "accepted only contained in an Appointment or as an entry of the same Bundle"},
			},
			"interaction": []any{map[string]any{"code": "transaction"}, map[string]any{"code": "batch"}},
		}},
	}
}

func (h *Handler) refuse(w http.ResponseWriter, err error) {
	var is *Issue
	if !errors.As(err, &is) {
		is = &Issue{Code: fhir.IssueTypeProcessing, Diagnostics: err.Error()}
	}
	h.Log.Warn("fhir input refused", "reason", is.Error())
	writeOutcome(w, statusOf(is.Code), is.Code, is.Diagnostics, is.Expression)
}

// statusOf: malformed resources are 400; well-formed ones breaking a rule are 422.
func statusOf(code fhir.IssueType) int {
	switch code {
	case fhir.IssueTypeStructure, fhir.IssueTypeNotSupported:
		return http.StatusBadRequest
	}
	return http.StatusUnprocessableEntity
}

func outcomeType(status int) fhir.IssueType {
	switch {
	case status == http.StatusServiceUnavailable:
		return fhir.IssueTypeTransient
	case status >= 400:
		return fhir.IssueTypeBusinessRule
	}
	return fhir.IssueTypeInformational
}

func outcome(code fhir.IssueType, msg, expr string) fhir.OperationOutcome {
	sev := fhir.IssueSeverityError
	if code == fhir.IssueTypeInformational {
		sev = fhir.IssueSeverityInformation
	}
	iss := fhir.OperationOutcomeIssue{Severity: sev, Code: code, Diagnostics: &msg}
	if expr != "" {
		iss.Expression = []string{expr}
	}
	return fhir.OperationOutcome{Issue: []fhir.OperationOutcomeIssue{iss}}
}

func writeOutcome(w http.ResponseWriter, status int, code fhir.IssueType, msg, expr string) {
	writeJSON(w, status, outcome(code, msg, expr))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
