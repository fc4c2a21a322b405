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
	"crypto/sha256"
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
// "<prefix>{<pseudonym>}:contact", fields phone ("v2:<key id>:" + base64(nonce ‖
// ciphertext); "v1:" records, written before key ids, have no id) and opt_out. The hash tag
// keeps it in the slot of the patient's other keys.
//
// A Store writes under one key and reads under it or any previous key, so the key can be
// rotated without downtime: readers get the new key as current and the old as previous
// first, then writers, then Rekey re-encrypts what is stored (docs/security.md).
type Store struct {
	rdb     redis.UniversalClient
	prefix  string
	current sealKey
	byID    map[string]sealKey // current and previous keys by id
	all     []sealKey          // current first, for v1 records
}

type sealKey struct {
	id   string
	aead cipher.AEAD
}

// KeyID names a key in the records it seals: the first 8 hex digits of a SHA-256 of it (it
// tells keys apart and reveals nothing usable about them).
func KeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("dnarisk contact key id\x00"), key...))
	return hex.EncodeToString(sum[:4])
}

func newSealKey(key []byte) (sealKey, error) {
	if len(key) != KeyBytes {
		return sealKey{}, fmt.Errorf("contact key is %d bytes, want %d", len(key), KeyBytes)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return sealKey{}, fmt.Errorf("contact cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return sealKey{}, fmt.Errorf("contact cipher: %w", err)
	}
	return sealKey{id: KeyID(key), aead: aead}, nil
}

// NewStore returns a Store encrypting with key (32 bytes) and also decrypting records sealed
// under any previous key. prefix defaults to "dna:".
func NewStore(rdb redis.UniversalClient, prefix string, key []byte, previous ...[]byte) (*Store, error) {
	if prefix == "" {
		prefix = "dna:"
	}
	s := &Store{rdb: rdb, prefix: prefix, byID: map[string]sealKey{}}
	for i, k := range append([][]byte{key}, previous...) {
		sk, err := newSealKey(k)
		if err != nil {
			if i > 0 {
				return nil, fmt.Errorf("previous %w", err)
			}
			return nil, err
		}
		if _, dup := s.byID[sk.id]; dup {
			continue // the same key given twice (previous = current mid-rotation)
		}
		if i == 0 {
			s.current = sk
		}
		s.byID[sk.id] = sk
		s.all = append(s.all, sk)
	}
	return s, nil
}

// Key returns the Redis key of a patient's contact record.
func (s *Store) Key(patient string) string { return s.prefix + "{" + patient + "}:contact" }

const (
	sealV1 = "v1:" // base64(nonce ‖ ciphertext), before key ids
	sealV2 = "v2:" // key id ":" base64(nonce ‖ ciphertext)
)

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
	a := s.current.aead
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(p.n)+a.Overhead())
	_, _ = rand.Read(nonce)
	return sealV2 + s.current.id + ":" + base64.StdEncoding.EncodeToString(a.Seal(nonce, nonce, []byte(p.n), []byte(patient)))
}

// open decrypts a sealed phone: a v2 record under the key it names, a v1 record under each
// key in turn.
func (s *Store) open(patient, sealed string) (Phone, error) {
	keys, body := s.all, ""
	if rest, ok := strings.CutPrefix(sealed, sealV2); ok {
		id, b, ok := strings.Cut(rest, ":")
		k, known := s.byID[id]
		if !ok {
			return Phone{}, errors.New("phone ciphertext is corrupt")
		}
		if !known {
			return Phone{}, fmt.Errorf("phone is sealed under contact key %s, which this process does not have (current %s): give it as DNA_CONTACT_KEY_PREVIOUS until the store is re-keyed", id, s.current.id)
		}
		keys, body = []sealKey{k}, b
	} else if b, ok := strings.CutPrefix(sealed, sealV1); ok {
		body = b
	} else {
		return Phone{}, errors.New("phone ciphertext has an unknown format")
	}
	b, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return Phone{}, errors.New("phone ciphertext is corrupt")
	}
	for _, k := range keys {
		n := k.aead.NonceSize()
		if len(b) < n {
			return Phone{}, errors.New("phone ciphertext is corrupt")
		}
		if plain, err := k.aead.Open(nil, b[:n], b[n:], []byte(patient)); err == nil {
			return Phone{string(plain)}, nil
		}
	}
	return Phone{}, errors.New("phone does not decrypt (wrong key, or record moved between patients)")
}

// sealedUnderCurrent reports whether sealed needs no re-keying.
func (s *Store) sealedUnderCurrent(sealed string) bool {
	return strings.HasPrefix(sealed, sealV2+s.current.id+":")
}
