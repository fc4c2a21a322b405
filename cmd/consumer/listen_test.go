package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The operations endpoint is on loopback unless told otherwise; elsewhere it needs a token
// file or mutual TLS, or --insecure-listeners, and the binary refuses with exit status 2.
func TestOperationsEndpointOffLoopback(t *testing.T) {
	env := func(kv ...string) func(string) (string, bool) {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	c, err := parseConfigEnv(nil, env(), io.Discard)
	if err != nil || c.metricsAddr != "127.0.0.1:9464" {
		t.Fatalf("default metrics address %q, %v", c.metricsAddr, err)
	}
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	for _, tc := range []struct {
		name string
		look func(string) (string, bool)
		want string
	}{
		{"all interfaces", env("METRICS_ADDR", ":9464"), "--metrics-token-file"},
		{"a LAN address", env("METRICS_ADDR", "10.0.0.7:9464"), "is reachable from other machines"},
		{"with a token", env("METRICS_ADDR", ":9464", "METRICS_TOKEN_FILE", tok), ""},
		{"demo", env("METRICS_ADDR", ":9464", "INSECURE_LISTENERS", "true"), ""},
		{"missing token file", env("METRICS_ADDR", ":9464", "METRICS_TOKEN_FILE", tok+".missing"), "token file"},
	} {
		_, err := parseConfigEnv(nil, tc.look, io.Discard)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}

	bin := filepath.Join(t.TempDir(), "consumer")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--metrics-addr", "0.0.0.0:9464")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), "--insecure-listeners") {
		t.Fatalf("exit %v, stderr %q; want status 2 and one line naming the fixes", err, stderr.String())
	}
}
