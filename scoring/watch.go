package scoring

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// fullCheckEvery: every this many polls Watch hashes the files even when their size and
// modification time are unchanged, to catch a copy that preserved both (cp -p, rsync -t).
const fullCheckEvery = 10

// Watch polls the model directory dir every interval until ctx ends, and hands each new
// valid model to onLoad; it never swaps a model itself. current is the model serving now
// (nil if none): Watch compares what it finds with it, so a change made between the
// caller's own Load and the start of Watch is not missed.
//
// A change is noticed from the size and modification time of contract.json and model.txt
// (and, every 10th poll, from their content). It is loaded only once the files have stayed
// the same for one whole interval, so a copy in progress is usually waited out rather than
// refused. Then:
//
//   - a directory that Load accepts and whose content (Digest) differs from the last model
//     accepted goes to onLoad;
//   - a directory Load refuses (unreadable, truncated, half-copied so that model.txt does not
//     match contract.json's model_sha256, contract mismatch, ...) goes to onErr, once per
//     distinct content, and nothing is swapped: the current model keeps serving. A later fix
//     is picked up like any other change.
//
// onLoad and onErr are called from Watch's goroutine, one at a time. Watch returns when ctx
// ends.
func Watch(ctx context.Context, dir string, interval time.Duration, current *Model, onLoad func(*Model), onErr func(error)) {
	if interval <= 0 {
		panic("scoring.Watch: interval must be positive")
	}
	w := watcher{dir: dir}
	if current != nil {
		w.accepted = current.digest
		w.tried = current.digest
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for poll := 0; ; poll++ {
		if m, err := w.poll(poll%fullCheckEvery == 0); err != nil {
			onErr(err)
		} else if m != nil {
			onLoad(m)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type watcher struct {
	dir      string
	stat     string // size and mtime of both files at the last poll
	pending  string // content seen at the last poll, not yet tried
	tried    string // content last given to Load (accepted or refused)
	accepted string // Digest of the last model accepted
}

// poll returns a new model, an error for a refused one, or neither.
func (w *watcher) poll(full bool) (*Model, error) {
	st := w.statFiles()
	if st == w.stat && w.pending == "" && !full {
		return nil, nil
	}
	w.stat = st
	d := w.contentDigest()
	if d == w.tried {
		w.pending = ""
		return nil, nil
	}
	if d != w.pending {
		// New content: wait one interval for it to settle.
		w.pending = d
		return nil, nil
	}
	w.pending, w.tried = "", d
	m, err := Load(w.dir)
	if err != nil {
		return nil, err
	}
	if m.digest == w.accepted {
		// Load read the same content as is serving (the files changed back, or were only
		// touched).
		return nil, nil
	}
	w.accepted, w.tried = m.digest, m.digest
	return m, nil
}

func (w *watcher) statFiles() string {
	s := ""
	for _, name := range []string{ContractFile, ModelFile} {
		fi, err := os.Stat(filepath.Join(w.dir, name))
		if err != nil {
			s += name + ": " + err.Error() + ";"
			continue
		}
		s += fmt.Sprintf("%s %d %d;", name, fi.Size(), fi.ModTime().UnixNano())
	}
	return s
}

// contentDigest is Digest for the files as they are now, or a digest of the read errors, so
// a missing or unreadable file is a state like any other (tried once, reported once).
func (w *watcher) contentDigest() string {
	cb, cerr := readLimited(filepath.Join(w.dir, ContractFile), maxContractBytes)
	mb, merr := readLimited(filepath.Join(w.dir, ModelFile), maxModelBytes)
	if cerr != nil || merr != nil {
		s := sha256.Sum256(fmt.Appendf(nil, "unreadable: %v %v", cerr, merr))
		return fmt.Sprintf("%x", s)
	}
	return digest(cb, mb)
}
