package mllp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/nhsx/dnarisk/internal/authn"
)

// Handler answers frames. Both methods are called from one goroutine per connection, and
// may be called concurrently for different connections. The reply they return is written
// back as one frame; nil means no reply.
type Handler interface {
	// Message handles one complete frame and returns the replies to write, each as one
	// frame, in order (none, one, or, in HL7's enhanced acknowledgement mode, an accept and
	// an application acknowledgement). An acknowledgement that accepts the message must
	// only be returned once the message's effects are durable: the sender deletes its copy
	// when it reads it.
	Message(ctx context.Context, frame []byte) [][]byte
	// TooLarge answers a frame cut at the size limit; prefix holds its first bytes.
	TooLarge(ctx context.Context, prefix []byte) []byte
}

// Server accepts MLLP connections and serves them with a Handler.
type Server struct {
	Handler Handler
	Log     *slog.Logger
	// IdleTimeout closes a connection that sends nothing for this long, which also reaps
	// half-open connections whose peer vanished. Default 10 minutes.
	IdleTimeout time.Duration
	// WriteTimeout bounds writing one reply to a peer that does not read. Default 30 s.
	WriteTimeout time.Duration
	// MaxConns bounds concurrent connections; more are closed at once. Default 64.
	MaxConns int
	// MaxConnsPerHost bounds one client address's connections, so one host's connections
	// (half-open ones its engine abandoned, say) cannot lock the others out. A host at its
	// limit that opens another gets its least recently active idle connection closed to make
	// room (an engine reconnecting after losing its connection is let in at once); if none of
	// its connections is idle the new one is closed. Default 8.
	MaxConnsPerHost int
	// MaxFrame bounds one frame's size in bytes. Default DefaultLimit (1 MiB).
	MaxFrame int
	// HandleTimeout bounds the handling of one frame, including after shutdown began, so a
	// message being processed is finished and acknowledged. Default 60 s.
	HandleTimeout time.Duration
	// TLS, when set, makes every connection MLLP over TLS. With ClientAuth
	// tls.RequireAndVerifyClientCert a peer without a certificate from ClientCAs is dropped at
	// the handshake, before any frame is read; the handler finds the certificate's names in
	// PeerFrom.
	TLS *tls.Config
	// HandshakeTimeout bounds a TLS handshake. Default 10 s.
	HandshakeTimeout time.Duration
	// Refused, when set, is told of each connection turned away before a frame was read, by
	// reason: "too_many_connections" or "tls_handshake".
	Refused func(reason string)

	mu    sync.Mutex
	conns map[net.Conn]*connState
	wg    sync.WaitGroup
}

// connState is what the server knows of a connection, under Server.mu.
type connState struct {
	host string
	busy bool      // handling a frame: never closed to make room
	last time.Time // when it last started or finished a frame, or opened
}

func (s *Server) setDefaults() {
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 10 * time.Minute
	}
	if s.WriteTimeout <= 0 {
		s.WriteTimeout = 30 * time.Second
	}
	if s.MaxConns <= 0 {
		s.MaxConns = 64
	}
	if s.MaxConnsPerHost <= 0 {
		s.MaxConnsPerHost = 8
	}
	if s.MaxFrame <= 0 {
		s.MaxFrame = DefaultLimit
	}
	if s.HandleTimeout <= 0 {
		s.HandleTimeout = 60 * time.Second
	}
	if s.HandshakeTimeout <= 0 {
		s.HandshakeTimeout = 10 * time.Second
	}
	if s.Refused == nil {
		s.Refused = func(string) {}
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
}

// Serve accepts connections on l until ctx is cancelled, then stops accepting, lets each
// connection finish the frame it is handling (and write its acknowledgement), closes them
// all and returns nil. It closes l. Any other accept failure is returned.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.setDefaults()
	s.mu.Lock()
	s.conns = map[net.Conn]*connState{}
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		// Wake connections blocked in a read; one in the middle of handling a frame notices
		// after it has written the reply.
		for c := range s.conns {
			_ = c.SetReadDeadline(time.Now())
		}
	})
	defer stop()
	defer s.wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		if !s.admit(c) {
			s.Refused("too_many_connections")
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serveConn(ctx, c)
		}()
	}
}

// Peer is the far end of a connection, as the handler sees it through PeerFrom.
type Peer struct {
	Addr net.Addr
	// CertNames are the names of the peer's verified client certificate (authn.CertNames);
	// nil without TLS client authentication.
	CertNames []string
}

type peerKey struct{}

// PeerFrom returns the peer of the connection a frame came on; ok is false outside a Server.
func PeerFrom(ctx context.Context) (p Peer, ok bool) {
	p, ok = ctx.Value(peerKey{}).(Peer)
	return p, ok
}

// handshake runs the TLS handshake within HandshakeTimeout and returns the connection to
// read and write, or nil after logging why the peer was turned away.
func (s *Server) handshake(ctx context.Context, c net.Conn, log *slog.Logger) (*tls.Conn, *tls.ConnectionState) {
	tc := tls.Server(c, s.TLS)
	hctx, cancel := context.WithTimeout(ctx, s.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		log.Warn("mllp connection refused: TLS handshake failed", "err", err)
		s.Refused("tls_handshake")
		return nil, nil
	}
	cs := tc.ConnectionState()
	return tc, &cs
}

// admit registers c unless the limits forbid it, closing an idle connection of the same host
// to make room when that host is at a limit.
func (s *Server) admit(c net.Conn) bool {
	host := c.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var mine int
	var oldest net.Conn
	for conn, st := range s.conns {
		if st.host != host {
			continue
		}
		mine++
		if !st.busy && (oldest == nil || st.last.Before(s.conns[oldest].last)) {
			oldest = conn
		}
	}
	if mine >= s.MaxConnsPerHost || len(s.conns) >= s.MaxConns {
		limit := "max_conns_per_host"
		if mine < s.MaxConnsPerHost {
			limit = "max_conns"
		}
		if oldest == nil {
			s.Log.Warn("mllp connection refused: too many connections", "remote", c.RemoteAddr().String(), "limit", limit,
				"host_conns", mine, "conns", len(s.conns))
			return false
		}
		// Its own idle connection, most likely one it abandoned (half-open) before
		// reconnecting: closing it costs the host nothing and locks nobody else out.
		s.Log.Warn("mllp idle connection closed to admit a new one from the same host", "remote", oldest.RemoteAddr().String(), "limit", limit)
		oldest.Close()
		delete(s.conns, oldest)
	}
	s.conns[c] = &connState{host: host, last: time.Now()}
	return true
}

// setBusy marks c as handling a frame (or not).
func (s *Server) setBusy(c net.Conn, busy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.conns[c]; st != nil {
		st.busy, st.last = busy, time.Now()
	}
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	remote := c.RemoteAddr().String()
	log := s.Log.With("remote", remote)
	peer := Peer{Addr: c.RemoteAddr()}
	// rw carries the frames; deadlines are set on c, which a TLS connection reads through.
	var rw io.ReadWriter = c
	if s.TLS != nil {
		tc, cs := s.handshake(ctx, c, log)
		if tc == nil {
			return
		}
		rw = tc
		if id := authn.PeerName(cs); id != "" {
			peer.CertNames = authn.CertNames(cs.VerifiedChains[0][0])
			log = log.With("client", id)
		}
	}
	ctx = context.WithValue(ctx, peerKey{}, peer)
	log.Info("mllp connection opened", "tls", s.TLS != nil)
	r := NewReader(rw, s.MaxFrame)
	frames := 0
	defer func() {
		log.Info("mllp connection closed", "frames", frames, "skipped_bytes", r.Skipped)
	}()
	for s.armRead(ctx, c) {
		frame, err := r.Read()
		s.setBusy(c, true)
		var replies [][]byte
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.HandleTimeout)
		switch {
		case err == nil:
			frames++
			replies = s.Handler.Message(hctx, frame)
		case errors.Is(err, ErrTooLarge):
			frames++
			log.Warn("mllp frame over the size limit rejected", "limit_bytes", s.MaxFrame)
			if reply := s.Handler.TooLarge(hctx, frame); reply != nil {
				replies = [][]byte{reply}
			}
		case errors.Is(err, ErrRestarted):
			cancel()
			s.setBusy(c, false)
			log.Warn("mllp frame abandoned by the sender (new start block inside it); discarded")
			continue
		default:
			cancel()
			var ne net.Error
			switch {
			case ctx.Err() != nil:
			case errors.As(err, &ne) && ne.Timeout():
				log.Info("mllp connection idle; closing", "idle_timeout", s.IdleTimeout.String())
			case errors.Is(err, ErrTruncated):
				log.Warn("mllp connection closed inside a frame; partial message discarded, not acknowledged")
			default:
				if !isEOF(err) {
					log.Warn("mllp read failed", "err", err)
				}
			}
			return
		}
		cancel()
		for _, reply := range replies {
			_ = c.SetWriteDeadline(time.Now().Add(s.WriteTimeout))
			if err := Write(rw, reply); err != nil {
				log.Warn("mllp acknowledgement not delivered", "err", err)
				return
			}
		}
		s.setBusy(c, false)
	}
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) }

// armRead sets the idle deadline for the next read unless shutdown has begun. It holds the
// lock Serve's shutdown hook takes, so the hook's "read now" deadline cannot be overwritten.
func (s *Server) armRead(ctx context.Context, c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ctx.Err() != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(s.IdleTimeout))
	return true
}
