// Package pseudo turns PAS patient identifiers (such as NHS numbers) into pseudonyms:
// HMAC-SHA256 under a trust-held secret, hex encoded. Only pseudonyms reach Kafka keys,
// Redis keys, risk events, logs and metrics; the secret never leaves the process.
package pseudo

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// MinSecretBytes is the shortest secret accepted: shorter keys make pseudonyms guessable by
// brute force over the small space of NHS numbers.
const MinSecretBytes = 32

// Pseudonymiser keys identifiers with HMAC-SHA256. It is safe for concurrent use.
type Pseudonymiser struct{ secret []byte }

// New returns a Pseudonymiser for secret, refusing secrets shorter than MinSecretBytes.
func New(secret []byte) (*Pseudonymiser, error) {
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("pseudonym secret is %d bytes, need at least %d", len(secret), MinSecretBytes)
	}
	return &Pseudonymiser{secret: append([]byte(nil), secret...)}, nil
}

// FromEnv loads the secret from the file named by fileVar, or else from the variable
// secretVar itself. Surrounding white space in a file is ignored.
func FromEnv(fileVar, secretVar string) (*Pseudonymiser, error) {
	if path := os.Getenv(fileVar); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read pseudonym secret from %s=%s: %w", fileVar, path, err)
		}
		return New([]byte(strings.TrimSpace(string(b))))
	}
	if s := os.Getenv(secretVar); s != "" {
		return New([]byte(s))
	}
	return nil, errors.New("no pseudonym secret: set " + fileVar + " to a file or " + secretVar + " to the secret")
}

// Pseudonym returns the hex HMAC of id, after trimming spaces (NHS numbers are often
// written "943 476 5919").
func (p *Pseudonymiser) Pseudonym(id string) string {
	m := hmac.New(sha256.New, p.secret)
	m.Write([]byte(strings.ReplaceAll(strings.TrimSpace(id), " ", "")))
	return hex.EncodeToString(m.Sum(nil))
}
