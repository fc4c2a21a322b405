package authn

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"
)

// Credentials are what one Authorization header carries.
type Credentials struct {
	// Scheme is "Bearer" or "Basic" (the caller may write it in any case).
	Scheme string
	// Token is the bearer token, or the password of Basic.
	Token string
	// User is Basic's user name; empty for Bearer.
	User string
}

// maxAuthorization bounds the header: a JWT with many scopes is a few kilobytes.
const maxAuthorization = 16 << 10

// ParseAuthorization reads an Authorization header value: "Bearer <token>" (RFC 6750: the
// token is base64url-ish characters with optional trailing "=") or "Basic <base64 of
// user:password>" (RFC 7617). The scheme is case-insensitive; exactly one space or more
// separates it from the credentials; nothing else is accepted. Errors are *Failure values
// with reason "no_credentials" or "malformed" and never quote the header.
func ParseAuthorization(h string) (Credentials, error) {
	if h == "" {
		return Credentials{}, unauthorized("no_credentials", "no credentials: send Authorization: Bearer <access token>")
	}
	if len(h) > maxAuthorization {
		return Credentials{}, unauthorized("malformed", "Authorization header longer than %d bytes", maxAuthorization)
	}
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok {
		return Credentials{}, unauthorized("malformed", "Authorization header has a scheme but no credentials")
	}
	rest = strings.TrimLeft(rest, " ")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		if !isToken68(rest) {
			return Credentials{}, unauthorized("malformed", "bearer token is empty or holds characters a token cannot (RFC 6750)")
		}
		return Credentials{Scheme: "Bearer", Token: rest}, nil
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil || !utf8.Valid(raw) {
			return Credentials{}, unauthorized("malformed", "Basic credentials are not base64 of UTF-8 user:password")
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok || pass == "" || hasControl(user) || hasControl(pass) {
			return Credentials{}, unauthorized("malformed", "Basic credentials are not user:password")
		}
		return Credentials{Scheme: "Basic", Token: pass, User: user}, nil
	}
	return Credentials{}, unauthorized("malformed", "Authorization scheme is neither Bearer nor Basic")
}

// isToken68 is RFC 6750's b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isToken68(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}
