package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/internal/testenv/browser"
	"github.com/nhsx/dnarisk/pas/hl7"
	"github.com/nhsx/dnarisk/pas/mllp"
)

func writeTemp(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const opsToken = "ops-token-0123456789abcdef0123456789abcdef"

// Off loopback, every listener needs its protection or a deliberate --insecure-listeners;
// the message names what to set.
func TestListenerRule(t *testing.T) {
	certs := testenv.NewCerts(t)
	is := testenv.NewIssuer(t, "https://auth.example", "ES256")
	sendersByCert := writeTemp(t, "senders.json", `{"senders": [{"client_cert": "engine", "sending_facility": "RXX01"}]}`)
	sendersBySource := writeTemp(t, "senders2.json", `{"senders": [{"source": "10.1.0.0/16", "sending_facility": "RXX01"}]}`)
	tok := writeTemp(t, "token", opsToken)
	mllpTLS := []string{"--mllp-tls-cert-file", certs.ServerCertFile, "--mllp-tls-key-file", certs.ServerKeyFile}
	fhirTLS := []string{"--fhir-tls-cert-file", certs.ServerCertFile, "--fhir-tls-key-file", certs.ServerKeyFile}
	jwks := []string{"--fhir-jwks-file", is.JWKSFile, "--fhir-token-issuer", is.Issuer, "--fhir-token-audience", "https://gw/fhir"}
	loop := []string{"--mllp-addr", "127.0.0.1:0", "--fhir-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"}
	with := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, c := range []struct {
		name string
		args []string
		want string // "" accepted
	}{
		{"defaults are loopback", nil, ""},
		{"open MLLP", with(loop, []string{"--mllp-addr", ":2575"}), "--mllp-addr :2575 is reachable from other machines"},
		{"MLLP TLS without client certificates", with(loop, mllpTLS, []string{"--mllp-addr", "0.0.0.0:2575"}), "--mllp-senders-file"},
		{"MLLP with client certificates", with(loop, mllpTLS, []string{"--mllp-addr", ":2575", "--mllp-client-ca-file", certs.CAFile}), ""},
		{"MLLP with a source allow-list", with(loop, []string{"--mllp-addr", ":2575", "--mllp-senders-file", sendersBySource}), ""},
		{"certificate rules without client certificates", with(loop, mllpTLS, []string{"--mllp-senders-file", sendersByCert}), "--mllp-client-ca-file"},
		{"client CA without a certificate", with(loop, []string{"--mllp-client-ca-file", certs.CAFile}), "server certificate"},
		{"open FHIR", with(loop, []string{"--fhir-addr", ":8080"}), "--fhir-addr :8080 is reachable from other machines"},
		{"FHIR tokens over plain HTTP", with(loop, jwks, []string{"--fhir-addr", "10.0.0.1:8080"}), "--fhir-tls-cert-file"},
		{"FHIR HTTPS without client authentication", with(loop, fhirTLS, []string{"--fhir-addr", ":8443"}), "--fhir-jwks-file"},
		{"FHIR HTTPS with tokens", with(loop, fhirTLS, jwks, []string{"--fhir-addr", ":8443"}), ""},
		{"FHIR HTTPS with client certificates", with(loop, fhirTLS, []string{"--fhir-addr", ":8443", "--fhir-client-ca-file", certs.CAFile}), ""},
		{"JWKS without issuer", with(loop, []string{"--fhir-jwks-file", is.JWKSFile, "--fhir-token-audience", "a"}), "issuer"},
		{"issuer without JWKS", with(loop, []string{"--fhir-token-issuer", "x"}), "--fhir-jwks-file"},
		{"missing JWKS", with(loop, []string{"--fhir-jwks-file", "/nonexistent/jwks.json", "--fhir-token-issuer", "x", "--fhir-token-audience", "a"}), "jwks.json"},
		{"open operations endpoint", with(loop, []string{"--metrics-addr", ":9467"}), "--metrics-token-file"},
		{"operations endpoint with a token", with(loop, []string{"--metrics-addr", ":9467", "--metrics-token-file", tok}), ""},
		{"all open, for a demo", []string{"--mllp-addr", ":2575", "--fhir-addr", ":8080", "--metrics-addr", ":9467", "--insecure-listeners"}, ""},
	} {
		_, err := parseConfig(c.args, lookupIn(nil), io.Discard)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := parseConfig(nil, lookupIn(map[string]string{"INSECURE_LISTENERS": "true", "MLLP_ADDR": ":2575"}), io.Discard); err != nil {
		t.Errorf("INSECURE_LISTENERS from the environment: %v", err)
	}
}

// The real binary refuses an unprotected listener off loopback with one line and status 2.
func TestBinaryRefusesOpenListener(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pasgateway")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"--mllp-addr", "0.0.0.0:2575"}, {"--fhir-addr", ":8080"}, {"--metrics-addr", ":9467"}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "DNA_PSEUDONYM_SECRET="+secret)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || strings.Count(stderr.String(), "\n") != 1 ||
			!strings.Contains(stderr.String(), "is reachable from other machines") || !strings.Contains(stderr.String(), "--insecure-listeners") {
			t.Errorf("%v: exit %v, stderr %q", args, err, stderr.String())
		}
	}
}

// sendTLS sends one message over MLLP on TLS and returns MSA-1, or the error of a refused
// connection.
func sendTLS(addr string, tc *tls.Config, msg string) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, tc)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := mllp.Write(c, []byte(strings.ReplaceAll(msg, "\n", "\r"))); err != nil {
		return "", err
	}
	ack, err := mllp.NewReader(c, 0).Read()
	if err != nil {
		return "", err
	}
	m, err := hl7.Parse(ack)
	if err != nil {
		return "", err
	}
	msa, _ := m.Segment("MSA")
	return msa.Get(1, 1), nil
}

type metricFams map[string]*dto.MetricFamily

// value sums the series of a family whose labels include want (name, value pairs).
func (f metricFams) value(name string, want ...string) float64 {
	var sum float64
	for _, m := range f[name].GetMetric() {
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				found = found || l.GetName() == want[i] && l.GetValue() == want[i+1]
			}
			ok = ok && found
		}
		if ok {
			sum += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

func scrape(t *testing.T, c *http.Client, url, token string) metricFams {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, res.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// The gateway with every protection on, against real Kafka and Redis: MLLP over TLS from
// the engine's certificate publishes for its own facility only; a certificate from another
// CA, or plain TCP, gets nothing; FHIR over HTTPS publishes with a valid access token and
// refuses the rest with 401/403; the operations endpoint wants its token; and the metrics
// count all of it.
func TestSecuredGateway(t *testing.T) {
	certs, other := testenv.NewCerts(t), testenv.NewCerts(t)
	is := testenv.NewIssuer(t, "https://auth.rxx.example", "RS256")
	const aud = "https://pasgateway.rxx.example/fhir"
	opsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	w := newWorld(t,
		"--mllp-tls-cert-file", certs.ServerCertFile, "--mllp-tls-key-file", certs.ServerKeyFile, "--mllp-client-ca-file", certs.CAFile,
		"--mllp-senders-file", writeTemp(t, "senders.json", `{"senders": [{"client_cert": "rhapsody.rxx.nhs.uk", "sending_application": "PAS", "sending_facility": "RXX01"}]}`),
		"--fhir-tls-cert-file", certs.ServerCertFile, "--fhir-tls-key-file", certs.ServerKeyFile,
		"--fhir-jwks-file", is.JWKSFile, "--fhir-token-issuer", is.Issuer, "--fhir-token-audience", aud,
		"--metrics-addr", opsAddr, "--metrics-token-file", writeTemp(t, "ops-token", opsToken+"\n"))
	now := time.Now().UTC().Truncate(time.Second)
	run := now.UnixNano()

	engineCert, engineKey := certs.ClientCert(t, "rhapsody.rxx.nhs.uk")
	engine := certs.ClientTLS(t, engineCert, engineKey)
	apptA := fmt.Sprintf("TA%d", run)
	if code, err := sendTLS(w.mllpAddr, engine, siuMsg("S12", "T1", apptA, now, now.Add(72*time.Hour), "")); err != nil || code != "AA" {
		t.Fatalf("S12 from the engine's certificate: %s %v", code, err)
	}
	other01 := strings.Replace(siuMsg("S12", "T2", apptA+"x", now, now.Add(72*time.Hour), ""), "|PAS|RXX01|", "|PAS|RXX02|", 1)
	if code, err := sendTLS(w.mllpAddr, engine, other01); err != nil || code != "AR" {
		t.Fatalf("S12 for another facility: %s %v", code, err)
	}
	if code, err := sendTLS(w.mllpAddr, certs.ClientTLS(t, other.ClientCertFile, other.ClientKeyFile), siuMsg("S12", "T3", apptA+"y", now, now.Add(72*time.Hour), "")); err == nil {
		t.Fatalf("certificate from an untrusted CA answered %s", code)
	}
	if c, err := net.Dial("tcp", w.mllpAddr); err == nil {
		mllp.Write(c, []byte(siuMsg("S12", "T4", apptA+"z", now, now.Add(72*time.Hour), "")))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := mllp.NewReader(c, 0).Read(); err == nil {
			t.Fatal("plain MLLP to the TLS listener was answered")
		}
		c.Close()
	}

	fhirURL := strings.Replace(w.fhirURL, "http://", "https://", 1)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: certs.ClientTLS(t, "", "")}}
	apptC := fmt.Sprintf("TC%d", run)
	body := fmt.Sprintf(`{"resourceType":"Appointment","status":"booked","identifier":[{"value":%q}],
	  "start":%q,"meta":{"lastUpdated":%q},"specialty":[{"coding":[{"code":"110"}]}],
	  "contained":[{"resourceType":"Patient","id":"p","birthDate":"1980-06-15",
	    "identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]}],
	  "participant":[{"actor":{"reference":"#p"},"status":"accepted"}]}`,
		apptC, now.Add(10*24*time.Hour).Format(time.RFC3339), now.Format(time.RFC3339))
	post := func(token string) (int, string) {
		req, _ := http.NewRequest("POST", fhirURL+"/Appointment", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	claims := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{"aud": aud, "client_id": "trust-epr", "scope": "system/Appointment.write"}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	for name, c := range map[string]struct {
		token  string
		status int
	}{
		"unauthenticated": {"", 401},
		"wrong signature": {is.ForgedToken(t, claims(nil)), 401},
		"expired":         {is.Token(t, claims(jwt.MapClaims{"exp": now.Add(-time.Hour).Unix(), "iat": now.Add(-2 * time.Hour).Unix()})), 401},
		"wrong audience":  {is.Token(t, claims(jwt.MapClaims{"aud": "https://other.example/fhir"})), 401},
		"wrong scope":     {is.Token(t, claims(jwt.MapClaims{"scope": "system/Appointment.read"})), 403},
	} {
		if status, b := post(c.token); status != c.status || !strings.Contains(b, `"resourceType":"OperationOutcome"`) {
			t.Errorf("%s: %d %s", name, status, b)
		}
	}
	if status, b := post(is.Token(t, claims(nil))); status != http.StatusCreated || !strings.Contains(b, "booked version 1 published") {
		t.Fatalf("valid token: %d %s", status, b)
	}

	var published []string
	for _, ev := range w.appointments() {
		published = append(published, ev.AppointmentID)
	}
	// HL7 appointment ids are namespaced by MSH-4 (the sending facility); FHIR ones by
	// the identifier's assigner, which this resource does not give.
	wantA := "RXX01:" + apptA
	if strings.Join(published, ",") != wantA+","+apptC {
		t.Fatalf("published %v, want only %s and %s", published, wantA, apptC)
	}

	plain := &http.Client{Timeout: 10 * time.Second}
	for path, want := range map[string]int{"/healthz": 200, "/metrics": 401, "/readyz": 401, "/status": 401} {
		res, err := plain.Get("http://" + opsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("%s without the token: %d, want %d", path, res.StatusCode, want)
		}
	}
	fams := scrape(t, plain, "http://"+opsAddr+"/metrics", opsToken)
	for _, c := range []struct {
		labels []string
		name   string
		want   float64
	}{
		{[]string{"protocol", "mllp", "trigger", "S12", "code", "AA"}, "dnarisk_gateway_messages_total", 1},
		{[]string{"protocol", "mllp", "trigger", "S12", "code", "AR"}, "dnarisk_gateway_messages_total", 1},
		{[]string{"protocol", "mllp", "reason", "sender_not_allowed"}, "dnarisk_gateway_refusals_total", 1},
		{[]string{"protocol", "mllp", "reason", "tls_handshake"}, "dnarisk_gateway_refusals_total", 2},
		{[]string{"protocol", "fhir", "trigger", "create", "code", "201"}, "dnarisk_gateway_messages_total", 1},
		{[]string{"protocol", "fhir", "trigger", "create", "code", "401"}, "dnarisk_gateway_messages_total", 4},
		{[]string{"protocol", "fhir", "reason", "expired"}, "dnarisk_gateway_refusals_total", 1},
		{[]string{"protocol", "fhir", "reason", "wrong_scope"}, "dnarisk_gateway_refusals_total", 1},
		{[]string{"protocol", "fhir", "reason", "wrong_audience"}, "dnarisk_gateway_refusals_total", 1},
		{[]string{"protocol", "fhir", "reason", "no_credentials"}, "dnarisk_gateway_refusals_total", 1},
		{[]string{"result", "ok"}, "dnarisk_gateway_kafka_ack_seconds", 2},
	} {
		if got := fams.value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	req, _ := http.NewRequest("GET", "http://"+opsAddr+"/readyz", nil)
	req.SetBasicAuth("operator", opsToken)
	res, err := plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(rb), `"kafka":"ok"`) || !strings.Contains(string(rb), `"redis":"ok"`) {
		t.Fatalf("/readyz: %d %s", res.StatusCode, rb)
	}
}

// The gateway's status page in a real browser shows what its /metrics count.
func TestGatewayPageInBrowser(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bctx := browser.New(t, ctx)
	opsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	w := newWorld(t, "--metrics-addr", opsAddr)
	now := time.Now().UTC().Truncate(time.Second)
	run := now.UnixNano()
	for i, c := range []struct{ msg, code string }{
		{siuMsg("S12", "P1", fmt.Sprintf("PA%d", run), now, now.Add(48*time.Hour), ""), "AA"},
		{siuMsg("S12", "P2", fmt.Sprintf("PB%d", run), now, now.Add(48*time.Hour), ""), "AA"},
		{siuMsg("S13", "P3", fmt.Sprintf("PB%d", run), now.Add(time.Minute), now.Add(72*time.Hour), ""), "AA"},
		{strings.Replace(siuMsg("S12", "P4", fmt.Sprintf("PC%d", run), now, now.Add(48*time.Hour), ""), "9434765919", "9434765918", 1), "AE"},
		{strings.Replace(siuMsg("S12", "P5", fmt.Sprintf("PD%d", run), now, now.Add(48*time.Hour), ""), "|P|2.5.1", "|P|2.1", 1), "AR"},
	} {
		if code, _ := w.send(c.msg); code != c.code {
			t.Fatalf("message %d: %s, want %s", i, code, c.code)
		}
	}
	res, err := http.Post(w.fhirURL+"/Appointment", "application/fhir+json", strings.NewReader("{"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()

	got, err := browser.Shown(bctx, "http://"+opsAddr+"/status", `[data-k="messages"]`)
	if err != nil {
		t.Fatalf("load the gateway page: %v", err)
	}
	fams := scrape(t, &http.Client{Timeout: 10 * time.Second}, "http://"+opsAddr+"/metrics", "")
	total := fams.value("dnarisk_gateway_messages_total")
	want := map[string]float64{
		"messages":                   total,
		"accepted":                   fams.value("dnarisk_gateway_messages_total", "code", "AA") + fams.value("dnarisk_gateway_messages_total", "code", "200"),
		"refused":                    fams.value("dnarisk_gateway_refusals_total"),
		"kafka-acks":                 fams.value("dnarisk_gateway_kafka_ack_seconds", "result", "ok"),
		"m-mllp-S12-AA":              fams.value("dnarisk_gateway_messages_total", "protocol", "mllp", "trigger", "S12", "code", "AA"),
		"m-mllp-S13-AA":              fams.value("dnarisk_gateway_messages_total", "protocol", "mllp", "trigger", "S13", "code", "AA"),
		"m-mllp-S12-AE":              fams.value("dnarisk_gateway_messages_total", "protocol", "mllp", "trigger", "S12", "code", "AE"),
		"m-mllp-S12-AR":              fams.value("dnarisk_gateway_messages_total", "protocol", "mllp", "trigger", "S12", "code", "AR"),
		"m-fhir-create-400":          fams.value("dnarisk_gateway_messages_total", "protocol", "fhir", "trigger", "create", "code", "400"),
		"r-fhir-invalid":             fams.value("dnarisk_gateway_refusals_total", "protocol", "fhir", "reason", "invalid"),
		"r-mllp-unsupported_version": fams.value("dnarisk_gateway_refusals_total", "protocol", "mllp", "reason", "unsupported_version"),
	}
	for k, n := range want {
		if got[k] != strconv.FormatFloat(n, 'f', -1, 64) {
			t.Errorf("page shows %s = %q, /metrics says %v", k, got[k], n)
		}
	}
	if want["messages"] != 6 || want["accepted"] != 3 || want["refused"] != 3 || want["kafka-acks"] != 3 || want["m-mllp-S12-AA"] != 2 {
		t.Errorf("counts do not match what was sent: %v", want)
	}
	if got["listener-mllp"] != "none (loopback only)" || got["listener-fhir"] != "none (loopback only)" {
		t.Errorf("listener protection shown as %q / %q", got["listener-mllp"], got["listener-fhir"])
	}
	var js struct {
		Messages int64 `json:"messages"`
	}
	if res, err := http.Get("http://" + opsAddr + "/status.json"); err == nil {
		json.NewDecoder(res.Body).Decode(&js)
		res.Body.Close()
	}
	if js.Messages != 6 {
		t.Errorf("/status.json messages = %d", js.Messages)
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	os.MkdirAll("../../out", 0o755)
	if err := os.WriteFile(filepath.Join("..", "..", "out", "gateway.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("gateway page screenshot: out/gateway.png (%d bytes)", len(png))
}

// A new sender added to the allow-list file is let in within seconds, without a restart; a
// change that does not load keeps the list in force.
func TestSendersFileReloads(t *testing.T) {
	path := writeTemp(t, "senders.json", `{"senders": [{"source": "127.0.0.0/8", "sending_facility": "RXX01"}]}`)
	w := newWorld(t, "--mllp-senders-file", path)
	now := time.Now().UTC().Truncate(time.Second)
	appt := fmt.Sprintf("TR%d", now.UnixNano())
	rxx02 := func(ctrl string) string {
		return strings.Replace(siuMsg("S12", ctrl, appt, now, now.Add(72*time.Hour), ""), "|PAS|RXX01|", "|PAS|RXX02|", 1)
	}
	if code, _ := w.send(rxx02("R1")); code != "AR" {
		t.Fatalf("RXX02 before it is listed: %s, want AR", code)
	}
	replace := func(body string) {
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil { // as deploy tools replace files
			t.Fatal(err)
		}
	}
	replace(`{"senders": [{"source": "127.0.0.0/8", "sending_facility": "RXX01"}, {"source": "127.0.0.0/8", "sending_facility": "RXX02"}]}`)
	code := ""
	for i := 0; i < 50 && code != "AA"; i++ {
		time.Sleep(200 * time.Millisecond)
		code, _ = w.send(rxx02(fmt.Sprintf("R2-%d", i)))
	}
	if code != "AA" {
		t.Fatalf("RXX02 after it was added to the file: %s, want AA within 10s", code)
	}
	replace(`{"senders": [{"source": "not an address"`)
	time.Sleep(1500 * time.Millisecond)
	if code, _ := w.send(rxx02("R3")); code != "AA" {
		t.Fatalf("after a broken edit: %s, want the list in force (AA)", code)
	}
}
