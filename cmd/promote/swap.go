package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nhsx/dnarisk/scoring"
)

// swapIn copies the candidate beside the live directory with record as promotion.json,
// checks the copy loads as the same model, exchanges it with the live directory in one
// rename, and keeps the old live directory as live.previous.
func (c *config) swapIn(cand *scoring.Model, record []byte) error {
	if err := checkDir(c.live); err != nil {
		return err
	}
	unlock, err := lock(c.live)
	if err != nil {
		return err
	}
	defer unlock()
	prefix := filepath.Join(filepath.Dir(c.live), "."+filepath.Base(c.live)+".promote-")
	// Under the lock, a staging directory is what an interrupted promote left: a partial copy,
	// or (interrupted just after the exchange) the only copy of the model it replaced.
	if left, _ := filepath.Glob(prefix + "*"); len(left) > 0 {
		return fmt.Errorf("an earlier promote of %s was interrupted and left %s: if it holds the model that was live before (see its %s), move it to %s, else remove it; then try again",
			c.live, strings.Join(left, ", "), PromotionFile, c.live+PreviousSuffix)
	}
	staging := prefix + strconv.Itoa(os.Getpid())
	done := false
	defer func() {
		if !done {
			_ = os.RemoveAll(staging)
		}
	}()
	if err := copyTree(c.candidate, staging); err != nil {
		return fmt.Errorf("copy the candidate beside the live directory: %w", err)
	}
	_ = os.Remove(filepath.Join(staging, RollbackFile)) // a record of another swap
	if err := writeFileSync(filepath.Join(staging, PromotionFile), record); err != nil {
		return err
	}
	copied, err := scoring.Load(staging)
	if err != nil {
		return fmt.Errorf("the copy of the candidate does not load: %w", err)
	}
	if copied.Digest() != cand.Digest() {
		return fmt.Errorf("the candidate changed while it was copied (%s, then %s): try again", cand.ID(), copied.ID())
	}
	if err := syncDir(staging); err != nil {
		return err
	}
	if err := exchange(staging, c.live); err != nil {
		return err
	}
	done = true
	// staging now holds the old live directory: keep it as live.previous.
	prev := c.live + PreviousSuffix
	if _, err := os.Lstat(prev); err == nil {
		if err := exchange(staging, prev); err != nil {
			return fmt.Errorf("promoted, but keeping the old directory as %s: %w (it is in %s)", prev, err, staging)
		}
		if err := os.RemoveAll(staging); err != nil {
			return fmt.Errorf("promoted, but removing the older previous directory %s: %w", staging, err)
		}
	} else if err := os.Rename(staging, prev); err != nil {
		return fmt.Errorf("promoted, but keeping the old directory as %s: %w (it is in %s)", prev, err, staging)
	}
	return syncDir(filepath.Dir(c.live))
}

// checkDir refuses a live path that is not a real directory: exchanging a symlink would
// leave the directory it points to as it was.
func checkDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("--live %s is not a directory (a symlink? then promote by pointing it at the candidate: ln -sfn)", dir)
	}
	return nil
}

// exchange swaps the directories a and b in one step (renameat2 RENAME_EXCHANGE): every
// reader of either path sees one whole directory or the other.
func exchange(a, b string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("exchange %s and %s: %w", a, b, err)
	}
	return nil
}

// lock holds an exclusive lock beside dir, so two promotions (or a promotion and a
// rollback) of one directory do not interleave.
func lock(dir string) (func(), error) {
	path := filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".promote.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another promote of %s is running (%s is locked)", dir, path)
		}
		return nil, err
	}
	return func() { f.Close() }, nil
}

// copyTree copies the regular files and directories under from into to (which must not
// exist), syncing each file. Symlinks and other special files are refused: a model
// directory holds files.
func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		switch {
		case d.IsDir():
			return os.Mkdir(dst, 0o755)
		case d.Type().IsRegular():
			return copyFile(path, dst)
		default:
			return fmt.Errorf("%s is not a regular file", path)
		}
	})
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
