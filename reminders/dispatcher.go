package reminders

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/reminders/clock"
	"github.com/nhsx/dnarisk/reminders/contacts"
	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/policy"
)

// Notifier sends text messages and finds them by reference; *notify.Client is the
// implementation. SendSMS must not retry a send whose outcome is unknown: it returns an
// error for which notify.Uncertain is true, and the dispatcher looks the reference up after
// UncertainRecheck before sending again (notify.Client does this).
type Notifier interface {
	SendSMS(ctx context.Context, m notify.SMS) (notify.Notification, error)
	FindByReference(ctx context.Context, reference string) ([]notify.Notification, error)
}

// Contacts returns a patient's contact details, or an error wrapping contacts.ErrNotFound;
// *contacts.Store is the implementation.
type Contacts interface {
	Get(ctx context.Context, patient string) (contacts.Contact, error)
}

// Publisher writes failed-reminder events; WriteMessages must return only once they are
// acknowledged (stream.NewWriter's kafka-go Writer does).
type Publisher interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Templates are the Notify template ids per reminder kind. Each template may use the
// placeholders ((appointment_date)) and ((appointment_time)); nothing else is sent.
type Templates struct {
	Standard string `json:"standard"`
	Extra    string `json:"extra"`
}

// Topics names the topics the dispatcher reads and writes.
type Topics struct {
	Appointments string // appointment.v1 events [appointments]
	Risk         string // risk.v1 events [risk]
	Failed       string // reminder_failed.v1 events [reminders.failed]
}

// Config configures a Dispatcher. Zero values take the defaults in brackets.
type Config struct {
	// Redis holds the schedule, the appointment records and the claims [required by New].
	Redis redis.UniversalClient
	// Notifier sends the messages; Contacts finds where to; Failed receives reminders Notify
	// refused. The send side (SendDue, RunSender) needs all three; an intake-only Dispatcher
	// (planning, no sending) may leave them nil.
	Notifier  Notifier
	Contacts  Contacts
	Failed    Publisher
	Policy    policy.Policy
	Templates Templates
	Topics    Topics
	// Secret keys the reminder ids (HMAC-SHA256); at least 32 bytes. It must stay the same
	// across restarts and members, or replays would plan new reminders.
	Secret []byte
	// Prefix starts every Redis key ["dna:"].
	Prefix string
	// Clock plans and fires reminders [clock.System].
	Clock clock.Clock
	// Lease is how long a claim holds a reminder before another sender may take it over
	// (after looking it up in Notify). A send is cut off at half the lease, so the lease
	// must be well above the Notifier's worst case for one send with its retries [10m].
	// Leases are measured on the wall clock.
	Lease time.Duration
	// Workers sending at once [4].
	Workers int
	// PollInterval is the longest RunSender sleeps between looks at the due queue [1s].
	PollInterval time.Duration
	// LookupFirst looks every reminder up in Notify by reference before its first send
	// too, not only after a crash or an unknown outcome. It costs one more request per SMS
	// and closes the window a Redis failover that loses a claim would open (see
	// docs/reminders.md) [false].
	LookupFirst bool
	// MaxAttempts to send one reminder before it is failed [6].
	MaxAttempts int
	// RetryBackoff is the first wait before a reminder whose send failed transiently is
	// tried again; it doubles per attempt [2m].
	RetryBackoff time.Duration
	// UncertainRecheck is how long after a send whose outcome is unknown (a timeout, a
	// dropped connection, a 5xx) the reminder is looked up in Notify by reference, and sent
	// again only if not found. It must be longer than Notify can still take to create a
	// message the client gave up on, longer than the Notifier's timeout, and at most half
	// the lease (so a crashed sender's claim is taken over only after it too) [60s].
	// It is measured on Clock.
	UncertainRecheck time.Duration
	// Budget caps the messages sent per hour, per day and per patient [no caps]; see Budget.
	Budget Budget
	// KeepAfter is how long after the appointment start its records stay in Redis [30 days].
	// Replays of older events plan nothing (their reminders are past MaxLate), so this only
	// bounds memory.
	KeepAfter time.Duration
	// MaxAhead skips appointment events dated further than this past their Kafka timestamp
	// (events.CheckAhead), which the scorer dead-letters: the dispatcher acts only on events
	// the scorer accepts. Negative: no limit. It must equal the scorer's --max-ahead
	// [events.DefaultMaxAhead].
	MaxAhead time.Duration
	// Log gets operational events; never personal data [slog.Default()].
	Log *slog.Logger
}

// MinSecretBytes is the shortest reminder-id secret accepted.
const MinSecretBytes = 32

var templateIDRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// longester is a Notifier that can bound one send with all its retries (*notify.Client).
type longester interface{ Longest() time.Duration }

// timeouter is a Notifier that gives up on an attempt after Timeout (*notify.Client).
type timeouter interface{ Timeout() time.Duration }

// DefaultUncertainRecheck is UncertainRecheck's default. Notify publishes no bound on how
// long it may go on with a request the client gave up on; this project assumes 30 seconds
// (the late-creation fault of notifystub and cmd/chaos creates messages up to 30 s late) and
// waits twice that.
const DefaultUncertainRecheck = time.Minute

// Validate checks the configuration and fills in defaults.
// Dependencies are not checked here (New requires Redis), so a command can validate its
// settings before it connects to anything; set Notifier first to have the lease checked
// against it.
func (o *Config) Validate() error {
	if err := o.Policy.Validate(); err != nil {
		return err
	}
	if o.Templates.Standard == "" && len(o.Policy.Standard) > 0 {
		return errors.New("templates.standard is missing (a Notify template id)")
	}
	if o.Templates.Extra == "" && len(o.Policy.Extra) > 0 {
		return errors.New("templates.extra is missing (a Notify template id)")
	}
	for name, id := range map[string]string{"standard": o.Templates.Standard, "extra": o.Templates.Extra} {
		if id != "" && !templateIDRE.MatchString(id) {
			return fmt.Errorf("templates.%s %q is not a UUID", name, id)
		}
	}
	if len(o.Secret) < MinSecretBytes {
		return fmt.Errorf("reminder secret is %d bytes, need at least %d", len(o.Secret), MinSecretBytes)
	}
	if o.Topics.Appointments == "" {
		o.Topics.Appointments = "appointments"
	}
	if o.Topics.Risk == "" {
		o.Topics.Risk = "risk"
	}
	if o.Topics.Failed == "" {
		o.Topics.Failed = "reminders.failed"
	}
	if o.Prefix == "" {
		o.Prefix = "dna:"
	}
	if o.Clock == nil {
		o.Clock = clock.System
	}
	if o.Lease <= 0 {
		o.Lease = 10 * time.Minute
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 6
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = 2 * time.Minute
	}
	if o.UncertainRecheck <= 0 {
		o.UncertainRecheck = DefaultUncertainRecheck
	}
	if o.KeepAfter <= 0 {
		o.KeepAfter = 30 * 24 * time.Hour
	}
	if err := o.Budget.Validate(); err != nil {
		return err
	}
	if o.MaxAhead == 0 {
		o.MaxAhead = events.DefaultMaxAhead
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	// A send is cut off at half the lease, so a claim must outlive two sends with all their
	// retries, or a slow send could be cut short every time.
	if l, ok := o.Notifier.(longester); ok && o.Lease < 2*l.Longest() {
		return fmt.Errorf("sending.lease %s is shorter than two sends with their retries can take (%s)", o.Lease, 2*l.Longest())
	}
	// A message Notify creates after the client gave up is created at least a timeout after
	// the request left; looking it up sooner could miss it.
	if t, ok := o.Notifier.(timeouter); ok && o.UncertainRecheck <= t.Timeout() {
		return fmt.Errorf("sending.uncertain_recheck %s must be longer than notify.timeout %s", o.UncertainRecheck, t.Timeout())
	}
	// A crashed sender's last request left before half its lease; its heir looks it up at
	// the lease's end, which must be UncertainRecheck later.
	if o.Lease < 2*o.UncertainRecheck {
		return fmt.Errorf("sending.lease %s is shorter than twice sending.uncertain_recheck (%s)", o.Lease, 2*o.UncertainRecheck)
	}
	return nil
}

// Stats counts what a Dispatcher did. Counts are per process: after a restart they start
// again from zero.
type Stats struct {
	Consumed  atomic.Int64 // messages read from either topic
	Ignored   atomic.Int64 // messages that could not be read or are dated too far ahead (the scorer dead-letters them)
	Scheduled atomic.Int64 // reminders created (a replay creates none)
	Retimed   atomic.Int64 // pending reminders moved (quiet hours at send time, policy change)
	Cancelled atomic.Int64 // pending reminders dropped: cancellation, reschedule, opt-out, too close, too late
	Sent      atomic.Int64 // reminders recorded as sent (including ones found already sent)
	Recovered atomic.Int64 // of Sent: found in Notify by reference, not sent again
	Deferred  atomic.Int64 // sends that failed transiently and were put back for later
	Uncertain atomic.Int64 // sends whose outcome was unknown, put back to be looked up after UncertainRecheck
	Failed    atomic.Int64 // reminders given up: refused by Notify, no contact details, too many attempts
	// Sends held by the SMS budget, by the cap that held them (a reminder held again on
	// each recheck counts each time), and reminders cancelled because a hold lasted until
	// they were too close to the appointment.
	HeldHour, HeldDay, HeldPatient atomic.Int64
	BudgetCancelled                atomic.Int64
}

// Dispatcher schedules and sends reminders. One value serves both the intake (Process) and
// the send side (SendDue, RunSender); both may run at once, in any number of processes.
type Dispatcher struct {
	rdb      redis.UniversalClient
	notifier Notifier
	contacts Contacts
	failed   Publisher
	o        Config
	token    string // identifies this process's claims
	budget   atomic.Pointer[Budget]
	Stats    Stats

	heldMu     sync.Mutex
	heldLogged map[string]time.Time // cap -> end of the window last logged as reached
}

// New returns a Dispatcher after validating c.
func New(c Config) (*Dispatcher, error) {
	if c.Redis == nil {
		return nil, errors.New("reminders: Config.Redis is required")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	d := &Dispatcher{rdb: c.Redis, notifier: c.Notifier, contacts: c.Contacts, failed: c.Failed, o: c,
		token:      strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(int(tokenSeq.Add(1))),
		heldLogged: map[string]time.Time{}}
	b := c.Budget
	d.budget.Store(&b)
	return d, nil
}

var tokenSeq atomic.Int64

// ReminderID is the deterministic id of one reminder: the first 128 bits of
// HMAC-SHA256(secret, patient ‖ appointment id ‖ booking version ‖ slot), in hex. It is the
// Notify reference: the same reminder always gets the same reference, and the reference
// reveals nothing about the patient or the appointment. The patient is included so that
// two PAS systems reusing an appointment id cannot make one reminder look already sent.
func (d *Dispatcher) ReminderID(patient, appointment string, version int, slot string) string {
	return ReminderID(d.o.Secret, patient, appointment, version, slot)
}

// ReminderID is Dispatcher.ReminderID under secret, for checking a dispatcher from outside.
func ReminderID(secret []byte, patient, appointment string, version int, slot string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(patient))
	m.Write([]byte{0})
	m.Write([]byte(appointment))
	m.Write([]byte{0})
	m.Write([]byte(strconv.Itoa(version)))
	m.Write([]byte{0})
	m.Write([]byte(slot))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// Redis keys. The {pseudonym} hash tag puts a patient's appointment and reminder records in
// one Cluster slot, so one script can update them together.
func (d *Dispatcher) apptKey(patient, appt string) string {
	return d.o.Prefix + "{" + patient + "}:rappt:" + appt
}

func (d *Dispatcher) remKey(patient, rid string) string {
	return d.o.Prefix + "{" + patient + "}:rem:" + rid
}

// DueKey is the sorted set of pending reminders, scored by due time (Unix ms).
func (d *Dispatcher) DueKey() string { return d.o.Prefix + "reminders:due" }

// A due-queue member is "<pseudonym>:<reminder id>:<appointment id>": the first two have
// fixed lengths, so appointment ids may contain anything.
const (
	pseudonymLen = 64
	ridLen       = 32
)

func member(patient, rid, appt string) string { return patient + ":" + rid + ":" + appt }

func parseMember(m string) (patient, rid, appt string, ok bool) {
	if len(m) < pseudonymLen+ridLen+3 || m[pseudonymLen] != ':' || m[pseudonymLen+ridLen+1] != ':' {
		return "", "", "", false
	}
	return m[:pseudonymLen], m[pseudonymLen+1 : pseudonymLen+1+ridLen], m[pseudonymLen+ridLen+2:], true
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(s string) time.Time {
	n, _ := strconv.ParseInt(s, 10, 64)
	return time.UnixMilli(n).UTC()
}
