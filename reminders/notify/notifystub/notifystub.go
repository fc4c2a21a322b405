// Package notifystub is a stand-in for the GOV.UK Notify API's text messages, for the demo
// and tests. It checks what the real API checks — the bearer JWT (HS256, iss = service id,
// iat within 30 seconds, signed with the key's secret) and the request body (UK mobile
// number, known template, every placeholder filled, no unknown fields) — and answers in
// Notify's shapes, including its error shape
// {"status_code": 400, "errors": [{"error": "BadRequestError", "message": "…"}]}.
// It records every accepted message, answers GET /v2/notifications?reference=…, and can be
// told to fail: 500s, 429s with Retry-After, slow answers, or "accepted, then failed" (the
// message is recorded but the caller sees an error, as when a response is lost).
package notifystub

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nhsx/dnarisk/reminders/notify"
)

// Message is one text message the stub accepted.
type Message struct {
	ID              string
	PhoneNumber     string
	TemplateID      string
	Personalisation map[string]string
	Reference       string
	CreatedAt       time.Time
}

// Fault is a failure to inject into the next POST /v2/notifications/sms. Faults queue up
// and are used one per request.
type Fault struct {
	// Status to answer with (500, 429, …); 0 answers normally after Delay.
	Status int
	// RetryAfter is sent as a Retry-After header (whole seconds) when positive.
	RetryAfter time.Duration
	// Delay holds the answer back this long (or until the caller gives up).
	Delay time.Duration
	// Accept records the message before the Delay and the Status, as when Notify created
	// the notification but the answer was slow, failed or never reached the caller. With
	// Status 0 or 201 the (late) answer is the normal one.
	Accept bool
}

// Chaos injects random faults into sends, for a soak against cmd/notifystub.
type Chaos struct {
	Error500, Error429 float64       // probability of each per send
	Delay              time.Duration // added to every send
}

// Config configures a Stub.
type Config struct {
	// Key is the API key callers must sign with.
	Key notify.Key
	// Templates maps template id to the placeholders it requires.
	Templates map[string][]string
	Chaos     Chaos
	// Now is the stub's clock for the iat check [time.Now].
	Now func() time.Time
}

// Stub is an http.Handler. It is safe for concurrent use.
type Stub struct {
	cfg Config

	mu       sync.Mutex
	messages []Message
	byRef    map[string][]int
	faults   []Fault
	requests map[string]int // "POST /v2/notifications/sms" -> count
	statuses map[int]int
	rng      *mrand.Rand
}

// New returns a Stub.
func New(cfg Config) (*Stub, error) {
	if cfg.Key.ServiceID == "" {
		return nil, errors.New("notifystub: no API key")
	}
	for id := range cfg.Templates {
		if !uuidRE.MatchString(id) {
			return nil, fmt.Errorf("notifystub: template id %q is not a UUID", id)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Stub{cfg: cfg, byRef: map[string][]int{}, requests: map[string]int{}, statuses: map[int]int{},
		rng: mrand.New(mrand.NewPCG(1, 2))}, nil
}

// Inject queues faults for the next sends.
func (s *Stub) Inject(f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f...)
}

// Messages returns a copy of the accepted messages, oldest first.
func (s *Stub) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Requests returns how many requests arrived for "METHOD /path".
func (s *Stub) Requests(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[route]
}

// Statuses returns how many answers of each HTTP status were given.
func (s *Stub) Statuses() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]int{}
	for k, v := range s.statuses {
		out[k] = v
	}
	return out
}

const (
	sendPath = "/v2/notifications/sms"
	listPath = "/v2/notifications"
)

func (s *Stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + r.URL.Path
	s.mu.Lock()
	s.requests[route]++
	s.mu.Unlock()
	switch {
	case r.URL.Path == "/_stub/stats" && r.Method == http.MethodGet:
		s.stats(w)
		return
	case r.URL.Path != sendPath && r.URL.Path != listPath:
		s.fail(w, http.StatusNotFound, "ResourceNotFound", "The requested URL was not found on the server.")
		return
	case r.URL.Path == sendPath && r.Method != http.MethodPost, r.URL.Path == listPath && r.Method != http.MethodGet:
		s.fail(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "The method is not allowed for the requested URL.")
		return
	}
	if status, msg := s.authenticate(r); status != 0 {
		s.fail(w, status, "AuthError", msg)
		return
	}
	if r.Method == http.MethodGet {
		s.list(w, r)
		return
	}
	s.send(w, r)
}

// authenticate checks the bearer token as Notify does; it returns 0 when it is good.
func (s *Stub) authenticate(r *http.Request) (int, string) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return http.StatusUnauthorized, "Unauthorized: authentication token must be provided"
	}
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return http.StatusUnauthorized, "Unauthorized: authentication bearer scheme must be used"
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return s.cfg.Key.Secret(), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithoutClaimsValidation())
	if err != nil {
		return http.StatusForbidden, "Invalid token: signature, api token not found"
	}
	iss, _ := claims["iss"].(string)
	if iss == "" {
		return http.StatusForbidden, "Invalid token: iss field not provided"
	}
	if iss != s.cfg.Key.ServiceID {
		return http.StatusForbidden, "Invalid token: service not found"
	}
	iat, ok := claims["iat"].(float64)
	if !ok {
		return http.StatusForbidden, "Invalid token: iat field not provided"
	}
	if math.Abs(float64(s.cfg.Now().Unix())-iat) > 30 {
		return http.StatusForbidden, "Error: Your system clock must be accurate to within 30 seconds"
	}
	return 0, ""
}

type sendRequest struct {
	PhoneNumber     *string        `json:"phone_number"`
	TemplateID      *string        `json:"template_id"`
	Personalisation map[string]any `json:"personalisation"`
	Reference       *string        `json:"reference"`
	SMSSenderID     *string        `json:"sms_sender_id"`
}

var (
	uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	// UK mobiles: 07xxx xxxxxx, +44 7…, 0044 7…, with spaces, dashes or brackets.
	phoneJunk = strings.NewReplacer(" ", "", "-", "", "(", "", ")", "", ".", "")
	mobileRE  = regexp.MustCompile(`^(?:\+44|0044|0)7\d{9}$`)
	fieldRE   = regexp.MustCompile(`"([^"]+)"`)
)

func (s *Stub) send(w http.ResponseWriter, r *http.Request) {
	fault := s.nextFault()
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		s.fail(w, http.StatusBadRequest, "BadRequestError", "Invalid JSON supplied in POST data")
		return
	}
	var req sendRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if m := fieldRE.FindStringSubmatch(err.Error()); m != nil && strings.Contains(err.Error(), "unknown field") {
			s.fail(w, http.StatusBadRequest, "ValidationError", fmt.Sprintf("Additional properties are not allowed (%s was unexpected)", m[1]))
			return
		}
		s.fail(w, http.StatusBadRequest, "BadRequestError", "Invalid JSON supplied in POST data")
		return
	}
	var problems []string
	if req.PhoneNumber == nil {
		problems = append(problems, "phone_number is a required property")
	} else if !mobileRE.MatchString(phoneJunk.Replace(*req.PhoneNumber)) {
		problems = append(problems, "phone_number Not a UK mobile number")
	}
	if req.TemplateID == nil {
		problems = append(problems, "template_id is a required property")
	} else if !uuidRE.MatchString(*req.TemplateID) {
		problems = append(problems, "template_id is not a valid UUID")
	}
	if req.Reference != nil && len(*req.Reference) > 1000 {
		problems = append(problems, "reference is too long")
	}
	if len(problems) > 0 {
		items := make([]notify.ErrorItem, len(problems))
		for i, p := range problems {
			items[i] = notify.ErrorItem{Error: "ValidationError", Message: p}
		}
		s.reply(w, http.StatusBadRequest, &notify.APIError{StatusCode: http.StatusBadRequest, Errors: items}, 0)
		return
	}
	placeholders, ok := s.cfg.Templates[strings.ToLower(*req.TemplateID)]
	if !ok {
		s.fail(w, http.StatusBadRequest, "BadRequestError", "Template not found")
		return
	}
	var missing []string
	for _, p := range placeholders {
		if v, ok := req.Personalisation[p]; !ok || v == nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		s.fail(w, http.StatusBadRequest, "BadRequestError", "Missing personalisation: "+strings.Join(missing, ", "))
		return
	}

	if !fault.Accept {
		if !s.wait(r, fault.Delay) {
			return
		}
		if fault.Status != 0 && fault.Status != http.StatusCreated {
			s.faultReply(w, fault)
			return
		}
	}
	ref := ""
	if req.Reference != nil {
		ref = *req.Reference
	}
	m := Message{ID: newUUID(), PhoneNumber: *req.PhoneNumber, TemplateID: *req.TemplateID, Reference: ref,
		Personalisation: map[string]string{}, CreatedAt: s.cfg.Now().UTC()}
	for k, v := range req.Personalisation {
		m.Personalisation[k] = fmt.Sprint(v)
	}
	s.mu.Lock()
	s.messages = append(s.messages, m)
	s.byRef[ref] = append(s.byRef[ref], len(s.messages)-1)
	s.mu.Unlock()
	if fault.Accept {
		if !s.wait(r, fault.Delay) {
			return
		}
		if fault.Status != 0 && fault.Status != http.StatusCreated {
			s.faultReply(w, fault)
			return
		}
	}
	var refOut any
	if ref != "" {
		refOut = ref
	}
	s.reply(w, http.StatusCreated, map[string]any{
		"id":            m.ID,
		"reference":     refOut,
		"content":       map[string]any{"body": "(rendered by the stub)", "from_number": "GOVUK"},
		"uri":           "http://" + r.Host + listPath + "/" + m.ID,
		"template":      map[string]any{"id": m.TemplateID, "version": 1, "uri": "http://" + r.Host + "/v2/template/" + m.TemplateID},
		"scheduled_for": nil,
	}, 0)
}

// wait holds the answer back for d; false if the caller gave up meanwhile.
func (s *Stub) wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	select {
	case <-time.After(d):
		return true
	case <-r.Context().Done():
		return false
	}
}

func (s *Stub) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if t := q.Get("template_type"); t != "" && t != "sms" {
		s.reply(w, http.StatusOK, map[string]any{"notifications": []any{}, "links": map[string]string{}}, 0)
		return
	}
	s.mu.Lock()
	var idx []int
	if ref, ok := q["reference"]; ok {
		idx = append(idx, s.byRef[ref[0]]...)
	} else {
		for i := range s.messages {
			idx = append(idx, i)
		}
	}
	out := make([]map[string]any, 0, len(idx))
	for i := len(idx) - 1; i >= 0 && len(out) < 250; i-- { // newest first, one page
		m := s.messages[idx[i]]
		out = append(out, map[string]any{
			"id": m.ID, "reference": m.Reference, "phone_number": m.PhoneNumber, "type": "sms",
			"status": "delivered", "template": map[string]any{"id": m.TemplateID, "version": 1},
			"created_at": m.CreatedAt.Format(time.RFC3339Nano),
		})
	}
	s.mu.Unlock()
	s.reply(w, http.StatusOK, map[string]any{"notifications": out, "links": map[string]string{"current": r.URL.String()}}, 0)
}

func (s *Stub) stats(w http.ResponseWriter) {
	s.mu.Lock()
	n := len(s.messages)
	s.mu.Unlock()
	s.reply(w, http.StatusOK, map[string]any{"messages": n, "statuses": s.Statuses()}, 0)
}

func (s *Stub) nextFault() Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.faults) > 0 {
		f := s.faults[0]
		s.faults = s.faults[1:]
		return f
	}
	f := Fault{Delay: s.cfg.Chaos.Delay}
	switch x := s.rng.Float64(); {
	case x < s.cfg.Chaos.Error500:
		f.Status = http.StatusInternalServerError
	case x < s.cfg.Chaos.Error500+s.cfg.Chaos.Error429:
		f.Status, f.RetryAfter = http.StatusTooManyRequests, time.Second
	}
	return f
}

func (s *Stub) faultReply(w http.ResponseWriter, f Fault) {
	switch f.Status {
	case http.StatusTooManyRequests:
		s.reply(w, f.Status, errBody(f.Status, "RateLimitError", "Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds"), f.RetryAfter)
	case http.StatusInternalServerError:
		s.reply(w, f.Status, errBody(f.Status, "Exception", "Internal server error"), f.RetryAfter)
	default:
		s.reply(w, f.Status, errBody(f.Status, "Error", http.StatusText(f.Status)), f.RetryAfter)
	}
}

func errBody(status int, kind, msg string) *notify.APIError {
	return &notify.APIError{StatusCode: status, Errors: []notify.ErrorItem{{Error: kind, Message: msg}}}
}

func (s *Stub) fail(w http.ResponseWriter, status int, kind, msg string) {
	s.reply(w, status, errBody(status, kind, msg), 0)
}

func (s *Stub) reply(w http.ResponseWriter, status int, v any, retryAfter time.Duration) {
	s.mu.Lock()
	s.statuses[status]++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retryAfter.Seconds()))))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
