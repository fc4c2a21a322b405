package pseudo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPseudonymIsKeyedAndStable(t *testing.T) {
	a, err := New([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New([]byte("fedcba9876543210fedcba9876543210"))
	// Known answer from Python: hmac.new(secret, b"9434765919", hashlib.sha256).hexdigest()
	const want = "f23090a36451bfa74057a971b116cdad5a9d5c7377e58349eaf336b19a372a5d"
	got := a.Pseudonym("943 476 5919")
	if got != a.Pseudonym("9434765919") {
		t.Fatalf("spaces change the pseudonym")
	}
	if got == b.Pseudonym("9434765919") {
		t.Fatalf("different secrets gave the same pseudonym")
	}
	if got != want {
		t.Fatalf("pseudonym = %s, want %s", got, want)
	}
}

func TestShortSecretRefused(t *testing.T) {
	if _, err := New([]byte("short")); err == nil {
		t.Fatal("short secret accepted")
	}
}

func TestFromEnvPrefersFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("X_SECRET_FILE", f)
	t.Setenv("X_SECRET", "ignored-ignored-ignored-ignored-ignored")
	p, err := FromEnv("X_SECRET_FILE", "X_SECRET")
	if err != nil {
		t.Fatal(err)
	}
	q, _ := New([]byte("0123456789abcdef0123456789abcdef"))
	if p.Pseudonym("1") != q.Pseudonym("1") {
		t.Fatal("secret not read from file")
	}
	t.Setenv("X_SECRET_FILE", "")
	t.Setenv("X_SECRET", "")
	if _, err := FromEnv("X_SECRET_FILE", "X_SECRET"); err == nil {
		t.Fatal("missing secret accepted")
	}
}
