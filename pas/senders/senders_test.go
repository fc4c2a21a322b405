package senders_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/internal/authn"
	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/pas/hl7"
	"github.com/nhsx/dnarisk/pas/mllp"
	"github.com/nhsx/dnarisk/pas/senders"
)

// accept answers AA to everything that reaches it: what the SIU handler would do for a good message.
type accept struct {
	mu   sync.Mutex
	seen int
}

func (a *accept) Message(_ context.Context, frame []byte) [][]byte {
	a.mu.Lock()
	a.seen++
	a.mu.Unlock()
	m, err := hl7.Parse(frame)
	if err != nil {
		return [][]byte{hl7.Ack(nil, err, "", time.Now())}
	}
	return [][]byte{hl7.Ack(m, nil, "ok", time.Now())}
}

func (a *accept) TooLarge(context.Context, []byte) []byte { return nil }

func (a *accept) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func writeList(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "senders.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func msg(app, fac, ctrl string) string {
	return "MSH|^~\\&|" + app + "|" + fac + "|DNARISK|RXX01|20260101120000||SIU^S12^SIU_S12|" + ctrl + "|P|2.5.1\rSCH||A1^PAS\r"
}

// exchange sends one frame over conn and returns MSA-1 and MSA-3 of the reply.
func exchange(t *testing.T, c net.Conn, m string) (string, string, error) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := mllp.Write(c, []byte(m)); err != nil {
		return "", "", err
	}
	reply, err := mllp.NewReader(c, 0).Read()
	if err != nil {
		return "", "", err
	}
	ack, err := hl7.Parse(reply)
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	msa, _ := ack.Segment("MSA")
	return msa.Get(1, 1), msa.Get(3, 1), nil
}

// MLLP over TLS with client certificates and an allow-list: the certificate named in the
// list may send for its facility and no other; a certificate from another CA, or none, does
// not get past the handshake.
func TestAllowListOverTLS(t *testing.T) {
	certs, other := testenv.NewCerts(t), testenv.NewCerts(t)
	list, err := senders.Load(writeList(t, `{"senders": [
		{"client_cert": "rhapsody.rxx.nhs.uk", "sending_application": "PAS", "sending_facility": "RXX01"},
		{"client_cert": "mirth.rxx.nhs.uk", "sending_facility": "*"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if !list.NeedsTLS() {
		t.Fatal("certificate rules do not need TLS")
	}
	tc, err := authn.ServerTLS{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile}.Config(tls.RequireAndVerifyClientCert, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	next := &accept{}
	var mu sync.Mutex
	refused := map[string]int{}
	note := func(r string) { mu.Lock(); refused[r]++; mu.Unlock() }
	srv := &mllp.Server{TLS: tc, Log: log, Refused: note, HandshakeTimeout: 5 * time.Second,
		Handler: &senders.Handler{List: func() *senders.List { return list }, Next: next, Log: log, Refused: func(trigger string) { note("sender:" + trigger) }}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	addr := ln.Addr().String()

	dial := func(cert, key string, pool *testenv.Certs) (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, pool.ClientTLS(t, cert, key))
	}
	rcert, rkey := certs.ClientCert(t, "rhapsody.rxx.nhs.uk")
	c, err := dial(rcert, rkey, certs)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if code, _, err := exchange(t, c, msg("PAS", "RXX01", "C1")); err != nil || code != "AA" {
		t.Fatalf("allowed sender: %s %v", code, err)
	}
	if code, text, err := exchange(t, c, msg("PAS", "RXX02", "C2")); err != nil || code != "AR" || !strings.Contains(text, "MSH-3, MSH-4") {
		t.Fatalf("other facility: %s %q %v", code, text, err)
	}
	if code, _, _ := exchange(t, c, msg("OTHER", "RXX01", "C3")); code != "AR" {
		t.Fatalf("other application: %s", code)
	}
	if code, _, _ := exchange(t, c, msg("PAS", "*", "C4")); code != "AR" {
		t.Fatalf(`MSH-4 "*": %s`, code)
	}
	mcert, mkey := certs.ClientCert(t, "Engine", "MIRTH.rxx.nhs.uk") // the name in a SAN, any case
	if c2, err := dial(mcert, mkey, certs); err != nil {
		t.Fatal(err)
	} else {
		if code, _, err := exchange(t, c2, msg("ANY", "RYY99", "C5")); err != nil || code != "AA" {
			t.Fatalf("wildcard facility: %s %v", code, err)
		}
		c2.Close()
	}
	// A certificate the CA signed but the list does not name: connects, every message AR.
	ucert, ukey := certs.ClientCert(t, "unlisted.rxx.nhs.uk")
	if c3, err := dial(ucert, ukey, certs); err != nil {
		t.Fatal(err)
	} else {
		if code, _, _ := exchange(t, c3, msg("PAS", "RXX01", "C6")); code != "AR" {
			t.Fatalf("unlisted certificate: %s", code)
		}
		if code, _, _ := exchange(t, c3, "garbage"); code != "AR" {
			t.Fatalf("unlisted certificate, unreadable header: %s", code)
		}
		c3.Close()
	}
	// Another CA's certificate, and no certificate: the handshake fails, nothing is read.
	for name, try := range map[string]func() (net.Conn, error){
		"untrusted CA":   func() (net.Conn, error) { return dial(other.ClientCertFile, other.ClientKeyFile, certs) },
		"no certificate": func() (net.Conn, error) { return dial("", "", certs) },
	} {
		c, err := try()
		if err == nil {
			// TLS 1.3: the client learns of the refusal on its first read.
			_, _, err = exchange(t, c, msg("PAS", "RXX01", "C7"))
			c.Close()
		}
		if err == nil {
			t.Errorf("%s: message accepted", name)
		}
	}
	// Plain TCP to a TLS listener: no handshake, refused.
	if pc, err := net.Dial("tcp", addr); err == nil {
		if _, _, err := exchange(t, pc, msg("PAS", "RXX09", "C8")); err == nil {
			t.Error("plain MLLP to the TLS listener answered")
		}
		pc.Close()
	}
	testenv.Eventually(t, 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return refused["tls_handshake"] >= 3 }, "three refused handshakes")
	if next.count() != 2 {
		t.Errorf("%d messages reached the SIU handler, want the 2 allowed", next.count())
	}
	mu.Lock()
	if refused["sender:S12"] != 4 || refused["sender:"] != 1 {
		t.Errorf("refusals %v, want 4 sender refusals of S12 and 1 of an unreadable message", refused)
	}
	mu.Unlock()
	text := logs.String()
	for _, want := range []string{`"msg":"hl7 message refused: sender not allowed for this connection"`, `"sending_facility":"RXX02"`,
		`"client_cert":"rhapsody.rxx.nhs.uk"`, `"msg":"mllp connection refused: TLS handshake failed"`, `"client":"cert:rhapsody.rxx.nhs.uk"`} {
		if !strings.Contains(text, want) {
			t.Errorf("logs lack %s", want)
		}
	}
}

// Without TLS a source-address rule is the only kind that can match.
func TestAllowListBySource(t *testing.T) {
	list, err := senders.Load(writeList(t, `{"senders": [{"source": "127.0.0.0/8", "sending_application": "pas", "sending_facility": "rxx01"},
		{"source": "::1", "sending_facility": "RXX03"}]}`))
	if err != nil || list.NeedsTLS() {
		t.Fatal(err)
	}
	at := func(ip string) mllp.Peer { return mllp.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 5000}} }
	for _, c := range []struct {
		peer     mllp.Peer
		app, fac string
		want     bool
	}{
		{at("127.0.0.1"), "PAS", "RXX01", true},
		{at("127.9.9.9"), "PAS", "RXX01", true},
		{at("::ffff:127.0.0.1"), "PAS", "RXX01", true},
		{at("127.0.0.1"), "PAS", "RXX02", false},
		{at("127.0.0.1"), "", "RXX01", false},
		{at("10.0.0.1"), "PAS", "RXX01", false},
		{at("::1"), "ANY", "RXX03", true},
		{at("::2"), "ANY", "RXX03", false},
		{mllp.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("10.0.0.1")}, CertNames: []string{"127.0.0.1"}}, "PAS", "RXX01", false},
	} {
		if got := list.Allows(c.peer, c.app, c.fac); got != c.want {
			t.Errorf("%v %v %s^%s: %v", c.peer.Addr, c.peer.CertNames, c.app, c.fac, got)
		}
	}
}

func TestLoadRefusesBadLists(t *testing.T) {
	for name, body := range map[string]string{
		"empty":        `{"senders": []}`,
		"both":         `{"senders": [{"client_cert": "a", "source": "10.0.0.1", "sending_facility": "X"}]}`,
		"neither":      `{"senders": [{"sending_facility": "X"}]}`,
		"no facility":  `{"senders": [{"source": "10.0.0.1"}]}`,
		"bad address":  `{"senders": [{"source": "10.0.0.300", "sending_facility": "X"}]}`,
		"bad prefix":   `{"senders": [{"source": "10.0.0.0/33", "sending_facility": "X"}]}`,
		"unknown key":  `{"senders": [{"source": "10.0.0.1", "facility": "X"}]}`,
		"not JSON":     `senders`,
		"a bare array": `[{"source": "10.0.0.1", "sending_facility": "X"}]`,
	} {
		if _, err := senders.Load(writeList(t, body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := senders.Load(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
}
