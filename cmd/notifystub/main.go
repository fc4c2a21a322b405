// Command notifystub serves a GOV.UK Notify stand-in (package notifystub) for local stacks
// and soak tests: it checks tokens and request bodies as Notify does, records messages in
// memory, answers GET /v2/notifications/{id} and the paged, filtered GET /v2/notifications
// the official clients use, and can fail at random. GET /_stub/stats reports how many
// messages it accepted. It is never to be pointed at by a production dispatcher.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
)

type templateFlag map[string][]string

func (t templateFlag) String() string { return fmt.Sprint(map[string][]string(t)) }

// Set reads "ID" or "ID=placeholder,placeholder".
func (t templateFlag) Set(s string) error {
	id, fields, _ := strings.Cut(s, "=")
	t[strings.ToLower(strings.TrimSpace(id))] = strings.FieldsFunc(fields, func(r rune) bool { return r == ',' })
	return nil
}

type config struct {
	addr string
	stub notifystub.Config
}

func parseConfig(args []string, getenv func(string) string) (config, error) {
	fs := flag.NewFlagSet("notifystub", flag.ContinueOnError)
	c := config{stub: notifystub.Config{Templates: templateFlag{}}}
	addr := getenv("NOTIFYSTUB_ADDR")
	if addr == "" {
		addr = "127.0.0.1:8089"
	}
	fs.StringVar(&c.addr, "addr", addr, "listen address (env NOTIFYSTUB_ADDR)")
	fs.Var(templateFlag(c.stub.Templates), "template", "a template it knows, ID=placeholder,placeholder (repeatable)")
	fs.Float64Var(&c.stub.Chaos.Error500, "fail-500", 0, "share of sends answered 500")
	fs.Float64Var(&c.stub.Chaos.Error429, "fail-429", 0, "share of sends answered 429 with Retry-After: 1")
	fs.DurationVar(&c.stub.Chaos.Delay, "delay", 0, "added to every send")
	fs.Float64Var(&c.stub.Chaos.CreatedLate, "fail-created-late", 0, "share of sends not answered until the caller gives up, the message created --created-late-min to -max after the request")
	fs.DurationVar(&c.stub.Chaos.CreateAfter, "created-late-min", time.Second, "earliest late creation")
	fs.DurationVar(&c.stub.Chaos.CreateAfterMax, "created-late-max", 30*time.Second, "latest late creation")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	raw := getenv("NOTIFY_API_KEY")
	if path := getenv("NOTIFY_API_KEY_FILE"); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("read NOTIFY_API_KEY_FILE: %w", err)
		}
		raw = strings.TrimSpace(string(b))
	}
	key, err := notify.ParseKey(raw)
	if err != nil {
		return c, fmt.Errorf("the key callers must sign with (NOTIFY_API_KEY_FILE or NOTIFY_API_KEY): %w", err)
	}
	c.stub.Key = key
	switch {
	case len(c.stub.Templates) == 0:
		return c, errors.New("no templates: give at least one --template ID=placeholder,…")
	case c.stub.Chaos.Error500 < 0 || c.stub.Chaos.Error429 < 0 || c.stub.Chaos.CreatedLate < 0 ||
		c.stub.Chaos.Error500+c.stub.Chaos.Error429+c.stub.Chaos.CreatedLate > 1:
		return c, errors.New("--fail-500, --fail-429 and --fail-created-late must be shares between 0 and 1")
	case c.stub.Chaos.CreateAfter <= 0 || c.stub.Chaos.CreateAfterMax < c.stub.Chaos.CreateAfter:
		return c, errors.New("--created-late-min must be positive and at most --created-late-max")
	}
	return c, nil
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "notifystub: invalid configuration:", err)
		os.Exit(2)
	}
	stub, err := notifystub.New(cfg.stub)
	if err != nil {
		fmt.Fprintln(os.Stderr, "notifystub:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &http.Server{Addr: cfg.addr, Handler: stub, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	log.Info("notify stub listening", "addr", cfg.addr, "service_id", cfg.stub.Key.ServiceID, "templates", len(cfg.stub.Templates))
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("notify stub stopped", "err", err)
		os.Exit(1)
	}
	log.Info("notify stub stopped", "messages", len(stub.Messages()))
}
