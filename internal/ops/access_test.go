package ops_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/internal/authn"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/internal/ops"
	"github.com/nhsx/dnarisk/internal/testenv"
)

const opsToken = "0123456789abcdef0123456789abcdef-ops"

func serveAccess(t *testing.T, a ops.Access) string {
	t.Helper()
	ln, auth, err := a.Listen("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	h := ops.Handler(ops.Config{Registry: m.Registry, Auth: auth, Log: slog.New(slog.DiscardHandler),
		Checks: []ops.Check{{Name: "kafka", Func: func(context.Context) error { return nil }}}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ops.Serve(ctx, ln, h) }()
	t.Cleanup(func() { cancel(); <-done })
	scheme := "http://"
	if a.TLS.CertFile != "" {
		scheme = "https://"
	}
	return scheme + ln.Addr().String()
}

func fetch(t *testing.T, c *http.Client, url string, set func(*http.Request)) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if set != nil {
		set(req)
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, nil, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b)
}

// With a token file: /healthz stays open, everything else needs the token, as a bearer
// token or (for a browser) as the password of Basic authentication.
func TestAccessToken(t *testing.T) {
	tf := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tf, []byte(opsToken+"\n"), 0o600)
	base := serveAccess(t, ops.Access{TokenFile: tf})
	c := &http.Client{Timeout: 10 * time.Second}
	if code, _, body := fetch(t, c, base+"/healthz", nil); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	for _, p := range []string{"/metrics", "/readyz", "/status", "/status.json"} {
		code, h, _ := fetch(t, c, base+p, nil)
		if code != 401 || !strings.Contains(h.Get("WWW-Authenticate"), `Basic realm="dnarisk operations"`) {
			t.Errorf("%s without a token = %d %q", p, code, h.Get("WWW-Authenticate"))
		}
		if code, _, _ := fetch(t, c, base+p, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+opsToken+"x") }); code != 401 {
			t.Errorf("%s with a wrong token = %d", p, code)
		}
	}
	if code, _, body := fetch(t, c, base+"/metrics", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+opsToken) }); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics with the token = %d", code)
	}
	if code, _, body := fetch(t, c, base+"/readyz", func(r *http.Request) { r.SetBasicAuth("anyone", opsToken) }); code != 200 || !strings.Contains(body, `"kafka":"ok"`) {
		t.Fatalf("/readyz with Basic = %d %s", code, body)
	}
}

// With mutual TLS: a client certificate from the configured CA reads everything; without one
// only /healthz answers; one from another CA does not get through the handshake.
func TestAccessMutualTLS(t *testing.T) {
	certs, other := testenv.NewCerts(t), testenv.NewCerts(t)
	base := serveAccess(t, ops.Access{TLS: authnTLS(certs)})
	with := func(tc *tls.Config) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	if code, _, body := fetch(t, with(certs.ClientTLS(t, certs.ClientCertFile, certs.ClientKeyFile)), base+"/metrics", nil); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics with a client certificate = %d", code)
	}
	anon := with(certs.ClientTLS(t, "", ""))
	if code, _, _ := fetch(t, anon, base+"/healthz", nil); code != 200 {
		t.Fatalf("/healthz without a certificate = %d", code)
	}
	if code, _, _ := fetch(t, anon, base+"/metrics", nil); code != 401 {
		t.Fatalf("/metrics without a certificate = %d", code)
	}
	stranger := certs.ClientTLS(t, other.ClientCertFile, other.ClientKeyFile)
	if code, _, msg := fetch(t, with(stranger), base+"/healthz", nil); code != 0 {
		t.Fatalf("client certificate from an untrusted CA: %d %s", code, msg)
	}
}

// Outside loopback an unprotected endpoint is a settings error naming the fixes; loopback,
// a token, mutual TLS or --insecure-listeners pass.
func TestAccessCheck(t *testing.T) {
	certs := testenv.NewCerts(t)
	tf := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tf, []byte(opsToken), 0o600)
	for _, addr := range []string{":9464", "0.0.0.0:9464", "10.1.2.3:9464"} {
		err := ops.Access{}.Check(addr, false)
		if err == nil || !strings.Contains(err.Error(), "--metrics-token-file") || !strings.Contains(err.Error(), "--insecure-listeners") {
			t.Errorf("%s unprotected: %v", addr, err)
		}
	}
	for name, c := range map[string]struct {
		a        ops.Access
		addr     string
		insecure bool
	}{
		"loopback": {ops.Access{}, "127.0.0.1:9464", false}, "off": {ops.Access{}, "", false},
		"token": {ops.Access{TokenFile: tf}, ":9464", false}, "mtls": {ops.Access{TLS: authnTLS(certs)}, ":9464", false},
		"insecure": {ops.Access{}, ":9464", true},
	} {
		if err := c.a.Check(c.addr, c.insecure); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	os.WriteFile(tf, []byte("short"), 0o600)
	if err := (ops.Access{TokenFile: tf}).Check("127.0.0.1:1", false); err == nil {
		t.Error("a token file with a short token accepted")
	}
}

func authnTLS(c *testenv.Certs) authn.ServerTLS {
	return authn.ServerTLS{CertFile: c.ServerCertFile, KeyFile: c.ServerKeyFile, ClientCAFile: c.CAFile}
}

// The scorer reads a token-protected dispatcher's /metrics with the token from its file.
func TestRemindersFromProtectedDispatcher(t *testing.T) {
	tf := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tf, []byte(opsToken+"\n"), 0o600)
	base := serveAccess(t, ops.Access{TokenFile: tf})
	if _, err := ops.RemindersFromURL(base+"/metrics", "").RemindersToday(context.Background()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without the token: %v", err)
	}
	// The dispatcher here registers no reminder counts: past the 401, the error says so.
	_, err := ops.RemindersFromURL(base+"/metrics", tf).RemindersToday(context.Background())
	if err == nil || !strings.Contains(err.Error(), "have no dnarisk_reminders_today") {
		t.Fatalf("with the token: %v", err)
	}
}
