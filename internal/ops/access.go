package ops

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/nhsx/dnarisk/internal/authn"
	"github.com/nhsx/dnarisk/internal/envflag"
)

// Access says who may read an operations endpoint. /healthz is open to all; everything else
// (/metrics, /readyz's details, /status) needs a token from TokenFile or a client certificate
// from TLS.ClientCAFile when either is set. On loopback, the default, neither is needed; on
// any other address one of them is, or the command refuses to start (see Check).
type Access struct {
	// TokenFile holds the bearer tokens accepted (authn.Tokens). Browsers may send one as the
	// password of Basic authentication, so a person can open the status page.
	TokenFile string
	// TLS serves the endpoint over HTTPS; with ClientCAFile, a client certificate from those
	// CAs is enough on its own.
	TLS authn.ServerTLS
}

// Register adds the access flags, with their environment variables, to fs.
func (a *Access) Register(fs *flag.FlagSet, env envflag.Env) {
	fs.StringVar(&a.TokenFile, "metrics-token-file", "", "file of bearer tokens (one a line) that may read /metrics, /readyz and /status; required off loopback unless mutual TLS is set")
	fs.StringVar(&a.TLS.CertFile, "metrics-tls-cert-file", "", "serve the operations endpoint over HTTPS with this certificate chain (PEM)")
	fs.StringVar(&a.TLS.KeyFile, "metrics-tls-key-file", "", "private key (PEM) of --metrics-tls-cert-file")
	fs.StringVar(&a.TLS.ClientCAFile, "metrics-client-ca-file", "", "CAs (PEM) whose client certificates may read the operations endpoint (mutual TLS)")
	env["metrics-token-file"] = "METRICS_TOKEN_FILE"
	env["metrics-tls-cert-file"] = "METRICS_TLS_CERT_FILE"
	env["metrics-tls-key-file"] = "METRICS_TLS_KEY_FILE"
	env["metrics-client-ca-file"] = "METRICS_CLIENT_CA_FILE"
}

// Check applies the listener rule to the endpoint's address (addr "" is off): outside
// loopback it must have a token file or mutual TLS, unless insecure (--insecure-listeners).
// It also loads every file once, so a bad one is a settings error at start.
func (a Access) Check(addr string, insecure bool) error {
	if addr == "" {
		return nil
	}
	if !insecure && !authn.Loopback(addr) && a.TokenFile == "" && a.TLS.ClientCAFile == "" {
		return fmt.Errorf("--metrics-addr %s is reachable from other machines and nothing protects it: "+
			"set --metrics-token-file (METRICS_TOKEN_FILE) or mutual TLS (--metrics-tls-cert-file, --metrics-tls-key-file, --metrics-client-ca-file), "+
			"or bind it to 127.0.0.1; --insecure-listeners allows it, for demos only", addr)
	}
	_, _, err := a.load(nil)
	return err
}

func (a Access) load(log *slog.Logger) (*tls.Config, *authn.HTTP, error) {
	auth := &authn.HTTP{Realm: "dnarisk operations"}
	var tc *tls.Config
	if a.TLS.Enabled() || a.TLS.ClientCAFile != "" {
		var err error
		if tc, err = a.TLS.Config(tls.VerifyClientCertIfGiven, log); err != nil {
			return nil, nil, fmt.Errorf("operations endpoint TLS: %w", err)
		}
		auth.ClientCerts = a.TLS.ClientCAFile != ""
	}
	if a.TokenFile != "" {
		tk, err := authn.LoadTokens(a.TokenFile, log)
		if err != nil {
			return nil, nil, fmt.Errorf("--metrics-token-file: %w", err)
		}
		auth.Tokens = tk
	}
	if !auth.Configured() {
		auth = nil
	}
	return tc, auth, nil
}

// Listen opens the endpoint's listener (TLS when configured) and returns the authenticator
// for Config.Auth (nil when no access control is configured).
func (a Access) Listen(addr string, log *slog.Logger) (net.Listener, *authn.HTTP, error) {
	tc, auth, err := a.load(log)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("operations endpoint: %w", err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	return ln, auth, nil
}

// guard lets /healthz through and asks auth about everything else.
func guard(auth *authn.HTTP, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		if _, err := auth.Authenticate(r); err != nil {
			f := err.(*authn.Failure)
			log.Warn("operations request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", f.Reason)
			w.Header().Set("WWW-Authenticate", auth.Challenge(f))
			http.Error(w, f.Detail, f.Status)
			return
		}
		next.ServeHTTP(w, r)
	})
}
