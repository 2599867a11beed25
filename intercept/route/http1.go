package route

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tpdev/tp/remote"
)

// Dialer opens a connection to where a route's requests go; route "" is the app.
type Dialer func(ctx context.Context, route string) (net.Conn, error)

// Stats counts what a relay did, for the agent's log and tests.
type Stats struct {
	// Routed requests (HTTP/2 streams too) went to an intercept; Passed ones to the app.
	Routed, Passed atomic.Int64
	// Fallbacks are requests a route matched whose intercept could not take them: they
	// went to the app.
	Fallbacks atomic.Int64
	// Raw connections were not HTTP/1.x (or stopped being readable as such): from that
	// point on the app got their bytes as they came.
	Raw atomic.Int64
	// Tapped copies went to wiretaps (a connection's, or a connection's requests for one
	// wiretap); TapDrops of them ended early, their client too slow or gone.
	Tapped, TapDrops atomic.Int64
	// tapHeld is what the taps that count here hold now (TapBudget bounds it).
	tapHeld atomic.Int64
}

// Relay routes each request of an HTTP/1.x connection on its own, and each stream of an
// HTTP/2 cleartext one (gRPC's; h2.go).
type Relay struct {
	Table func() Table // the port's routes now; read for every request
	Dial  Dialer
	Stats *Stats
	Log   *slog.Logger
	// FirstByte is how long a connection may stay silent before the relay also opens the
	// app's connection to see whether the app speaks first (a protocol that is not HTTP):
	// then it carries the connection's bytes as they come. Default 500 ms.
	FirstByte time.Duration
	// Taps, when set, are the port's filtered wiretaps now (read for every request), and
	// Tap opens a copy for one of them: every request a wiretap's filter matches is copied
	// to it, head and body, whatever route takes the request (an HTTP/2 stream as a
	// request of its own on the wiretap's HTTP/2 connection). A wiretap without a filter
	// copies a connection whole, outside the relay: TapConn.
	Taps func() Table
	Tap  func(ctx context.Context, id string) *Tap
}

// Buffer sizes: a head fits in the read buffer (readHead grows past it when it must), and
// a body moves in writes of up to this many bytes. Bodies larger than spliceAbove move
// between the connections themselves once the buffered part is written: between two TCP
// connections (the client and the app) the kernel moves them (splice(2)).
const (
	bufSize     = 16 << 10
	spliceAbove = 64 << 10
)

// The buffers are pooled: most connections carry one small request, and a relay that
// allocated 64 KiB for each would cost the pod's memory and its GC time.
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}
)

func newReader(c net.Conn) *bufio.Reader {
	r := readers.Get().(*bufio.Reader)
	r.Reset(c)
	return r
}

func newWriter(c net.Conn) *bufio.Writer {
	w := writers.Get().(*bufio.Writer)
	w.Reset(c)
	return w
}

func release(r *bufio.Reader, w *bufio.Writer) {
	r.Reset(nil)
	w.Reset(nil)
	readers.Put(r)
	writers.Put(w)
}

// Serve relays one client connection until it ends, then closes it.
func (r *Relay) Serve(ctx context.Context, client net.Conn) {
	s := &session{Relay: r, ctx: ctx, client: client, cr: newReader(client),
		cw: newWriter(client), ups: map[string]*upstream{}, stats: r.Stats, log: r.Log}
	if s.stats == nil {
		s.stats = &Stats{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	defer s.close()
	if !s.clientSpeaksFirst() {
		return
	}
	if speaksH2(s.cr) {
		s.h2 = true
		s.serveH2()
		return
	}
	s.loop()
}

type session struct {
	*Relay
	ctx    context.Context
	client net.Conn
	cr     *bufio.Reader
	cw     *bufio.Writer
	ups    map[string]*upstream
	stats  *Stats
	log    *slog.Logger
	// h2: the connection was served as HTTP/2, which took over the buffers of the
	// upstreams it adopted: they are not pooled again.
	h2 bool
	// taps are the connection's copies for the wiretaps its requests matched, by id.
	taps map[string]*Tap
}

type upstream struct {
	route string
	c     net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	// used: it carried a request already, so its server may have closed it since (an
	// idle keep-alive timeout) without our knowing.
	used bool
	// pending, when not nil, reports the end of a Peek of br still running: br is read
	// only after it.
	pending chan error
}

func (s *session) close() {
	for _, t := range s.taps {
		t.Close()
	}
	for _, up := range s.ups {
		up.c.Close()
		if !s.h2 && up.pending == nil {
			release(up.br, up.bw)
		}
	}
	s.client.Close()
	if !s.h2 { // HTTP/2's reader may still be ending
		release(s.cr, s.cw)
	}
}

// clientSpeaksFirst waits for the client's first byte. When the client is silent for
// FirstByte, the app's connection opens too: if the app speaks first, this is no HTTP
// connection, and its bytes are carried as they come (false is returned once they were).
func (s *session) clientSpeaksFirst() bool {
	wait := s.FirstByte
	if wait == 0 {
		wait = 500 * time.Millisecond
	}
	// Nearly always the client speaks at once: a read deadline tells so without a
	// goroutine and a timer for every connection.
	if s.client.SetReadDeadline(time.Now().Add(wait)) == nil {
		_, err := s.cr.Peek(1)
		_ = s.client.SetReadDeadline(time.Time{})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err == nil
		}
	}
	first := make(chan error, 1)
	go func() { _, err := s.cr.Peek(1); first <- err }()
	app, err := s.upstream("")
	if err != nil {
		err := <-first // the app is not there: wait for the client as if it were
		return err == nil
	}
	appFirst := make(chan error, 1)
	go func() { _, err := app.br.Peek(1); appFirst <- err }()
	select {
	case err := <-first:
		if err != nil {
			return false
		}
		// The app's Peek may still be pending; the first request's exchange reads app.br
		// only after it, so wait for it there.
		app.pending = appFirst
		return true
	case <-appFirst:
		s.stats.Raw.Add(1)
		s.pipe(app, first)
		return false
	case <-s.ctx.Done():
		s.client.Close() // ends the client's Peek
		<-first
		app.pending = appFirst // its Peek may still run: its buffers are not pooled again
		return false
	}
}

func (s *session) loop() {
	for {
		h, err := readHead(s.cr, true)
		switch {
		case err == io.EOF:
			return
		case errors.Is(err, errNotHTTP):
			s.passRest(h.raw)
			return
		case err != nil:
			return
		}
		kind, n, ok := h.framing(true)
		if !ok {
			s.passRest(h.raw)
			return
		}
		if !s.exchange(h, kind, n) {
			return
		}
	}
}

// upstream is the connection for route, dialed when there is none.
func (s *session) upstream(route string) (*upstream, error) {
	if up := s.ups[route]; up != nil {
		return up, nil
	}
	c, err := s.Dial(s.ctx, route)
	if err != nil {
		return nil, err
	}
	up := &upstream{route: route, c: c, br: newReader(c), bw: newWriter(c)}
	s.ups[route] = up
	return up, nil
}

func (s *session) drop(up *upstream) {
	up.c.Close()
	if s.ups[up.route] == up {
		delete(s.ups, up.route)
		if up.pending == nil {
			release(up.br, up.bw)
		}
	}
}

// pick is the upstream a request goes to: its route's, or the app's when no route takes
// it or the route's intercept cannot (its client went away meanwhile).
func (s *session) pick(h *head) (*upstream, error) {
	if id := s.Table().Pick(h); id != "" {
		up, err := s.upstream(id)
		if err == nil {
			s.stats.Routed.Add(1)
			return up, nil
		}
		s.stats.Fallbacks.Add(1)
		s.log.Info("route: a matching request goes to the app", "route", id, "why", err)
	}
	s.stats.Passed.Add(1)
	return s.upstream("")
}

// exchange carries one request and its response; false ends the connection.
func (s *session) exchange(h *head, kind bodyKind, n int64) bool {
	up, err := s.pick(h)
	if err != nil {
		s.badGateway(err)
		return false
	}
	tee := s.tapsFor(h)
	if kind == noBody {
		resp, err := s.send(up, h)
		if err != nil && up.used && resp == nil && replayable(h) {
			// Its server closed the kept-alive connection before reading the request: a
			// request without a body is sent again on a new one, as HTTP clients do.
			s.drop(up)
			if up, err = s.upstream(up.route); err == nil {
				resp, err = s.send(up, h)
			}
		}
		if err != nil {
			s.badGateway(err)
			return false
		}
		return s.answer(h, up, resp, nil)
	}
	up.bw.Write(h.raw)
	if s.cr.Buffered() == 0 || h.has("expect", "100-continue") {
		// The body is not here yet, maybe because the client waits for 100 Continue: the
		// server must see the head now.
		if err := up.bw.Flush(); err != nil {
			s.badGateway(err)
			return false
		}
	}
	body := make(chan error, 1)
	go func() { body <- s.copyBody(up, kind, n, tee) }()
	resp, err := s.readResponse(up)
	if err != nil {
		up.c.Close()
		<-body
		s.badGateway(err)
		return false
	}
	return s.answer(h, up, resp, body)
}

// replayable reports whether a request may be sent a second time when its connection
// broke before any answer: as HTTP clients do, only idempotent reads, or a request that
// names its idempotency key.
func replayable(h *head) bool {
	switch h.method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return len(h.Values("idempotency-key")) > 0 || len(h.Values("x-idempotency-key")) > 0
}

// tapsFor copies the request's head to the wiretaps whose filters match it, and returns
// what copies its body to them too (nil for none). A connection opens one tap per wiretap,
// for its first request that wiretap matches.
func (s *session) tapsFor(h *head) func([]byte) {
	if s.Taps == nil {
		return nil
	}
	var taps []*Tap
	for _, rt := range s.Taps() {
		if !rt.Match.Match(h) {
			continue
		}
		t := s.taps[rt.ID]
		if t == nil {
			t = s.Tap(s.ctx, rt.ID)
			if s.taps == nil {
				s.taps = map[string]*Tap{}
			}
			s.taps[rt.ID] = t
		}
		t.Write(h.raw)
		taps = append(taps, t)
	}
	if len(taps) == 0 {
		return nil
	}
	return func(b []byte) {
		for _, t := range taps {
			t.Write(b)
		}
	}
}

// send writes a request without a body and reads its response's head; a nil head with an
// error means no byte of a response came.
func (s *session) send(up *upstream, h *head) (*head, error) {
	up.bw.Write(h.raw)
	if err := up.bw.Flush(); err != nil {
		return nil, err
	}
	return s.readResponse(up)
}

func (s *session) readResponse(up *upstream) (*head, error) {
	if up.pending != nil {
		<-up.pending
		up.pending = nil
	}
	resp, err := readHead(up.br, false)
	if err != nil {
		if len(resp.raw) == 0 {
			return nil, fmt.Errorf("%s: %w", up.name(), err)
		}
		return resp, fmt.Errorf("%s: not an HTTP/1.x response: %w", up.name(), err)
	}
	return resp, nil
}

func (up *upstream) name() string { return routeName(up.route) }

func (s *session) copyBody(up *upstream, kind bodyKind, n int64, tee func([]byte)) error {
	var err error
	if kind == chunkedBody {
		err = copyChunked(up.bw, s.cr, true, tee)
	} else {
		err = moveBody(up.bw, up.c, s.cr, s.client, n, tee)
	}
	if err == nil {
		err = up.bw.Flush()
	}
	return err
}

// answer carries the response whose head is resp back to the client; body, when not nil,
// reports the end of the request's body.
func (s *session) answer(req *head, up *upstream, resp *head, body chan error) bool {
	// abort ends the exchange early: the request body's copy must be over before the
	// session's buffers can go back to the pool, so its upstream is closed to end it.
	abort := func() bool {
		up.c.Close()
		if body != nil {
			<-body
		}
		return false
	}
	var err error
	for resp.status/100 == 1 && resp.status != 101 { // 100 Continue, 103 Early Hints
		s.cw.Write(resp.raw)
		if err := s.cw.Flush(); err != nil {
			return abort()
		}
		if resp, err = s.readResponse(up); err != nil {
			return abort()
		}
	}
	if resp.status == 101 || (req.method == "CONNECT" && resp.status/100 == 2) {
		// A WebSocket or another protocol from here on (h2c by Upgrade too, whose streams
		// then all go where the upgrade request went): the bytes go as they come.
		s.cw.Write(resp.raw)
		if s.cw.Flush() != nil {
			return abort()
		}
		if body != nil {
			<-body
		}
		s.pipe(up, nil)
		return false
	}
	kind, n, ok := resp.framing(false)
	switch {
	case req.method == "HEAD" || resp.status == 204 || resp.status == 304:
		kind = noBody
	case !ok:
		kind = closeBody
	}
	s.cw.Write(resp.raw)
	switch kind {
	case lengthBody:
		err = moveBody(s.cw, s.client, up.br, up.c, n, nil)
	case chunkedBody:
		err = copyChunked(s.cw, up.br, false, nil)
	case closeBody:
		err = moveBody(s.cw, s.client, up.br, up.c, -1, nil)
	}
	if err == nil {
		err = s.cw.Flush()
	}
	if body != nil {
		if err != nil {
			up.c.Close() // the request's body has nowhere to go: end its copy
		}
		if berr := <-body; berr != nil && err == nil {
			err = berr
		}
	}
	up.used = true
	if err != nil || kind == closeBody || resp.closes() {
		s.drop(up)
	}
	return err == nil && kind != closeBody && !resp.closes() && !req.closes()
}

// badGateway tells the client its request got no answer, as a proxy would.
func (s *session) badGateway(err error) {
	s.log.Info("route: a request got no response", "err", err)
	msg := "tp's traffic agent: " + err.Error() + "\n"
	fmt.Fprintf(s.cw, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(msg), msg)
	_ = s.cw.Flush()
}

// passRest carries the rest of the connection to the app as it comes, starting with raw
// (the bytes read that are not HTTP/1.x).
func (s *session) passRest(raw []byte) {
	s.stats.Raw.Add(1)
	for route, up := range s.ups {
		if route != "" {
			s.drop(up)
		}
	}
	app, err := s.upstream("")
	if err != nil {
		s.log.Info("route: the app does not answer", "err", err)
		return
	}
	app.bw.Write(raw)
	if app.bw.Flush() != nil {
		return
	}
	s.pipe(app, nil)
}

// pipe carries bytes both ways between the client and up until both ends are done. When
// clientReady is not nil, the client's side is read only after it reports (a Peek of the
// client's reader is pending).
func (s *session) pipe(up *upstream, clientReady chan error) {
	client := &bufConn{Conn: s.client, r: s.cr, ready: clientReady}
	_, _, _ = remote.Splice(client, &bufConn{Conn: up.c, r: up.br, ready: up.pending})
	delete(s.ups, up.route)
}

// bufConn is a conn read through its bufio.Reader (which may hold bytes already), keeping
// the conn's half-close.
type bufConn struct {
	net.Conn
	r     *bufio.Reader
	ready chan error
}

func (c *bufConn) Read(p []byte) (int, error) {
	if c.ready != nil {
		<-c.ready
		c.ready = nil
	}
	return c.r.Read(p)
}

func (c *bufConn) CloseWrite() error { return remote.CloseWrite(c.Conn) }

// moveBody copies a body of n bytes (n < 0: up to EOF) from src, read through sr, to dst,
// written through dw: what sr holds goes through the buffers, and the rest of a large body
// straight from one connection to the other (but when tee must see every byte too).
func moveBody(dw *bufio.Writer, dst net.Conn, sr *bufio.Reader, src net.Conn, n int64, tee func([]byte)) error {
	if (n >= 0 && n <= spliceAbove) || tee != nil {
		return stream(dw, sr, n, tee)
	}
	k := int64(sr.Buffered())
	if n >= 0 {
		k = min(k, n)
	}
	if err := stream(dw, sr, k, nil); err != nil {
		return err
	}
	if err := dw.Flush(); err != nil {
		return err
	}
	if n < 0 {
		_, err := io.Copy(dst, src)
		return err
	}
	moved, err := io.CopyN(dst, src, n-k)
	if err == io.EOF && moved < n-k {
		return io.ErrUnexpectedEOF
	}
	return err
}

// stream copies n bytes (n < 0: up to EOF) from src to dst, writing what has arrived and
// flushing whenever src has nothing more yet, so a slow body reaches its reader as it comes
// and a quick one in few writes.
func stream(dst *bufio.Writer, src *bufio.Reader, n int64, tee func([]byte)) error {
	for n != 0 {
		if src.Buffered() == 0 {
			if err := dst.Flush(); err != nil {
				return err
			}
			if _, err := src.Peek(1); err != nil {
				if err == io.EOF && n < 0 {
					return nil
				}
				if err == io.EOF {
					return io.ErrUnexpectedEOF
				}
				return err
			}
		}
		k := src.Buffered()
		if n > 0 && int64(k) > n {
			k = int(n)
		}
		b, _ := src.Peek(k)
		if _, err := dst.Write(b); err != nil {
			return err
		}
		if tee != nil {
			tee(b)
		}
		_, _ = src.Discard(k)
		if n > 0 {
			n -= int64(k)
		}
	}
	return nil
}
