package authn

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nhsx/dnarisk/internal/testenv"
)

func reason(err error) string {
	var f *Failure
	if errors.As(err, &f) {
		return f.Reason
	}
	return ""
}

func status(err error) int {
	var f *Failure
	if errors.As(err, &f) {
		return f.Status
	}
	return 0
}

func TestParseAuthorization(t *testing.T) {
	for _, c := range []struct {
		in, scheme, token, user, reason string
	}{
		{"Bearer abc.def-ghi_jkl~mno+p/q==", "Bearer", "abc.def-ghi_jkl~mno+p/q==", "", ""},
		{"bearer   tok", "Bearer", "tok", "", ""},
		{"BASIC dXNlcjpwYXNz", "Basic", "pass", "user", ""},
		{"Basic OnBhc3M=", "Basic", "pass", "", ""},
		{"", "", "", "", "no_credentials"},
		{"Bearer", "", "", "", "malformed"},
		{"Bearer ", "", "", "", "malformed"},
		{"Bearer ===", "", "", "", "malformed"},
		{"Bearer a b", "", "", "", "malformed"},
		{"Bearer a=b", "", "", "", "malformed"},
		{"Bearer tok\x00", "", "", "", "malformed"},
		{"Token abc", "", "", "", "malformed"},
		{"Basic !!!", "", "", "", "malformed"},
		{"Basic dXNlcg==", "", "", "", "malformed"},         // "user": no colon
		{"Basic dXNlcjo=", "", "", "", "malformed"},         // "user:": no password
		{"Basic dXNlcjpwYXNzCg==", "", "", "", "malformed"}, // password ends in a newline
		{"Bearer " + strings.Repeat("a", maxAuthorization), "", "", "", "malformed"},
	} {
		cr, err := ParseAuthorization(c.in)
		if reason(err) != c.reason || cr.Scheme != c.scheme || cr.Token != c.token || cr.User != c.user {
			t.Errorf("%.40q: %+v %v, want %s %q %q reason %q", c.in, cr, err, c.scheme, c.token, c.user, c.reason)
		}
		if err != nil && status(err) != 401 {
			t.Errorf("%.40q: status %d", c.in, status(err))
		}
	}
}

// parseMessages are all ParseAuthorization says: fixed sentences, so none can carry a
// credential.
var parseMessages = map[string]bool{
	"no credentials: send Authorization: Bearer <access token>":           true,
	"Authorization header longer than 16384 bytes":                        true,
	"Authorization header has a scheme but no credentials":                true,
	"bearer token is empty or holds characters a token cannot (RFC 6750)": true,
	"Basic credentials are not base64 of UTF-8 user:password":             true,
	"Basic credentials are not user:password":                             true,
	"Authorization scheme is neither Bearer nor Basic":                    true,
}

// FuzzParseAuthorization: any header value gives either credentials that obey the grammar
// or a 401 Failure, never a panic, and no error ever quotes what the caller sent.
func FuzzParseAuthorization(f *testing.F) {
	for _, s := range []string{"Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "Basic dXNlcjpwYXNz", "bearer  x==",
		"Bearer", "Basic", "Basic =", "Negotiate YII=", "Bearer a\tb", "Basic " + "OnBhc3M=", "Bearer \xff\xfe", "BEARER ~+/-._"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		cr, err := ParseAuthorization(h)
		if err != nil {
			var fl *Failure
			if !errors.As(err, &fl) || fl.Status != 401 || fl.Reason == "" {
				t.Fatalf("%q: error %#v is not a 401 Failure", h, err)
			}
			if !parseMessages[err.Error()] {
				t.Fatalf("%q: error %q is not one of the fixed messages (it may quote the header)", h, err)
			}
			return
		}
		switch cr.Scheme {
		case "Bearer":
			if !isToken68(cr.Token) || !strings.HasSuffix(h, cr.Token) || cr.User != "" {
				t.Fatalf("%q: bearer %+v", h, cr)
			}
		case "Basic":
			if cr.Token == "" || hasControl(cr.Token) || hasControl(cr.User) {
				t.Fatalf("%q: basic %+v", h, cr)
			}
		default:
			t.Fatalf("%q: scheme %q", h, cr.Scheme)
		}
	})
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9464": true, "127.0.0.2:1": true, "[::1]:80": true, "localhost:8080": true, "LOCALHOST:1": true,
		":9464": false, "0.0.0.0:9464": false, "[::]:80": false, "10.0.0.5:80": false, "gateway.trust.nhs.uk:443": false,
		"9464": false, "": false,
	} {
		if got := Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v", addr, got)
		}
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

const tokA, tokB = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa0001", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb0002"

// Tokens rotate without a restart: with old and new in the file both work; once the old
// one is removed it stops working within the reload interval.
func TestTokensRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, path, "# operations token\n"+tokA+"\n")
	tk, err := LoadTokens(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	tk.r.interval = 0
	if id, ok := tk.Match(tokA); !ok || id != TokenID(tokA) || strings.Contains(id, "aaaa") {
		t.Fatalf("Match(A) = %q %v", id, ok)
	}
	if _, ok := tk.Match(tokB); ok {
		t.Fatal("unknown token matched")
	}
	writeFile(t, path, tokA+"\n"+tokB+"\n")
	testenv.Eventually(t, 5*time.Second, func() bool { _, ok := tk.Match(tokB); return ok }, "new token accepted")
	if _, ok := tk.Match(tokA); !ok {
		t.Fatal("old token refused during the rotation")
	}
	writeFile(t, path, tokB+"\n")
	testenv.Eventually(t, 5*time.Second, func() bool { _, ok := tk.Match(tokA); return !ok }, "old token refused")
	// A broken edit keeps the tokens in force.
	writeFile(t, path, "short\n")
	time.Sleep(20 * time.Millisecond)
	if _, ok := tk.Match(tokB); !ok {
		t.Fatal("a bad edit of the token file dropped the valid token")
	}
	if got, err := ReadToken(path); err != nil || got != "short" {
		t.Fatalf("ReadToken = %q %v", got, err)
	}
	for _, bad := range []string{"", "# only a comment\n", "short\n", tokA + " " + tokB + "\n"} {
		writeFile(t, path, bad)
		if _, err := LoadTokens(path, nil); err == nil {
			t.Errorf("token file %q accepted", bad)
		}
	}
}

func TestGrantsWrite(t *testing.T) {
	for scope, want := range map[string]bool{
		"system/Appointment.write": true, "system/Appointment.*": true, "system/*.write": true, "system/*.*": true,
		"system/Appointment.cu": true, "system/Appointment.cruds": true, "system/Appointment.cud": true, "system/*.cu": true,
		"system/Appointment.read": false, "system/Appointment.rs": false, "system/Appointment.c": false,
		"system/Appointment.uc": false, "system/Appointment.ccu": false, "system/Appointment.cu?status=booked": false,
		"user/Appointment.write": false, "patient/*.*": false, "system/Patient.write": false, "system/Appointment": false,
		"system/Appointment.": false, "Appointment.write": false, "": false, "system/Appointment.writex": false,
	} {
		if got := GrantsWrite(scope, "Appointment"); got != want {
			t.Errorf("GrantsWrite(%q) = %v", scope, got)
		}
	}
}

const aud = "https://gateway.trust.example/fhir"

func verifier(t *testing.T, is *testenv.Issuer) *Verifier {
	t.Helper()
	v, err := NewVerifier(JWTConfig{JWKSFile: is.JWKSFile, Issuer: is.Issuer, Audience: aud, Resource: "Appointment"})
	if err != nil {
		t.Fatal(err)
	}
	v.keys.interval = 0
	return v
}

func good(extra jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"aud": aud, "client_id": "rhapsody-prod", "sub": "svc", "scope": "launch system/Appointment.write"}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// Every token a SMART backend service might present, checked against a JWKS file: only
// a token signed by a listed key, from the issuer, for us, unexpired and with the write
// scope gets in; the rest get 401 (or 403 for the scope) with a reason.
func TestVerifier(t *testing.T) {
	for _, alg := range []string{"ES256", "RS256"} {
		t.Run(alg, func(t *testing.T) {
			is := testenv.NewIssuer(t, "https://auth.trust.example", alg)
			v := verifier(t, is)
			c, err := v.Verify(is.Token(t, good(nil)))
			if err != nil || c.Client != "rhapsody-prod" || len(c.Scopes) != 2 || c.Expiry.IsZero() {
				t.Fatalf("good token: %+v %v", c, err)
			}
			if c, err := v.Verify(is.Token(t, good(jwt.MapClaims{"client_id": nil, "azp": "mirth", "scope": []string{"system/Appointment.cu"}}))); err != nil || c.Client != "mirth" {
				t.Fatalf("azp and a scope list: %+v %v", c, err)
			}
			stranger := testenv.NewIssuer(t, is.Issuer, alg)
			now := time.Now()
			for name, tc := range map[string]struct {
				token  string
				status int
				reason string
			}{
				"wrong signature":       {is.ForgedToken(t, good(nil)), 401, "bad_token"},
				"unknown key":           {stranger.Token(t, good(nil)), 401, "bad_token"},
				"expired":               {is.Token(t, good(jwt.MapClaims{"exp": now.Add(-time.Minute).Unix(), "iat": now.Add(-10 * time.Minute).Unix()})), 401, "expired"},
				"no exp":                {is.Token(t, good(jwt.MapClaims{"exp": nil})), 401, "bad_token"},
				"not yet valid":         {is.Token(t, good(jwt.MapClaims{"nbf": now.Add(10 * time.Minute).Unix()})), 401, "bad_token"},
				"issued in the future":  {is.Token(t, good(jwt.MapClaims{"iat": now.Add(10 * time.Minute).Unix()})), 401, "bad_token"},
				"wrong audience":        {is.Token(t, good(jwt.MapClaims{"aud": "https://other.example/fhir"})), 401, "wrong_audience"},
				"no audience":           {is.Token(t, good(jwt.MapClaims{"aud": nil})), 401, "bad_token"},
				"wrong issuer":          {is.Token(t, good(jwt.MapClaims{"iss": "https://evil.example"})), 401, "wrong_issuer"},
				"read scope only":       {is.Token(t, good(jwt.MapClaims{"scope": "system/Appointment.read"})), 403, "wrong_scope"},
				"patient scope":         {is.Token(t, good(jwt.MapClaims{"scope": "patient/Appointment.write"})), 403, "wrong_scope"},
				"no scope":              {is.Token(t, good(jwt.MapClaims{"scope": nil})), 403, "wrong_scope"},
				"no client":             {is.Token(t, good(jwt.MapClaims{"client_id": nil, "sub": nil})), 401, "bad_token"},
				"garbage":               {"not.a.jwt", 401, "bad_token"},
				"alg none":              {noneToken(t, good(nil)), 401, "bad_token"},
				"HS256 with public key": {hsToken(t, is, good(nil)), 401, "bad_token"},
			} {
				_, err := v.Verify(tc.token)
				if status(err) != tc.status || reason(err) != tc.reason {
					t.Errorf("%s: %v (status %d reason %q), want %d %s", name, err, status(err), reason(err), tc.status, tc.reason)
				}
				if err != nil && strings.Contains(err.Error(), tc.token) {
					t.Errorf("%s: error quotes the token", name)
				}
			}
		})
	}
}

func noneToken(t *testing.T, c jwt.MapClaims) string {
	c["iss"], c["exp"] = "https://auth.trust.example", time.Now().Add(time.Minute).Unix()
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hsToken signs with HMAC keyed by the JWKS file's bytes: the algorithm-confusion attack.
func hsToken(t *testing.T, is *testenv.Issuer, c jwt.MapClaims) string {
	b, _ := os.ReadFile(is.JWKSFile)
	c["iss"], c["exp"] = is.Issuer, time.Now().Add(time.Minute).Unix()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Signing keys rotate without a restart: the new key is added to the JWKS, then the old one
// removed, and tokens follow within the reload interval.
func TestVerifierKeyRotation(t *testing.T) {
	old := testenv.NewIssuer(t, "https://auth.trust.example", "ES256")
	v := verifier(t, old)
	next := testenv.NewIssuer(t, old.Issuer, "RS256")
	if _, err := v.Verify(next.Token(t, good(nil))); err == nil {
		t.Fatal("token of a key not yet published accepted")
	}
	old.WriteJWKS(t, old.JWKSFile, next)
	testenv.Eventually(t, 5*time.Second, func() bool { _, err := v.Verify(next.Token(t, good(nil))); return err == nil }, "new key accepted")
	next.WriteJWKS(t, old.JWKSFile)
	testenv.Eventually(t, 5*time.Second, func() bool { _, err := v.Verify(old.Token(t, good(nil))); return err != nil }, "old key retired")

	for name, body := range map[string]string{"empty": `{"keys":[]}`, "not json": `keys`,
		"private": `{"keys":[{"kty":"EC","crv":"P-256","x":"a","y":"b","d":"c"}]}`} {
		p := filepath.Join(t.TempDir(), "jwks.json")
		writeFile(t, p, body)
		if _, err := NewVerifier(JWTConfig{JWKSFile: p, Issuer: "i", Audience: "a", Resource: "Appointment"}); err == nil {
			t.Errorf("JWKS %s accepted", name)
		}
	}
	if _, err := NewVerifier(JWTConfig{JWKSFile: old.JWKSFile, Audience: "a", Resource: "Appointment"}); err == nil || !strings.Contains(err.Error(), "issuer") {
		t.Errorf("no issuer: %v", err)
	}
}

// serveTLS runs h behind the TLS configuration s makes and returns its URL.
func serveTLS(t *testing.T, s ServerTLS, h http.Handler) (string, *tls.Config) {
	t.Helper()
	tc, err := s.Config(tls.VerifyClientCertIfGiven, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = tc
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, tc
}

func client(tc *tls.Config) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
}

// A client certificate from the configured CA authenticates; one from another CA fails the
// handshake; none, or a bearer token that is wrong, is a 401.
func TestHTTPWithClientCertificates(t *testing.T) {
	certs, other := testenv.NewCerts(t), testenv.NewCerts(t)
	tokPath := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, tokPath, tokA)
	tk, err := LoadTokens(tokPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &HTTP{ClientCerts: true, Tokens: tk}
	url, _ := serveTLS(t, ServerTLS{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, err := a.Authenticate(r)
			if err != nil {
				http.Error(w, reason(err), status(err))
				return
			}
			io.WriteString(w, string(id))
		}))
	get := func(tc *tls.Config, auth string) (int, string, error) {
		req, _ := http.NewRequest("GET", url, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := client(tc).Do(req)
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, strings.TrimSpace(string(b)), nil
	}
	cn, key := certs.ClientCert(t, "engine.trust.example", "engine-2.trust.example")
	if code, body, err := get(certs.ClientTLS(t, cn, key), ""); err != nil || code != 200 || body != "cert:engine.trust.example" {
		t.Fatalf("trusted client certificate: %d %q %v", code, body, err)
	}
	if code, body, err := get(certs.ClientTLS(t, "", ""), ""); err != nil || code != 401 || body != "no_credentials" {
		t.Fatalf("no certificate: %d %q %v", code, body, err)
	}
	if code, body, err := get(certs.ClientTLS(t, "", ""), "Bearer "+tokA); err != nil || code != 200 || body != "token:"+TokenID(tokA) {
		t.Fatalf("token without certificate: %d %q %v", code, body, err)
	}
	if code, body, err := get(certs.ClientTLS(t, cn, key), "Bearer "+tokB); err != nil || code != 401 || body != "unknown_token" {
		t.Fatalf("good certificate, bad token: %d %q %v", code, body, err)
	}
	// The other CA's client certificate: the server refuses the handshake.
	if _, _, err := get(certs.ClientTLS(t, other.ClientCertFile, other.ClientKeyFile), ""); err == nil {
		t.Fatal("client certificate from an untrusted CA accepted")
	}
	if _, _, err := get(&tls.Config{RootCAs: other.Pool}, ""); err == nil {
		t.Fatal("client trusting another CA accepted the server certificate")
	}
}

// The server certificate rotates without a restart: new connections get the new one.
func TestServerCertificateReload(t *testing.T) {
	first, second := testenv.NewCerts(t), testenv.NewCerts(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cp := func(from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, to, string(b))
	}
	cp(first.ServerCertFile, cert)
	cp(first.ServerKeyFile, key)
	tc, err := ServerTLS{CertFile: cert, KeyFile: key}.Config(tls.NoClientCert, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	trusts := func(pool *tls.Config) bool {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), pool)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	if !trusts(first.ClientTLS(t, "", "")) || trusts(second.ClientTLS(t, "", "")) {
		t.Fatal("first certificate not served")
	}
	cp(second.ServerKeyFile, key) // key first: a mismatched pair for a moment, the old one stays
	time.Sleep(1100 * time.Millisecond)
	if !trusts(first.ClientTLS(t, "", "")) {
		t.Fatal("a half-replaced pair took the certificate down")
	}
	cp(second.ServerCertFile, cert)
	testenv.Eventually(t, 5*time.Second, func() bool { return trusts(second.ClientTLS(t, "", "")) }, "new certificate served")

	if _, err := (ServerTLS{CertFile: cert}).Config(tls.NoClientCert, nil); err == nil {
		t.Fatal("certificate without a key accepted")
	}
	if _, err := (ServerTLS{ClientCAFile: first.CAFile}).Config(tls.NoClientCert, nil); err == nil {
		t.Fatal("client CA without a server certificate accepted")
	}
	if _, err := (ServerTLS{CertFile: cert, KeyFile: key, ClientCAFile: key}).Config(tls.NoClientCert, nil); err == nil {
		t.Fatal("a key as the client CA file accepted")
	}
}

func TestChallenge(t *testing.T) {
	a := &HTTP{JWT: &Verifier{}}
	for _, c := range []struct {
		f    *Failure
		want string
	}{
		{&Failure{Status: 401, Reason: "no_credentials"}, "Bearer"},
		{&Failure{Status: 401, Reason: "expired", Detail: `access token refused: "expired"`}, `Bearer error="invalid_token", error_description="access token refused: expired"`},
		{&Failure{Status: 403, Reason: "wrong_scope", Detail: "x"}, `Bearer error="insufficient_scope", error_description="x"`},
		{&Failure{Status: 401, Reason: "malformed", Detail: "y"}, `Bearer error="invalid_request", error_description="y"`},
	} {
		if got := a.Challenge(c.f); got != c.want {
			t.Errorf("%+v: %s", c.f, got)
		}
	}
	b := &HTTP{Tokens: &Tokens{}, Realm: "dnarisk"}
	if got := b.Challenge(&Failure{Status: 401}); got != `Basic realm="dnarisk", Bearer realm="dnarisk"` {
		t.Errorf("browser challenge: %s", got)
	}
}
