package testenv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// Issuer is the signing side of a throwaway OAuth2 authorisation server: a key, the JWKS
// file that publishes its public half, and access tokens signed with it.
type Issuer struct {
	// JWKSFile holds the public key as a JSON Web Key Set.
	JWKSFile string
	// Issuer is the iss of every token (unless a test overrides it).
	Issuer string
	alg    string
	kid    string
	key    crypto.Signer
}

// NewIssuer makes a key for alg ("ES256" or "RS256") and writes its JWKS under
// tb.TempDir().
func NewIssuer(tb testing.TB, issuer, alg string) *Issuer {
	tb.Helper()
	var key crypto.Signer
	var err error
	switch alg {
	case "ES256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "RS256":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		tb.Fatalf("NewIssuer: algorithm %q", alg)
	}
	if err != nil {
		tb.Fatal(err)
	}
	serial++
	i := &Issuer{Issuer: issuer, alg: alg, kid: fmt.Sprintf("test-key-%d", serial), key: key}
	i.JWKSFile = filepath.Join(tb.TempDir(), "jwks.json")
	i.WriteJWKS(tb, i.JWKSFile)
	return i
}

// WriteJWKS writes the issuer's public key set to path, plus the keys of others (for a set
// that holds an old and a new key during a rotation).
func (i *Issuer) WriteJWKS(tb testing.TB, path string, others ...*Issuer) {
	tb.Helper()
	var set jwkset.JWKSMarshal
	for _, is := range append([]*Issuer{i}, others...) {
		k, err := jwkset.NewJWKFromKey(is.key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{
			KID: is.kid, ALG: jwkset.ALG(is.alg), USE: jwkset.UseSig}})
		if err != nil {
			tb.Fatal(err)
		}
		set.Keys = append(set.Keys, k.Marshal())
	}
	b, err := json.Marshal(set)
	if err != nil {
		tb.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

// Token signs claims. iss defaults to the issuer's, exp to 5 minutes from now, iat to now;
// a claim set to nil is left out.
func (i *Issuer) Token(tb testing.TB, claims jwt.MapClaims) string {
	tb.Helper()
	c := jwt.MapClaims{"iss": i.Issuer, "iat": time.Now().Unix(), "exp": time.Now().Add(5 * time.Minute).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	var m jwt.SigningMethod = jwt.SigningMethodES256
	if i.alg == "RS256" {
		m = jwt.SigningMethodRS256
	}
	t := jwt.NewWithClaims(m, c)
	t.Header["kid"] = i.kid
	s, err := t.SignedString(i.key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// ForgedToken signs claims with another key under this issuer's key id: a token whose
// signature does not verify.
func (i *Issuer) ForgedToken(tb testing.TB, claims jwt.MapClaims) string {
	tb.Helper()
	other := NewIssuer(tb, i.Issuer, i.alg)
	other.kid = i.kid
	return other.Token(tb, claims)
}
