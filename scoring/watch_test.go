package scoring

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// servedDir copies the default model's serving files into a temporary directory and returns
// it with the model text and the contract.
func servedDir(t *testing.T) (dir, model string, contract map[string]any) {
	t.Helper()
	model, contract = fixture(t)
	return writeDir(t, model, contract), model, contract
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeContract(t *testing.T, dir string, c map[string]any) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, ContractFile), b)
}

func withID(c map[string]any, id string) map[string]any {
	out := map[string]any{}
	for k, v := range c {
		out[k] = v
	}
	out["model_id"] = id
	return out
}

// swaps records what Watch reported, as the consumer would act on it.
type swaps struct {
	mu      sync.Mutex
	serving *Model
	loads   []string
	errs    []error
}

func (s *swaps) onLoad(m *Model) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serving = m
	s.loads = append(s.loads, m.ID())
}

func (s *swaps) onErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, err)
}

func (s *swaps) state() (serving string, loads []string, errs []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serving.ID(), append([]string(nil), s.loads...), append([]error(nil), s.errs...)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWatch runs the real polling loop: a new valid model is swapped in; a truncated
// model.txt is refused (with a half-copied pair and without the hash to catch it) while the
// old model keeps serving; the fix is picked up; touching the files or restoring the
// serving content swaps nothing.
func TestWatch(t *testing.T) {
	dir, model, contract := servedDir(t)
	first, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &swaps{serving: first}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Watch(ctx, dir, 10*time.Millisecond, first, s.onLoad, s.onErr)
		close(done)
	}()
	defer func() { cancel(); <-done }()

	// A new valid model.
	writeContract(t, dir, withID(contract, "watch-b"))
	waitUntil(t, "model watch-b to be loaded", func() bool { id, _, _ := s.state(); return id == "watch-b" })

	// Half a model.txt, as a copy in progress leaves it: contract.json's model_sha256 no
	// longer matches. Refused, reported once; watch-b keeps serving.
	half := model[:len(model)/2]
	writeFile(t, filepath.Join(dir, ModelFile), []byte(half))
	waitUntil(t, "the half-written model to be refused", func() bool { _, _, errs := s.state(); return len(errs) == 1 })

	// The same truncated text with a contract that has no hash to compare: the model-text
	// checks refuse it (tree_sizes, end of trees).
	noHash := withID(contract, "watch-c")
	delete(noHash, "model_sha256")
	writeContract(t, dir, noHash)
	waitUntil(t, "the truncated model to be refused", func() bool { _, _, errs := s.state(); return len(errs) == 2 })

	time.Sleep(100 * time.Millisecond) // ten more polls: nothing more to report
	id, loads, errs := s.state()
	if id != "watch-b" || len(loads) != 1 || len(errs) != 2 {
		t.Fatalf("after two refusals: serving %s, loads %v, errors %v; want watch-b still serving, two errors", id, loads, errs)
	}
	for i, want := range []string{"model_sha256", "truncated"} {
		if !errors.Is(errs[i], ErrInvalidModel) || !strings.Contains(errs[i].Error(), want) {
			t.Errorf("refusal %d: %v, want ErrInvalidModel mentioning %q", i, errs[i], want)
		}
		t.Log(errs[i])
	}

	// The copy completes: picked up.
	writeFile(t, filepath.Join(dir, ModelFile), []byte(model))
	waitUntil(t, "the fixed model to be loaded", func() bool { id, _, _ := s.state(); return id == "watch-c" })

	// Touching the files, or taking contract.json away and putting the same one back, is no
	// new model.
	now := time.Now().Add(time.Second)
	for _, f := range []string{ContractFile, ModelFile} {
		if err := os.Chtimes(filepath.Join(dir, f), now, now); err != nil {
			t.Fatal(err)
		}
	}
	cb, _ := os.ReadFile(filepath.Join(dir, ContractFile))
	os.Remove(filepath.Join(dir, ContractFile))
	waitUntil(t, "the missing contract to be reported", func() bool { _, _, errs := s.state(); return len(errs) == 3 })
	writeFile(t, filepath.Join(dir, ContractFile), cb)
	time.Sleep(100 * time.Millisecond)
	id, loads, errs = s.state()
	if id != "watch-c" || len(loads) != 2 || len(errs) != 3 || !strings.Contains(errs[2].Error(), "no such file") {
		t.Fatalf("serving %s, loads %v, errors %v; want watch-c, loads [watch-b watch-c], the missing file reported once", id, loads, errs)
	}
}

// TestWatcherPoll steps the poller by hand: a copy in progress is not loaded until it stops
// changing for a whole interval, and a change that keeps size and modification time is found
// by the periodic content check.
func TestWatcherPoll(t *testing.T) {
	dir, model, contract := servedDir(t)
	cur, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	w := watcher{dir: dir, accepted: cur.digest, tried: cur.digest}
	poll := func(full bool) (*Model, error) {
		t.Helper()
		m, err := w.poll(full)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		return m, err
	}
	if m, _ := poll(true); m != nil {
		t.Fatal("the serving content was loaded again")
	}

	// A slow copy: a new contract, then model.txt in three writes, one per poll.
	writeContract(t, dir, withID(contract, "copy"))
	path := filepath.Join(dir, ModelFile)
	writeFile(t, path, nil)
	for i := 1; i <= 3; i++ {
		if m, _ := poll(false); m != nil {
			t.Fatalf("loaded while the copy was in progress (part %d)", i)
		}
		writeFile(t, path, []byte(model[:len(model)*i/3]))
	}
	if m, _ := poll(false); m != nil {
		t.Fatal("loaded on the poll that first saw the finished copy; want one quiet interval first")
	}
	if m, _ := poll(false); m == nil || m.ID() != "copy" {
		t.Fatalf("finished copy not loaded after a quiet interval: %v", m)
	}

	// Same size, same modification time, different content: only the full check sees it.
	fi, err := os.Stat(filepath.Join(dir, ContractFile))
	if err != nil {
		t.Fatal(err)
	}
	writeContract(t, dir, withID(contract, "cop2"))
	if err := os.Chtimes(filepath.Join(dir, ContractFile), fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if m, _ := poll(false); m != nil {
		t.Fatal("stat-only poll loaded a change it cannot see")
	}
	poll(true) // sees it; waits an interval
	if m, _ := poll(false); m == nil || m.ID() != "cop2" {
		t.Fatalf("preserved-mtime change not loaded: %v", m)
	}
}
