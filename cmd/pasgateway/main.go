// Command pasgateway connects a trust's PAS or integration engine to the DNA risk scorer. It
// listens for HL7 v2 SIU messages over MLLP (S12 book, S13 reschedule, S14 modify, S15
// cancel, S17 delete, S26 no-show) and for FHIR R4 Appointments over HTTP, turns them into
// appointment.v1 events keyed by the patient pseudonym, publishes them to Kafka, and
// acknowledges each message only after Kafka acknowledged its event. Booking versions are
// kept per appointment in Redis. SIGTERM or SIGINT stops accepting, finishes the messages in
// hand (their acknowledgements included) and exits 0.
//
// Every setting is a flag with an environment variable fallback; run with --help. The
// pseudonymisation secret comes from DNA_PSEUDONYM_SECRET_FILE or DNA_PSEUDONYM_SECRET.
// Listeners bind to loopback by default; elsewhere MLLP needs TLS with client certificates or
// a sender allow-list, and FHIR needs HTTPS with access tokens or client certificates
// (secure.go), or the command refuses to start. Metrics, health, readiness and a status page
// are on --metrics-addr. See docs/pas-integration.md and docs/security.md.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/authn"
	"github.com/nhsx/dnarisk/internal/envflag"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/internal/ops"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/secconfig"
	"github.com/nhsx/dnarisk/pas"
	"github.com/nhsx/dnarisk/pas/fhirin"
	"github.com/nhsx/dnarisk/pas/hl7"
	"github.com/nhsx/dnarisk/pas/mllp"
	"github.com/nhsx/dnarisk/pas/senders"
	"github.com/nhsx/dnarisk/pas/siu"
	"github.com/nhsx/dnarisk/reminders/contacts"
	"github.com/nhsx/dnarisk/stream"
)

type config struct {
	mllpAddr, fhirAddr, fhirBase string
	brokers                      []string
	topic                        string
	redisOpts                    redis.UniversalOptions
	redisPrefix                  string
	stateTTL                     time.Duration
	location                     *time.Location
	patientIDTypes               []string
	processingIDs                []string
	fhirPatientSystem            string
	fhirApptSystem               string
	fhirFacility                 string
	idleTimeout                  time.Duration
	maxConns, maxMessage         int
	maxConnsPerHost              int
	maxAhead                     time.Duration
	mapping                      *pas.Mapping
	contactKeys                  *contacts.Keys // nil: --contacts off
	logLevel                     slog.Level
	kafkaOpts                    []stream.Option
	topics                       topicConfig
	sec                          listenSecurity
	metricsAddr                  string // "": no operations endpoint
	access                       ops.Access
}

const usage = "usage: pasgateway [flags]\n\nReceives HL7 v2 SIU over MLLP and FHIR R4 Appointments over HTTP and publishes appointment events to Kafka. Flags (flag > environment > default):"

func parseConfig(args []string, lookup func(string) (string, bool), stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("pasgateway", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var c config
	env := envflag.Env{
		"mllp-addr": "MLLP_ADDR", "fhir-addr": "FHIR_ADDR", "fhir-base": "FHIR_BASE",
		"brokers": "KAFKA_BROKERS", "topic-appointments": "TOPIC_APPOINTMENTS",
		"redis": "REDIS_ADDR", "redis-prefix": "REDIS_PREFIX", "state-ttl": "PAS_STATE_TTL",
		"timezone": "PAS_TIMEZONE", "patient-id-type": "PAS_PATIENT_ID_TYPE", "processing-id": "HL7_PROCESSING_ID",
		"fhir-patient-system": "FHIR_PATIENT_SYSTEM", "fhir-appointment-system": "FHIR_APPOINTMENT_SYSTEM", "fhir-facility": "FHIR_FACILITY",
		"idle-timeout": "MLLP_IDLE_TIMEOUT", "max-conns": "MLLP_MAX_CONNS", "max-conns-per-host": "MLLP_MAX_CONNS_PER_HOST", "max-message-bytes": "MLLP_MAX_MESSAGE_BYTES",
		"log-level": "LOG_LEVEL", "metrics-addr": "METRICS_ADDR", "max-ahead": "MAX_EVENT_AHEAD", "contacts": "PAS_CONTACTS", "mapping": "PAS_MAPPING",
	}
	fs.StringVar(&c.mllpAddr, "mllp-addr", "127.0.0.1:2575", "MLLP listen address for HL7 v2 SIU; off to disable; off loopback it needs TLS client certificates or --mllp-senders-file")
	fs.StringVar(&c.fhirAddr, "fhir-addr", "127.0.0.1:8080", "HTTP listen address for FHIR R4 Appointments; off to disable; off loopback it needs HTTPS and access tokens or client certificates")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "127.0.0.1:9467", "address for /metrics, /healthz, /readyz and the status page; off to disable; off loopback it needs --metrics-token-file or mutual TLS")
	c.sec.register(fs, env)
	c.access.Register(fs, env)
	fs.StringVar(&c.fhirBase, "fhir-base", "/fhir", "base path of the FHIR endpoint")
	brokers := fs.String("brokers", "127.0.0.1:9092", "Kafka bootstrap brokers, comma-separated")
	fs.StringVar(&c.topic, "topic-appointments", "appointments", "topic the appointment events go to")
	redisAddrs := fs.String("redis", "127.0.0.1:6379", "Redis address for booking-version state; several comma-separated addresses mean a Redis Cluster")
	fs.StringVar(&c.redisPrefix, "redis-prefix", "dna:", "prefix of every Redis key")
	fs.DurationVar(&c.stateTTL, "state-ttl", 3*365*24*time.Hour, "how long an appointment's version state is kept after its last change")
	tz := fs.String("timezone", "Europe/London", "time zone of HL7 date/times without an offset")
	idTypes := fs.String("patient-id-type", "NH", "PID-3 identifier type codes to pseudonymise, in order of preference (NH = NHS number)")
	procIDs := fs.String("processing-id", "P", "MSH-11 processing ids accepted, comma-separated (P production, T training, D debugging)")
	fs.StringVar(&c.fhirPatientSystem, "fhir-patient-system", fhirin.NHSNumberSystem, "identifier system of the patient id in FHIR resources")
	fs.StringVar(&c.fhirApptSystem, "fhir-appointment-system", "", "identifier system of the PAS appointment id in FHIR Appointments (default: the first identifier, else the resource id)")
	fs.StringVar(&c.fhirFacility, "fhir-facility", "", "namespace of FHIR appointment ids, as MSH-4 (the sending facility) namespaces HL7 ones: set it to the HL7 feed's MSH-4 if both run (default: the identifier's assigner, else none)")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 10*time.Minute, "close an MLLP connection that sends nothing for this long")
	fs.IntVar(&c.maxConns, "max-conns", 64, "most MLLP connections at once")
	fs.IntVar(&c.maxConnsPerHost, "max-conns-per-host", 8, "most MLLP connections from one client address; at the limit its least recently active idle connection is closed to admit a new one")
	fs.IntVar(&c.maxMessage, "max-message-bytes", mllp.DefaultLimit, "largest HL7 message accepted")
	fs.DurationVar(&c.maxAhead, "max-ahead", events.DefaultMaxAhead, "refuse (AE / 422) messages dated further than this past the receiver's clock, as the scorer dead-letters their events; 0 for no limit; must equal the scorer's --max-ahead")
	mappingFile := fs.String("mapping", "", "JSON mapping file: local specialty codes, cancellation codes and phrases, the fields and extensions carrying the model's extra features (docs/pas-integration.md; example cmd/pasgateway/mapping.example.json)")
	contactsMode := fs.String("contacts", "on", "on: store each patient's mobile (PID-13/14, Patient.telecom) and opt-out (PD1-12, Patient.meta.security) in the reminder side's encrypted contact store (key from DNA_CONTACT_KEY_FILE or DNA_CONTACT_KEY); off: another feed fills it")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	c.topics.register(fs, env)
	var ksec secconfig.Kafka
	ksec.Register(fs, env)
	var rsec secconfig.Redis
	rsec.Register(fs, env)
	if err := env.Parse(fs, args, lookup, stderr, usage); err != nil {
		return c, err
	}
	c.brokers = envflag.List(*brokers)
	c.redisOpts.Addrs = envflag.List(*redisAddrs)
	c.patientIDTypes = envflag.List(*idTypes)
	c.processingIDs = envflag.List(*procIDs)
	if err := c.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return c, fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	if err := c.topics.validate(); err != nil {
		return c, err
	}
	var err error
	if c.location, err = time.LoadLocation(*tz); err != nil {
		return c, fmt.Errorf("--timezone %q: %v", *tz, err)
	}
	for _, a := range []*string{&c.mllpAddr, &c.fhirAddr, &c.metricsAddr} {
		if *a == "off" {
			*a = ""
		}
		if *a != "" {
			if _, _, err := net.SplitHostPort(*a); err != nil {
				return c, fmt.Errorf("listen address %q: want host:port, :port or off", *a)
			}
		}
	}
	if err := c.sec.check(c.mllpAddr, c.fhirAddr); err != nil {
		return c, err
	}
	if err := c.access.Check(c.metricsAddr, c.sec.insecure); err != nil {
		return c, err
	}
	if *mappingFile != "" {
		if c.mapping, err = pas.LoadMapping(*mappingFile); err != nil {
			return c, err
		}
	}
	switch *contactsMode {
	case "on":
		k, err := contactKeys(lookup)
		if err != nil {
			return c, err
		}
		c.contactKeys = &k
	case "off":
	default:
		return c, fmt.Errorf("--contacts %q: want on or off", *contactsMode)
	}
	if c.kafkaOpts, err = ksec.Options(lookup); err != nil {
		return c, err
	}
	if err := rsec.Apply(&c.redisOpts, lookup); err != nil {
		return c, err
	}
	switch {
	case c.mllpAddr == "" && c.fhirAddr == "":
		return c, errors.New("both --mllp-addr and --fhir-addr are off: nothing to listen on")
	case len(c.brokers) == 0:
		return c, errors.New("no Kafka brokers: set --brokers or KAFKA_BROKERS")
	case len(c.redisOpts.Addrs) == 0:
		return c, errors.New("no Redis address: set --redis or REDIS_ADDR")
	case c.topic == "":
		return c, errors.New("--topic-appointments must not be empty")
	case len(c.patientIDTypes) == 0:
		return c, errors.New("--patient-id-type must name at least one identifier type")
	case len(c.processingIDs) == 0:
		return c, errors.New("--processing-id must name at least one processing id")
	case c.stateTTL < 24*time.Hour:
		return c, fmt.Errorf("--state-ttl %s is under a day", c.stateTTL)
	case c.idleTimeout < time.Second:
		return c, fmt.Errorf("--idle-timeout %s is under a second", c.idleTimeout)
	case c.maxAhead < 0:
		return c, fmt.Errorf("--max-ahead %s is negative (0 means no limit)", c.maxAhead)
	case c.maxConns < 1:
		return c, fmt.Errorf("--max-conns %d: want at least 1", c.maxConns)
	case c.maxConnsPerHost < 1 || c.maxConnsPerHost > c.maxConns:
		return c, fmt.Errorf("--max-conns-per-host %d: want 1 to --max-conns (%d)", c.maxConnsPerHost, c.maxConns)
	case c.maxMessage < 1024 || c.maxMessage > 64<<20:
		return c, fmt.Errorf("--max-message-bytes %d out of range 1024..%d", c.maxMessage, 64<<20)
	}
	return c, nil
}

// contactKeys reads the contact store's keys (contacts.KeysFromEnv): the dispatcher's, which
// decrypt what the gateway writes.
func contactKeys(lookup func(string) (string, bool)) (contacts.Keys, error) {
	k, err := contacts.KeysFromEnv(lookup)
	if errors.Is(err, contacts.ErrNoKey) {
		return k, errors.New("no contact store key: set DNA_CONTACT_KEY_FILE (or DNA_CONTACT_KEY) to the dispatcher's key, or --contacts off if another feed fills the contact store")
	}
	return k, err
}

// contactStore writes what the gateway reads about reaching a patient into the reminder
// side's encrypted contact store (reminders/contacts), keyed by the same pseudonym.
type contactStore struct{ s *contacts.Store }

func (c contactStore) SaveContact(ctx context.Context, patient string, pc pas.Contact) error {
	var u contacts.Update
	if pc.PhoneSent {
		var phone contacts.Phone // zero: the message holds no mobile, so none is kept
		if !pc.Mobile.IsZero() {
			if p, err := contacts.ParsePhone(pc.Mobile.Reveal()); err == nil {
				phone = p
			}
		}
		u.Phone = &phone
	}
	if pc.OptOutSent {
		optOut := pc.OptOut
		u.OptOut = &optOut
	}
	return c.s.Update(ctx, patient, u)
}

func main() {
	cfg, err := parseConfig(os.Args[1:], os.LookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pasgateway: invalid configuration:", err)
		os.Exit(2)
	}
	ps, err := pseudo.FromEnv("DNA_PSEUDONYM_SECRET_FILE", "DNA_PSEUDONYM_SECRET")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pasgateway: invalid configuration:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, ps, log, nil); err != nil {
		log.Error("pasgateway stopped", "err", err)
		os.Exit(1)
	}
}

// listening reports the bound addresses once both listeners are up ("" for one that is off).
type listening func(mllpAddr, fhirAddr string)

// run serves until ctx ends, then shuts down cleanly and returns nil; a listener that fails
// stops the other and its error is returned.
func run(ctx context.Context, cfg config, ps *pseudo.Pseudonymiser, log *slog.Logger, ready listening) error {
	prot, err := cfg.sec.load(log)
	if err != nil {
		return err
	}
	m := metrics.NewGateway()
	// Redis 7.0 (Debian 12's) has no CLIENT SETINFO; go-redis would send it on every connection.
	cfg.redisOpts.DisableIdentity = true
	rdb := redis.NewUniversalClient(&cfg.redisOpts)
	defer rdb.Close()
	w := stream.NewWriter(cfg.brokers, cfg.topic, cfg.kafkaOpts...)
	// Each message is written alone and its ACK waits for Kafka's: a linger only delays it.
	w.BatchTimeout = stream.AckedLinger
	defer w.Close()
	gw := pas.NewGateway(pas.NewRedisTracker(rdb, cfg.redisPrefix, cfg.stateTTL), timedWriter{w, m}, log)
	if cfg.contactKeys != nil {
		store, err := cfg.contactKeys.Open(rdb, cfg.redisPrefix)
		if err != nil {
			return err
		}
		gw.SetContacts(contactStore{store})
	}
	maxAhead := cfg.maxAhead
	if maxAhead == 0 {
		maxAhead = -1 // --max-ahead 0: no limit, as the scorer's
	}

	var mllpLn, httpLn net.Listener
	closeAll := func() {
		for _, l := range []net.Listener{mllpLn, httpLn} {
			if l != nil {
				l.Close()
			}
		}
	}
	if cfg.mllpAddr != "" {
		if mllpLn, err = net.Listen("tcp", cfg.mllpAddr); err != nil {
			return fmt.Errorf("mllp listener: %w", err)
		}
	}
	if cfg.fhirAddr != "" {
		if httpLn, err = net.Listen("tcp", cfg.fhirAddr); err != nil {
			closeAll()
			return fmt.Errorf("fhir listener: %w", err)
		}
		if prot.fhirTLS != nil {
			httpLn = tls.NewListener(httpLn, prot.fhirTLS)
		}
	}
	addr := func(l net.Listener) string {
		if l == nil {
			return ""
		}
		return l.Addr().String()
	}
	mllpSec, fhirSec := prot.describe()
	open := func(sec string, l net.Listener) string {
		switch {
		case sec != "none" || l == nil:
			return sec
		case authn.Loopback(l.Addr().String()):
			return "none (loopback only)"
		}
		return "NONE: open to the network (--insecure-listeners)"
	}
	mllpSec, fhirSec = open(mllpSec, mllpLn), open(fhirSec, httpLn)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	gate, closeAdmin := topicGate(cfg, log)
	defer closeAdmin()
	wg.Add(1)
	go func() { defer wg.Done(); waitTopics(ctx, gate, errs, cancel) }()
	if cfg.metricsAddr != "" {
		ln, auth, err := cfg.access.Listen(cfg.metricsAddr, log)
		if err != nil {
			closeAll()
			return err
		}
		admin := stream.NewAdmin(cfg.brokers, cfg.kafkaOpts...)
		defer admin.Close()
		h := ops.Handler(ops.Config{Registry: m.Registry, Log: log, Auth: auth,
			Gateway: ops.NewGatewayStatus(m.Registry, []ops.Listener{
				{Name: "mllp", Addr: addr(mllpLn), Security: mllpSec}, {Name: "fhir", Addr: addr(httpLn), Security: fhirSec}}),
			Checks: []ops.Check{
				{Name: "topics", Func: gate.Check},
				{Name: "kafka", Func: func(ctx context.Context) error { return admin.Ping(ctx, cfg.topic) }},
				{Name: "redis", Func: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
			}})
		// The endpoint outlives the listeners: /metrics answers until the last message is done.
		opsCtx, stopOps := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- ops.Serve(opsCtx, ln, h) }()
		defer func() { stopOps(); <-served }()
		log.Info("operations endpoint listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz /status", "authenticated", auth != nil)
	}
	if mllpLn != nil {
		mp, err := siu.NewMapper(siu.Config{Pseudonymiser: ps, Location: cfg.location, PatientIDTypes: cfg.patientIDTypes, ProcessingIDs: cfg.processingIDs, MaxAhead: maxAhead, Mapping: cfg.mapping})
		if err != nil {
			closeAll()
			return err
		}
		var h mllp.Handler = countedMLLP{next: &siu.Handler{Mapper: mp, Gateway: gw, Log: log}, m: m}
		if prot.senders != nil {
			h = &senders.Handler{List: prot.senders, Next: h, Log: log, Refused: func(trigger string) {
				m.Message("mllp", trigger, hl7.AR)
				m.Refused("mllp", "sender_not_allowed")
			}}
		}
		srv := &mllp.Server{Handler: h, Log: log, TLS: prot.mllpTLS, Refused: func(reason string) { m.Refused("mllp", reason) },
			IdleTimeout: cfg.idleTimeout, MaxConns: cfg.maxConns, MaxConnsPerHost: cfg.maxConnsPerHost, MaxFrame: cfg.maxMessage}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, mllpLn); err != nil {
				errs <- fmt.Errorf("mllp: %w", err)
				cancel()
			}
		}()
	}
	if httpLn != nil {
		mp, err := fhirin.NewMapper(fhirin.Config{Pseudonymiser: ps, PatientSystem: cfg.fhirPatientSystem, AppointmentSystem: cfg.fhirApptSystem, Facility: cfg.fhirFacility, MaxAhead: maxAhead, Mapping: cfg.mapping})
		if err != nil {
			closeAll()
			return err
		}
		fh := fhirin.NewHandler(cfg.fhirBase, mp, gw, log)
		fh.Auth = prot.fhirAuth
		fh.Observe = func(interaction string, status int, reason string) {
			m.Message("fhir", interaction, strconv.Itoa(status))
			if status >= 400 {
				m.Refused("fhir", reason)
			}
		}
		srv := &http.Server{Handler: fh, ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("fhir: %w", err)
				cancel()
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ctx.Done()
			// Requests in hand finish (their events published and answered) before exit.
			sctx, scancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer scancel()
			_ = srv.Shutdown(sctx)
		}()
	}
	log.Info("pasgateway started", "mllp_addr", addr(mllpLn), "mllp_security", mllpSec, "fhir_addr", addr(httpLn), "fhir_security", fhirSec, "topic", cfg.topic)
	for name, l := range map[string]string{"mllp": addr(mllpLn), "fhir": addr(httpLn), "operations": cfg.metricsAddr} {
		if cfg.sec.insecure && l != "" && !authn.Loopback(l) {
			log.Warn("--insecure-listeners: a listener is open to every machine that can reach it unless protected above; for demos only", "listener", name, "addr", l)
		}
	}
	if ready != nil {
		ready(addr(mllpLn), addr(httpLn))
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	log.Info("pasgateway stopped cleanly")
	return nil
}
