package notifystub_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
)

const (
	key      = "stub_test-26785a09-ab16-4eb0-8407-a37497a57506-3d844edf-8d35-48ac-975b-e847b4f122b0"
	template = "f33517ff-2a88-4f6e-b855-c550268ce08a"
)

// The stub refuses what Notify refuses, in Notify's error shape.
func TestStubChecksLikeNotify(t *testing.T) {
	k, _ := notify.ParseKey(key)
	stub, err := notifystub.New(notifystub.Config{Key: k, Templates: map[string][]string{template: {"appointment_date"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	good, _ := k.Token(time.Now())
	sign := func(claims jwt.MapClaims, secret string, method jwt.SigningMethod) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	body := `{"phone_number":"07700 900001","template_id":"` + template + `","personalisation":{"appointment_date":"Monday"},"reference":"r1"}`
	for _, tc := range []struct {
		name, auth, body string
		status           int
		kind, msg        string
	}{
		{"ok", "Bearer " + good, body, 201, "", ""},
		{"no token", "", body, 401, "AuthError", "authentication token must be provided"},
		{"basic auth", "Basic abc", body, 401, "AuthError", "bearer scheme"},
		{"wrong secret", "Bearer " + sign(jwt.MapClaims{"iss": k.ServiceID, "iat": time.Now().Unix()}, "nope", jwt.SigningMethodHS256), body, 403, "AuthError", "Invalid token"},
		{"wrong service", "Bearer " + sign(jwt.MapClaims{"iss": "11111111-2222-4333-8444-555555555555", "iat": time.Now().Unix()}, string(k.Secret()), jwt.SigningMethodHS256), body, 403, "AuthError", "service not found"},
		{"stale iat", "Bearer " + sign(jwt.MapClaims{"iss": k.ServiceID, "iat": time.Now().Add(-time.Minute).Unix()}, string(k.Secret()), jwt.SigningMethodHS256), body, 403, "AuthError", "within 30 seconds"},
		{"HS512", "Bearer " + sign(jwt.MapClaims{"iss": k.ServiceID, "iat": time.Now().Unix()}, string(k.Secret()), jwt.SigningMethodHS512), body, 403, "AuthError", "Invalid token"},
		{"landline", "Bearer " + good, strings.Replace(body, "07700 900001", "01632 960001", 1), 400, "ValidationError", "Not a UK mobile number"},
		{"no phone", "Bearer " + good, `{"template_id":"` + template + `"}`, 400, "ValidationError", "phone_number is a required property"},
		{"unknown template", "Bearer " + good, strings.Replace(body, template, "0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f", 1), 400, "BadRequestError", "Template not found"},
		{"missing placeholder", "Bearer " + good, `{"phone_number":"07700900001","template_id":"` + template + `"}`, 400, "BadRequestError", "Missing personalisation: appointment_date"},
		{"unknown field", "Bearer " + good, strings.Replace(body, `"reference"`, `"clinic":"x","reference"`, 1), 400, "ValidationError", "clinic was unexpected"},
		{"not json", "Bearer " + good, `{`, 400, "BadRequestError", "Invalid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v2/notifications/sms", strings.NewReader(tc.body))
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d %s, want %d", resp.StatusCode, b, tc.status)
			}
			if tc.status == 201 {
				var n struct {
					ID, Reference string
				}
				if err := json.Unmarshal(b, &n); err != nil || n.ID == "" || n.Reference != "r1" {
					t.Fatalf("%s %v", b, err)
				}
				return
			}
			var e notify.APIError
			if err := json.Unmarshal(b, &e); err != nil || e.StatusCode != tc.status || len(e.Errors) == 0 ||
				e.Errors[0].Error != tc.kind || !strings.Contains(e.Errors[0].Message, tc.msg) {
				t.Fatalf("body %s, want %d %s %q", b, tc.status, tc.kind, tc.msg)
			}
		})
	}
	if n := len(stub.Messages()); n != 1 {
		t.Fatalf("%d messages recorded, want only the good one", n)
	}
}

// client calls the stub with a good token, as a caller that did not write the stub would.
type client struct {
	t   *testing.T
	url string
	key notify.Key
}

func newServer(t *testing.T, pageSize int) (*notifystub.Stub, *client) {
	t.Helper()
	k, _ := notify.ParseKey(key)
	stub, err := notifystub.New(notifystub.Config{Key: k, PageSize: pageSize,
		Templates: map[string][]string{template: {"appointment_date", "appointment_time"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(stub)
	t.Cleanup(srv.Close)
	return stub, &client{t: t, url: srv.URL, key: k}
}

// do sends one request to path (or to an absolute URL) and decodes the JSON answer.
func (c *client) do(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	u := path
	if !strings.HasPrefix(u, "http") {
		u = c.url + path
	}
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	tok, _ := c.key.Token(time.Now())
	req.Header.Set("Authorization", "bearer "+tok) // Notify takes the scheme in any case
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		c.t.Fatalf("%s %s: HTTP %d, body not JSON: %v", method, path, resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

func (c *client) send(phone, ref string) map[string]any {
	c.t.Helper()
	body := `{"phone_number":"` + phone + `","template_id":"` + template + `","personalisation":{"appointment_date":"Monday 6 May","appointment_time":"09:30"}`
	if ref != "" {
		body += `,"reference":"` + ref + `"`
	}
	status, out := c.do(http.MethodPost, "/v2/notifications/sms", body+"}")
	if status != http.StatusCreated {
		c.t.Fatalf("send: HTTP %d %v", status, out)
	}
	return out
}

// firstError returns the first {"error", "message"} of a Notify error body, after checking
// the body's status_code matches the HTTP status.
func firstError(t *testing.T, status int, body map[string]any) (string, string) {
	t.Helper()
	errs, _ := body["errors"].([]any)
	if body["status_code"] != float64(status) || len(errs) == 0 {
		t.Fatalf("HTTP %d with body %v: not Notify's error shape", status, body)
	}
	e := errs[0].(map[string]any)
	return e["error"].(string), e["message"].(string)
}

// The uri a send returns resolves to the notification, in the documented shape; unknown
// and malformed ids get Notify's 404 and 400.
func TestGetNotificationByID(t *testing.T) {
	_, c := newServer(t, 0)
	sent := c.send("07700 900002", "ref-a")
	if sent["reference"] != "ref-a" || sent["content"].(map[string]any)["body"] != "Monday 6 May 09:30" {
		t.Fatalf("send answer %v", sent)
	}
	status, got := c.do(http.MethodGet, sent["uri"].(string), "")
	if status != http.StatusOK {
		t.Fatalf("GET uri: HTTP %d %v", status, got)
	}
	for _, k := range []string{"id", "reference", "email_address", "phone_number", "line_1", "line_2", "line_3",
		"line_4", "line_5", "line_6", "postcode", "type", "status", "template", "body", "subject", "created_at",
		"sent_at", "completed_at", "created_by_name", "scheduled_for", "is_cost_data_ready", "cost_details"} {
		if _, ok := got[k]; !ok {
			t.Errorf("notification has no %q", k)
		}
	}
	if got["id"] != sent["id"] || got["type"] != "sms" || got["status"] != "permanent-failure" ||
		got["phone_number"] != "07700 900002" || got["reference"] != "ref-a" || got["email_address"] != nil {
		t.Fatalf("notification %v", got)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000000Z", got["created_at"].(string)); err != nil {
		t.Fatalf("created_at: %v", err)
	}
	if tpl := got["template"].(map[string]any); tpl["id"] != template || tpl["version"] != float64(1) || tpl["uri"] == "" {
		t.Fatalf("template %v", tpl)
	}
	noRef := c.send("07700900001", "")
	if _, got := c.do(http.MethodGet, noRef["uri"].(string), ""); got["reference"] != nil || got["status"] != "delivered" {
		t.Fatalf("no reference: %v", got)
	}

	status, body := c.do(http.MethodGet, "/v2/notifications/0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f", "")
	if kind, msg := firstError(t, status, body); status != 404 || kind != "NoResultFound" || msg != "No result found" {
		t.Fatalf("unknown id: %d %s %s", status, kind, msg)
	}
	status, body = c.do(http.MethodGet, "/v2/notifications/not-a-uuid", "")
	if kind, msg := firstError(t, status, body); status != 400 || kind != "ValidationError" || !strings.Contains(msg, "is not a valid UUID") {
		t.Fatalf("bad id: %d %s %s", status, kind, msg)
	}
}

// Paging: newest first, links.next on every non-empty page with older_than first, and
// following it visits every match once; filters combine.
func TestListPagesAndFilters(t *testing.T) {
	stub, c := newServer(t, 3)
	for i := range 8 {
		phone := "07700900001"
		if i%3 == 0 {
			phone = "07700900003" // temporary-failure
		}
		c.send(phone, []string{"odd", "even"}[i%2])
	}
	all := stub.Messages()

	walk := func(path string) []string {
		var ids []string
		for pages := 0; path != ""; pages++ {
			if pages > 20 {
				t.Fatal("links.next never ends")
			}
			status, out := c.do(http.MethodGet, path, "")
			if status != 200 {
				t.Fatalf("GET %s: %d %v", path, status, out)
			}
			links := out["links"].(map[string]any)
			if !strings.HasPrefix(links["current"].(string), "http://") {
				t.Fatalf("links.current %v is not absolute", links["current"])
			}
			page := out["notifications"].([]any)
			next, _ := links["next"].(string)
			if (len(page) > 0) != (next != "") {
				t.Fatalf("page of %d with links.next %q", len(page), next)
			}
			if len(page) > 3 {
				t.Fatalf("page of %d, page size 3", len(page))
			}
			for _, n := range page {
				ids = append(ids, n.(map[string]any)["id"].(string))
			}
			if next != "" {
				if !strings.Contains(next, "/v2/notifications?older_than="+ids[len(ids)-1]) {
					t.Fatalf("links.next %s does not start its query with older_than=<last id>", next)
				}
			}
			path = next
		}
		return ids
	}
	want := func(keep func(int, notifystub.Message) bool) []string {
		var ids []string
		for i := len(all) - 1; i >= 0; i-- {
			if keep(i, all[i]) {
				ids = append(ids, all[i].ID)
			}
		}
		return ids
	}
	for _, tc := range []struct {
		query string
		keep  func(int, notifystub.Message) bool
	}{
		{"", func(int, notifystub.Message) bool { return true }},
		{"?template_type=sms", func(int, notifystub.Message) bool { return true }},
		{"?template_type=email", func(int, notifystub.Message) bool { return false }},
		{"?reference=even", func(_ int, m notifystub.Message) bool { return m.Reference == "even" }},
		{"?status=failed", func(_ int, m notifystub.Message) bool { return m.Status == "temporary-failure" }},
		{"?status=delivered&status=permanent-failure&reference=odd", func(_ int, m notifystub.Message) bool {
			return m.Status == "delivered" && m.Reference == "odd"
		}},
		{"?older_than=" + all[5].ID, func(i int, _ notifystub.Message) bool { return i < 5 }},
		{"?older_than=0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f", func(int, notifystub.Message) bool { return false }},
	} {
		if got, w := walk("/v2/notifications"+tc.query), want(tc.keep); !slices.Equal(got, w) {
			t.Errorf("%q: got %v, want %v", tc.query, got, w)
		}
	}

	for _, tc := range []struct{ query, msg string }{
		{"?status=elephant", "status elephant is not one of [cancelled, created"},
		{"?template_type=Apple", "template_type Apple is not one of [sms, email, letter]"},
		{"?older_than=nope", "older_than is not a valid UUID"},
		{"?colour=red", "Additional properties are not allowed (colour was unexpected)"},
	} {
		status, body := c.do(http.MethodGet, "/v2/notifications"+tc.query, "")
		if kind, msg := firstError(t, status, body); status != 400 || kind != "ValidationError" || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %d %s %q, want 400 ValidationError %q", tc.query, status, kind, msg, tc.msg)
		}
	}
}

// Reading needs the same token as sending.
func TestReadsAreAuthenticated(t *testing.T) {
	_, c := newServer(t, 0)
	sent := c.send("07700900001", "r")
	for _, u := range []string{c.url + "/v2/notifications", sent["uri"].(string)} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if kind, _ := firstError(t, resp.StatusCode, body); resp.StatusCode != 401 || kind != "AuthError" {
			t.Fatalf("GET %s without a token: %d %s", u, resp.StatusCode, kind)
		}
	}
}
