package route

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/net/http2"
)

// HTTP/2 cleartext with prior knowledge (what gRPC without TLS speaks) is served here: the
// relay is the HTTP/2 server of the client's connection, and each stream, a request, goes
// where the routes say, over one HTTP/2 connection per route and client connection.
//
// h2c by HTTP/1.1 Upgrade is not: the upgrade request is routed as any HTTP/1 request, and
// when its upstream answers 101, the whole connection stays with that upstream (see
// session.answer). Clients that know the server speaks HTTP/2 (gRPC's, curl
// --http2-prior-knowledge, grpcurl -plaintext) never upgrade.

// speaksH2 reports whether the client's connection starts with the HTTP/2 preface. It waits
// for more bytes only while those that came match the preface: a short HTTP/1 request,
// which differs from it early, is answered without waiting for bytes it will never send.
func speaksH2(br *bufio.Reader) bool {
	for {
		n := min(br.Buffered(), len(http2.ClientPreface))
		b, _ := br.Peek(n)
		if string(b) != http2.ClientPreface[:n] {
			return false
		}
		if n == len(http2.ClientPreface) {
			return true
		}
		if _, err := br.Peek(n + 1); err != nil {
			return false // what came is left for the HTTP/1 reader, which tells what it is
		}
	}
}

// serveH2 serves the client's connection as HTTP/2 until it ends.
func (s *session) serveH2() {
	ups := &h2Upstreams{s: s, conns: map[string]*h2Upstream{},
		// Compression off: the transport would otherwise ask for gzip and unpack it,
		// changing the response the client gets.
		tr: &http2.Transport{AllowHTTP: true, DisableCompression: true}}
	defer ups.close()
	if app := s.ups[""]; app != nil {
		// clientSpeaksFirst dialed the app already (and may still be peeking at it).
		delete(s.ups, "")
		ups.adopt("", &bufConn{Conn: app.c, r: app.br, ready: app.pending})
	}
	srv := &http2.Server{}
	srv.ServeConn(&bufConn{Conn: s.client, r: s.cr}, &http2.ServeConnOpts{
		Context:    s.ctx,
		Handler:    &h2Proxy{s: s, ups: ups},
		BaseConfig: &http.Server{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)},
	})
}

// h2Upstreams are the HTTP/2 connections the streams of one client connection go over:
// one per route, dialed for the first stream that goes there, so an intercepting laptop
// sees one connection per client connection, as with HTTP/1.
type h2Upstreams struct {
	s      *session
	tr     *http2.Transport
	mu     sync.Mutex
	conns  map[string]*h2Upstream // the one new streams of a route take
	all    []*http2.ClientConn    // replaced ones too: their streams may still run
	closed bool
}

type h2Upstream struct {
	ready chan struct{} // closed once the dial ended, with cc or err set
	cc    *http2.ClientConn
	err   error
}

// get is route's connection, dialed when there is none or the one there is ends (its
// server sent GOAWAY, or went away). Streams that need it while it is dialed wait for it.
func (u *h2Upstreams) get(ctx context.Context, route string) (*http2.ClientConn, error) {
	u.mu.Lock()
	up := u.conns[route]
	if up == nil || up.ended() {
		up = &h2Upstream{ready: make(chan struct{})}
		u.conns[route] = up
		u.mu.Unlock()
		cc, err := u.connect(route, nil)
		u.settle(route, up, cc, err)
	} else {
		u.mu.Unlock()
	}
	select {
	case <-up.ready:
		return up.cc, up.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// adopt makes a connection dialed already route's.
func (u *h2Upstreams) adopt(route string, c net.Conn) {
	up := &h2Upstream{ready: make(chan struct{})}
	u.conns[route] = up
	cc, err := u.connect(route, c)
	u.settle(route, up, cc, err)
}

// connect opens an HTTP/2 connection to route over c, dialing c when it is nil. The dial
// gets the client connection's context, not a request's: the connection outlives the
// stream that needed it.
func (u *h2Upstreams) connect(route string, c net.Conn) (*http2.ClientConn, error) {
	if c == nil {
		var err error
		if c, err = u.s.Dial(u.s.ctx, route); err != nil {
			return nil, fmt.Errorf("%s: %w", routeName(route), err)
		}
	}
	cc, err := u.tr.NewClientConn(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", routeName(route), err)
	}
	return cc, nil
}

// settle records the end of up's dial. A failed dial is forgotten, so that the route's
// next stream tries again, as the next HTTP/1 request does.
func (u *h2Upstreams) settle(route string, up *h2Upstream, cc *http2.ClientConn, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	defer close(up.ready)
	switch {
	case err != nil:
		if u.conns[route] == up {
			delete(u.conns, route)
		}
		up.err = err
	case u.closed:
		cc.Close()
		up.err = fmt.Errorf("%s: the client's connection ended", routeName(route))
	default:
		up.cc = cc
		u.all = append(liveConns(u.all), cc)
	}
}

// ended reports whether up was dialed and cannot take new streams. Call with u.mu held.
func (up *h2Upstream) ended() bool {
	select {
	case <-up.ready:
	default:
		return false
	}
	return up.err != nil || closing(up.cc)
}

// closing reports whether cc takes no new streams: its server sent GOAWAY (an idle timeout,
// a shutdown) or it closed.
func closing(cc *http2.ClientConn) bool {
	st := cc.State()
	return st.Closed || st.Closing
}

func liveConns(ccs []*http2.ClientConn) []*http2.ClientConn {
	var live []*http2.ClientConn
	for _, cc := range ccs {
		if !cc.State().Closed {
			live = append(live, cc)
		}
	}
	return live
}

func (u *h2Upstreams) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	for _, cc := range u.all {
		cc.Close()
	}
}

func routeName(route string) string {
	if route == "" {
		return "the app"
	}
	return "intercept route " + route
}

// h2Proxy is the handler of a client's HTTP/2 streams: it sends each where the routes say.
type h2Proxy struct {
	s   *session
	ups *h2Upstreams
}

func (p *h2Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r = p.tapsFor(r)
	route, cc, err := p.pick(r)
	if err == nil {
		err = p.forward(w, r, route, cc)
	}
	if err != nil && r.Context().Err() == nil {
		p.badGateway(w, err)
	}
}

// pick is the route r goes to and its connection: the route's, or the app's when no route
// takes r or the route's intercept cannot (its client went away meanwhile).
func (p *h2Proxy) pick(r *http.Request) (string, *http2.ClientConn, error) {
	s := p.s
	if id := s.Table().Pick(h2Request{r}); id != "" {
		cc, err := p.ups.get(r.Context(), id)
		if err == nil {
			s.stats.Routed.Add(1)
			return id, cc, nil
		}
		if r.Context().Err() != nil {
			return "", nil, err
		}
		s.stats.Fallbacks.Add(1)
		s.log.Info("route: a matching request goes to the app", "route", id, "why", err)
	}
	s.stats.Passed.Add(1)
	cc, err := p.ups.get(r.Context(), "")
	return "", cc, err
}

// forward sends r over cc, route's connection, and carries its response back, both bodies
// as they come and the response's trailers (gRPC's status). An error means the client got
// no response yet; one that breaks off the response's body resets the client's stream
// instead.
func (p *h2Proxy) forward(w http.ResponseWriter, r *http.Request, route string, cc *http2.ClientConn) error {
	resp, err := cc.RoundTrip(outgoing(r))
	if err != nil && r.ContentLength == 0 && replayableH2(r) && r.Context().Err() == nil && closing(cc) {
		// Its server ended the connection (an idle timeout) as the request went: a request
		// without a body is sent again on a new one, as HTTP clients do.
		if cc, err = p.ups.get(r.Context(), route); err == nil {
			resp, err = cc.RoundTrip(outgoing(r))
		}
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := w.Header()
	for k, vv := range resp.Header {
		h[k] = vv
	}
	for _, k := range []string{"Date", "Content-Type"} {
		if _, ok := h[k]; !ok {
			h[k] = nil // the server would add one the upstream did not send
		}
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	if resp.ContentLength != 0 {
		// The client sees the headers when the upstream sent them, before any body (a
		// gRPC server's headers may come long before its first message). A response that
		// ended with its headers is not flushed, so it stays one HEADERS frame: a gRPC
		// "trailers-only" answer must.
		_ = rc.Flush()
	}
	if err := copyFlushing(w, rc, resp.Body); err != nil {
		if r.Context().Err() == nil {
			p.s.log.Info("route: a response broke off", "err", err)
		}
		panic(http.ErrAbortHandler) // resets the stream: the client must not take it as whole
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	return nil
}

// outgoing is r as a request to its upstream: the same method, :path, :authority, headers
// and body, and r's trailers, which the server fills at the body's end.
func outgoing(r *http.Request) *http.Request {
	// Not r.Clone: it copies r.Trailer, a map the server fills when the trailers come, maybe
	// as it is copied. Shared, its values are there when the transport reads them, after
	// the body's end.
	out := r.WithContext(r.Context())
	u := *r.URL
	out.URL, out.Header = &u, r.Header.Clone()
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = "http", r.Host
	if r.ContentLength == 0 {
		out.Body = http.NoBody // so the request's headers end its stream, as they came
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // the transport would add its own
	}
	return out
}

// copyFlushing copies body to w, flushing every write: a streaming RPC's messages reach the
// client as they come.
func copyFlushing(w io.Writer, rc *http.ResponseController, body io.Reader) error {
	buf := make([]byte, bufSize)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if ferr := rc.Flush(); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// badGateway tells the client its request got no answer, as a proxy would (a gRPC client
// reports it as Unavailable).
func (p *h2Proxy) badGateway(w http.ResponseWriter, err error) {
	p.s.log.Info("route: a request got no response", "err", err)
	http.Error(w, "tp's traffic agent: "+err.Error(), http.StatusBadGateway)
}

// h2Request is an HTTP/2 request as filters see it, as they see an HTTP/1 head: its path as
// sent, without the query, and its header values by lower-case name, gRPC's metadata
// among them. :authority is host, the field HTTP/1 carries it in.
type h2Request struct{ r *http.Request }

func (q h2Request) Path() string {
	path, _, _ := strings.Cut(q.r.RequestURI, "?")
	return path
}

func (q h2Request) Values(name string) []string {
	if name == "host" {
		if q.r.Host == "" {
			return nil
		}
		return []string{q.r.Host}
	}
	return q.r.Header[http.CanonicalHeaderKey(name)]
}

// replayableH2 is replayable for an HTTP/2 request: only what is safe to send twice.
func replayableH2(r *http.Request) bool {
	switch r.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}
