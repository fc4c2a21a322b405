package authn

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
)

// MinTokenLength is the shortest token accepted: 32 characters of `openssl rand -hex 32`
// carry 128 bits, beyond guessing through an HTTP endpoint.
const MinTokenLength = 32

// Tokens are the bearer tokens a listener accepts, read from a file with one token per line
// (blank lines and lines starting with # are skipped). Rotation without downtime: add the
// new token as a second line, move every caller to it, then delete the old line; the file is
// read again within a second of each change.
type Tokens struct{ r *reloader[[]tokenEntry] }

type tokenEntry struct {
	sum [sha256.Size]byte
	id  string
}

// LoadTokens reads the token file. A file with no token, or one shorter than MinTokenLength
// or holding white space, is refused.
func LoadTokens(path string, log *slog.Logger) (*Tokens, error) {
	r, err := newReloader("token file "+path, log, func() ([]tokenEntry, error) { return parseTokens(path) }, path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	return &Tokens{r: r}, nil
}

func parseTokens(path string) ([]tokenEntry, error) {
	toks, err := parseTokenLines(path)
	if err != nil {
		return nil, err
	}
	out := make([]tokenEntry, 0, len(toks))
	for i, tok := range toks {
		if len(tok) < MinTokenLength || !isToken68(tok) {
			return nil, fmt.Errorf("%s token %d: a token must be at least %d characters of A-Z a-z 0-9 - . _ ~ + / (e.g. openssl rand -hex 32)", path, i+1, MinTokenLength)
		}
		out = append(out, tokenEntry{sum: sha256.Sum256([]byte(tok)), id: TokenID(tok)})
	}
	return out, nil
}

// TokenID names a token in logs without revealing it: the first 8 hex digits of its
// SHA-256, so an operator can tell which of two tokens a caller still uses.
func TokenID(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:4])
}

// Match returns the id of the token tok is, comparing in constant time against every token.
func (t *Tokens) Match(tok string) (id string, ok bool) {
	s := sha256.Sum256([]byte(tok))
	for _, e := range t.r.get() {
		if subtle.ConstantTimeCompare(s[:], e.sum[:]) == 1 {
			id, ok = e.id, true
		}
	}
	return id, ok
}

// ReadToken returns the first token in a token file, for a client that presents it (the
// scorer reading the dispatcher's metrics). It reads the file on every call, so the client
// follows a rotation too.
func ReadToken(path string) (string, error) {
	toks, err := parseTokenLines(path)
	if err != nil {
		return "", err
	}
	return toks[0], nil
}

func parseTokenLines(path string) ([]string, error) {
	b, err := readSmall(path, 64<<10)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no token", path)
	}
	return out, nil
}
