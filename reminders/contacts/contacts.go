// Package contacts keeps what the reminder dispatcher needs to reach a patient — a mobile
// number and an opt-out — in Redis, keyed by the patient pseudonym, with the number
// encrypted at rest (AES-256-GCM under a key from a file or the environment; the pseudonym is
// the additional authenticated data, so a ciphertext copied onto another patient's record
// does not decrypt). The PAS integration (or, in the demo, the simulator side) writes it;
// the dispatcher reads it only at send time. Numbers never travel in events: a Phone prints
// as "[redacted]" in logs, errors and JSON, and only Reveal gives the digits.
package contacts

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Phone is a UK mobile number in national form (07xxxxxxxxx). Its String, LogValue and
// MarshalJSON hide it, so it cannot leak through a log line or an event by accident.
type Phone struct{ n string }

var (
	phoneJunk = strings.NewReplacer(" ", "", "-", "", "(", "", ")", "", ".", "")
	mobileRE  = regexp.MustCompile(`^(?:\+44|0044|0)(7\d{9})$`)
)

// ParsePhone normalises a UK mobile number; anything else is refused (without echoing it).
func ParsePhone(s string) (Phone, error) {
	m := mobileRE.FindStringSubmatch(phoneJunk.Replace(strings.TrimSpace(s)))
	if m == nil {
		return Phone{}, errors.New("not a UK mobile number")
	}
	return Phone{"0" + m[1]}, nil
}

// Drama returns the n-th (mod 1000) number of Ofcom's drama range 07700 900000–900999,
// which is never allocated to a real phone: the only numbers simulations may use.
func Drama(n int) Phone {
	return Phone{fmt.Sprintf("07700900%03d", ((n%1000)+1000)%1000)}
}

// Reveal returns the digits, for the one place that needs them: the Notify request body.
func (p Phone) Reveal() string { return p.n }

// IsZero reports whether p holds no number.
func (p Phone) IsZero() bool { return p.n == "" }

func (Phone) String() string               { return "[redacted]" }
func (Phone) GoString() string             { return "contacts.Phone{[redacted]}" }
func (Phone) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (Phone) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// Contact is what a patient has told the trust about reminders.
type Contact struct {
	Phone  Phone
	OptOut bool // no reminders, whatever the booking says
}

// ErrNotFound means no contact record exists for the patient.
var ErrNotFound = errors.New("no contact details for patient")

// KeyBytes is the AES-256 key length.
const KeyBytes = 32

// ParseKey decodes a key written as 64 hex digits or base64 of 32 bytes.
func ParseKey(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	if b, err := hex.DecodeString(text); err == nil && len(b) == KeyBytes {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(text); err == nil && len(b) == KeyBytes {
		return b, nil
	}
	return nil, fmt.Errorf("contact key must be %d bytes as 64 hex digits or base64", KeyBytes)
}

// Store reads and writes contact records: one hash per patient,
// "<prefix>{<pseudonym>}:contact", fields phone ("v1:" + base64(nonce ‖ ciphertext)) and
// opt_out. The hash tag keeps it in the slot of the patient's other keys.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	aead   cipher.AEAD
}

// NewStore returns a Store encrypting with key (32 bytes). prefix defaults to "dna:".
func NewStore(rdb redis.UniversalClient, prefix string, key []byte) (*Store, error) {
	if len(key) != KeyBytes {
		return nil, fmt.Errorf("contact key is %d bytes, want %d", len(key), KeyBytes)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("contact cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("contact cipher: %w", err)
	}
	if prefix == "" {
		prefix = "dna:"
	}
	return &Store{rdb: rdb, prefix: prefix, aead: aead}, nil
}

// Key returns the Redis key of a patient's contact record.
func (s *Store) Key(patient string) string { return s.prefix + "{" + patient + "}:contact" }

const sealVersion = "v1:"

// Put writes a patient's contact record.
func (s *Store) Put(ctx context.Context, patient string, c Contact) error {
	optOut := "0"
	if c.OptOut {
		optOut = "1"
	}
	if err := s.rdb.HSet(ctx, s.Key(patient), "phone", s.seal(patient, c.Phone), "opt_out", optOut).Err(); err != nil {
		return fmt.Errorf("save contact for patient %s: %w", patient, err)
	}
	return nil
}

// PutMany writes many records in one round trip.
func (s *Store) PutMany(ctx context.Context, cs map[string]Contact) error {
	pipe := s.rdb.Pipeline()
	for patient, c := range cs {
		optOut := "0"
		if c.OptOut {
			optOut = "1"
		}
		pipe.HSet(ctx, s.Key(patient), "phone", s.seal(patient, c.Phone), "opt_out", optOut)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("save %d contacts: %w", len(cs), err)
	}
	return nil
}

// Update says which fields of a contact record to change; nil fields keep what is stored.
type Update struct {
	Phone  *Phone // a zero Phone deletes the stored number
	OptOut *bool
}

// Update changes the fields u sets and keeps the others, in one atomic step per record, so
// writers of different fields (a PAS message without telephone fields, say) never undo each
// other. An Update that sets nothing writes nothing.
func (s *Store) Update(ctx context.Context, patient string, u Update) error {
	pipe := s.rdb.TxPipeline()
	n := 0
	if u.Phone != nil {
		n++
		if u.Phone.IsZero() {
			pipe.HDel(ctx, s.Key(patient), "phone")
		} else {
			pipe.HSet(ctx, s.Key(patient), "phone", s.seal(patient, *u.Phone))
		}
	}
	if u.OptOut != nil {
		n++
		optOut := "0"
		if *u.OptOut {
			optOut = "1"
		}
		pipe.HSet(ctx, s.Key(patient), "opt_out", optOut)
	}
	if n == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("update contact for patient %s: %w", patient, err)
	}
	return nil
}

// Get reads and decrypts a patient's contact record; ErrNotFound if there is none.
func (s *Store) Get(ctx context.Context, patient string) (Contact, error) {
	v, err := s.rdb.HMGet(ctx, s.Key(patient), "phone", "opt_out").Result()
	if err != nil {
		return Contact{}, fmt.Errorf("load contact for patient %s: %w", patient, err)
	}
	sealed, _ := v[0].(string)
	optOut, _ := v[1].(string)
	if sealed == "" && optOut == "" {
		return Contact{}, ErrNotFound
	}
	c := Contact{OptOut: optOut == "1"}
	if sealed != "" {
		if c.Phone, err = s.open(patient, sealed); err != nil {
			return Contact{}, fmt.Errorf("contact for patient %s: %w", patient, err)
		}
	}
	return c, nil
}

func (s *Store) seal(patient string, p Phone) string {
	if p.IsZero() {
		return ""
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(p.n)+s.aead.Overhead())
	_, _ = rand.Read(nonce)
	return sealVersion + base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(p.n), []byte(patient)))
}

func (s *Store) open(patient, sealed string) (Phone, error) {
	body, ok := strings.CutPrefix(sealed, sealVersion)
	if !ok {
		return Phone{}, errors.New("phone ciphertext has an unknown format")
	}
	b, err := base64.StdEncoding.DecodeString(body)
	if err != nil || len(b) < s.aead.NonceSize() {
		return Phone{}, errors.New("phone ciphertext is corrupt")
	}
	plain, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], []byte(patient))
	if err != nil {
		return Phone{}, errors.New("phone does not decrypt (wrong key, or record moved between patients)")
	}
	return Phone{string(plain)}, nil
}
