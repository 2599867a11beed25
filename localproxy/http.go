package localproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/tpdev/tp/remote"
)

// newHTTPProxy configures goproxy for plain (absolute-URI) requests. CONNECT never reaches
// goproxy (see serveHTTP). goproxy's defaults are wrong for tp in ways that matter:
// NewProxyHttpServer takes HTTP(S)_PROXY from the environment for both its transport and
// its CONNECT dialer, so a user who exported them at tp would make tp proxy to itself; and
// its transport skips TLS verification. Every dial here goes to the Server's Dialer.
func (s *Server) newHTTPProxy() (*goproxy.ProxyHttpServer, *http.Transport) {
	tr := &http.Transport{
		Proxy: nil,
		// A plain request's client reads its answer after writing the request, so a refusal
		// can come with the answer: the tunnel sends the request with the dial.
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			return s.dial(remote.WithEarlyData(ctx), network, address)
		},
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Content encoding is between the client and the destination: pass it through.
		DisableCompression: true,
	}
	p := goproxy.NewProxyHttpServer()
	p.Tr = tr
	p.ConnectDial = nil
	p.ConnectDialWithReq = nil
	p.KeepAcceptEncoding = true
	p.Logger = goproxyLogger{s.log}
	p.NonproxyHandler = http.HandlerFunc(notAProxyRequest)
	p.OnResponse().DoFunc(func(resp *http.Response, ctx *goproxy.ProxyCtx) *http.Response {
		if resp != nil && resp.StatusCode == http.StatusProxyAuthRequired {
			return s.upstreamRefused(resp, ctx.Req)
		}
		if resp != nil || ctx.Error == nil {
			return resp
		}
		status, body, proxyStatus := httpError(ctx.Error)
		s.log.Info("http: request failed", "client", ctx.Req.RemoteAddr, "url", ctx.Req.URL.String(),
			"status", status, "err", ctx.Error)
		r := goproxy.NewResponse(ctx.Req, goproxy.ContentTypeText+"; charset=utf-8", status, body)
		r.Header.Set("Proxy-Status", proxyStatus)
		return r
	})
	return p, tr
}

// upstreamRefused turns an upstream proxy's 407 to a plain request into tp's 502: the
// client cannot answer it (the credentials are tp's, from the upstream's URL), and a 407
// would look as if tp's own port asked for them.
func (s *Server) upstreamRefused(resp *http.Response, req *http.Request) *http.Response {
	var up *url.URL
	if s.httpTransport.Proxy != nil {
		up, _ = s.httpTransport.Proxy(req)
	}
	if up == nil {
		return resp // the destination's own 407, not an upstream's: not tp's to judge
	}
	_ = resp.Body.Close()
	what := "put them in its URL, http://USER:PASSWORD@" + up.Host
	if up.User != nil {
		what = "it rejected user " + strconv.Quote(up.User.Username()) + ": fix the URL's credentials"
	}
	msg := fmt.Sprintf("the upstream proxy %s asks for credentials (407 Proxy Authentication Required): %s (HTTP_PROXY, or tp connect --upstream-proxy)", up.Redacted(), what)
	s.log.Info("http: the upstream proxy refused", "url", req.URL.String(), "upstream", up.Redacted(), "status", resp.Status)
	r := goproxy.NewResponse(req, goproxy.ContentTypeText+"; charset=utf-8", http.StatusBadGateway, "tp: "+msg+"\n")
	r.Header.Set("Proxy-Status", "tp; error=http_request_denied; details="+sfString(msg))
	return r
}

func (s *Server) newHTTPServer(ctx context.Context) *http.Server {
	return &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: s.hsTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
}

// serveHTTP answers a request that is not a proxy request without asking for credentials
// (it reaches nothing), and a proxy request only once httpAuthorized lets it through.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect && !r.URL.IsAbs() {
		if s.pac != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) && (r.URL.Path == "/proxy.pac" || r.URL.Path == "/wpad.dat") {
			s.servePAC(w, r)
			return
		}
		notAProxyRequest(w, r)
		return
	}
	if !s.httpAuthorized(w, r) {
		return
	}
	if r.Method == http.MethodConnect {
		s.serveConnect(w, r)
		return
	}
	s.httpProxy.ServeHTTP(w, r)
}

// servePAC answers a browser's request for the proxy auto-config file.
func (s *Server) servePAC(w http.ResponseWriter, r *http.Request) {
	if s.creds != nil && !isLoopbackClient(r.RemoteAddr) {
		// A port other machines reach asks them for credentials, which a PAC fetch cannot
		// give: the file (namespaces, ranges, the upstream's host) is for this machine.
		writeText(w, http.StatusForbidden, "tp: the PAC file is served to this machine only\n")
		return
	}
	body, err := s.pac(r.Context())
	if err != nil {
		s.log.Info("http: no PAC file", "client", r.RemoteAddr, "err", err)
		writeText(w, http.StatusServiceUnavailable, "tp: no proxy auto-config file now: "+err.Error()+"\n")
		return
	}
	w.Header().Set("Content-Type", "application/x-ns-proxy-autoconfig")
	// The cluster's ranges and namespaces can change: browsers should not keep it long.
	w.Header().Set("Cache-Control", "max-age=60")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

func isLoopbackClient(remoteAddr string) bool {
	ap, err := netip.ParseAddrPort(remoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// notAProxyRequest answers someone browsing the proxy port itself.
func notAProxyRequest(w http.ResponseWriter, r *http.Request) {
	writeText(w, http.StatusBadRequest, fmt.Sprintf(
		"tp: this is tp's proxy port (SOCKS5 and HTTP), not a web server: %s %s is not a proxy request.\n"+
			"Use it as a proxy, e.g. HTTP_PROXY=http://%s or ALL_PROXY=socks5h://%s\n",
		r.Method, r.URL.Path, r.Host, r.Host))
}

// serveConnect dials first and only then hijacks, so a failure is an ordinary HTTP response
// (status, headers, body) that net/http frames. goproxy's own CONNECT path is not used: it
// dials through its env-derived ConnectDial, and its hijack hook drops bytes the client
// sent right behind the CONNECT header (e.g. a TLS ClientHello).
func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request) {
	target := r.Host
	if _, port, err := net.SplitHostPort(target); err != nil || port == "" {
		w.Header().Set("Connection", "close")
		writeText(w, http.StatusBadRequest, fmt.Sprintf("tp: CONNECT needs host:port, not %q\n", target))
		return
	}
	dest, err := s.dial(r.Context(), "tcp", target)
	if err != nil {
		status, body, proxyStatus := httpError(err)
		s.log.Info("http: CONNECT failed", "client", r.RemoteAddr, "target", target, "status", status, "err", err)
		w.Header().Set("Connection", "close")
		w.Header().Set("Proxy-Status", proxyStatus)
		writeText(w, status, body)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		_ = dest.Close()
		writeText(w, http.StatusInternalServerError, "tp: cannot take over this connection for CONNECT\n")
		return
	}
	client, rw, err := hj.Hijack()
	if err != nil {
		_ = dest.Close()
		s.log.Info("http: CONNECT hijack failed", "client", r.RemoteAddr, "err", err)
		return
	}
	var clientR io.Reader = client
	if n := rw.Reader.Buffered(); n > 0 {
		early, _ := rw.Reader.Peek(n)
		clientR = io.MultiReader(bytes.NewReader(early), client)
	}
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		_ = client.Close()
		_ = dest.Close()
		return
	}
	splice(r.Context(), client, clientR, dest)
}

// httpError maps a dial or request error to what an HTTP client is told: a status, a text
// body a user can act on, and an RFC 9209 Proxy-Status value for tools.
func httpError(err error) (status int, body, proxyStatus string) {
	// net/http wraps an early-data refusal in its read loop's name when the loop, not the
	// request, saw it first (a race the -race detector's timing often loses): the user
	// needs tp's words only.
	msg := strings.TrimPrefix(err.Error(), "readLoopPeekFailLocked: ")
	// And in "proxyconnect tcp" when the dial was to an upstream proxy, which tp's own
	// error already names.
	msg = strings.TrimPrefix(msg, "proxyconnect tcp: ")
	if _, ok := errors.AsType[*loopError](err); ok {
		return http.StatusLoopDetected, "tp: " + msg + "\n", "tp; error=proxy_loop_detected"
	}
	switch remote.KindOf(err) {
	case remote.NoSuchHost:
		return http.StatusBadGateway, "tp: " + msg + "\n", "tp; error=dns_error"
	case remote.Refused:
		return http.StatusBadGateway, "tp: " + withPrefix("connection refused", msg) + "\n",
			"tp; error=connection_refused"
	case remote.Unreachable:
		return http.StatusBadGateway, "tp: " + withPrefix("unreachable", msg) + "\n",
			"tp; error=destination_ip_unroutable"
	case remote.Timeout:
		return http.StatusGatewayTimeout, "tp: " + withPrefix("timed out", msg) + "\n",
			"tp; error=connection_timeout"
	case remote.Forbidden:
		// The manager refused by policy: 403 says "asking again will not help", and the
		// body says what would (tp install --allow-cidr).
		return http.StatusForbidden, "tp: " + msg + "\n",
			"tp; error=destination_ip_prohibited; details=" + sfString(msg)
	case remote.Access:
		// An upstream proxy refused tp's credentials: the client's own would not help (they
		// are tp's, from the upstream's URL), so this is a gateway error, not a 407.
		return http.StatusBadGateway, "tp: " + msg + "\n", "tp; error=http_request_denied; details=" + sfString(msg)
	case remote.TunnelDown:
		return http.StatusServiceUnavailable,
			"tp: the tunnel to the cluster is down (reconnecting): " + msg + "\n",
			"tp; error=destination_unavailable"
	default:
		return http.StatusBadGateway, "tp: " + msg + "\n", "tp; error=proxy_internal_error"
	}
}

// sfString is s as an RFC 8941 structured-field string: quoted, with \ and " escaped and
// only printable ASCII kept (a header value must not carry control characters).
func sfString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
	b.WriteByte('"')
	return b.String()
}

// withPrefix leads msg with what happened, unless msg already says it.
func withPrefix(what, msg string) string {
	if strings.Contains(msg, what) {
		return msg
	}
	return what + ": " + msg
}

func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

type goproxyLogger struct{ log *slog.Logger }

func (l goproxyLogger) Printf(format string, args ...any) {
	l.log.Debug("http: " + strings.TrimSpace(fmt.Sprintf(format, args...)))
}
