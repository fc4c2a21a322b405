package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nhsx/dnarisk/internal/authn"
	"github.com/nhsx/dnarisk/internal/envflag"
	"github.com/nhsx/dnarisk/pas/senders"
)

// listenSecurity is how the MLLP and FHIR listeners are protected. With none of it set they
// may only listen on loopback (or anywhere with --insecure-listeners, for demos).
type listenSecurity struct {
	mllpTLS     authn.ServerTLS
	sendersFile string
	fhirTLS     authn.ServerTLS
	jwks        string
	issuer      string
	audience    string
	insecure    bool
}

func (s *listenSecurity) register(fs *flag.FlagSet, env envflag.Env) {
	str := func(p *string, name, variable, usage string) {
		fs.StringVar(p, name, "", usage)
		env[name] = variable
	}
	str(&s.mllpTLS.CertFile, "mllp-tls-cert-file", "MLLP_TLS_CERT_FILE", "MLLP over TLS: the gateway's certificate chain (PEM)")
	str(&s.mllpTLS.KeyFile, "mllp-tls-key-file", "MLLP_TLS_KEY_FILE", "MLLP over TLS: the gateway's private key (PEM)")
	str(&s.mllpTLS.ClientCAFile, "mllp-client-ca-file", "MLLP_CLIENT_CA_FILE", "MLLP over TLS: CAs (PEM) whose client certificates may connect; a client certificate is then required")
	str(&s.sendersFile, "mllp-senders-file", "MLLP_SENDERS_FILE", "JSON allow-list of sending application/facility (MSH-3/MSH-4) per client certificate or source address; others get AR")
	str(&s.fhirTLS.CertFile, "fhir-tls-cert-file", "FHIR_TLS_CERT_FILE", "HTTPS for FHIR: the gateway's certificate chain (PEM)")
	str(&s.fhirTLS.KeyFile, "fhir-tls-key-file", "FHIR_TLS_KEY_FILE", "HTTPS for FHIR: the gateway's private key (PEM)")
	str(&s.fhirTLS.ClientCAFile, "fhir-client-ca-file", "FHIR_CLIENT_CA_FILE", "CAs (PEM) whose client certificates may post to FHIR (mutual TLS)")
	str(&s.jwks, "fhir-jwks-file", "FHIR_JWKS_FILE", "JWKS of the authorisation server whose access tokens (JWT, RS256/ES256) may post to FHIR")
	str(&s.issuer, "fhir-token-issuer", "FHIR_TOKEN_ISSUER", "iss that FHIR access tokens must carry")
	str(&s.audience, "fhir-token-audience", "FHIR_TOKEN_AUDIENCE", "aud that FHIR access tokens must carry: the FHIR base URL as the authorisation server names it")
	fs.BoolVar(&s.insecure, "insecure-listeners", false, "DEMOS ONLY: let MLLP, FHIR and the operations endpoint listen off loopback without TLS or authentication")
	env["insecure-listeners"] = "INSECURE_LISTENERS"
}

// protections are the loaded settings.
type protections struct {
	mllpTLS  *tls.Config
	senders  func() *senders.List // the allow-list in force (reloaded on change); nil: none
	fhirTLS  *tls.Config
	fhirAuth *authn.HTTP
}

// check applies the listener rule to the two addresses ("" is off) and loads every file
// once, so that a missing or bad file is a settings error at start.
func (s *listenSecurity) check(mllpAddr, fhirAddr string) error {
	if mllpAddr != "" && !s.insecure && !authn.Loopback(mllpAddr) && s.mllpTLS.ClientCAFile == "" && s.sendersFile == "" {
		return fmt.Errorf("--mllp-addr %s is reachable from other machines and nothing says who may send: set MLLP over TLS with client certificates "+
			"(--mllp-tls-cert-file, --mllp-tls-key-file, --mllp-client-ca-file) and/or an allow-list of senders (--mllp-senders-file), "+
			"or bind it to 127.0.0.1; --insecure-listeners allows it, for demos only", mllpAddr)
	}
	if fhirAddr != "" && !s.insecure && !authn.Loopback(fhirAddr) && (!s.fhirTLS.Enabled() || s.fhirTLS.ClientCAFile == "" && s.jwks == "") {
		return fmt.Errorf("--fhir-addr %s is reachable from other machines without HTTPS and client authentication: set --fhir-tls-cert-file and --fhir-tls-key-file, "+
			"and --fhir-jwks-file (with --fhir-token-issuer and --fhir-token-audience) and/or --fhir-client-ca-file, "+
			"or bind it to 127.0.0.1 behind a proxy that authenticates; --insecure-listeners allows it, for demos only", fhirAddr)
	}
	_, err := s.load(nil)
	return err
}

func (s *listenSecurity) load(log *slog.Logger) (protections, error) {
	var p protections
	var err error
	if s.mllpTLS.Enabled() || s.mllpTLS.ClientCAFile != "" {
		if p.mllpTLS, err = s.mllpTLS.Config(tls.RequireAndVerifyClientCert, log); err != nil {
			return p, fmt.Errorf("MLLP TLS: %w", err)
		}
	}
	if s.sendersFile != "" {
		// Read again within a second of changing, as certificates are: a new engine's rule
		// needs no restart. A change that does not load keeps the list in force.
		load := func() (*senders.List, error) {
			l, err := senders.Load(s.sendersFile)
			if err == nil && l.NeedsTLS() && s.mllpTLS.ClientCAFile == "" {
				err = errors.New("--mllp-senders-file names client certificates, but MLLP asks for none: set --mllp-client-ca-file (with the TLS certificate and key)")
			}
			return l, err
		}
		if p.senders, err = authn.WatchFiles("MLLP senders file "+s.sendersFile, log, load, s.sendersFile); err != nil {
			return p, err
		}
	}
	if s.fhirTLS.Enabled() || s.fhirTLS.ClientCAFile != "" {
		if p.fhirTLS, err = s.fhirTLS.Config(tls.VerifyClientCertIfGiven, log); err != nil {
			return p, fmt.Errorf("FHIR TLS: %w", err)
		}
	}
	auth := &authn.HTTP{ClientCerts: s.fhirTLS.ClientCAFile != ""}
	switch {
	case s.jwks != "":
		if auth.JWT, err = authn.NewVerifier(authn.JWTConfig{JWKSFile: s.jwks, Issuer: s.issuer, Audience: s.audience, Resource: "Appointment", Log: log}); err != nil {
			return p, fmt.Errorf("--fhir-jwks-file: %w", err)
		}
	case s.issuer != "" || s.audience != "":
		return p, errors.New("--fhir-token-issuer and --fhir-token-audience need --fhir-jwks-file")
	}
	if auth.Configured() {
		p.fhirAuth = auth
	}
	return p, nil
}

// describe says in words how each listener is protected, for the start log and the page.
func (p protections) describe() (mllpSec, fhirSec string) {
	var m, f []string
	if p.mllpTLS != nil {
		m = append(m, "TLS")
		if p.mllpTLS.ClientAuth == tls.RequireAndVerifyClientCert {
			m = append(m, "client certificate required")
		}
	}
	if p.senders != nil {
		m = append(m, fmt.Sprintf("sender allow-list (%d rules)", len(p.senders().Rules)))
	}
	if p.fhirTLS != nil {
		f = append(f, "TLS")
	}
	if p.fhirAuth != nil {
		if p.fhirAuth.JWT != nil {
			f = append(f, "bearer JWT with system/Appointment.write")
		}
		if p.fhirAuth.ClientCerts {
			f = append(f, "client certificate")
		}
	}
	none := func(s []string) string {
		if len(s) == 0 {
			return "none"
		}
		return strings.Join(s, ", ")
	}
	return none(m), none(f)
}
