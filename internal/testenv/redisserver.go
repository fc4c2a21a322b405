package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// StartRedisServer starts a private redis-server (Debian's package) for one test with the
// given configuration lines added to a minimal, non-persistent configuration, waits until
// port accepts connections and stops the server when the test ends. The caller chooses
// the listeners (port, tls-port) in conf. A missing redis-server skips the test, or fails it
// under CI=true.
func StartRedisServer(tb testing.TB, port int, conf string) {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		unavailable(tb, "redis-server", "%v (apt-get install redis-server)", err)
	}
	dir := tb.TempDir()
	path := filepath.Join(dir, "redis.conf")
	base := fmt.Sprintf("bind 127.0.0.1\nprotected-mode no\ndir %s\nsave \"\"\nappendonly no\nlogfile %s\n",
		dir, filepath.Join(dir, "redis.log"))
	if err := os.WriteFile(path, []byte(base+conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, path)
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			tb.Fatalf("redis-server exited: %v\n%s", err, log)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redis-server not listening on %s after 15s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
