package localproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tpdev/tp/remote"
)

const socks5Version = 0x05

// Serve accepts clients on ln until ctx ends or ln is closed, and serves each on its own
// goroutine, so an idle or slow client never holds up the next one. When it returns, every
// connection it accepted (and every destination connection opened for them) is closed. It
// returns nil when ctx ended, else the error that stopped Accept.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		s.addSelf(a.AddrPort())
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sv := &serving{s: s, ctx: ctx, conns: map[*frontConn]struct{}{}, httpLn: newConnListener(ln.Addr())}
	httpSrv := s.newHTTPServer(ctx)
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		_ = httpSrv.Serve(sv.httpLn) // returns once httpLn is closed below
	}()

	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	err := sv.acceptLoop(ln)
	stop()

	cancel()
	_ = ln.Close()
	_ = httpSrv.Close()
	sv.closeAll()
	<-httpDone
	sv.wg.Wait()
	s.httpTransport.CloseIdleConnections()
	if parent.Err() != nil {
		return nil
	}
	return err
}

// serving is the state of one Serve call.
type serving struct {
	s      *Server
	ctx    context.Context
	httpLn *connListener
	wg     sync.WaitGroup // handler goroutines and open connections

	mu      sync.Mutex
	conns   map[*frontConn]struct{}
	closing bool
}

func (sv *serving) acceptLoop(ln net.Listener) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if sv.ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
			}
			// Out of file descriptors and the like: back off as net/http does rather than
			// spin, and keep serving the clients we have.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			sv.s.log.Warn("accept failed; retrying", "listener", ln.Addr().String(), "in", delay, "err", err)
			select {
			case <-time.After(delay):
			case <-sv.ctx.Done():
				return nil
			}
			continue
		}
		delay = 0
		fc := sv.track(c)
		if fc == nil {
			_ = c.Close()
			return nil
		}
		sv.wg.Go(func() { sv.handle(fc) })
	}
}

func (sv *serving) track(c net.Conn) *frontConn {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.closing {
		return nil
	}
	ctx, cancel := context.WithCancel(sv.ctx)
	fc := &frontConn{Conn: c, br: bufio.NewReader(c), ctx: ctx, cancel: cancel}
	fc.onClose = func() {
		sv.mu.Lock()
		delete(sv.conns, fc)
		sv.mu.Unlock()
		sv.s.open.Add(-1)
		sv.wg.Done()
	}
	sv.conns[fc] = struct{}{}
	sv.wg.Add(1)
	sv.s.open.Add(1)
	sv.s.total.Add(1)
	return fc
}

func (sv *serving) closeAll() {
	sv.mu.Lock()
	sv.closing = true
	conns := make([]*frontConn, 0, len(sv.conns))
	for fc := range sv.conns {
		conns = append(conns, fc)
	}
	sv.mu.Unlock()
	for _, fc := range conns {
		_ = fc.Close()
	}
}

// handle reads the client's first byte and passes the connection to SOCKS5 or HTTP.
func (sv *serving) handle(fc *frontConn) {
	s := sv.s
	_ = fc.SetReadDeadline(time.Now().Add(s.hsTimeout))
	first, err := fc.br.Peek(1)
	if err != nil {
		s.log.Debug("client sent nothing", "client", fc.RemoteAddr().String(), "err", err)
		_ = fc.Close()
		return
	}
	// Asked once the client has spoken, so that a refusal can be said in its protocol.
	if err := s.peers.CheckConn(fc.Conn); err != nil {
		s.refuseOtherUser(fc, first[0], err)
		return
	}
	switch b := first[0]; {
	case b == socks5Version:
		s.serveSOCKS(fc)
	case 'A' <= b && b <= 'Z' || 'a' <= b && b <= 'z':
		// net/http sets its own header and idle deadlines.
		_ = fc.SetReadDeadline(time.Time{})
		if !sv.httpLn.push(fc) {
			_ = fc.Close()
		}
	default:
		s.log.Info("closing connection: neither SOCKS5 nor HTTP",
			"client", fc.RemoteAddr().String(), "first_byte", fmt.Sprintf("%#02x", b), "hint", firstByteHint(b))
		_ = fc.Close()
	}
}

// firstByteHint guesses what a misconfigured client was trying, for the log line.
func firstByteHint(b byte) string {
	switch b {
	case 0x04:
		return "SOCKS4 is not supported: use socks5h://"
	case 0x16:
		return "TLS to the proxy port: the proxy URL must be http://, not https://"
	default:
		return "not a proxy client"
	}
}

// frontConn is an accepted client connection whose first bytes may already be buffered.
type frontConn struct {
	net.Conn
	br *bufio.Reader
	// ctx ends when the connection is closed or its Serve stops; dials and relays for this
	// client use it.
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	onClose   func()
}

func (c *frontConn) Read(p []byte) (int, error) { return c.br.Read(p) }

func (c *frontConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.cancel()
		c.onClose()
	})
	return err
}

func (c *frontConn) CloseWrite() error { return remote.CloseWrite(c.Conn) }

// remoteAddrPort is the client's address, or the zero AddrPort if it isn't IP.
func (c *frontConn) remoteAddrPort() netip.AddrPort {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// connListener hands connections the front door identified as HTTP to one http.Server.
type connListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// push reports false if the listener is closed.
func (l *connListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func clientAttr(c net.Conn) slog.Attr { return slog.String("client", c.RemoteAddr().String()) }
