// Package dnsshim is tp's DNS server on the developer's machine. It answers cluster names
// through the tunnel (a remote.Resolver, which applies the session namespace's search path
// cluster-side) and every other name through an upstream resolver, so that one resolver
// address serves both: `tp connect --dns-listen` and the resolv.conf of `tp run`'s network
// namespace point at it.
//
// The DNS library (miekg/dns v1) stays behind this package: callers see only net.PacketConn,
// net.Listener, wire-format bytes and remote's types.
package dnsshim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tpdev/tp/localproxy/peer"
	"github.com/tpdev/tp/remote"
)

// Upstream answers the names that are not the cluster's, typically the host's own resolver.
type Upstream interface {
	// Exchange sends query, a DNS message in wire format, and returns the response in wire
	// format, with the query's ID and question: anything else is taken for a forgery and
	// answered SERVFAIL. It must honour ctx's deadline, which is the client's patience.
	Exchange(ctx context.Context, query []byte) ([]byte, error)
}

// Config configures a Server. Only Cluster is needed; zero values get the defaults noted.
type Config struct {
	// Cluster answers cluster names (search path applied cluster-side). It must honour
	// ctx's deadline. nil means no cluster: every name goes to Upstream.
	Cluster remote.Resolver
	// Upstream answers names the cluster does not know. nil answers NXDOMAIN for them.
	Upstream Upstream
	// Routes returns the cluster's service and pod CIDRs; reverse (PTR) queries for
	// addresses inside them go to the cluster, all others to Upstream. nil means none. It
	// is called for every reverse query, from many goroutines at once.
	Routes func() []netip.Prefix
	// TTL caps the TTLs of cluster answers and of negative upstream answers (0 means the
	// default, 5s): cluster addresses change and a name missing now may be deployed a
	// minute later.
	TTL uint32
	// Timeout bounds the work on one query (default 3s), below the 5s that stub resolvers
	// wait, so a client always gets an answer, if only SERVFAIL, rather than a hang.
	Timeout time.Duration
	// MaxInFlight bounds the queries being answered at once, UDP and TCP together, and
	// separately the open TCP connections (default 256). UDP queries over the bound are
	// dropped (the client retries); TCP connections over it are closed.
	MaxInFlight int
	// IdleTimeout closes a TCP connection that sends no query for this long (default 10s).
	IdleTimeout time.Duration
	// Log receives diagnostics; per-query lines are at debug level. nil discards.
	Log *slog.Logger
	// Peers turns away queries from other users of this machine (see package peer): the
	// shim resolves with this user's cluster rights. nil means peer.New with Log, which on
	// Linux answers only the user this process runs as.
	Peers *peer.Guard
}

// Stats counts what a Server did since New. Every received message lands in Queries and,
// once handled, in exactly one of the other counters except Truncated, which overlaps.
type Stats struct {
	Queries   uint64 // messages received
	Cluster   uint64 // answered from the cluster's response (NODATA and its error rcodes included)
	Upstream  uint64 // answered from the upstream resolver's response (its NXDOMAIN included)
	NXDomain  uint64 // answered NXDOMAIN by the shim: not a cluster name and no Upstream
	Failures  uint64 // answered SERVFAIL: tunnel down, timeout, unreachable or broken upstream
	Rejected  uint64 // answered FORMERR, NOTIMP or BADVERS: a query the shim does not serve
	Dropped   uint64 // not answered: malformed, not a query, or over MaxInFlight
	Refused   uint64 // answered REFUSED: from another user of this machine (see Config.Peers)
	Truncated uint64 // UDP answers cut to the client's size with TC set
}

// Server is the DNS shim. It is safe for concurrent use; one Server may serve several
// sockets at once.
type Server struct {
	cluster  remote.Resolver
	upstream Upstream
	routes   func() []netip.Prefix
	ttl      uint32
	timeout  time.Duration
	idle     time.Duration
	log      *slog.Logger
	peers    *peer.Guard

	// inflight bounds goroutines answering queries; conns bounds TCP connection goroutines.
	// Together they keep a flood from turning into unbounded goroutines and memory.
	inflight chan struct{}
	conns    chan struct{}

	stats struct {
		queries, cluster, upstream, nxdomain, failures, rejected, dropped, refused, truncated atomic.Uint64
	}

	// garbage says at most once per garbageEvery that malformed messages were dropped: a
	// flood of them must show in the log without becoming the log.
	garbageMu    sync.Mutex
	garbageLast  time.Time
	garbageQuiet int
}

const garbageEvery = 10 * time.Second

const (
	defaultTTL         = 5
	defaultTimeout     = 3 * time.Second
	defaultMaxInFlight = 256
	defaultIdleTimeout = 10 * time.Second
)

// New returns a Server for cfg.
func New(cfg Config) *Server {
	s := &Server{
		cluster:  cfg.Cluster,
		upstream: cfg.Upstream,
		routes:   cfg.Routes,
		ttl:      cfg.TTL,
		timeout:  cfg.Timeout,
		idle:     cfg.IdleTimeout,
		log:      cfg.Log,
		peers:    cfg.Peers,
	}
	if s.ttl == 0 {
		s.ttl = defaultTTL
	}
	if s.timeout <= 0 {
		s.timeout = defaultTimeout
	}
	if s.idle <= 0 {
		s.idle = defaultIdleTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.peers == nil {
		s.peers = peer.New(peer.Config{Log: s.log})
	}
	n := cfg.MaxInFlight
	if n <= 0 {
		n = defaultMaxInFlight
	}
	s.inflight = make(chan struct{}, n)
	s.conns = make(chan struct{}, n)
	return s
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Queries:   s.stats.queries.Load(),
		Cluster:   s.stats.cluster.Load(),
		Upstream:  s.stats.upstream.Load(),
		NXDomain:  s.stats.nxdomain.Load(),
		Failures:  s.stats.failures.Load(),
		Rejected:  s.stats.rejected.Load(),
		Dropped:   s.stats.dropped.Load(),
		Refused:   s.stats.refused.Load(),
		Truncated: s.stats.truncated.Load(),
	}
}

// ServeUDP answers queries arriving on pc until ctx is done or pc fails. It closes pc and
// waits for the queries in progress before returning; it returns nil when ctx ended it.
func (s *Server) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer pc.Close()
	// Cancelled on any return, so that queries in progress end rather than delay it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing is the only portable way to unblock ReadFrom.
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()

	// A DNS message over UDP is at most 64 KiB; a smaller buffer would silently cut a
	// query and make it look malformed.
	buf := make([]byte, 1<<16)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dns shim: read udp on %s: %w", pc.LocalAddr(), err)
		}
		s.goAnswer(ctx, &wg, buf[:n], addr, func(req []byte) []byte {
			// Asked per datagram, since any local user can send to the port; on the
			// answering goroutine, so that the question never holds up the read loop.
			if s.otherUser(pc, addr) {
				return s.refuse(req)
			}
			return s.safeAnswer(ctx, req, false)
		}, func(resp []byte) error {
			_, err := pc.WriteTo(resp, addr)
			return err
		})
	}
}

// goAnswer answers the datagram query raw (copied) on a goroutine of wg, within the
// in-flight bound (over it the query is dropped: the client retries), and sends the
// answer, if any, with send.
func (s *Server) goAnswer(ctx context.Context, wg *sync.WaitGroup, raw []byte, client net.Addr, answer func([]byte) []byte, send func([]byte) error) {
	s.stats.queries.Add(1)
	select {
	case s.inflight <- struct{}{}:
	default:
		s.stats.dropped.Add(1)
		s.log.Debug("dns shim: too many queries in flight, dropping one", "client", client)
		return
	}
	req := bytes.Clone(raw)
	wg.Go(func() {
		defer func() { <-s.inflight }()
		resp := answer(req)
		if resp == nil {
			return
		}
		if err := send(resp); err != nil && ctx.Err() == nil {
			s.log.Debug("dns shim: write udp answer", "client", client, "error", err)
		}
	})
}

// ServeTCP answers queries on connections accepted from ln until ctx is done or ln fails.
// It closes ln and every connection, and waits for their goroutines, before returning; it
// returns nil when ctx ended it.
func (s *Server) ServeTCP(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	// Cancelled on any return: that closes the open connections, which would otherwise
	// hold up the return until they idle out.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("dns shim: accept tcp on %s: %w", ln.Addr(), err)
			}
			// Anything else (out of file descriptors, an aborted handshake) passes;
			// back off so a persistent one does not spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("dns shim: accept tcp", "addr", ln.Addr(), "error", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		select {
		case s.conns <- struct{}{}:
		default:
			s.stats.dropped.Add(1)
			s.log.Debug("dns shim: too many tcp connections, closing one", "client", c.RemoteAddr())
			c.Close()
			continue
		}
		wg.Go(func() {
			defer func() { <-s.conns }()
			s.serveConn(ctx, c)
		})
	}
}

// serveConn reads length-prefixed queries from c and answers each as soon as it is ready,
// possibly out of order (RFC 7766 6.2.1.1: clients match answers by ID), so one slow cluster
// name does not hold up the A/AAAA pair a stub sends together.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	var (
		wg  sync.WaitGroup // this connection's queries still being answered
		wmu sync.Mutex     // one answer on the wire at a time
	)
	defer c.Close()
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	// Another user's queries are read and answered REFUSED, as over UDP, until it closes.
	other := s.peers.CheckConn(c) != nil
	r := bufio.NewReader(c)
	for {
		// The deadline covers the whole next message, so a client that trickles bytes
		// cannot hold the connection (and its slot) longer than an idle one.
		if err := c.SetReadDeadline(time.Now().Add(s.idle)); err != nil {
			return
		}
		var prefix [2]byte
		if _, err := io.ReadFull(r, prefix[:]); err != nil {
			return // end of stream, idle timeout, or shutdown: nothing to say
		}
		n := binary.BigEndian.Uint16(prefix[:])
		req := make([]byte, n)
		if _, err := io.ReadFull(r, req); err != nil {
			s.log.Debug("dns shim: short tcp message, closing", "client", c.RemoteAddr(), "error", err)
			return
		}
		s.stats.queries.Add(1)
		// Blocking here, unlike UDP's drop, pushes back on the client through TCP's flow
		// control instead of losing its queries.
		select {
		case s.inflight <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Go(func() {
			defer func() { <-s.inflight }()
			var resp []byte
			if other {
				resp = s.refuse(req)
			} else {
				resp = s.safeAnswer(ctx, req, true)
			}
			if resp == nil {
				// A stream that carried garbage is out of sync; nothing after it can be
				// trusted to be framed right.
				c.Close()
				return
			}
			msg := make([]byte, 2+len(resp))
			binary.BigEndian.PutUint16(msg, uint16(len(resp)))
			copy(msg[2:], resp)
			wmu.Lock()
			defer wmu.Unlock()
			// A client that stops reading must not keep this goroutine and its slot.
			if err := c.SetWriteDeadline(time.Now().Add(s.timeout)); err == nil {
				_, err = c.Write(msg)
				if err == nil {
					return
				}
				s.log.Debug("dns shim: write tcp answer", "client", c.RemoteAddr(), "error", err)
			}
			c.Close()
		})
	}
}
