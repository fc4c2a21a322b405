package notifystub_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
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
