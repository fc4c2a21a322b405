package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The operations endpoint is on loopback unless told otherwise; elsewhere it needs a token
// file or mutual TLS, or --insecure-listeners, and the binary refuses with exit status 2.
func TestOperationsEndpointOffLoopback(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	secrets := map[string]string{"NOTIFY_API_KEY": apiKey, "DNA_REMINDER_SECRET": "reminder-secret-0123456789abcdefghijkl", "DNA_CONTACT_KEY": contactKey}
	getenv := func(extra ...string) func(string) string {
		m := map[string]string{}
		for k, v := range secrets {
			m[k] = v
		}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return func(k string) string { return m[k] }
	}
	c, err := parseConfig([]string{"--config", "config.example.json"}, getenv())
	if err != nil || c.metricsAddr != "127.0.0.1:9466" {
		t.Fatalf("default metrics address %q, %v", c.metricsAddr, err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"all interfaces", []string{"METRICS_ADDR", ":9466"}, "--metrics-token-file"},
		{"with a token", []string{"METRICS_ADDR", ":9466", "METRICS_TOKEN_FILE", tok}, ""},
		{"demo", []string{"METRICS_ADDR", ":9466", "INSECURE_LISTENERS", "1"}, ""},
	} {
		_, err := parseConfig([]string{"--config", "config.example.json"}, getenv(tc.env...))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	cmd := exec.Command(build(t), "--config", "config.example.json", "--metrics-addr", ":9466")
	cmd.Env = append(os.Environ(), "NOTIFY_API_KEY="+apiKey, "DNA_REMINDER_SECRET=reminder-secret-0123456789abcdefghijkl", "DNA_CONTACT_KEY="+contactKey)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "is reachable from other machines") {
		t.Fatalf("exit %v, output %q; want status 2 naming the problem", err, out)
	}
}
