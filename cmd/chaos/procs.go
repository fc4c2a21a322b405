package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// build compiles the binaries the suite runs into dir, once.
func build(ctx context.Context, root, dir string, pkgs ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	for _, p := range pkgs {
		args = append(args, "./cmd/"+p)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// proc is one running binary, its output in a log file of its own.
type proc struct {
	name, role string
	cmd        *exec.Cmd
	done       chan struct{}
	err        error // set when done is closed
	started    time.Time
}

// alive reports whether the process has not exited yet.
func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill9 kills the process without warning and waits until it is gone.
func (p *proc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// term asks the process to stop (SIGTERM) and waits up to timeout; then it kills it. It
// returns the process's exit error (nil: exit status 0).
func (p *proc) term(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.kill9()
		return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", p.name, timeout)
	}
}

// wait waits for the process to exit by itself.
func (p *proc) wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// procs starts binaries and keeps the high-water mark of their resident memory per role.
type procs struct {
	binDir, logDir string
	log            *slog.Logger

	mu    sync.Mutex
	live  []*proc
	peak  map[string]int64 // role -> highest VmHWM seen, kB
	count map[string]int   // name -> starts, for log file names
}

func newProcs(binDir, logDir string, log *slog.Logger) (*procs, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	return &procs{binDir: binDir, logDir: logDir, log: log, peak: map[string]int64{}, count: map[string]int{}}, nil
}

// start runs binary bin as name (e.g. "consumer-2") in role (e.g. "consumer"); its
// stdout and stderr go to logDir/<name>.<n>.log.
func (ps *procs) start(name, role, bin string, args, env []string) (*proc, error) {
	ps.mu.Lock()
	ps.count[name]++
	n := ps.count[name]
	ps.mu.Unlock()
	logf, err := os.Create(filepath.Join(ps.logDir, fmt.Sprintf("%s.%d.log", name, n)))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(ps.binDir, bin), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, role: role, cmd: cmd, done: make(chan struct{}), started: time.Now()}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.live = append(ps.live, p)
	ps.mu.Unlock()
	ps.log.Info("started", "proc", name, "pid", cmd.Process.Pid)
	return p, nil
}

// sample records the memory high-water mark of every live process; run it often.
func (ps *procs) sample() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	kept := ps.live[:0]
	for _, p := range ps.live {
		if hwm, err := vmHWM(p.cmd.Process.Pid); err == nil {
			ps.peak[p.role] = max(ps.peak[p.role], hwm)
		}
		if p.alive() {
			kept = append(kept, p)
		}
	}
	ps.live = kept
}

// sampleEvery samples until ctx ends.
func (ps *procs) sampleEvery(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ps.sample()
		}
	}
}

// peakMB returns the peak resident memory per role in MiB.
func (ps *procs) peakMB() map[string]float64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := map[string]float64{}
	for r, kb := range ps.peak {
		out[r] = float64(kb) / 1024
	}
	return out
}

// stopAll stops every process still running.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	live := append([]*proc(nil), ps.live...)
	ps.mu.Unlock()
	for _, p := range live {
		if p.alive() {
			_ = p.term(30 * time.Second)
		}
	}
}

// vmHWM reads a process's peak resident set size (kB) from /proc.
func vmHWM(pid int) (int64, error) { return procStatus(pid, "VmHWM:") }

// vmRSS reads a process's current resident set size (kB) from /proc.
func vmRSS(pid int) (int64, error) { return procStatus(pid, "VmRSS:") }

func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
