package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/remote"
)

// Dialer is a remote.Dialer for tp's direct route (localproxy.Router's Direct) that sends
// TCP connections through the upstream proxy Settings names for them, and dials the rest
// itself.
//
//   - UDP (any network but tcp, tcp4, tcp6) always goes direct: an HTTP proxy cannot carry
//     it, and a SOCKS5 proxy's UDP relay is rare enough in corporate networks that trying
//     it would mostly add a failure.
//   - A dial to an upstream's own address goes direct: the proxy is never proxied.
//   - http:// upstreams get a CONNECT request; https:// ones the same inside TLS to the
//     proxy; socks5:// ones a SOCKS5 CONNECT to an IP resolved here; socks5h:// ones a
//     SOCKS5 CONNECT to the name, which the proxy resolves.
//
// Failures are *remote.Error that name the upstream (password hidden, never in an error
// or a log) and carry a kind the front ends map: the proxy refusing or out of reach is
// Refused, Unreachable or Timeout; the proxy's own answer about the destination becomes
// the kind that answer means (see statusError).
//
// A Dialer must not be copied after first use.
type Dialer struct {
	Settings Settings
	// Direct dials the destinations that skip the upstream, and the upstream itself. Nil
	// means a net.Dialer.
	Direct remote.Dialer
	// TLSConfig is for https:// upstreams: nil means the system's roots. Its ServerName,
	// when empty, is the proxy's host.
	TLSConfig *tls.Config
	// Resolver resolves destinations for socks5:// upstreams (socks5h:// send the name).
	// Nil means net.DefaultResolver.
	Resolver interface {
		LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	}
	Log *slog.Logger // nil discards

	matcher matcherCache
}

// DialContext dials address through its upstream, or directly; see Dialer. ctx bounds the
// dial and the handshake with the proxy; once DialContext returns, ctx no longer matters.
//
// A connection through an upstream is the connection to the proxy after its handshake:
// its RemoteAddr is the proxy's, and CloseWrite half-closes it (after TLS's close_notify
// for an https:// upstream).
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return d.direct(ctx, network, address, "not TCP: upstream proxies carry TCP only")
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("bad address %q", address), Err: err}
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("bad address %q: bad port %q", address, portStr)}
	}
	if d.Settings.Empty() {
		return d.direct(ctx, network, address, "no upstream proxy")
	}
	m := d.matcher.get(d.Settings)
	if self := normalAddr(host, portStr); slices.Contains(m.addrs, self) {
		// A client of tp's that takes the upstream itself (tp's HTTP front end forwarding a
		// plain request to it): its failure is the upstream's, and says so.
		c, err := d.direct(ctx, network, address, "the upstream proxy itself")
		if err != nil {
			return nil, reachError(ctx, d.Settings.name(d.Settings.at(self)), address, err)
		}
		return c, nil
	}
	u := m.For(host, int(port))
	if u == nil {
		return d.direct(ctx, network, address, "no upstream for it (NO_PROXY, localhost, or none for this port)")
	}
	d.log().Debug("upstream: via proxy", "network", network, "address", address, "proxy", d.Settings.name(u))
	switch u.Scheme {
	case "http", "https":
		return d.connectHTTP(ctx, u, host, portStr)
	case "socks5", "socks5h":
		return d.connectSOCKS(ctx, network, u, host, portStr)
	}
	return nil, &remote.Error{Kind: remote.Usage,
		Msg: fmt.Sprintf("upstream proxy %s: unsupported scheme %s; tp chains to http, https, socks5 and socks5h proxies", d.Settings.name(u), u.Scheme)}
}

func (d *Dialer) direct(ctx context.Context, network, address, why string) (net.Conn, error) {
	d.log().Debug("upstream: direct", "network", network, "address", address, "why", why)
	return d.dialDirect(ctx, network, address)
}

func (d *Dialer) dialDirect(ctx context.Context, network, address string) (net.Conn, error) {
	if d.Direct != nil {
		return d.Direct.DialContext(ctx, network, address)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, address)
}

func (d *Dialer) log() *slog.Logger {
	if d.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Log
}

// connectHTTP dials the proxy u, wraps it in TLS for https://, and asks it to CONNECT to
// host:port.
func (d *Dialer) connectHTTP(ctx context.Context, u *url.URL, host, port string) (net.Conn, error) {
	name := d.Settings.name(u)
	target := net.JoinHostPort(host, port)
	// A SOCKS client can send any bytes as a name; in a request line they would be
	// another header, or another request.
	if strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, &remote.Error{Kind: remote.Failed,
			Msg: fmt.Sprintf("dialing %q through upstream proxy %s: a CONNECT request cannot carry a host name with spaces or control characters", target, name)}
	}
	raw, err := d.dialDirect(ctx, "tcp", proxyAddr(u))
	if err != nil {
		return nil, reachError(ctx, name, target, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	c, err := d.handshakeHTTP(ctx, raw, u, name, target)
	if !stop() {
		// ctx ended: the connection is closed or about to be, whatever the handshake said.
		_ = raw.Close()
		return nil, ctxError(ctx, name, target)
	}
	if err != nil {
		_ = raw.Close()
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return c, nil
}

func (d *Dialer) handshakeHTTP(ctx context.Context, raw net.Conn, u *url.URL, name, target string) (net.Conn, error) {
	conn := raw
	if u.Scheme == "https" {
		cfg := d.TLSConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		// CONNECT is an HTTP/1.1 request here; offering h2 could get it chosen.
		cfg.NextProtos = nil
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, tlsError(ctx, name, target, err)
		}
		conn = tc
	}

	var req strings.Builder
	req.WriteString("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n")
	if u.User != nil {
		pass, _ := u.User.Password()
		req.WriteString("Proxy-Authorization: Basic " +
			base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pass)) + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return nil, ioError(ctx, name, target, err)
	}

	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		if isIOError(err) {
			return nil, ioError(ctx, name, target, err)
		}
		return nil, &remote.Error{Kind: remote.Failed,
			Msg:  fmt.Sprintf("upstream proxy %s did not answer CONNECT to %s in HTTP", name, target),
			Hint: "is it an HTTP proxy? a SOCKS proxy needs a socks5:// or socks5h:// URL",
			Err:  err}
	}
	if resp.StatusCode/100 != 2 {
		return nil, statusError(resp, u, name, host(target), target)
	}
	pc := &proxiedConn{Conn: conn, raw: raw}
	if n := br.Buffered(); n > 0 {
		// A server-first protocol (SMTP, SSH) may have spoken already, in the same
		// segment as the proxy's answer.
		b, _ := br.Peek(n)
		pc.pending = slices.Clone(b)
	}
	if pc.pending == nil && conn == raw {
		return raw, nil // nothing to add: keep the *net.TCPConn as it is
	}
	return pc, nil
}

func host(hostport string) string {
	h, _, _ := net.SplitHostPort(hostport)
	return h
}

// proxiedConn is a connection through an HTTP proxy: bytes that arrived with the proxy's
// answer come first, and CloseWrite reaches the TCP connection under TLS.
type proxiedConn struct {
	net.Conn          // the connection the tunnel runs in: raw, or TLS over raw
	raw      net.Conn // the TCP connection to the proxy
	pending  []byte   // read with the proxy's answer, not yet returned
}

func (c *proxiedConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection: TLS's close_notify first when there is TLS (the
// proxy reads that as the end), then TCP's FIN (for a proxy that waits for it).
func (c *proxiedConn) CloseWrite() error {
	if c.Conn != c.raw {
		if err := remote.CloseWrite(c.Conn); err != nil {
			return err
		}
	}
	return remote.CloseWrite(c.raw)
}

// statusError explains a CONNECT answered with a status other than 2xx.
func statusError(resp *http.Response, u *url.URL, name, host, target string) error {
	status := resp.Status
	if status == "" || status == strconv.Itoa(resp.StatusCode) {
		status = strings.TrimSpace(strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode))
	}
	switch resp.StatusCode {
	case http.StatusProxyAuthRequired:
		// Access: the kind for credentials that are missing or rejected, which the user
		// fixes. Not Forbidden, which front ends explain as tp's own dial policy, and not
		// Failed, which says tp cannot explain it; front ends answer it as a 502.
		return &remote.Error{Kind: remote.Access,
			Msg:  fmt.Sprintf("upstream proxy %s wants credentials for CONNECT to %s (%s)", name, target, status),
			Hint: authHint(resp, u)}
	case http.StatusForbidden:
		// Forbidden: the proxy's policy refused the destination, and asking again will not
		// help, as with tp's own policy; front ends answer 403 / "not allowed by ruleset".
		return &remote.Error{Kind: remote.Forbidden,
			Msg:  fmt.Sprintf("the upstream proxy %s refused CONNECT to %s: %s", name, target, status),
			Hint: "its policy does not allow this destination or port; if this machine can reach it directly, add it to NO_PROXY or --upstream-no-proxy"}
	}
	if e := explainedStatus(resp, name, host, target, status); e != nil {
		return e
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return &remote.Error{Kind: remote.Unreachable,
			Msg: fmt.Sprintf("the upstream proxy %s could not reach %s: %s", name, target, status)}
	case http.StatusGatewayTimeout:
		return &remote.Error{Kind: remote.Timeout,
			Msg: fmt.Sprintf("the upstream proxy %s timed out reaching %s: %s", name, target, status)}
	case http.StatusMethodNotAllowed, http.StatusNotImplemented, http.StatusBadRequest:
		return &remote.Error{Kind: remote.Failed,
			Msg:  fmt.Sprintf("the upstream proxy %s answered CONNECT to %s with %s", name, target, status),
			Hint: "is it a forward proxy that takes CONNECT? a SOCKS proxy needs a socks5:// or socks5h:// URL"}
	}
	return &remote.Error{Kind: remote.Failed,
		Msg: fmt.Sprintf("the upstream proxy %s answered CONNECT to %s with %s", name, target, status)}
}

// explainedStatus reads what the proxy said about its failure, where it says it in a way
// tp knows (RFC 9209 Proxy-Status, which tp's own proxy sends; Squid's X-Squid-Error),
// for the precise kind. Nil if it said nothing known.
func explainedStatus(resp *http.Response, name, host, target, status string) error {
	var code string
	for _, v := range resp.Header.Values("Proxy-Status") {
		for member := range strings.SplitSeq(v, ",") {
			for param := range strings.SplitSeq(member, ";") {
				if k, val, ok := strings.Cut(strings.TrimSpace(param), "="); ok && k == "error" && code == "" {
					code = strings.Trim(val, `"`)
				}
			}
		}
	}
	squid := strings.Fields(resp.Header.Get("X-Squid-Error"))
	switch {
	case code == "dns_error", len(squid) > 0 && squid[0] == "ERR_DNS_FAIL":
		// The *net.DNSError lets localproxy.Router tell a cluster-looking name that
		// resolves nowhere from other failures, as it does for a direct dial.
		return &remote.Error{Kind: remote.NoSuchHost,
			Msg: fmt.Sprintf("the upstream proxy %s found no such host for CONNECT to %s (%s)", name, target, status),
			Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
	case code == "connection_refused", len(squid) > 1 && squid[0] == "ERR_CONNECT_FAIL" && squid[1] == strconv.Itoa(int(syscall.ECONNREFUSED)):
		return &remote.Error{Kind: remote.Refused,
			Msg: fmt.Sprintf("connection refused by %s (said the upstream proxy %s: %s)", target, name, status)}
	case code == "connection_timeout", len(squid) > 1 && squid[0] == "ERR_CONNECT_FAIL" && squid[1] == strconv.Itoa(int(syscall.ETIMEDOUT)):
		return &remote.Error{Kind: remote.Timeout,
			Msg: fmt.Sprintf("the upstream proxy %s timed out reaching %s: %s", name, target, status)}
	case code == "destination_ip_unroutable", code == "destination_unavailable":
		return &remote.Error{Kind: remote.Unreachable,
			Msg: fmt.Sprintf("the upstream proxy %s could not reach %s: %s", name, target, status)}
	}
	return nil
}

// authHint says what to do about a 407: which schemes the proxy takes, and where tp's
// credentials go.
func authHint(resp *http.Response, u *url.URL) string {
	var offered []string
	for _, v := range resp.Header.Values("Proxy-Authenticate") {
		if f := strings.Fields(v); len(f) > 0 {
			if s := strings.TrimSuffix(f[0], ","); !slices.ContainsFunc(offered, func(o string) bool { return strings.EqualFold(o, s) }) {
				offered = append(offered, s)
			}
		}
	}
	basic := len(offered) == 0 || slices.ContainsFunc(offered, func(o string) bool { return strings.EqualFold(o, "basic") })
	example := u.Scheme + "://USER:PASSWORD@" + u.Host
	switch {
	case !basic:
		return fmt.Sprintf("it takes only %s, and tp speaks Basic: run a local proxy that authenticates for you (cntlm, px) and point tp at it with --upstream-proxy", strings.Join(offered, ", "))
	case u.User == nil:
		return fmt.Sprintf("put the credentials in the proxy URL: %s (percent-encode special characters)", example)
	}
	return fmt.Sprintf("it rejected user %q: fix the user or password in the proxy URL, %s (percent-encode special characters)", u.User.Username(), example)
}

// isIOError reports whether err, from reading a response, is the connection's (ended,
// reset, timed out) rather than the bytes not being HTTP.
func isIOError(err error) bool {
	_, isNet := errors.AsType[net.Error](err)
	return isNet || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

// reachError explains a failure to reach the upstream at all.
func reachError(ctx context.Context, name, target string, err error) error {
	prefix := "upstream proxy " + name
	if ctx.Err() != nil {
		return ctxError(ctx, name, target)
	}
	if dnsErr, ok := errors.AsType[*net.DNSError](err); ok {
		// Only the text: the *net.DNSError is the proxy's name not resolving, which
		// localproxy.Router would take for the destination's.
		return &remote.Error{Kind: remote.Unreachable, Msg: prefix + ": its name does not resolve",
			Err: errors.New(dnsErr.Error())}
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return &remote.Error{Kind: remote.Refused, Msg: prefix + ": connection refused"}
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return &remote.Error{Kind: remote.Unreachable, Msg: prefix + ": no route to it"}
	case remote.KindOf(err) == remote.Timeout:
		return &remote.Error{Kind: remote.Timeout, Msg: prefix + ": no answer in time"}
	}
	if e, ok := errors.AsType[*remote.Error](err); ok {
		return &remote.Error{Kind: e.Kind, Msg: prefix, Err: err}
	}
	return &remote.Error{Kind: remote.Failed, Msg: prefix + ": cannot reach it", Err: err}
}

// ctxError is the error for ctx ending during a dial through upstream name.
func ctxError(ctx context.Context, name, target string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return timeoutError(name, target)
	}
	return &remote.Error{Kind: remote.Failed,
		Msg: fmt.Sprintf("dialing %s through upstream proxy %s", target, name), Err: ctx.Err()}
}

// timeoutError is the error for ctx's deadline passing during a dial through upstream
// name, whichever of ctx and the connection's deadline noticed first.
func timeoutError(name, target string) error {
	return &remote.Error{Kind: remote.Timeout,
		Msg: fmt.Sprintf("upstream proxy %s: no answer in time, dialing %s", name, target), Err: context.DeadlineExceeded}
}

// ioError explains an I/O failure during the CONNECT exchange.
func ioError(ctx context.Context, name, target string, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctxError(ctx, name, target)
	case remote.KindOf(err) == remote.Timeout:
		// The connection's deadline is ctx's, and may fire a moment before ctx is done.
		return timeoutError(name, target)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return &remote.Error{Kind: remote.Failed,
			Msg: fmt.Sprintf("upstream proxy %s closed the connection before answering CONNECT to %s", name, target), Err: err}
	}
	return &remote.Error{Kind: remote.Failed,
		Msg: fmt.Sprintf("upstream proxy %s: CONNECT to %s", name, target), Err: err}
}

// tlsError explains a failed TLS handshake with an https:// upstream.
func tlsError(ctx context.Context, name, target string, err error) error {
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return &remote.Error{Kind: remote.Failed,
			Msg:  fmt.Sprintf("upstream proxy %s does not speak TLS", name),
			Hint: "most proxies take plain HTTP: use an http:// URL",
			Err:  err}
	}
	_, unknownCA := errors.AsType[x509.UnknownAuthorityError](err)
	_, badCert := errors.AsType[*tls.CertificateVerificationError](err)
	_, badName := errors.AsType[x509.HostnameError](err)
	if unknownCA || badCert || badName {
		return &remote.Error{Kind: remote.Failed,
			Msg:  fmt.Sprintf("upstream proxy %s: its TLS certificate is not trusted", name),
			Hint: "this machine must trust the CA that issued it (install the corporate root), or use the proxy's http:// port",
			Err:  err}
	}
	if ctx.Err() == nil && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		return &remote.Error{Kind: remote.Failed,
			Msg:  fmt.Sprintf("upstream proxy %s closed the connection during the TLS handshake", name),
			Hint: "most proxies take plain HTTP: use an http:// URL",
			Err:  err}
	}
	if isIOError(err) {
		return ioError(ctx, name, target, err)
	}
	return &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("upstream proxy %s: TLS handshake", name), Err: err}
}

// connectSOCKS dials host:port through the SOCKS5 upstream u.
func (d *Dialer) connectSOCKS(ctx context.Context, network string, u *url.URL, host, port string) (net.Conn, error) {
	name := d.Settings.name(u)
	target := net.JoinHostPort(host, port)
	if _, err := netip.ParseAddr(host); err != nil && u.Scheme == "socks5" {
		ip, err := d.resolve(ctx, network, host)
		if err != nil {
			return nil, &remote.Error{Kind: resolveKind(err),
				Msg:  fmt.Sprintf("resolving %s for upstream proxy %s", host, name),
				Hint: "socks5:// resolves names on this machine; socks5h:// lets the proxy resolve them",
				Err:  err}
		}
		target = net.JoinHostPort(ip.String(), port)
	}
	var creds *localproxy.Credentials
	if u.User != nil {
		pass, _ := u.User.Password()
		c := localproxy.Credentials{User: u.User.Username(), Password: pass}
		if err := c.Validate(); err != nil {
			return nil, &remote.Error{Kind: remote.Usage,
				Msg: fmt.Sprintf("upstream proxy %s: the credentials in its URL", name), Err: err}
		}
		creds = &c
	}
	var reachErr error
	sd := localproxy.SOCKSDialer{
		Proxy:       proxyAddr(u),
		Credentials: creds,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.dialDirect(ctx, network, addr)
			if err != nil {
				// Explained here, and without the syscall error in its chain: SOCKSDialer
				// would take a refusal for tp's own proxy not running.
				reachErr = reachError(ctx, name, target, err)
				return nil, reachErr
			}
			return c, nil
		},
	}
	c, err := sd.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, socksError(err, reachErr, name, target)
	}
	return c, nil
}

func (d *Dialer) resolve(ctx context.Context, network, host string) (netip.Addr, error) {
	var r interface {
		LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	} = net.DefaultResolver
	if d.Resolver != nil {
		r = d.Resolver
	}
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, ip := range ips {
		ip = ip.Unmap()
		switch {
		case network == "tcp4" && !ip.Is4(), network == "tcp6" && !ip.Is6():
			continue
		}
		return ip, nil
	}
	return netip.Addr{}, &net.DNSError{Err: "no suitable address", Name: host, IsNotFound: true}
}

func resolveKind(err error) remote.Kind {
	if e, ok := errors.AsType[*net.DNSError](err); ok && e.IsNotFound {
		return remote.NoSuchHost
	}
	if remote.KindOf(err) == remote.Timeout {
		return remote.Timeout
	}
	return remote.Failed
}

// socksWording rewords SOCKSDialer's messages, written for tp's own proxy, for an
// upstream: the kinds stay, the advice about tp's proxy goes.
func socksWording() *strings.Replacer {
	return strings.NewReplacer(
		"; tp's proxy says that for a loop back into itself", "",
		" (is `tp connect` running?)", "",
		"via tp's proxy ", "via ",
		"tp's proxy at ", "the proxy at ",
		"tp's proxy ", "the proxy ",
		"no proxy credentials were given", "its URL has no user and password",
		"refused the proxy credentials", "refused the credentials in its URL",
	)
}

// socksError names the upstream in an error of SOCKSDialer's, keeping its kind.
func socksError(err, reachErr error, name, target string) error {
	e, ok := errors.AsType[*remote.Error](err)
	switch {
	case reachErr != nil && ok && e == reachErr:
		return err
	case !ok:
		return &remote.Error{Kind: remote.KindOf(err), Msg: fmt.Sprintf("upstream proxy %s: CONNECT to %s", name, target), Err: err}
	}
	return &remote.Error{Kind: e.Kind, Msg: "upstream proxy " + name + ": " + socksWording().Replace(e.Msg),
		Hint: e.Hint, Detail: e.Detail, Err: e.Err}
}
