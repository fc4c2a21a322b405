package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadStages(t *testing.T) {
	if stagesFile("peer") != "" || stagesFile("go") == "" {
		t.Fatal("only the Go consumer writes stage timings")
	}
	dir := t.TempDir()
	if st, err := readStages(filepath.Join(dir, "none.json")); st != nil || err != nil {
		t.Fatalf("no file: %v %v, want nothing", st, err)
	}
	path := filepath.Join(dir, "stages.json")
	if err := os.WriteFile(path, []byte(`{"publish":{"batches":3,"p50_ms":1.5,"p99_ms":7,"max_ms":9}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := readStages(path)
	if err != nil || st["publish"] != (StageQuantiles{Batches: 3, P50ms: 1.5, P99ms: 7, Maxms: 9}) {
		t.Fatalf("read %v %v", st, err)
	}
	if err := os.WriteFile(path, []byte(`{`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readStages(path); err == nil {
		t.Fatal("a truncated file read without error")
	}
}
