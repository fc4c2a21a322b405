package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// OraclePython returns the interpreter of the venv holding the third-party parsers and
// validators the tests use as oracles (hl7apy, fhir.resources: pas/testdata/oracles/
// requirements.txt): $ORACLE_PYTHON, which `make test` exports, else .venv-oracles at the
// module root. Missing, the test fails under CI and is skipped loudly otherwise.
func OraclePython(tb testing.TB) string {
	tb.Helper()
	p := os.Getenv("ORACLE_PYTHON")
	if p == "" {
		if root, err := moduleRoot(); err == nil {
			p = filepath.Join(root, ".venv-oracles", "bin", "python")
		}
	}
	if p == "" {
		unavailable(tb, "the oracles' Python venv", "no module root found")
		return ""
	}
	if err := exec.Command(p, "-c", "import hl7apy, fhir.resources").Run(); err != nil {
		unavailable(tb, "the oracles' Python venv", "%s cannot import hl7apy and fhir.resources (%v); "+
			"`make python` builds it from pas/testdata/oracles/requirements.txt", p, err)
	}
	return p
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}
