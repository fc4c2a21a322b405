package authn

import (
	"net/http"
	"strconv"
	"strings"
)

// HTTP authenticates HTTP requests by whichever of its fields are set: a bearer token from
// Tokens (an operations endpoint), a bearer JWT checked by JWT (the FHIR endpoint), or a
// client certificate verified by the listener's TLS (ClientCerts). An Authorization header,
// when present, decides on its own: a bad token is refused even on a connection with a good
// certificate, so a caller is never let in on a credential other than the one it sent.
type HTTP struct {
	Tokens *Tokens
	JWT    *Verifier
	// ClientCerts accepts a request on a TLS connection whose client certificate the
	// listener verified.
	ClientCerts bool
	// Realm, when set, also accepts Basic credentials whose password is one of Tokens and
	// asks browsers for them, so a person can open a status page. Bearer only otherwise.
	Realm string
}

// Identity is who made an accepted request, for the audit log: "jwt:<client>",
// "token:<token id>" or "cert:<name>".
type Identity string

// Configured reports whether any way of authenticating is set; an HTTP with none accepts
// nobody.
func (a *HTTP) Configured() bool {
	return a != nil && (a.Tokens != nil || a.JWT != nil || a.ClientCerts)
}

// Authenticate returns the caller's identity, or a *Failure (401 or 403).
func (a *HTTP) Authenticate(r *http.Request) (Identity, error) {
	hs := r.Header.Values("Authorization")
	if len(hs) > 1 {
		return "", unauthorized("malformed", "more than one Authorization header")
	}
	if len(hs) == 0 || hs[0] == "" {
		if a.ClientCerts {
			if id := PeerName(r.TLS); id != "" {
				return Identity(id), nil
			}
		}
		return "", unauthorized("no_credentials", "no credentials: %s", a.wants())
	}
	cr, err := ParseAuthorization(hs[0])
	if err != nil {
		return "", err
	}
	basic := cr.Scheme == "Basic"
	switch {
	case basic && (a.Realm == "" || a.Tokens == nil):
		return "", unauthorized("malformed", "Basic credentials are not accepted here: %s", a.wants())
	case basic || a.JWT == nil && a.Tokens != nil:
		if id, ok := a.Tokens.Match(cr.Token); ok {
			return Identity("token:" + id), nil
		}
		return "", unauthorized("unknown_token", "token not recognised")
	case a.JWT != nil:
		c, err := a.JWT.Verify(cr.Token)
		if err != nil {
			return "", err
		}
		return Identity("jwt:" + c.Client), nil
	}
	return "", unauthorized("malformed", "bearer tokens are not accepted here: %s", a.wants())
}

func (a *HTTP) wants() string {
	switch {
	case a.JWT != nil && a.ClientCerts:
		return "send Authorization: Bearer <access token> or connect with a client certificate"
	case a.JWT != nil, a.Tokens != nil:
		return "send Authorization: Bearer <token>"
	case a.ClientCerts:
		return "connect with a client certificate from a trusted CA"
	}
	return "this endpoint accepts no credentials"
}

// Challenge is the WWW-Authenticate value that goes with a failure (RFC 6750 section 3).
func (a *HTTP) Challenge(f *Failure) string {
	if a.Realm != "" && a.Tokens != nil && f.Status == http.StatusUnauthorized {
		return `Basic realm=` + strconv.Quote(a.Realm) + `, Bearer realm=` + strconv.Quote(a.Realm)
	}
	code := "invalid_token"
	switch {
	case f.Status == http.StatusForbidden:
		code = "insufficient_scope"
	case f.Reason == "no_credentials":
		return "Bearer"
	case f.Reason == "malformed":
		code = "invalid_request"
	}
	return `Bearer error="` + code + `", error_description="` + strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, f.Detail) + `"`
}
