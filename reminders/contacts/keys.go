package contacts

import (
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/nhsx/dnarisk/internal/secconfig"
)

// Keys are the contact store's keys as a process is given them: Current seals and opens,
// Previous only open (during a rotation).
type Keys struct {
	Current  []byte
	Previous [][]byte
}

// ErrNoKey means neither DNA_CONTACT_KEY_FILE nor DNA_CONTACT_KEY is set.
var ErrNoKey = errors.New("no contact store key: set DNA_CONTACT_KEY_FILE (or DNA_CONTACT_KEY)")

// KeysFromEnv reads the current key from the file DNA_CONTACT_KEY_FILE names, else from
// DNA_CONTACT_KEY, and previous keys (whitespace- or comma-separated) from
// DNA_CONTACT_KEY_PREVIOUS_FILE or DNA_CONTACT_KEY_PREVIOUS. Each key is 64 hex digits or
// base64 of 32 bytes. Errors name the variable, never the value.
func KeysFromEnv(lookup func(string) (string, bool)) (Keys, error) {
	cur, err := secconfig.ReadSecret(lookup, "DNA_CONTACT_KEY", "")
	if err != nil {
		return Keys{}, err
	}
	if strings.TrimSpace(cur.Reveal()) == "" {
		return Keys{}, ErrNoKey
	}
	var k Keys
	if k.Current, err = ParseKey(cur.Reveal()); err != nil {
		return Keys{}, fmt.Errorf("DNA_CONTACT_KEY: %w", err)
	}
	prev, err := secconfig.ReadSecret(lookup, "DNA_CONTACT_KEY_PREVIOUS", "")
	if err != nil {
		return Keys{}, err
	}
	for i, text := range strings.FieldsFunc(prev.Reveal(), func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '\r' }) {
		p, err := ParseKey(text)
		if err != nil {
			return Keys{}, fmt.Errorf("DNA_CONTACT_KEY_PREVIOUS key %d: %w", i+1, err)
		}
		k.Previous = append(k.Previous, p)
	}
	return k, nil
}

// Open returns a Store over rdb with these keys.
func (k Keys) Open(rdb redis.UniversalClient, prefix string) (*Store, error) {
	return NewStore(rdb, prefix, k.Current, k.Previous...)
}
