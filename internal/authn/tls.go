package authn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// ServerTLS names the files of a listener's TLS: its certificate chain and key, and the CAs
// whose client certificates it accepts. Certificate rotation without downtime: replace the
// files (key first is fine: a pair that does not match is refused and the old one kept); new
// connections get the new certificate within a second. For a new client CA, put old and new
// CA in the one file until every client has moved.
type ServerTLS struct {
	CertFile, KeyFile string
	// ClientCAFile is a PEM bundle of CAs for client certificates; "" asks for none.
	ClientCAFile string
}

// Enabled reports whether a server certificate is configured.
func (s ServerTLS) Enabled() bool { return s.CertFile != "" || s.KeyFile != "" }

// Config loads the files and returns the TLS configuration; a file that is missing or does
// not parse is an error here (a settings error), and later changes are picked up as they
// come. clientAuth applies when ClientCAFile is set: tls.RequireAndVerifyClientCert for a
// protocol with no way to answer "unauthenticated" (MLLP), tls.VerifyClientCertIfGiven for
// HTTP, which answers 401 itself. A certificate from any other CA fails the handshake.
func (s ServerTLS) Config(clientAuth tls.ClientAuthType, log *slog.Logger) (*tls.Config, error) {
	if s.CertFile == "" || s.KeyFile == "" {
		if s.ClientCAFile != "" {
			return nil, errors.New("a client CA file needs a server certificate and key too (TLS is what carries client certificates)")
		}
		return nil, errors.New("TLS needs both a certificate file and a key file")
	}
	pair, err := newReloader("TLS certificate "+s.CertFile, log, func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS certificate %s with key %s: %w", s.CertFile, s.KeyFile, err)
		}
		return &c, nil
	}, s.CertFile, s.KeyFile)
	if err != nil {
		return nil, err
	}
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return pair.get(), nil },
	}
	if s.ClientCAFile == "" {
		return base, nil
	}
	cas, err := newReloader("client CA file "+s.ClientCAFile, log, func() (*x509.CertPool, error) {
		b, err := readSmall(s.ClientCAFile, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("client CA file %s holds no PEM certificate", s.ClientCAFile)
		}
		return pool, nil
	}, s.ClientCAFile)
	if err != nil {
		return nil, err
	}
	base.ClientAuth = clientAuth
	base.ClientCAs = cas.get()
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = cas.get()
		return c, nil
	}
	return base, nil
}

// CertNames are the names a client certificate vouches for: its subject common name, then
// its DNS, URI and e-mail subject alternative names. Allow-lists match against any of them.
func CertNames(c *x509.Certificate) []string {
	var out []string
	if c.Subject.CommonName != "" {
		out = append(out, c.Subject.CommonName)
	}
	out = append(out, c.DNSNames...)
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return append(out, c.EmailAddresses...)
}

// PeerName is the identity of a verified client certificate in a TLS connection, for logs:
// "cert:" and its first name (CertNames). Without a verified certificate it is "".
func PeerName(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ""
	}
	names := CertNames(cs.VerifiedChains[0][0])
	if len(names) == 0 {
		return "cert:serial-" + cs.VerifiedChains[0][0].SerialNumber.Text(16)
	}
	return "cert:" + strings.ToValidUTF8(names[0], "?")
}
