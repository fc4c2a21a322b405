// Package notify is a client for the text-message part of the GOV.UK Notify API: send one
// (POST /v2/notifications/sms) and find the messages sent with a given reference
// (GET /v2/notifications?reference=…), which is how a sender that crashed or timed out
// learns whether its message went before it sends it again.
//
// Every attempt carries a fresh bearer JWT (HS256, iss = service id, iat = now), made with
// github.com/golang-jwt/jwt/v5: the maintained successor of the dgrijalva library, with no
// dependencies of its own, and the one Notify's own documentation points Go users to; a
// hand-written signer would be small but is exactly the kind of code that goes subtly wrong.
// Retries go through github.com/hashicorp/go-retryablehttp, but a send is retried only when
// Notify cannot have created the message: a 429 (waiting for Retry-After) or a connection
// that was never made. A send whose outcome is unknown — a timeout or a dropped connection
// after the request went out, a 5xx, an unreadable 201 — is never retried inside the call:
// Notify may still be creating that message, and a lookup by reference a moment later can
// miss it. SendSMS returns it as an error for which Uncertain is true, and the caller
// (reminders) looks the reference up after Notify's processing bound before sending again.
// Lookups are idempotent and retried on 5xx, timeouts and connection errors; other 4xx
// (400 bad request, 403 bad key) are never retried.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// DefaultBaseURL is the production GOV.UK Notify API.
const DefaultBaseURL = "https://api.notifications.service.gov.uk"

// maxBody bounds how much of a response is read.
const maxBody = 1 << 20

// Config configures a Client. Zero values take the defaults in brackets.
type Config struct {
	// BaseURL of the API [DefaultBaseURL].
	BaseURL string
	// Key signs every request; required.
	Key Key
	// Timeout bounds one attempt, connection to last byte [10s].
	Timeout time.Duration
	// MaxRetries after the first attempt [3].
	MaxRetries int
	// RetryWaitMin and RetryWaitMax bound the exponential backoff between attempts [500ms,
	// 30s]. A 429 whose Retry-After is longer than RetryWaitMax is not retried here: the
	// error carries RetryAfter so the caller can reschedule the work instead of holding it.
	RetryWaitMin, RetryWaitMax time.Duration
	// Log receives retry diagnostics at debug level (method, path, status; never bodies).
	Log *slog.Logger
	// Transport to use [a pooled http.Transport].
	Transport http.RoundTripper
}

// Client talks to Notify. It is safe for concurrent use.
type Client struct {
	base    string
	http    *retryablehttp.Client
	waitMax time.Duration
	longest time.Duration
	timeout time.Duration
}

// New checks cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("notify base URL %q is not an http(s) URL", cfg.BaseURL)
	}
	if cfg.Key.ServiceID == "" || cfg.Key.secret == "" {
		return nil, fmt.Errorf("%w: no key given", ErrBadKey)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 3
	}
	if cfg.MaxRetries < 0 {
		cfg.MaxRetries = 0
	}
	if cfg.RetryWaitMin <= 0 {
		cfg.RetryWaitMin = 500 * time.Millisecond
	}
	if cfg.RetryWaitMax <= 0 {
		cfg.RetryWaitMax = 30 * time.Second
	}
	if cfg.RetryWaitMax < cfg.RetryWaitMin {
		return nil, fmt.Errorf("notify retry wait max %s is below min %s", cfg.RetryWaitMax, cfg.RetryWaitMin)
	}
	if cfg.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 16
		cfg.Transport = t
	}
	c := &Client{base: strings.TrimRight(cfg.BaseURL, "/"), waitMax: cfg.RetryWaitMax, timeout: cfg.Timeout,
		longest: time.Duration(cfg.MaxRetries+1) * (cfg.Timeout + cfg.RetryWaitMax)}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &http.Client{Timeout: cfg.Timeout, Transport: &bearer{base: cfg.Transport, key: cfg.Key}}
	rc.RetryMax = cfg.MaxRetries
	rc.RetryWaitMin, rc.RetryWaitMax = cfg.RetryWaitMin, cfg.RetryWaitMax
	rc.CheckRetry = c.checkRetry
	rc.Backoff = backoff
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	rc.Logger = nil
	if cfg.Log != nil {
		rc.Logger = leveled{cfg.Log}
	}
	c.http = rc
	return c, nil
}

// Longest bounds how long one SendSMS can take: every attempt timing out and every wait at
// its maximum.
func (c *Client) Longest() time.Duration { return c.longest }

// Timeout is how long one attempt may take before the client gives up on it; a send it gave
// up on may still be created by Notify afterwards.
func (c *Client) Timeout() time.Duration { return c.timeout }

// bearer signs every attempt with a new token, so a retry after a long backoff is not
// refused for a stale iat.
type bearer struct {
	base http.RoundTripper
	key  Key
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	tok, err := b.key.Token(time.Now())
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return b.base.RoundTrip(r)
}

// SMS is one text message to send. Personalisation fills the template's placeholders;
// Reference is echoed back by Notify and must not contain personal data.
type SMS struct {
	PhoneNumber     string            `json:"phone_number"`
	TemplateID      string            `json:"template_id"`
	Personalisation map[string]string `json:"personalisation,omitempty"`
	Reference       string            `json:"reference,omitempty"`
}

// Notification is what Notify returns about a message (only the fields this project uses).
type Notification struct {
	ID        string `json:"id"`
	Reference string `json:"reference"`
	Status    string `json:"status,omitempty"`
}

// APIError is an error response from Notify:
// {"status_code": 400, "errors": [{"error": "BadRequestError", "message": "…"}]}.
// Answers from outside the v2 API (an unknown path, a proxy) may carry only
// {"result": "error", "message": "…"}; the official clients read "message" first, and so
// does Error.
type APIError struct {
	StatusCode int         `json:"status_code"`
	Errors     []ErrorItem `json:"errors"`
	Message    string      `json:"message,omitempty"`
	// RetryAfter is the server's Retry-After on a 429 (or 503), zero when absent.
	RetryAfter time.Duration `json:"-"`
}

// ErrorItem is one entry of APIError.Errors.
type ErrorItem struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func (e *APIError) Error() string {
	parts := make([]string, 0, len(e.Errors))
	for _, it := range e.Errors {
		parts = append(parts, it.Error+": "+it.Message)
	}
	if len(parts) == 0 && e.Message != "" {
		parts = append(parts, e.Message)
	}
	if len(parts) == 0 {
		parts = append(parts, http.StatusText(e.StatusCode))
	}
	return fmt.Sprintf("notify: HTTP %d: %s", e.StatusCode, strings.Join(parts, "; "))
}

// Permanent reports whether err is a refusal that would happen again unchanged: a 4xx other
// than 429 (400 bad request, 401/403 bad or revoked key, 404 wrong URL). Everything else
// (5xx, 429, timeouts, connection errors) is worth trying again later.
func Permanent(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.StatusCode >= 400 && e.StatusCode < 500 && e.StatusCode != http.StatusTooManyRequests
}

// RetryAfter returns how long Notify asked the caller to wait, or zero.
func RetryAfter(err error) time.Duration {
	var e *APIError
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// ErrUncertain is wrapped by a SendSMS error whose outcome is unknown: the request may have
// reached Notify, which may have created the message or may still create it.
var ErrUncertain = errors.New("outcome unknown: Notify may have created the message")

// Uncertain reports whether err is a send whose outcome is unknown (it wraps ErrUncertain).
// Such a send must not be repeated until the reference has been looked up, after long
// enough for Notify to have finished with the first request.
func Uncertain(err error) bool { return errors.Is(err, ErrUncertain) }

type uncertainError struct{ err error }

func (e *uncertainError) Error() string   { return ErrUncertain.Error() + ": " + e.err.Error() }
func (e *uncertainError) Unwrap() []error { return []error{ErrUncertain, e.err} }

// SendSMS sends one text message. It retries only what cannot have created a message (429s,
// connections never made); any other failure is returned at once, and if the request may
// have reached Notify the error is Uncertain.
func (c *Client) SendSMS(ctx context.Context, m SMS) (Notification, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return Notification{}, fmt.Errorf("encode sms request: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Notification{}, fmt.Errorf("send sms: %w", err)
	}
	req, err := retryablehttp.NewRequestWithContext(context.WithValue(ctx, sendKey{}, true), http.MethodPost, c.base+"/v2/notifications/sms", body)
	if err != nil {
		return Notification{}, fmt.Errorf("build sms request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	var n Notification
	if err = c.do(req, http.StatusCreated, &n); err != nil {
		if !refused(err) {
			err = &uncertainError{err}
		}
		return Notification{}, fmt.Errorf("send sms: %w", err)
	}
	return n, nil
}

// refused reports a send failure that proves no message was created: Notify answered with a
// 4xx (a 429 included), or the connection was never made.
func refused(err error) bool {
	var e *APIError
	if errors.As(err, &e) {
		return e.StatusCode >= 400 && e.StatusCode < 500
	}
	return neverSent(err)
}

// FindByReference lists the text messages sent with reference (within Notify's data
// retention, 7 days by default), newest first. It reads one page (Notify's is 250) and does
// not follow links.next: the question it answers is whether any exists, and each of our
// references names one message.
func (c *Client) FindByReference(ctx context.Context, reference string) ([]Notification, error) {
	q := url.Values{"template_type": {"sms"}, "reference": {reference}}
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v2/notifications?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("build notifications query: %w", err)
	}
	var out struct {
		Notifications []Notification `json:"notifications"`
	}
	if err := c.do(req, http.StatusOK, &out); err != nil {
		return nil, fmt.Errorf("find notifications by reference: %w", err)
	}
	return out.Notifications, nil
}

func (c *Client) do(req *retryablehttp.Request, want int, into any) error {
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "dnarisk-dispatcher")
	resp, err := c.http.Do(req)
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("read response (HTTP %d): %w", resp.StatusCode, err)
	}
	if resp.StatusCode != want {
		e := &APIError{StatusCode: resp.StatusCode}
		_ = json.Unmarshal(b, e) // a proxy's HTML error page still yields the status
		e.StatusCode = resp.StatusCode
		e.RetryAfter, _ = retryAfter(resp)
		return e
	}
	if err := json.Unmarshal(b, into); err != nil {
		return fmt.Errorf("decode response (HTTP %d): %w", resp.StatusCode, err)
	}
	return nil
}

// sendKey marks a send's context: its retry policy is the strict one.
type sendKey struct{}

func (c *Client) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	send, _ := ctx.Value(sendKey{}).(bool)
	if err != nil {
		if send {
			// A send is repeated only if it never left: anything else may have created it.
			return neverSent(err), nil
		}
		retry, _ := retryablehttp.DefaultRetryPolicy(ctx, resp, err)
		return retry, nil
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		// Refused before anything was created: safe to repeat, after the wait it asks for.
		if d, ok := retryAfter(resp); ok && d > c.waitMax {
			return false, nil
		}
		return true, nil
	case resp.StatusCode >= 500:
		// A lookup is safe to repeat; a send may have been created before the error.
		return !send, nil
	}
	return false, nil
}

// neverSent reports errors that prove the request never reached the server.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// backoff honours Retry-After on 429 and 503; otherwise it doubles from min up to max with
// full jitter, so many senders recovering from one outage do not retry in step.
func backoff(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil {
		if d, ok := retryAfter(resp); ok {
			return d
		}
	}
	d := lo << min(attempt, 20)
	if d <= 0 || d > hi {
		d = hi
	}
	return d/2 + rand.N(d/2+1)
}

func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return 0, false
	}
	h := resp.Header.Get("Retry-After")
	if h == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(h); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// leveled adapts slog to retryablehttp's LeveledLogger. retryablehttp logs method, URL and
// status only; no URL this client builds carries personal data.
type leveled struct{ l *slog.Logger }

func (l leveled) Error(msg string, kv ...any) { l.l.Warn("notify: "+msg, kv...) }
func (l leveled) Info(msg string, kv ...any)  { l.l.Debug("notify: "+msg, kv...) }
func (l leveled) Debug(msg string, kv ...any) { l.l.Debug("notify: "+msg, kv...) }
func (l leveled) Warn(msg string, kv ...any)  { l.l.Warn("notify: "+msg, kv...) }
