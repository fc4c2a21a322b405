package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/internal/testenv"
)

// composeEnv reads the environment of one service in docker-compose.yml: its KEY: value
// lines, merged with the top-level x-… anchors it names in "<<:".
func composeEnv(t *testing.T, service string) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]map[string]string{}
	var cur map[string]string
	env := map[string]string{}
	in, inEnv := false, false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "x-") && strings.Contains(line, ": &"):
			cur = map[string]string{}
			anchors[line[strings.Index(line, "&")+1:]] = cur
			continue
		case cur != nil && strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "  #"):
			k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
			cur[k] = v
			continue
		case cur != nil && strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "  "):
			cur = nil
		}
		switch {
		case line == "  "+service+":":
			in = true
		case in && strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   "):
			return env
		case in && line == "    environment:":
			inEnv = true
		case in && inEnv && strings.HasPrefix(line, "      <<:"):
			for _, name := range strings.FieldsFunc(line[strings.Index(line, ":")+1:], func(r rune) bool { return strings.ContainsRune("[]*, ", r) }) {
				for k, v := range anchors[name] {
					env[k] = v
				}
			}
		case in && inEnv && strings.HasPrefix(line, "      "):
			k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
			env[k] = strings.Trim(v, `"`)
		case in && inEnv:
			inEnv = false
		}
	}
	return env
}

// The compose stack's gateway as docker-compose.yml configures it, with the throwaway
// certificates and tokens deploy/make-secrets.sh makes with openssl: its settings pass the
// listener rule on every interface, and on real Kafka and Redis the engine's certificate
// gets an S12 acknowledged over MLLP on TLS and the generated access token gets a FHIR
// booking published.
func TestComposeGatewayWithGeneratedSecrets(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if testenv.CI() {
			t.Fatal("openssl is required under CI=true")
		}
		t.Skip("SKIPPING: no openssl to run deploy/make-secrets.sh")
	}
	dir := t.TempDir()
	if out, err := exec.Command("../../deploy/make-secrets.sh", dir).CombinedOutput(); err != nil {
		t.Fatalf("make-secrets.sh: %v\n%s", err, out)
	}
	env := composeEnv(t, "pasgateway")
	secretFile := map[string]string{"/run/secrets/pasgateway_cert": "pasgateway.pem", "/run/secrets/pasgateway_key": "pasgateway-key.pem",
		"/run/secrets/dnarisk_ca": "ca.pem", "/run/secrets/fhir_jwks": "fhir_jwks.json", "/run/secrets/metrics_token": "metrics_token"}
	for k, v := range env {
		if f, ok := secretFile[v]; ok {
			env[k] = filepath.Join(dir, f)
		}
	}
	if env["DNA_CONTACT_KEY_FILE"] != "/run/secrets/contact_key" {
		t.Fatalf("compose gives the gateway no contact store key (DNA_CONTACT_KEY_FILE %q)", env["DNA_CONTACT_KEY_FILE"])
	}
	env["DNA_CONTACT_KEY_FILE"] = "../../secrets/contact_key.example"
	env["DNA_CONTACT_KEY"] = "" // only the file, as compose gives it
	env["MLLP_SENDERS_FILE"] = "../../deploy/pasgateway/senders.json"
	env["REDIS_PASSWORD_FILE"] = "../../secrets/redis_password.example"
	if env["MLLP_ADDR"] != ":2575" || env["FHIR_ADDR"] != ":8443" || env["METRICS_ADDR"] != ":9467" || env["FHIR_TOKEN_AUDIENCE"] == "" {
		t.Fatalf("compose environment of pasgateway not as expected: %v", env)
	}
	if _, err := parseConfig(nil, lookupIn(env), io.Discard); err != nil {
		t.Fatalf("the compose settings do not pass the listener rule: %v", err)
	}

	// Our test Redis has no ACL user dnarisk; everything else stays as compose sets it.
	delete(env, "REDIS_USERNAME")
	delete(env, "REDIS_PASSWORD_FILE")
	env["KAFKA_BROKERS"] = strings.Join(testenv.Kafka(t), ",")
	env["REDIS_ADDR"] = testenv.Redis(t)
	topic := testenv.Topic(t, strings.Split(env["KAFKA_BROKERS"], ","), 1)
	cfg, err := parseConfig([]string{"--mllp-addr", "127.0.0.1:0", "--fhir-addr", "127.0.0.1:0", "--metrics-addr", "off",
		"--topic-appointments", topic, "--redis-prefix", fmt.Sprintf("compose-%d:", time.Now().UnixNano())}, lookupIn(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := pseudo.New([]byte(secret))
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, ps, slog.New(slog.DiscardHandler), func(m, f string) { ready <- [2]string{m, f} })
	}()
	var addrs [2]string
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	defer func() { cancel(); <-done }()

	engine, err := tls.LoadX509KeyPair(filepath.Join(dir, "engine.pem"), filepath.Join(dir, "engine-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("generated ca.pem holds no certificate")
	}
	now := time.Now().UTC().Truncate(time.Second)
	if code, err := sendTLS(addrs[0], &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{engine}},
		siuMsg("S12", "K1", fmt.Sprintf("K%d", now.UnixNano()), now, now.Add(48*time.Hour), "")); err != nil || code != "AA" {
		t.Fatalf("S12 from the generated engine certificate: %q %v", code, err)
	}
	token, _ := os.ReadFile(filepath.Join(dir, "fhir_access_token"))
	body := fmt.Sprintf(`{"resourceType":"Appointment","status":"booked","identifier":[{"value":"KF%d"}],"start":%q,
	  "specialty":[{"coding":[{"code":"110"}]}],
	  "contained":[{"resourceType":"Patient","id":"p","birthDate":"1980-06-15","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]}],
	  "participant":[{"actor":{"reference":"#p"},"status":"accepted"}]}`, now.UnixNano(), now.Add(72*time.Hour).Format(time.RFC3339))
	req, _ := http.NewRequest("POST", "https://"+addrs[1]+"/fhir/Appointment", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("FHIR with the generated access token: %d %s", res.StatusCode, b)
	}
}
