package notify

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// uuidLen is the length of a textual UUID; Notify API keys end with two of them.
const uuidLen = 36

// ErrBadKey is wrapped by every ParseKey error. The messages never contain the key.
var ErrBadKey = errors.New("invalid GOV.UK Notify API key")

// Key is a GOV.UK Notify API key, `{name}-{service id}-{secret}`, where the service id and
// the secret are UUIDs: the secret is the last 36 characters and the service id the 36
// before them (names may themselves contain hyphens, so the key is parsed from the end).
// Its String and LogValue hide the secret.
type Key struct {
	Name      string
	ServiceID string
	secret    string
}

// ParseKey splits and checks an API key.
func ParseKey(s string) (Key, error) {
	n := len(s)
	// name, '-', service id, '-', secret; a name is required.
	if n < 2*uuidLen+3 {
		return Key{}, fmt.Errorf("%w: %d characters, want {name}-{service id}-{secret id} (at least %d)", ErrBadKey, n, 2*uuidLen+3)
	}
	secret := s[n-uuidLen:]
	service := s[n-2*uuidLen-1 : n-uuidLen-1]
	name := s[:n-2*uuidLen-2]
	switch {
	case s[n-uuidLen-1] != '-' || s[n-2*uuidLen-2] != '-':
		return Key{}, fmt.Errorf("%w: want {name}-{service id}-{secret id} separated by hyphens", ErrBadKey)
	case !uuidRE.MatchString(secret):
		return Key{}, fmt.Errorf("%w: the last 36 characters are not a UUID (the secret)", ErrBadKey)
	case !uuidRE.MatchString(service):
		return Key{}, fmt.Errorf("%w: the 36 characters before the secret are not a UUID (the service id)", ErrBadKey)
	}
	return Key{Name: name, ServiceID: service, secret: secret}, nil
}

// String shows the key name and service id, never the secret.
func (k Key) String() string { return k.Name + "-" + k.ServiceID + "-[secret]" }

// LogValue keeps the secret out of structured logs.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// Token returns the bearer token for one request: an HS256 JWT signed with the secret,
// iss = service id, iat = now. Notify refuses a token whose iat is more than 30 seconds from
// its own clock, so a token is made for every attempt rather than cached.
func (k Key) Token(now time.Time) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": k.ServiceID, "iat": now.Unix()})
	s, err := t.SignedString([]byte(k.secret))
	if err != nil {
		return "", fmt.Errorf("sign Notify token: %w", err)
	}
	return s, nil
}

// Secret returns the signing secret, for a server (such as notifystub) that checks tokens.
func (k Key) Secret() []byte { return []byte(k.secret) }
