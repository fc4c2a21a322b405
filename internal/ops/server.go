// Package ops is the HTTP face of a running process for the people who look after it:
// /metrics for Prometheus, /healthz (the process answers) and /readyz (Kafka and Redis
// reachable, model loaded) for orchestrators, and /status, a page an operator or clinic
// manager can read, guarded off loopback by a token or mutual TLS (Access). It serves what
// package metrics counts; it decides nothing.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nhsx/dnarisk/internal/authn"
)

// Check is one readiness condition. Func must honour ctx's deadline.
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// Config says what a process serves.
type Config struct {
	// Registry is served on /metrics. Required.
	Registry *prometheus.Registry
	// Checks must all pass for /readyz to answer 200.
	Checks []Check
	// CheckTimeout bounds each check. Default 2s.
	CheckTimeout time.Duration
	// Status, when not nil, is served on /status (HTML) and /status.json.
	Status *Status
	// Gateway, when not nil and Status is nil, is served there instead.
	Gateway *GatewayStatus
	// Log records failed readiness checks (once per change). Default slog.Default().
	Log *slog.Logger
	// Auth, when set, guards every path but /healthz (Access.Listen returns it).
	Auth *authn.HTTP
	// Extra are further GET paths of the process (pattern → handler), behind the same Auth.
	Extra map[string]http.Handler
}

// Handler returns the process's operations endpoints.
func Handler(c Config) http.Handler {
	if c.CheckTimeout <= 0 {
		c.CheckTimeout = 2 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.Registry, promhttp.HandlerOpts{Registry: c.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	rc := &readiness{checks: c.Checks, timeout: c.CheckTimeout, log: c.Log, failing: map[string]bool{}}
	mux.Handle("GET /readyz", rc)
	if c.Status != nil {
		mux.Handle("GET /status", c.Status)
		mux.HandleFunc("GET /status.json", c.Status.serveJSON)
		mux.Handle("GET /{$}", http.RedirectHandler("/status", http.StatusFound))
	} else if c.Gateway != nil {
		mux.Handle("GET /status", c.Gateway)
		mux.HandleFunc("GET /status.json", c.Gateway.ServeJSON)
		mux.Handle("GET /{$}", http.RedirectHandler("/status", http.StatusFound))
	}
	for pattern, h := range c.Extra {
		mux.Handle("GET "+pattern, h)
	}
	if c.Auth != nil {
		return guard(c.Auth, c.Log, mux)
	}
	return mux
}

type readiness struct {
	checks  []Check
	timeout time.Duration
	log     *slog.Logger
	mu      sync.Mutex
	failing map[string]bool
}

// ServeHTTP runs every check at once and answers 200 if all pass, 503 otherwise, with a JSON
// body naming each check's result.
func (rc *readiness) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	results := make(map[string]string, len(rc.checks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range rc.checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), rc.timeout)
			defer cancel()
			err := c.Func(ctx)
			if err == nil && ctx.Err() != nil {
				err = ctx.Err()
			}
			res := "ok"
			if err != nil {
				res = err.Error()
			}
			mu.Lock()
			results[c.Name] = res
			mu.Unlock()
			rc.note(c.Name, err)
		})
	}
	wg.Wait()
	status := http.StatusOK
	for _, res := range results {
		if res != "ok" {
			status = http.StatusServiceUnavailable
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"ready": status == http.StatusOK, "checks": results})
}

// note logs a check that starts or stops failing, not every failed probe.
func (rc *readiness) note(name string, err error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch was := rc.failing[name]; {
	case err != nil && !was:
		rc.log.Warn("not ready", "check", name, "err", err)
	case err == nil && was:
		rc.log.Info("ready again", "check", name)
	}
	rc.failing[name] = err != nil
}

// Serve answers h on ln until ctx ends, then lets requests in flight finish (up to 5 s).
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// names returns a map's keys in order.
func names[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
