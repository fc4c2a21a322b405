// Package notifystub is a stand-in for the GOV.UK Notify API's text messages, for the demo
// and tests. It checks what the real API checks — the bearer JWT (HS256, iss = service id,
// iat within 30 seconds, signed with the key's secret) and the request body (UK mobile
// number, known template, every placeholder filled, no unknown fields) — and answers in
// Notify's documented shapes, including its error shape
// {"status_code": 400, "errors": [{"error": "BadRequestError", "message": "…"}]}.
//
// It serves what the official clients read back: GET /v2/notifications/{id} (the uri a send
// returns), and GET /v2/notifications, newest first in pages with links.current and
// links.next, filtered by reference, status (with "failed" for every failure status),
// template_type and older_than, so the clients' iterators work unchanged. As with Notify's
// test API key, a message to 07700900002 ends permanent-failure, one to 07700900003
// temporary-failure, and every other one delivered.
//
// It can be told to fail: 500s, 429s with Retry-After, slow answers, "accepted, then
// failed" (the message is recorded but the caller sees an error, as when a response is lost),
// or "created late" (no answer until the caller gives up, and the message is created seconds
// afterwards, as when Notify was still working on a request the client had abandoned).
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
	// Status is Notify's delivery status: delivered, or for the test numbers
	// permanent-failure (07700900002) and temporary-failure (07700900003).
	Status    string
	CreatedAt time.Time
	// Body is the text as rendered: the placeholders' values in the template's order.
	Body string
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
	// Late never answers: it holds the request until the caller gives up (or Delay, when
	// positive, passes: then the connection is dropped), and creates the message a random
	// CreateAfter to CreateAfterMax after the request arrived, on the stub's timers
	// (Config.AfterFunc), and never before the caller has gone. A lookup by reference in
	// between finds nothing. Status is ignored.
	Late                        bool
	CreateAfter, CreateAfterMax time.Duration
}

// Chaos injects random faults into sends, for a soak against cmd/notifystub.
type Chaos struct {
	Error500, Error429 float64       // probability of each per send
	Delay              time.Duration // added to every send
	// CreatedLate is the probability of a Late fault, creating the message CreateAfter to
	// CreateAfterMax after the request arrived [1s to 30s].
	CreatedLate                 float64
	CreateAfter, CreateAfterMax time.Duration
}

// Config configures a Stub.
type Config struct {
	// Key is the API key callers must sign with.
	Key notify.Key
	// Templates maps template id to the placeholders it requires.
	Templates map[string][]string
	Chaos     Chaos
	// PageSize is how many notifications one GET /v2/notifications answers [250, as Notify].
	PageSize int
	// Now is the stub's clock for the iat check and created_at [time.Now].
	Now func() time.Time
	// AfterFunc runs f once d has passed: the timer of Late faults [time.AfterFunc]. A
	// simulation whose clients run on a simulated clock can run these timers on it too.
	AfterFunc func(d time.Duration, f func())
}

// Stub is an http.Handler. It is safe for concurrent use.
type Stub struct {
	cfg Config

	mu       sync.Mutex
	messages []Message // oldest first: the order Notify's created_at gives
	byRef    map[string][]int
	byID     map[string]int
	faults   []Fault
	requests map[string]int // "POST /v2/notifications/sms", "GET /v2/notifications/{id}" -> count
	statuses map[int]int
	rng      *mrand.Rand
	pending  int // Late messages not created yet
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
	if cfg.PageSize <= 0 {
		cfg.PageSize = 250
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = func(d time.Duration, f func()) { time.AfterFunc(d, f) }
	}
	if cfg.Chaos.CreateAfter <= 0 && cfg.Chaos.CreateAfterMax <= 0 {
		cfg.Chaos.CreateAfter, cfg.Chaos.CreateAfterMax = time.Second, 30*time.Second
	}
	return &Stub{cfg: cfg, byRef: map[string][]int{}, byID: map[string]int{}, requests: map[string]int{}, statuses: map[int]int{},
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

// Pending returns how many messages of Late faults are still to be created.
func (s *Stub) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

// Requests returns how many requests arrived for "METHOD /path"; a notification id in the
// path is counted as {id}.
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
	onePath  = listPath + "/"
)

func (s *Stub) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.serve(w, r, nil) }

// ServeFault answers one request as ServeHTTP does, except that a send meets fault f instead
// of the next queued or random one: for a fault injector in front of the stub.
func (s *Stub) ServeFault(w http.ResponseWriter, r *http.Request, f Fault) { s.serve(w, r, &f) }

func (s *Stub) serve(w http.ResponseWriter, r *http.Request, f *Fault) {
	path, method := r.URL.Path, r.Method
	id, one := strings.CutPrefix(path, onePath)
	route := method + " " + path
	if one && path != sendPath {
		route = method + " " + onePath + "{id}"
	}
	s.mu.Lock()
	s.requests[route]++
	s.mu.Unlock()
	var handle func(http.ResponseWriter, *http.Request)
	switch {
	case path == "/_stub/stats" && method == http.MethodGet:
		s.stats(w)
		return
	case path == sendPath:
		handle = func(w http.ResponseWriter, r *http.Request) {
			if f == nil {
				next := s.nextFault()
				f = &next
			}
			s.send(w, r, *f)
		}
	case path == listPath:
		handle = s.list
	case one && !strings.Contains(id, "/"):
		handle = func(w http.ResponseWriter, r *http.Request) { s.get(w, r, id) }
	default:
		s.fail(w, http.StatusNotFound, "ResourceNotFound", "The requested URL was not found on the server.")
		return
	}
	if want := map[bool]string{true: http.MethodPost, false: http.MethodGet}[path == sendPath]; method != want {
		s.fail(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "The method is not allowed for the requested URL.")
		return
	}
	if status, msg := s.authenticate(r); status != 0 {
		s.fail(w, status, "AuthError", msg)
		return
	}
	handle(w, r)
}

// authenticate checks the bearer token as Notify does; it returns 0 when it is good.
func (s *Stub) authenticate(r *http.Request) (int, string) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return http.StatusUnauthorized, "Unauthorized: authentication token must be provided"
	}
	// Notify compares the scheme without regard to case.
	if len(h) < 7 || !strings.EqualFold(h[:7], "Bearer ") {
		return http.StatusUnauthorized, "Unauthorized: authentication bearer scheme must be used"
	}
	tok := h[7:]
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return s.cfg.Key.Secret(), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithoutClaimsValidation())
	if err != nil {
		return http.StatusForbidden, "Invalid token: API key not found"
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

func (s *Stub) send(w http.ResponseWriter, r *http.Request, fault Fault) {
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

	if !fault.Accept && !fault.Late {
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
	m := Message{ID: newUUID(), PhoneNumber: *req.PhoneNumber, TemplateID: strings.ToLower(*req.TemplateID), Reference: ref,
		Personalisation: map[string]string{}, Status: statusFor(*req.PhoneNumber)}
	for k, v := range req.Personalisation {
		m.Personalisation[k] = fmt.Sprint(v)
	}
	m.Body = render(placeholders, m.Personalisation)
	if fault.Late {
		s.createLate(w, r, m, fault)
		return
	}
	s.record(m)
	if fault.Accept {
		if !s.wait(r, fault.Delay) {
			return
		}
		if fault.Status != 0 && fault.Status != http.StatusCreated {
			s.faultReply(w, fault)
			return
		}
	}
	base := baseURL(r)
	s.reply(w, http.StatusCreated, map[string]any{
		"id":            m.ID,
		"reference":     nullable(m.Reference),
		"content":       map[string]any{"body": m.Body, "from_number": fromNumber},
		"uri":           base + onePath + m.ID,
		"template":      map[string]any{"id": m.TemplateID, "version": templateVersion, "uri": base + "/v2/template/" + m.TemplateID},
		"scheduled_for": nil,
	}, 0)
}

// record stores an accepted message.
func (s *Stub) record(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// created_at never goes backwards, so that "older than" and the list order agree.
	m.CreatedAt = s.cfg.Now().UTC()
	if n := len(s.messages); n > 0 && m.CreatedAt.Before(s.messages[n-1].CreatedAt) {
		m.CreatedAt = s.messages[n-1].CreatedAt
	}
	s.messages = append(s.messages, m)
	s.byRef[m.Reference] = append(s.byRef[m.Reference], len(s.messages)-1)
	s.byID[m.ID] = len(s.messages) - 1
}

// createLate serves a Late fault: no answer until the caller gives up (or the connection is
// dropped after f.Delay), and m is created on the stub's timer, once the caller has gone.
func (s *Stub) createLate(w http.ResponseWriter, r *http.Request, m Message, f Fault) {
	s.mu.Lock()
	s.pending++
	d := f.CreateAfter
	if f.CreateAfterMax > d {
		d += time.Duration(s.rng.Int64N(int64(f.CreateAfterMax-d) + 1))
	}
	s.mu.Unlock()
	gone := make(chan struct{})
	s.cfg.AfterFunc(d, func() {
		<-gone
		s.record(m)
		s.mu.Lock()
		s.pending--
		s.mu.Unlock()
	})
	held := true
	if f.Delay > 0 {
		held = s.wait(r, f.Delay)
	} else {
		<-r.Context().Done()
		held = false
	}
	close(gone)
	if held {
		panic(http.ErrAbortHandler) // drop the connection without an answer
	}
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
	case x < s.cfg.Chaos.Error500+s.cfg.Chaos.Error429+s.cfg.Chaos.CreatedLate:
		f = Fault{Late: true, CreateAfter: s.cfg.Chaos.CreateAfter, CreateAfterMax: s.cfg.Chaos.CreateAfterMax}
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

// Timers is a Config.AfterFunc on a clock moved by hand, for tests and simulations whose
// clients wait on such a clock: Late messages are then created on the clock the client's
// recheck is measured on. It is safe for concurrent use.
type Timers struct {
	mu  sync.Mutex
	now time.Time
	q   []timer
}

type timer struct {
	at time.Time
	f  func()
}

// NewTimers returns Timers reading now.
func NewTimers(now time.Time) *Timers { return &Timers{now: now} }

// AfterFunc runs f once Advance reaches now + d.
func (t *Timers) AfterFunc(d time.Duration, f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.q = append(t.q, timer{t.now.Add(d), f})
}

// Next returns when the earliest timer not yet run is due.
func (t *Timers) Next() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var next time.Time
	for _, x := range t.q {
		if next.IsZero() || x.at.Before(next) {
			next = x.at
		}
	}
	return next, !next.IsZero()
}

// Advance moves the clock to to (never backwards) and runs the timers due by then, earliest
// first, returning once they have run.
func (t *Timers) Advance(to time.Time) {
	t.mu.Lock()
	if to.After(t.now) {
		t.now = to
	}
	var due []timer
	kept := t.q[:0]
	for _, x := range t.q {
		if x.at.After(t.now) {
			kept = append(kept, x)
		} else {
			due = append(due, x)
		}
	}
	t.q = kept
	t.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, x := range due {
		x.f()
	}
}
