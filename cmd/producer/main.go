// Command producer plays appointment.v1 events onto Kafka, or into a JSON Lines file: either
// a synthetic Patient Administration System (package sim, with its ground-truth DNA
// probabilities written to a truth file on request) or a replay of a historical appointments
// CSV (package csvimport, layout in docs/csv.md). Events go out in event-time order, keyed by
// patient pseudonym, in batches, at a chosen rate. SIGINT or SIGTERM stops it cleanly: what
// was taken is flushed and counted, and a one-line summary ends the run.
//
// Every flag has an environment fallback (flag > environment > default):
//
//	--source    PRODUCER_SOURCE    sim | csv (default sim)
//	--csv       PRODUCER_CSV       CSV file for --source csv
//	--csv-timezone PRODUCER_CSV_TIMEZONE  time zone of the CSV's times without an offset (default Europe/London)
//	--csv-date-only-time PRODUCER_CSV_DATE_ONLY_TIME  local HH:MM for a date-only appointment_start or cancelled_at (default 23:59)
//	--seed      SIM_SEED           simulator seed (default 1)
//	--patients  SIM_PATIENTS       simulated population (default 2000)
//	--days      SIM_DAYS           days of bookings (default 120)
//	--start     SIM_START          first booking day, YYYY-MM-DD UK (default 2025-01-06)
//	--drift-specialty SIM_DRIFT_SPECIALTY  treatment function code whose DNA risk drifts (default: off)
//	--drift-factor    SIM_DRIFT_FACTOR     its DNA probability is multiplied by this, capped at 0.95 (default 2)
//	--drift-from      SIM_DRIFT_FROM       for appointments starting on or after this UK date (default: half-way through --days)
//	--reminder-efficacy  SIM_REMINDER_EFFICACY   true relative DNA reduction by the extra reminder (default 0: off)
//	--reminder-threshold SIM_REMINDER_THRESHOLD  true probability from which a booking gets the extra reminder (default 0.16)
//	--holdout-share      SIM_HOLDOUT_SHARE       share of appointments held out from the extra reminder (default 0; key: DNA_HOLDOUT_KEY)
//	--rate      PRODUCER_RATE      events per second, 0 = as fast as possible (default 0)
//	--brokers   KAFKA_BROKERS      comma-separated bootstrap servers (default 127.0.0.1:9092)
//	--topic     TOPIC_APPOINTMENTS topic (default appointments)
//	--out       PRODUCER_OUT       write JSON Lines to this file instead of Kafka; - is stdout
//	--truth     PRODUCER_TRUTH     write the simulator's truth CSV here
//	--progress  PRODUCER_PROGRESS  progress bar on stderr (default: when stderr is a terminal)
//	--metrics-addr METRICS_ADDR    serve /metrics, /healthz and /readyz here (default: off)
//	--create-topics     CREATE_TOPICS      create the topic if missing (default: wait for it)
//	--topic-partitions  TOPIC_PARTITIONS   its partitions (default 0: the broker's)
//	--topic-replication TOPIC_REPLICATION  its replication factor (default 0: the broker's)
//
// Kafka TLS and SASL/SCRAM take the flags of package secconfig (--kafka-tls, --kafka-ca-file,
// --kafka-sasl-mechanism, ...; run with --help); the SASL password comes from
// KAFKA_SASL_PASSWORD_FILE or KAFKA_SASL_PASSWORD.
//
// The pseudonymisation secret comes from the file named by DNA_PSEUDONYM_SECRET_FILE or from
// DNA_PSEUDONYM_SECRET. Logs are JSON on stderr and never carry patient identifiers. Exit
// status: 0 done (or stopped by a signal), 1 failed, 2 invalid setting.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/envflag"
	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/internal/ops"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/secconfig"
	"github.com/nhsx/dnarisk/producer"
	"github.com/nhsx/dnarisk/producer/csvimport"
	"github.com/nhsx/dnarisk/producer/sim"
	"github.com/nhsx/dnarisk/reminders/policy"
	"github.com/nhsx/dnarisk/stream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	source, csvPath   string
	csvOpts           csvimport.Options
	seed              int64
	patients, days    int
	dnaSinceBooking   bool // sim: DNAs recorded after a booking raise its risk (sim.Config.DNASinceBooking)
	driftSpecialty    string
	driftFactor       float64
	driftFrom         string
	reminderEfficacy  float64
	reminderThreshold float64
	holdoutShare      float64
	start             string
	rate              float64
	brokers, topic    string
	out, truth        string
	progress          bool
	progressSetByUser bool
	metricsAddr       string
	access            ops.Access
	insecure          bool
	kafkaOpts         []stream.Option
	createTopics      bool
	topicSpec         stream.TopicSpec
}

// envFallback names the environment variable behind each flag.
var envFallback = map[string]string{
	"source": "PRODUCER_SOURCE", "csv": "PRODUCER_CSV", "seed": "SIM_SEED",
	"csv-timezone": "PRODUCER_CSV_TIMEZONE", "csv-date-only-time": "PRODUCER_CSV_DATE_ONLY_TIME",
	"patients": "SIM_PATIENTS", "days": "SIM_DAYS", "start": "SIM_START", "dna-since-booking": "SIM_DNA_SINCE_BOOKING",
	"drift-specialty": "SIM_DRIFT_SPECIALTY", "drift-factor": "SIM_DRIFT_FACTOR", "drift-from": "SIM_DRIFT_FROM",
	"reminder-efficacy": "SIM_REMINDER_EFFICACY", "reminder-threshold": "SIM_REMINDER_THRESHOLD", "holdout-share": "SIM_HOLDOUT_SHARE",
	"rate": "PRODUCER_RATE", "brokers": "KAFKA_BROKERS", "topic": "TOPIC_APPOINTMENTS",
	"out": "PRODUCER_OUT", "truth": "PRODUCER_TRUTH", "progress": "PRODUCER_PROGRESS",
	"metrics-addr": "METRICS_ADDR", "create-topics": "CREATE_TOPICS", "topic-partitions": "TOPIC_PARTITIONS",
	"topic-replication": "TOPIC_REPLICATION", "insecure-listeners": "INSECURE_LISTENERS",
}

// usageError is a setting the command cannot run with (exit status 2). printed is set when
// the flag package has already reported it.
type usageError struct {
	msg     string
	printed bool
}

func (e usageError) Error() string { return e.msg }

func badSetting(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("producer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.source, "source", "sim", "event source: sim or csv")
	fs.StringVar(&c.csvPath, "csv", "", "appointments CSV for --source csv (docs/csv.md)")
	fs.StringVar(&c.csvOpts.TimeZone, "csv-timezone", csvimport.DefaultTimeZone, "time zone (IANA name) of the CSV's times without an offset")
	fs.StringVar(&c.csvOpts.DateOnlyTime, "csv-date-only-time", csvimport.DefaultDateOnlyTime, "local time of day (HH:MM) given to a date-only appointment_start or cancelled_at in the CSV")
	fs.Int64Var(&c.seed, "seed", 1, "simulator seed")
	fs.IntVar(&c.patients, "patients", 2000, "simulated patients")
	fs.IntVar(&c.days, "days", 120, "days of simulated bookings")
	fs.BoolVar(&c.dnaSinceBooking, "dna-since-booking", false, "simulator: a DNA recorded after a booking raises that appointment's risk (docs/simulator.md; the decision-time model is trained with it)")
	fs.StringVar(&c.start, "start", "2025-01-06", "first simulated booking day (YYYY-MM-DD, UK)")
	fs.StringVar(&c.driftSpecialty, "drift-specialty", "", "simulator: treatment function code whose DNA risk drifts, e.g. "+sim.DemoDriftSpecialty+" (docs/simulator.md; default: no drift)")
	fs.Float64Var(&c.driftFactor, "drift-factor", 2, "simulator: the drifting specialty's DNA probability is multiplied by this, capped at 0.95")
	fs.StringVar(&c.driftFrom, "drift-from", "", "simulator: the drift applies to appointments starting on or after this UK date, YYYY-MM-DD (default: half-way through --days)")
	fs.Float64Var(&c.reminderEfficacy, "reminder-efficacy", 0, "simulator: true relative reduction of the DNA probability by the extra reminder, 0..1 (default 0: no effect)")
	fs.Float64Var(&c.reminderThreshold, "reminder-threshold", sim.DefaultReminderThreshold, "simulator: a booking gets the extra reminder when its true probability (after drift) is at least this")
	fs.Float64Var(&c.holdoutShare, "holdout-share", 0, "simulator: share of appointments held out from the extra reminder, 0..0.5, by a keyed hash of the appointment id (key: DNA_HOLDOUT_KEY, at least 16 bytes)")
	fs.Float64Var(&c.rate, "rate", 0, "events per second; 0 = as fast as possible")
	fs.StringVar(&c.brokers, "brokers", "127.0.0.1:9092", "Kafka bootstrap servers, comma-separated")
	fs.StringVar(&c.topic, "topic", "appointments", "Kafka topic")
	fs.StringVar(&c.out, "out", "", "write JSON Lines to this file instead of Kafka (- for stdout)")
	fs.StringVar(&c.truth, "truth", "", "write the simulator's truth CSV (appointment_id,booking_version,p_dna) to this file")
	fs.BoolVar(&c.progress, "progress", false, "progress bar on stderr (default: when stderr is a terminal)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this address (default: off); off loopback it needs --metrics-token-file or mutual TLS")
	fs.BoolVar(&c.insecure, "insecure-listeners", false, "DEMOS ONLY: serve the operations endpoint off loopback without a token or TLS")
	fs.BoolVar(&c.createTopics, "create-topics", false, "create the topic if it does not exist (otherwise wait for it, not ready, naming it)")
	fs.IntVar(&c.topicSpec.Partitions, "topic-partitions", 0, "partitions of a topic --create-topics makes; 0: the broker's num.partitions")
	fs.IntVar(&c.topicSpec.Replication, "topic-replication", 0, "replication factor of a topic --create-topics makes; 0: the broker's default.replication.factor")
	env := maps.Clone(envflag.Env(envFallback))
	c.access.Register(fs, env)
	var ksec secconfig.Kafka
	ksec.Register(fs, env)
	fs.VisitAll(func(f *flag.Flag) { f.Usage += " (env " + env[f.Name] + ")" })
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, usageError{msg: err.Error(), printed: true}
	}
	if fs.NArg() > 0 {
		return c, badSetting("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, variable := range env {
		v, ok := os.LookupEnv(variable)
		if set[name] || !ok || v == "" {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return c, badSetting("invalid %s=%q: %v", variable, v, err)
		}
		set[name] = true
	}
	c.progressSetByUser = set["progress"]
	if c.metricsAddr == "off" {
		c.metricsAddr = ""
	}
	if _, _, err := net.SplitHostPort(c.metricsAddr); c.metricsAddr != "" && err != nil {
		return c, badSetting("--metrics-addr %q: want host:port, :port or off", c.metricsAddr)
	}
	if err := c.access.Check(c.metricsAddr, c.insecure); err != nil {
		return c, badSetting("%v", err)
	}
	var err error
	if c.kafkaOpts, err = ksec.Options(os.LookupEnv); err != nil {
		return c, badSetting("%v", err)
	}

	if err := c.csvOpts.Validate(); err != nil {
		return c, badSetting("--csv-timezone / --csv-date-only-time: %v", err)
	}
	switch {
	case c.source != "sim" && c.source != "csv":
		return c, badSetting("--source %q: want sim or csv", c.source)
	case c.source == "csv" && c.csvPath == "":
		return c, badSetting("--source csv needs --csv PATH")
	case c.source == "csv" && c.truth != "":
		return c, badSetting("--truth needs --source sim: a CSV has no ground truth")
	case c.source == "sim" && (c.patients < 1 || c.patients > sim.MaxPatients):
		return c, badSetting("--patients %d: want 1..%d", c.patients, sim.MaxPatients)
	case c.source == "sim" && (c.days < 1 || c.days > 3650):
		return c, badSetting("--days %d: want 1..3650", c.days)
	case c.source == "csv" && (c.driftSpecialty != "" || c.reminderEfficacy != 0 || c.holdoutShare != 0):
		return c, badSetting("--drift-specialty, --reminder-efficacy and --holdout-share change the simulator: they need --source sim")
	case c.driftSpecialty == "" && set["drift-from"]:
		return c, badSetting("--drift-from needs --drift-specialty")
	case !(c.reminderEfficacy >= 0 && c.reminderEfficacy <= 1):
		return c, badSetting("--reminder-efficacy %v: want 0..1", c.reminderEfficacy)
	case !(c.holdoutShare >= 0 && c.holdoutShare <= policy.MaxHoldoutShare):
		return c, badSetting("--holdout-share %v: want 0..%v", c.holdoutShare, policy.MaxHoldoutShare)
	case !(c.reminderThreshold >= 0 && c.reminderThreshold <= 1):
		return c, badSetting("--reminder-threshold %v: want 0..1", c.reminderThreshold)
	case !(c.rate >= 0) || c.rate > 1e7:
		return c, badSetting("--rate %v: want 0 (unlimited) up to 10000000 events/s", c.rate)
	case c.out == "" && len(brokerList(c.brokers)) == 0:
		return c, badSetting("--brokers is empty")
	case c.out == "" && c.topic == "":
		return c, badSetting("--topic is empty")
	case c.topicSpec.Partitions < 0 || c.topicSpec.Partitions > 10000:
		return c, badSetting("--topic-partitions %d out of range 0..10000", c.topicSpec.Partitions)
	case c.topicSpec.Replication < 0 || c.topicSpec.Replication > 32:
		return c, badSetting("--topic-replication %d out of range 0..32", c.topicSpec.Replication)
	}
	return c, nil
}

func brokerList(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// run is the whole command; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err = produce(ctx, c, stdout, stderr, log)
	}
	var ue usageError
	switch {
	case errors.As(err, &ue):
		if !ue.printed {
			fmt.Fprintln(stderr, "producer:", err)
		}
		return 2
	case err != nil:
		log.Error("producer failed", "err", err.Error())
		fmt.Fprintln(stderr, "producer:", err)
		return 1
	}
	return 0
}

func produce(ctx context.Context, c config, stdout, stderr io.Writer, log *slog.Logger) error {
	began := time.Now()
	ps, err := pseudo.FromEnv("DNA_PSEUDONYM_SECRET_FILE", "DNA_PSEUDONYM_SECRET")
	if err != nil {
		return badSetting("%v", err)
	}

	var (
		evs      iter.Seq[events.Appointment]
		total    = int64(-1)
		truthOut *sim.TruthWriter
		closers  []func() error
	)
	defer func() {
		for _, f := range slices.Backward(closers) {
			f()
		}
	}()
	switch c.source {
	case "sim":
		start, err := time.ParseInLocation(time.DateOnly, c.start, london)
		if err != nil {
			return badSetting("--start %q: want YYYY-MM-DD", c.start)
		}
		cfg := sim.Config{Seed: c.seed, Patients: c.patients, Days: c.days, Start: start, DNASinceBooking: c.dnaSinceBooking}
		if err := c.effects(&cfg, start); err != nil {
			return err
		}
		gen, err := sim.New(cfg, ps)
		if err != nil {
			return badSetting("%v", err)
		}
		var onTruth func(sim.Truth)
		if c.truth != "" {
			f, err := os.Create(c.truth)
			if err != nil {
				return fmt.Errorf("create truth file: %w", err)
			}
			closers = append(closers, f.Close)
			truthOut = sim.NewTruthWriter(f)
			if cfg.Drift != nil || cfg.Reminder != nil {
				truthOut = sim.NewFullTruthWriter(f)
			}
			onTruth = func(t sim.Truth) { truthOut.Write(t) } // errors are sticky; checked at Flush
		}
		evs = gen.Events(onTruth)
		log.Info("simulating", "seed", c.seed, "patients", c.patients, "days", c.days, "start", c.start, "dna_since_booking", c.dnaSinceBooking)
		if d := cfg.Drift; d != nil {
			log.Info("simulating drift", "specialty", d.Specialty, "factor", d.Factor, "from", d.From.In(london).Format(time.DateOnly))
		}
		if r := cfg.Reminder; r != nil {
			log.Info("simulating the extra reminder's effect", "efficacy", r.Efficacy, "threshold", r.Threshold, "holdout_share", r.Holdout.Share)
		}
	case "csv":
		f, err := os.Open(c.csvPath)
		if err != nil {
			return badSetting("--csv: %v", err)
		}
		res, err := csvimport.Import(f, ps, c.csvOpts)
		f.Close()
		if err != nil {
			if errors.Is(err, csvimport.ErrHeader) {
				return badSetting("%s: %v", c.csvPath, err)
			}
			return fmt.Errorf("import %s: %w", c.csvPath, err)
		}
		const maxLogged = 100
		for i, bad := range res.Bad {
			if i == maxLogged {
				log.Warn("more csv rows skipped", "count", len(res.Bad)-maxLogged)
				break
			}
			log.Warn("csv row skipped", "line", bad.Line, "reason", bad.Reason)
		}
		log.Info("csv imported", "rows", res.Rows, "imported", res.Imported, "bad", len(res.Bad), "events", len(res.Events),
			"time_zone", c.csvOpts.TimeZone, "date_only_time", c.csvOpts.DateOnlyTime, "text_columns", slices.Sorted(maps.Keys(res.Texts)))
		evs, total = slices.Values(res.Events), int64(len(res.Events))
	}

	opt := producer.Options{Rate: c.rate}
	showProgress := c.progress
	if !c.progressSetByUser {
		f, ok := stderr.(*os.File)
		showProgress = ok && term.IsTerminal(int(f.Fd()))
	}
	var bar *progressbar.ProgressBar
	if showProgress {
		bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetDescription("events"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("events"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		opt.Progress = func(n int) { bar.Add(n) }
	}

	var counts producer.Counts
	var sink string
	if c.out != "" {
		w := stdout
		sink = "stdout"
		if c.out != "-" {
			f, err := os.Create(c.out)
			if err != nil {
				return fmt.Errorf("create output: %w", err)
			}
			closers = append(closers, f.Close)
			w, sink = f, c.out
		}
		log.Info("writing JSON Lines", "out", sink, "rate", c.rate)
		counts, err = producer.WriteJSONL(ctx, w, evs, opt)
	} else {
		brokers := brokerList(c.brokers)
		admin := stream.NewAdmin(brokers, c.kafkaOpts...)
		defer admin.Close()
		topics := stream.NewTopicGate(admin, stream.Topics{Names: []string{c.topic}, Create: c.createTopics, Spec: c.topicSpec, Log: log})
		if c.metricsAddr != "" {
			stopOps, err := serveOps(c, admin, topics, &opt, log)
			if err != nil {
				return err
			}
			defer stopOps()
		}
		sink = "kafka"
		// Before the first write: a Writer that found the topic missing keeps thinking so
		// until its metadata cache expires.
		if err = topics.Wait(ctx); err == nil {
			w := stream.NewWriter(brokers, c.topic, c.kafkaOpts...)
			closers = append(closers, w.Close)
			log.Info("publishing to Kafka", "brokers", brokers, "topic", c.topic, "rate", c.rate)
			counts, err = producer.Publish(ctx, w, evs, opt)
		}
	}
	if bar != nil {
		bar.Finish()
	}
	interrupted := errors.Is(err, context.Canceled) && ctx.Err() != nil
	if err != nil && !interrupted {
		return err
	}
	if truthOut != nil {
		if ferr := truthOut.Flush(); ferr != nil {
			return fmt.Errorf("write truth file: %w", ferr)
		}
	}
	for _, f := range slices.Backward(closers) {
		if cerr := f(); cerr != nil {
			return fmt.Errorf("close %s: %w", sink, cerr)
		}
	}
	closers = nil
	elapsed := time.Since(began)
	if interrupted {
		log.Warn("stopped by signal; events written so far are flushed", "events", counts.Events)
	}
	log.Info("done", "events", counts.Events, "bookings", counts.Bookings(), "outcomes", counts.Outcomes(), "elapsed_s", elapsed.Seconds())
	fmt.Fprintf(stderr, "producer: %s sink=%s elapsed=%s\n", counts, sink, elapsed.Round(time.Millisecond))
	return nil
}

// effects sets cfg's drift and reminder effect from the flags (both off by default); start
// is the first booking day.
func (c config) effects(cfg *sim.Config, start time.Time) error {
	if c.driftSpecialty != "" {
		from := start.AddDate(0, 0, c.days/2)
		if c.driftFrom != "" {
			var err error
			if from, err = time.ParseInLocation(time.DateOnly, c.driftFrom, london); err != nil {
				return badSetting("--drift-from %q: want YYYY-MM-DD", c.driftFrom)
			}
		}
		cfg.Drift = &sim.Drift{From: from, Specialty: c.driftSpecialty, Factor: c.driftFactor}
		if err := cfg.Drift.Validate(); err != nil {
			return badSetting("--drift-specialty / --drift-factor / --drift-from: %v", err)
		}
	}
	if c.reminderEfficacy > 0 || c.holdoutShare > 0 {
		cfg.Reminder = &sim.ReminderEffect{Efficacy: c.reminderEfficacy, Threshold: c.reminderThreshold,
			Holdout: policy.Holdout{Share: c.holdoutShare, Key: []byte(os.Getenv("DNA_HOLDOUT_KEY"))}}
		if err := cfg.Reminder.Validate(); err != nil {
			return badSetting("--reminder-efficacy / --reminder-threshold / --holdout-share: %v", err)
		}
	}
	return nil
}

// serveOps starts the operations endpoint and counts what opt publishes; the returned
// function stops it.
func serveOps(c config, admin *stream.Admin, topics *stream.TopicGate, opt *producer.Options, log *slog.Logger) (func(), error) {
	m := metrics.New()
	ln, auth, err := c.access.Listen(c.metricsAddr, log)
	if err != nil {
		return nil, err
	}
	progress := opt.Progress
	opt.Progress = func(n int) {
		m.Published(c.topic, n)
		if progress != nil {
			progress(n)
		}
	}
	h := ops.Handler(ops.Config{Registry: m.Registry, Log: log, Auth: auth, Checks: []ops.Check{
		{Name: "topics", Func: topics.Check},
		{Name: "kafka", Func: func(ctx context.Context) error { return admin.Ping(ctx, c.topic) }},
	}})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ops.Serve(ctx, ln, h) }()
	log.Info("operations endpoint listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	return func() { cancel(); <-served }, nil
}

var london = func() *time.Location {
	l, err := time.LoadLocation("Europe/London")
	if err != nil {
		panic(err)
	}
	return l
}()
