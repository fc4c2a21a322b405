package mllp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// echo answers "ACK:<frame>" and records what it saw; block, when set, holds Message until
// released so a test can act while a frame is being handled.
type echo struct {
	mu     sync.Mutex
	frames []string
	large  []string
	block  chan struct{}
	inside chan struct{}
}

func (e *echo) Message(ctx context.Context, frame []byte) [][]byte {
	if e.block != nil {
		e.inside <- struct{}{}
		<-e.block
	}
	e.mu.Lock()
	e.frames = append(e.frames, string(frame))
	e.mu.Unlock()
	return [][]byte{[]byte("ACK:" + string(frame))}
}

func (e *echo) TooLarge(ctx context.Context, prefix []byte) []byte {
	e.mu.Lock()
	e.large = append(e.large, string(prefix))
	e.mu.Unlock()
	return []byte("TOO LARGE:" + string(prefix))
}

func (e *echo) seen() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.frames...)
}

type running struct {
	srv  *Server
	addr string
	stop context.CancelFunc
	done chan error
}

func start(t *testing.T, h Handler, opts func(*Server)) *running {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: h}
	if opts != nil {
		opts(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{srv: srv, addr: l.Addr().String(), stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("server did not stop")
		}
	})
	return r
}

// waitIdle waits until the server holds n connections, none of them handling a frame.
func (r *running) waitIdle(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.srv.mu.Lock()
		idle := 0
		for _, st := range r.srv.conns {
			if !st.busy {
				idle++
			}
		}
		total := len(r.srv.conns)
		r.srv.mu.Unlock()
		if idle == n && total == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server holds %d connections, %d idle; want %d idle", total, idle, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func dial(t *testing.T, addr string) (net.Conn, *Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, NewReader(bufio.NewReader(c), 0)
}

func TestServerSeveralMessagesInOrder(t *testing.T) {
	h := &echo{}
	r := start(t, h, nil)
	c, rd := dial(t, r.addr)
	for _, m := range []string{"one", "two", "three"} {
		if err := Write(c, []byte(m)); err != nil {
			t.Fatal(err)
		}
		got, err := rd.Read()
		if err != nil || string(got) != "ACK:"+m {
			t.Fatalf("reply %q, %v", got, err)
		}
	}
	// Pipelined: all written before any reply is read; replies come back in order.
	var b strings.Builder
	for _, m := range []string{"a", "b", "c"} {
		b.WriteString(frame(m))
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"a", "b", "c"} {
		if got, err := rd.Read(); err != nil || string(got) != "ACK:"+m {
			t.Fatalf("pipelined reply %q, %v", got, err)
		}
	}
}

func TestServerHalfClosedConnectionStillGetsItsAck(t *testing.T) {
	r := start(t, &echo{}, nil)
	c, rd := dial(t, r.addr)
	if err := Write(c, []byte("last")); err != nil {
		t.Fatal(err)
	}
	// The sender is done writing (FIN) but still reads the acknowledgement.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, err := rd.Read(); err != nil || string(got) != "ACK:last" {
		t.Fatalf("reply %q, %v", got, err)
	}
	if _, err := rd.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the ack the server should close, got %v", err)
	}
}

func TestServerIdleConnectionClosed(t *testing.T) {
	r := start(t, &echo{}, func(s *Server) { s.IdleTimeout = 100 * time.Millisecond })
	_, rd := dial(t, r.addr)
	begin := time.Now()
	if _, err := rd.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	if time.Since(begin) > 5*time.Second {
		t.Fatal("idle connection closed too late")
	}
}

func TestServerTruncatedFrameNotAcked(t *testing.T) {
	h := &echo{}
	r := start(t, h, nil)
	c, rd := dial(t, r.addr)
	if _, err := io.WriteString(c, frame("whole")+"\x0bcut off"); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if got, err := rd.Read(); err != nil || string(got) != "ACK:whole" {
		t.Fatalf("reply %q, %v", got, err)
	}
	if got, err := rd.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("truncated frame answered: %q, %v", got, err)
	}
	if seen := h.seen(); len(seen) != 1 {
		t.Fatalf("handler saw %q", seen)
	}
}

func TestServerRestartedFrameAndOversize(t *testing.T) {
	h := &echo{}
	r := start(t, h, func(s *Server) { s.MaxFrame = 8 })
	c, rd := dial(t, r.addr)
	if _, err := io.WriteString(c, "\x0babandoned"+frame("next")+frame("much too long")+frame("after")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ACK:next", "TOO LARGE:much too", "ACK:after"} {
		if got, err := rd.Read(); err != nil || string(got) != want {
			t.Fatalf("reply %q, %v; want %q", got, err, want)
		}
	}
}

func TestServerShutdownFinishesTheFrameInHand(t *testing.T) {
	h := &echo{block: make(chan struct{}), inside: make(chan struct{})}
	r := start(t, h, nil)
	busy, busyRd := dial(t, r.addr)
	_, idleRd := dial(t, r.addr)
	if err := Write(busy, []byte("in flight")); err != nil {
		t.Fatal(err)
	}
	<-h.inside
	r.stop()
	close(h.block)
	if got, err := busyRd.Read(); err != nil || string(got) != "ACK:in flight" {
		t.Fatalf("in-flight message not acknowledged on shutdown: %q, %v", got, err)
	}
	if _, err := busyRd.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("busy connection not closed after its ack: %v", err)
	}
	if _, err := idleRd.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection not closed on shutdown: %v", err)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	r.done <- nil // for the cleanup
}

// dialFrom connects from a given loopback address (127.0.0.0/8 is all loopback on Linux), so
// a test can be several client hosts.
func dialFrom(t *testing.T, from, addr string) (net.Conn, *Reader) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, NewReader(bufio.NewReader(c), 0)
}

func roundTrip(t *testing.T, c net.Conn, rd *Reader, m string) error {
	t.Helper()
	if err := Write(c, []byte(m)); err != nil {
		return err
	}
	got, err := rd.Read()
	if err == nil && string(got) != "ACK:"+m {
		t.Fatalf("reply %q", got)
	}
	return err
}

func TestServerMaxConns(t *testing.T) {
	r := start(t, &echo{}, func(s *Server) { s.MaxConns = 1 })
	c1, rd1 := dialFrom(t, "127.0.0.1", r.addr)
	if err := roundTrip(t, c1, rd1, "x"); err != nil {
		t.Fatal(err)
	}
	_, rd2 := dialFrom(t, "127.0.0.2", r.addr)
	if _, err := rd2.Read(); err == nil {
		t.Fatal("a connection over the limit was served")
	}
	if err := roundTrip(t, c1, rd1, "y"); err != nil {
		t.Fatalf("the first host's connection was disturbed: %v", err)
	}
}

// One host's abandoned (half-open) connections cannot lock others out, nor the host itself:
// at its limit, its least recently active idle connection makes room for its new one, while
// another host still gets in and a connection handling a frame is never closed.
func TestServerMaxConnsPerHost(t *testing.T) {
	h := &echo{}
	r := start(t, h, func(s *Server) { s.MaxConns, s.MaxConnsPerHost = 4, 2 })
	old1, oldRd1 := dialFrom(t, "127.0.0.1", r.addr)
	if err := roundTrip(t, old1, oldRd1, "a"); err != nil {
		t.Fatal(err)
	}
	r.waitIdle(t, 1) // old1's activity is over before old2's begins
	old2, oldRd2 := dialFrom(t, "127.0.0.1", r.addr)
	if err := roundTrip(t, old2, oldRd2, "b"); err != nil {
		t.Fatal(err)
	}
	// The server marks a connection idle just after writing its acknowledgement, which the
	// client may read first: wait until both are idle, so which one is least recently
	// active is what decides (under a loaded CI machine old1 could still be marked busy).
	r.waitIdle(t, 2)
	// The engine reconnects, its two old connections silent (half-open as far as we know).
	c3, rd3 := dialFrom(t, "127.0.0.1", r.addr)
	if err := roundTrip(t, c3, rd3, "c"); err != nil {
		t.Fatalf("the host's new connection was refused: %v", err)
	}
	if _, err := oldRd1.Read(); err == nil {
		t.Fatal("the least recently active connection was not closed")
	}
	if err := roundTrip(t, old2, oldRd2, "d"); err != nil {
		t.Fatalf("a more recent connection was closed: %v", err)
	}
	// Another host is unaffected.
	o, ord := dialFrom(t, "127.0.0.2", r.addr)
	if err := roundTrip(t, o, ord, "e"); err != nil {
		t.Fatalf("another host was locked out: %v", err)
	}

	// Both of a host's connections busy handling a frame: its new connection is refused.
	hb := &echo{block: make(chan struct{}), inside: make(chan struct{}, 2)}
	rb := start(t, hb, func(s *Server) { s.MaxConnsPerHost = 2 })
	var busy []*Reader
	for i := range 2 {
		c, rd := dialFrom(t, "127.0.0.3", rb.addr)
		if err := Write(c, []byte(fmt.Sprint("busy", i))); err != nil {
			t.Fatal(err)
		}
		<-hb.inside
		busy = append(busy, rd)
	}
	_, rd := dialFrom(t, "127.0.0.3", rb.addr)
	if _, err := rd.Read(); err == nil {
		t.Fatal("a third connection was served while two were busy")
	}
	close(hb.block)
	for i, brd := range busy {
		if got, err := brd.Read(); err != nil || string(got) != fmt.Sprint("ACK:busy", i) {
			t.Fatalf("busy connection %d: %q %v", i, got, err)
		}
	}
}
