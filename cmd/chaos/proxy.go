package main

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// faultProxy is a TCP proxy between the scorers and Redis or Kafka that makes the network
// misbehave on demand: it adds latency to every chunk it forwards, stalls all traffic for a
// while (connections stay open, nothing moves), or resets every open connection (RST, in the
// middle of whatever request was on it).
type faultProxy struct {
	name   string
	target string
	ln     net.Listener

	delay      atomic.Int64 // nanoseconds added before forwarding each chunk
	stallUntil atomic.Int64 // unix nanoseconds; nothing is forwarded before

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// newFaultProxy listens on a free local port and forwards each connection to target.
func newFaultProxy(name, listen, target string) (*faultProxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &faultProxy{name: name, target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close() // the target is down (a restart): the client sees a refused connection
			continue
		}
		p.track(c, up)
		p.wg.Add(2)
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

func (p *faultProxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
}

// pipe copies src to dst chunk by chunk, applying the current delay and stall; when either
// side ends, both are closed.
func (p *faultProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer p.drop(dst, src)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// wait holds a chunk for the current delay and until a stall ends.
func (p *faultProxy) wait() {
	if d := time.Duration(p.delay.Load()); d > 0 {
		time.Sleep(d)
	}
	for until := p.stallUntil.Load(); time.Now().UnixNano() < until; until = p.stallUntil.Load() {
		time.Sleep(min(time.Until(time.Unix(0, until)), 50*time.Millisecond))
	}
}

func (p *faultProxy) drop(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(p.conns, c)
	}
}

// setDelay adds d to every chunk from now on (0: none).
func (p *faultProxy) setDelay(d time.Duration) { p.delay.Store(int64(d)) }

// stall holds all traffic for d.
func (p *faultProxy) stall(d time.Duration) { p.stallUntil.Store(time.Now().Add(d).UnixNano()) }

// reset aborts every open connection with a TCP RST and returns how many it cut.
func (p *faultProxy) reset() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close sends RST, not FIN
		}
		c.Close()
		delete(p.conns, c)
		n++
	}
	return n / 2 // each proxied connection is two sockets
}

func (p *faultProxy) close() {
	p.ln.Close()
	p.reset()
	p.wg.Wait()
}

// netFaults is the scorers' network: a proxy to Redis and, on one broker, to Kafka.
type netFaults struct {
	redis, kafka *faultProxy
}

// startNetFaults starts the proxies; kafka is nil on a cluster (the proxy listener is on
// node 1 only).
func (r *runner) startNetFaults() (*netFaults, error) {
	n := &netFaults{}
	var err error
	if n.redis, err = newFaultProxy("redis", "127.0.0.1:0", r.svc.redisAddr()); err != nil {
		return nil, err
	}
	if r.cfg.kafkaNodes == 1 {
		bind, adv := r.svc.proxiedPorts()
		if n.kafka, err = newFaultProxy("kafka", "127.0.0.1:"+strconv.Itoa(adv), "127.0.0.1:"+strconv.Itoa(bind)); err != nil {
			n.redis.close()
			return nil, err
		}
	}
	return n, nil
}

func (n *netFaults) close() {
	for _, p := range n.all() {
		p.close()
	}
}

func (n *netFaults) all() []*faultProxy {
	out := []*faultProxy{n.redis}
	if n.kafka != nil {
		out = append(out, n.kafka)
	}
	return out
}

// scorerAddrs are the Kafka bootstrap and Redis addresses a scorer dials: the proxies'.
func (n *netFaults) scorerAddrs(r *runner) (brokers, redis string) {
	brokers, redis = r.svc.brokerList(), n.redis.addr()
	if n.kafka != nil {
		brokers = n.kafka.addr()
	}
	return brokers, redis
}

// netSteps are the network faults between the scorers and Redis and Kafka: latency, a stall
// of each and a reset of every connection, each mid-stream.
func (r *runner) netSteps(ctx context.Context) []step {
	if r.net == nil {
		return nil
	}
	all := r.net.all()
	return []step{
		{0.22, func() error {
			for _, p := range all {
				p.setDelay(25 * time.Millisecond)
			}
			r.record("net_latency", "intake", "scorers", "+25 ms per chunk to Redis and Kafka for 6 s")
			sleepCtx(ctx, 6*time.Second)
			for _, p := range all {
				p.setDelay(0)
			}
			return nil
		}},
		{0.40, func() error {
			for _, p := range all {
				p.stall(4 * time.Second)
				r.record("net_stall", "intake", p.name, "nothing forwarded for 4 s, connections left open")
			}
			sleepCtx(ctx, 4*time.Second)
			return nil
		}},
		{0.66, func() error {
			for _, p := range all {
				r.record("net_reset", "intake", p.name, strconv.Itoa(p.reset())+" scorer connections reset (RST) mid-request")
			}
			return nil
		}},
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
