package fhirin

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nhsx/dnarisk/internal/authn"
	"github.com/nhsx/dnarisk/internal/testenv"
)

const audience = "https://gateway.trust.example/fhir"

type observed struct {
	mu  sync.Mutex
	got []string
}

func (o *observed) add(interaction string, status int, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, interaction+" "+http.StatusText(status)+" "+reason)
}

// The FHIR endpoint behind SMART-style bearer tokens and client certificates on real TLS:
// only a valid token with the write scope, or a client certificate from the trusted CA,
// gets an Appointment published; every refusal is a 401 or 403 with an OperationOutcome and
// a WWW-Authenticate challenge; every accepted request leaves an audit line naming the client.
func TestHTTPAuthentication(t *testing.T) {
	certs, other := testenv.NewCerts(t), testenv.NewCerts(t)
	is := testenv.NewIssuer(t, "https://auth.trust.example", "ES256")
	v, err := authn.NewVerifier(authn.JWTConfig{JWKSFile: is.JWKSFile, Issuer: is.Issuer, Audience: audience, Resource: "Appointment"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) }), nil))
	rec := &recorder{}
	obs := &observed{}
	h := NewHandler("/fhir", newMapper(t, Config{}), rec, log)
	h.Auth = &authn.HTTP{JWT: v, ClientCerts: true}
	h.Observe = obs.add
	tc, err := authn.ServerTLS{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile}.Config(tls.VerifyClientCertIfGiven, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = tc
	srv.StartTLS()
	defer srv.Close()

	post := func(cl *tls.Config, auth string) (int, http.Header, map[string]any, error) {
		req, _ := http.NewRequest("POST", srv.URL+"/fhir/Appointment", strings.NewReader(booked))
		req.Header.Set("Content-Type", "application/fhir+json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cl}}).Do(req)
		if err != nil {
			return 0, nil, nil, err
		}
		defer res.Body.Close()
		var oo map[string]any
		if err := json.NewDecoder(res.Body).Decode(&oo); err != nil {
			t.Fatalf("response is not JSON: %v", err)
		}
		return res.StatusCode, res.Header, oo, nil
	}
	anon := certs.ClientTLS(t, "", "")
	claims := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{"aud": audience, "client_id": "rhapsody-prod", "scope": "system/Appointment.write"}
		for k, x := range extra {
			c[k] = x
		}
		return c
	}
	now := time.Now()
	for name, c := range map[string]struct {
		auth   string
		status int
		code   string
	}{
		"unauthenticated": {"", 401, "login"},
		"wrong signature": {"Bearer " + is.ForgedToken(t, claims(nil)), 401, "login"},
		"expired":         {"Bearer " + is.Token(t, claims(jwt.MapClaims{"exp": now.Add(-time.Hour).Unix(), "iat": now.Add(-2 * time.Hour).Unix()})), 401, "login"},
		"wrong audience":  {"Bearer " + is.Token(t, claims(jwt.MapClaims{"aud": "https://elsewhere.example/fhir"})), 401, "login"},
		"wrong scope":     {"Bearer " + is.Token(t, claims(jwt.MapClaims{"scope": "system/Appointment.read"})), 403, "forbidden"},
		"not a bearer":    {"Digest username=x", 401, "login"},
	} {
		status, hdr, oo, err := post(anon, c.auth)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		iss, _ := oo["issue"].([]any)
		if status != c.status || oo["resourceType"] != "OperationOutcome" || len(iss) != 1 || iss[0].(map[string]any)["code"] != c.code ||
			!strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: %d %v %q", name, status, oo, hdr.Get("WWW-Authenticate"))
		}
	}
	if len(rec.changes) != 0 {
		t.Fatalf("%d changes published for refused requests", len(rec.changes))
	}
	if _, _, _, err := post(certs.ClientTLS(t, other.ClientCertFile, other.ClientKeyFile), ""); err == nil {
		t.Fatal("client certificate from an untrusted CA accepted")
	}

	good := is.Token(t, claims(nil))
	if status, _, oo, err := post(anon, "Bearer "+good); err != nil || status != http.StatusCreated {
		t.Fatalf("valid token: %d %v %v", status, oo, err)
	}
	engine, key := certs.ClientCert(t, "mirth.rxx.nhs.uk")
	if status, _, oo, err := post(certs.ClientTLS(t, engine, key), ""); err != nil || status != http.StatusCreated {
		t.Fatalf("trusted client certificate: %d %v %v", status, oo, err)
	}
	if len(rec.changes) != 2 {
		t.Fatalf("%d changes published, want 2", len(rec.changes))
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	var audits []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var l map[string]any
		json.Unmarshal([]byte(line), &l)
		if l["msg"] == "fhir request" || l["msg"] == "fhir appointment accepted" {
			audits = append(audits, l["msg"].(string)+" "+l["client"].(string))
		}
		if strings.Contains(line, good) {
			t.Fatal("a log line quotes the access token")
		}
	}
	want := []string{"fhir appointment accepted jwt:rhapsody-prod", "fhir request jwt:rhapsody-prod",
		"fhir appointment accepted cert:mirth.rxx.nhs.uk", "fhir request cert:mirth.rxx.nhs.uk"}
	if strings.Join(audits, "; ") != strings.Join(want, "; ") {
		t.Fatalf("audit lines %q, want %q", audits, want)
	}
	if strings.Count(out, `"msg":"fhir request refused: not authenticated"`) != 6 || !strings.Contains(out, `"reason":"wrong_scope"`) {
		t.Fatalf("refusals not logged with reasons:\n%s", out)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	seen := strings.Join(obs.got, "; ")
	for _, w := range []string{"create Unauthorized expired", "create Forbidden wrong_scope", "create Unauthorized bad_token", "create Created "} {
		if !strings.Contains(seen, w) {
			t.Errorf("observer missed %q in %s", w, seen)
		}
	}
}
