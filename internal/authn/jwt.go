package authn

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// JWTConfig says which OAuth2 access tokens a listener accepts: JWTs signed by a key in the
// JWKS file (the trust's authorisation server publishes it), from Issuer, for Audience,
// unexpired, carrying a scope that grants writing Resource in the system context (SMART
// Backend Services: system/Appointment.write, or SMART v2 system/Appointment.cu).
type JWTConfig struct {
	// JWKSFile is a JSON Web Key Set of public keys (RSA or P-256/P-384 EC). Re-read when it
	// changes: add the authorisation server's next key before it signs with it, and drop the
	// old key once the last token it signed has expired.
	JWKSFile string
	// Issuer must equal the token's iss.
	Issuer string
	// Audience must be one of the token's aud values: this endpoint's base URL as the
	// authorisation server names it.
	Audience string
	// Resource is the FHIR resource type the scope must grant writing, e.g. "Appointment".
	Resource string
	// Leeway tolerates clock skew with the authorisation server on exp, nbf and iat.
	// Default 30s.
	Leeway time.Duration
	Log    *slog.Logger
}

// SigningMethods are the JWS algorithms accepted: SMART's RS384/ES384 and the RS256/ES256
// most authorisation servers sign access tokens with. Never "none" or an HMAC, whose key
// would be the public key an attacker can read.
var SigningMethods = []string{"RS256", "RS384", "ES256", "ES384"}

// Verifier checks access tokens against a JWTConfig.
type Verifier struct {
	c    JWTConfig
	keys *reloader[keyfunc.Keyfunc]
	p    *jwt.Parser
}

// NewVerifier loads the JWKS file; a missing setting or a file without a usable public key
// is an error.
func NewVerifier(c JWTConfig) (*Verifier, error) {
	switch {
	case c.JWKSFile == "":
		return nil, errors.New("no JWKS file")
	case c.Issuer == "":
		return nil, errors.New("a JWKS file needs the issuer its tokens must carry")
	case c.Audience == "":
		return nil, errors.New("a JWKS file needs the audience its tokens must carry (this endpoint's URL)")
	case c.Resource == "":
		return nil, errors.New("no resource type for the scope check")
	}
	if c.Leeway <= 0 {
		c.Leeway = 30 * time.Second
	}
	keys, err := newReloader("JWKS file "+c.JWKSFile, c.Log, func() (keyfunc.Keyfunc, error) { return loadJWKS(c.JWKSFile) }, c.JWKSFile)
	if err != nil {
		return nil, err
	}
	p := jwt.NewParser(jwt.WithValidMethods(SigningMethods), jwt.WithIssuer(c.Issuer), jwt.WithAudience(c.Audience),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(c.Leeway))
	return &Verifier{c: c, keys: keys, p: p}, nil
}

func loadJWKS(path string) (keyfunc.Keyfunc, error) {
	raw, err := readSmall(path, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("JWKS file: %w", err)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("JWKS file %s is not a JSON Web Key Set: %w", path, err)
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("JWKS file %s holds no key", path)
	}
	for i, k := range set.Keys {
		if _, private := k["d"]; private {
			return nil, fmt.Errorf("JWKS file %s key %d is a private key: give the gateway the public keys only", path, i)
		}
	}
	kf, err := keyfunc.NewJWKSetJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("JWKS file %s: %w", path, err)
	}
	return kf, nil
}

// Claims are what an accepted token says about its caller.
type Claims struct {
	// Client is the token's client_id, else azp, else sub.
	Client string
	Scopes []string
	Expiry time.Time
}

type claims struct {
	jwt.RegisteredClaims
	Scope    scopeClaim `json:"scope"`
	ClientID string     `json:"client_id"`
	AZP      string     `json:"azp"`
}

// scopeClaim is RFC 9068's space-separated string; some servers send a JSON array.
type scopeClaim []string

func (s *scopeClaim) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = strings.Fields(one)
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("scope is neither a string nor a list of strings")
	}
	*s = many
	return nil
}

// Verify checks a bearer token: signature by a key in the JWKS, algorithm, issuer, audience,
// expiry (required), not-before and issued-at, then the scope. A token that fails any check
// but the scope is a 401 Failure; one without the scope is a 403.
func (v *Verifier) Verify(token string) (Claims, error) {
	var c claims
	_, err := v.p.ParseWithClaims(token, &c, v.keys.get().Keyfunc)
	if err != nil {
		reason := "bad_token"
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			reason = "expired"
		case errors.Is(err, jwt.ErrTokenInvalidIssuer):
			reason = "wrong_issuer"
		case errors.Is(err, jwt.ErrTokenInvalidAudience):
			reason = "wrong_audience"
		}
		return Claims{}, unauthorized(reason, "access token refused: %s", tokenError(err))
	}
	out := Claims{Client: firstOf(c.ClientID, c.AZP, c.Subject), Scopes: c.Scope}
	if c.ExpiresAt != nil {
		out.Expiry = c.ExpiresAt.Time
	}
	if out.Client == "" {
		return Claims{}, unauthorized("bad_token", "access token refused: it names no client (client_id, azp or sub)")
	}
	for _, s := range c.Scope {
		if GrantsWrite(s, v.c.Resource) {
			return out, nil
		}
	}
	return Claims{}, &Failure{Status: 403, Reason: "wrong_scope",
		Detail: fmt.Sprintf("access token lacks a scope that grants writing %s (system/%s.write or system/%s.cu)", v.c.Resource, v.c.Resource, v.c.Resource)}
}

// tokenError is the library's reason in words a caller can act on, without the token.
func tokenError(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "not a well-formed JWT"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "no key in the configured JWKS matches it (kid or algorithm)"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "signature does not verify"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// The library names the claim ("exp claim is required"); it never quotes the token.
		_, what, _ := strings.Cut(err.Error(), ": ")
		return what
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "not valid yet (nbf or iat in the future)"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	}
	return "invalid"
}

func firstOf(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// GrantsWrite reports whether a SMART scope lets a backend service create and update
// resource: system/<resource or *>.write or .* (SMART v1), or system/<resource or *>.<perms>
// with both c and u (SMART v2, "cruds" order). A v2 scope narrowed by a query
// ("?category=…") grants nothing here, since the gateway cannot honour the narrowing.
func GrantsWrite(scope, resource string) bool {
	ctx, rest, ok := strings.Cut(scope, "/")
	if !ok || ctx != "system" || strings.Contains(rest, "?") {
		return false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return false
	}
	res, perm := rest[:i], rest[i+1:]
	if res != resource && res != "*" {
		return false
	}
	switch perm {
	case "write", "*":
		return true
	}
	if perm == "" {
		return false
	}
	const order = "cruds"
	at := 0
	for j := 0; j < len(perm); j++ {
		k := strings.IndexByte(order[at:], perm[j])
		if k < 0 {
			return false
		}
		at += k + 1
	}
	return strings.Contains(perm, "c") && strings.Contains(perm, "u")
}
