package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Certs is a throwaway PKI for one test: a CA, a server certificate for localhost and
// 127.0.0.1, and a client certificate, all signed by the CA and written as PEM files.
type Certs struct {
	Dir                           string
	CAFile                        string
	ServerCertFile, ServerKeyFile string
	ClientCertFile, ClientKeyFile string
	// Pool trusts the CA.
	Pool *x509.CertPool
	// Server is a TLS server configuration with the server certificate that asks for (but
	// does not require) a client certificate signed by the CA.
	Server *tls.Config

	caKey  *ecdsa.PrivateKey
	caCert *x509.Certificate
}

// NewCerts generates a fresh CA and certificates under tb.TempDir().
func NewCerts(tb testing.TB) *Certs {
	tb.Helper()
	dir := tb.TempDir()
	c := &Certs{Dir: dir, Pool: x509.NewCertPool()}
	caKey, caCert, caDER := mustCert(tb, nil, nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "dnarisk test CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	})
	c.Pool.AddCert(caCert)
	c.caKey, c.caCert = caKey, caCert
	c.CAFile = writePEM(tb, dir, "ca.pem", "CERTIFICATE", caDER)

	srvKey, _, srvDER := mustCert(tb, caKey, caCert, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	c.ServerCertFile = writePEM(tb, dir, "server.pem", "CERTIFICATE", srvDER)
	c.ServerKeyFile = writeKey(tb, dir, "server-key.pem", srvKey)

	cliKey, _, cliDER := mustCert(tb, caKey, caCert, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "dnarisk test client"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	c.ClientCertFile = writePEM(tb, dir, "client.pem", "CERTIFICATE", cliDER)
	c.ClientKeyFile = writeKey(tb, dir, "client-key.pem", cliKey)

	pair, err := tls.LoadX509KeyPair(c.ServerCertFile, c.ServerKeyFile)
	if err != nil {
		tb.Fatal(err)
	}
	c.Server = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: c.Pool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
	return c
}

var serial int64

func mustCert(tb testing.TB, parentKey *ecdsa.PrivateKey, parent *x509.Certificate, tmpl *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial++
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano() + serial)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return key, cert, der
}

func writePEM(tb testing.TB, dir, name, typ string, der []byte) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func writeKey(tb testing.TB, dir, name string, key *ecdsa.PrivateKey) string {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return writePEM(tb, dir, name, "PRIVATE KEY", der)
}

// ClientCert issues another client certificate from the CA, with subject common name cn and
// DNS subject alternative names dns, and returns its certificate and key files.
func (c *Certs) ClientCert(tb testing.TB, cn string, dns ...string) (certFile, keyFile string) {
	tb.Helper()
	key, _, der := mustCert(tb, c.caKey, c.caCert, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dns,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	serial++
	name := fmt.Sprintf("client-%d", serial)
	return writePEM(tb, c.Dir, name+".pem", "CERTIFICATE", der), writeKey(tb, c.Dir, name+"-key.pem", key)
}

// ClientTLS is a client TLS configuration that trusts the CA and presents certFile/keyFile
// (none when both are empty).
func (c *Certs) ClientTLS(tb testing.TB, certFile, keyFile string) *tls.Config {
	tb.Helper()
	tc := &tls.Config{RootCAs: c.Pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			tb.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc
}
