// Package authn authenticates the callers of our own listeners: server TLS from certificate
// files, the names in a verified client certificate, bearer tokens from a file, and OAuth2
// access tokens (JWT) checked against a JWKS file in the SMART Backend Services style. Every
// file is read again when it changes, so certificates, tokens and signing keys rotate without
// a restart. It also holds the one rule every command applies to its listeners: outside
// loopback, a listener needs one of these.
package authn

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// Failure is why a caller was refused. Reason is a short stable code for logs and metric
// labels; Detail is a sentence for the caller that never repeats a credential.
type Failure struct {
	// Status is 401 (no or bad credentials) or 403 (valid credentials without the right).
	Status int
	// Reason: no_credentials, malformed, bad_token, expired, wrong_issuer, wrong_audience,
	// wrong_scope, unknown_token, untrusted_certificate.
	Reason string
	Detail string
}

func (f *Failure) Error() string { return f.Detail }

func unauthorized(reason, format string, args ...any) *Failure {
	return &Failure{Status: http.StatusUnauthorized, Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Loopback reports whether a listen address ("host:port") is reachable only from this
// machine: a loopback IP or "localhost". An empty host (":8080") binds every interface.
// Other names count as reachable from elsewhere, whatever they resolve to today.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// reloader holds a value parsed from files and parses them again when one of them changes
// (looked at no more than once per interval). A change that does not parse keeps the
// previous value and is logged, so a half-written file never takes a listener down.
type reloader[T any] struct {
	paths    []string
	parse    func() (T, error)
	interval time.Duration
	log      *slog.Logger
	what     string

	mu      sync.Mutex
	val     T
	stamp   string
	checked time.Time
	failing string // stamp of the files that last failed to parse
}

// reloadEvery is how often files are looked at for changes.
const reloadEvery = time.Second

func newReloader[T any](what string, log *slog.Logger, parse func() (T, error), paths ...string) (*reloader[T], error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &reloader[T]{paths: paths, parse: parse, interval: reloadEvery, log: log, what: what}
	stamp, err := r.stampNow()
	if err != nil {
		return nil, err
	}
	if r.val, err = parse(); err != nil {
		return nil, err
	}
	r.stamp, r.checked = stamp, time.Now()
	return r, nil
}

// WatchFiles returns a getter of the value parse makes of the files at paths, parsed again
// when one of them changes (looked at no more than once a second, on a call). A change that
// does not parse is logged and the previous value kept; the first parse's error is returned.
func WatchFiles[T any](what string, log *slog.Logger, parse func() (T, error), paths ...string) (func() T, error) {
	r, err := newReloader(what, log, parse, paths...)
	if err != nil {
		return nil, err
	}
	return r.get, nil
}

// stampNow is each file's size and modification time: a rename over the file (how
// Kubernetes and most deploy tools replace secrets) changes it as an edit does.
func (r *reloader[T]) stampNow() (string, error) {
	var b strings.Builder
	for _, p := range r.paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%d.%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

func (r *reloader[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < r.interval {
		return r.val
	}
	r.checked = now
	stamp, err := r.stampNow()
	if err != nil || stamp == r.stamp || stamp == r.failing {
		if err != nil && r.failing != "stat" {
			r.log.Error(r.what+" unreadable; keeping the one loaded", "err", err)
			r.failing = "stat"
		}
		return r.val
	}
	v, err := r.parse()
	if err != nil {
		r.log.Error(r.what+" changed but does not load; keeping the one loaded", "err", err)
		r.failing = stamp
		return r.val
	}
	r.log.Info(r.what + " reloaded")
	r.val, r.stamp, r.failing = v, stamp, ""
	return r.val
}

// readSmall reads a credential file, refusing anything too large to be one.
func readSmall(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes: not the file expected", path, fi.Size())
	}
	return os.ReadFile(path)
}
