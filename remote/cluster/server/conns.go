package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/ratelimit"
)

// connLog wraps a server's listener to log the connections the server drops: gRPC and
// net/http close a connection that sends garbage, a truncated greeting or nothing at all
// without a word (gRPC's own log is off), and whoever runs the manager needs to see a
// misconfigured client, a scanner or a peer holding connections open.
type connLog struct {
	net.Listener
	api string
	log *slog.Logger
	// gRPC marks a port that speaks gRPC only: a connection is greeted once it sent the
	// HTTP/2 preface, and the server closing it after that means a protocol error (or a
	// missed keepalive). Otherwise a connection is greeted once it made a request the
	// server serves (markServed): a 404 or a garbled request is no greeting.
	grpc bool
	// userTimeout is gRPC's keepalive timeout, which it sets as TCP_USER_TIMEOUT on the
	// connections it accepts: only on a *net.TCPConn, so the listener sets it instead.
	userTimeout time.Duration
	// tls marks a port that speaks TLS only: a connection whose first byte is not a TLS
	// handshake record is a plaintext client, told apart in the log (an agent injected
	// before the manager spoke TLS, or a misconfigured client), at most every so often.
	tls       bool
	plaintext *ratelimit.Limiter
	closed    atomic.Bool
}

// watchGRPC wraps the listener of a gRPC server with keepalive timeout userTimeout.
func watchGRPC(ln net.Listener, api string, userTimeout time.Duration, log *slog.Logger) *connLog {
	return &connLog{Listener: ln, api: api, grpc: true, userTimeout: userTimeout, log: log}
}

// watchTLS wraps the listener of an http.Server that serves TLS on it, whose ConnContext
// is withConn and whose handlers call markServed; plaintext clients are logged as
// plaintext lets them.
func watchTLS(ln net.Listener, api string, plaintext *ratelimit.Limiter, log *slog.Logger) *connLog {
	return &connLog{Listener: ln, api: api, tls: true, plaintext: plaintext, log: log}
}

func (l *connLog) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if err := setUserTimeout(c, l.userTimeout); err != nil {
		l.log.Warn(l.api+": setting the connection's TCP user timeout", "from", c.RemoteAddr().String(), "err", err)
	}
	wc := &watchedConn{l: l, start: time.Now()}
	wc.Counted = remote.Counted{Conn: c, OnRead: wc.sawRead}
	return wc, nil
}

// Close marks the end of serving: the server then closes every connection, which is no
// news.
func (l *connLog) Close() error {
	l.closed.Store(true)
	return l.Listener.Close()
}

// headLen is how much of what a peer sent first is kept for the log: enough to tell the
// HTTP/2 preface, a TLS hello or an HTTP/1 request line apart.
const headLen = len(http2.ClientPreface)

type watchedConn struct {
	// Counted keeps the half-close net/http does before closing a connection it refused,
	// so that the peer reads the refusal before the end.
	remote.Counted
	l     *connLog
	start time.Time

	mu      sync.Mutex
	head    []byte
	n       int64
	readErr error // the first: the peer's end (EOF, reset) or a deadline
	greeted bool
	once    sync.Once
}

// sawRead keeps the head of what the peer sent, the bytes and the first read error.
func (c *watchedConn) sawRead(p []byte, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.head) < headLen {
		c.head = append(c.head, p[:min(len(p), headLen-len(c.head))]...)
		c.greeted = c.greeted || (c.l.grpc && bytes.Equal(c.head, []byte(http2.ClientPreface)))
	}
	c.n += int64(len(p))
	if err != nil && c.readErr == nil {
		c.readErr = err
	}
}

func (c *watchedConn) Close() error {
	c.once.Do(c.report)
	return c.Conn.Close()
}

// served marks that the connection made a request the server serves.
func (c *watchedConn) served() {
	c.mu.Lock()
	c.greeted = true
	c.mu.Unlock()
}

func (c *watchedConn) report() {
	if c.l.closed.Load() {
		return
	}
	c.mu.Lock()
	head, n, rerr, greeted := string(c.head), c.n, c.readErr, c.greeted
	c.mu.Unlock()
	timedOut := errors.Is(rerr, os.ErrDeadlineExceeded)
	args := []any{"from", c.RemoteAddr().String(), "bytes", n, "after", time.Since(c.start).Round(time.Millisecond)}
	if n > 0 {
		args = append(args, "first", head)
	}
	switch {
	case !greeted && c.l.tls && n > 0 && head[0] != tlsHandshake:
		if ok, skipped := c.l.plaintext.Allow(time.Now()); ok {
			if skipped > 0 {
				args = append(args, "and", fmt.Sprintf("%d more not logged", skipped))
			}
			c.l.log.Warn(c.l.api+": closed a plaintext connection: this port speaks TLS only (an agent injected before tp's manager spoke TLS gets it at its workload's next tp intercept)", args...)
		}
	case !greeted && n == 0 && rerr != nil && !timedOut:
		c.l.log.Debug(c.l.api+": a connection closed without sending anything", args...)
	case !greeted && timedOut:
		c.l.log.Warn(c.l.api+": dropped a connection that sent no valid request in time", args...)
	case !greeted && rerr == nil:
		c.l.log.Warn(c.l.api+": dropped a connection that sent no valid request", args...)
	case !greeted:
		c.l.log.Warn(c.l.api+": a connection hung up before a valid request", args...)
	case c.l.grpc && timedOut:
		c.l.log.Warn(c.l.api+": dropped a connection that did not finish its HTTP/2 handshake in time", args...)
	case c.l.grpc && rerr == nil:
		c.l.log.Warn(c.l.api+": closed a connection on an HTTP/2 protocol error or a missed keepalive", args...)
	}
}

// tlsHandshake is the first byte of every TLS client's first record (a handshake record).
const tlsHandshake = 0x16

type connKey struct{}

// withConn is an http.Server's ConnContext: it lets handlers mark their connection served.
func withConn(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	return context.WithValue(ctx, connKey{}, c)
}

// handshakeLog is an http.Server's ErrorLog for a TLS port: failed handshakes are logged
// at most as often as s lets them; a plaintext client's is left to connLog, which says
// more about it.
type handshakeLog struct {
	log *slog.Logger
	s   *ratelimit.Limiter
}

func (h handshakeLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(line, "first record does not look like a TLS handshake"),
		strings.Contains(line, "client sent an HTTP request to an HTTPS server"):
	case strings.Contains(line, "TLS handshake error"):
		if ok, skipped := h.s.Allow(time.Now()); ok {
			args := []any{}
			if skipped > 0 {
				args = append(args, "and", fmt.Sprintf("%d more not logged", skipped))
			}
			h.log.Warn(line, args...)
		}
	default:
		h.log.Warn(line)
	}
	return len(p), nil
}

func markServed(ctx context.Context) {
	if c, ok := ctx.Value(connKey{}).(*watchedConn); ok {
		c.served()
	}
}

// refusals logs the calls a gRPC server refuses for what the caller sent: a streaming
// call's message over the size limit or not protobuf, an unknown method, and the invalid
// requests handlers refuse. It is a pair of interceptors, not a stats handler: with any
// stats handler gRPC builds a payload event, with a copy of the bytes, for every message,
// which cost the tunnel a tenth of its bulk speed. A unary request that fails to decode
// never reaches an interceptor; gRPC refuses it (RESOURCE_EXHAUSTED, INTERNAL) unlogged.
type refusals struct {
	api string
	log *slog.Logger
}

func (h refusals) options() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			resp, err := handler(ctx, req)
			h.note(ctx, info.FullMethod, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			err := handler(srv, ss)
			method := info.FullMethod
			if m, ok := grpc.MethodFromServerStream(ss); ok {
				method = m // an unknown method's info names no method
			}
			h.note(ss.Context(), method, err)
			return err
		}),
	}
}

func (h refusals) note(ctx context.Context, method string, err error) {
	if err == nil {
		return
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.InvalidArgument, codes.ResourceExhausted, codes.Internal, codes.Unimplemented:
	default:
		return
	}
	from := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		from = p.Addr.String()
	}
	h.log.Warn(h.api+": refused a call", "method", method, "from", from, "code", st.Code(), "err", st.Message())
}

// unknownMethod refuses a call of a method the manager does not have, as gRPC would, but
// as a handler, so that refusals sees it.
func unknownMethod(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	return status.Errorf(codes.Unimplemented, "unknown method %s", method)
}
