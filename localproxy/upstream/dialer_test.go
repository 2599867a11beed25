package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	socks5 "github.com/things-go/go-socks5"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/testlog"
)

// fakeDirect is the Dialer's direct route: it records each dial, and reaches the names in
// routes at their real (loopback) addresses. The test destinations have names, since For
// sends loopback addresses direct.
type fakeDirect struct {
	mu     sync.Mutex
	routes map[string]string
	dials  []string
}

var errNoRoute = errors.New("fake: no route")

func (f *fakeDirect) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	f.mu.Lock()
	f.dials = append(f.dials, network+" "+address)
	real, ok := f.routes[address]
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("dial %s: %w", address, errNoRoute)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, real)
}

func (f *fakeDirect) dialed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.dials...)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// startEcho serves an echo: each read is written back, and the end of the client's data
// is answered with "<eof>" before the close, so a half-close shows.
func startEcho(t *testing.T) string {
	ln := listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 1024)
				for {
					n, err := c.Read(b)
					if n > 0 {
						_, _ = c.Write(b[:n])
					}
					if err != nil {
						_, _ = io.WriteString(c, "<eof>")
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// connectProxy is an HTTP CONNECT proxy for tests.
type connectProxy struct {
	status  string            // when set, the answer to every CONNECT, e.g. "403 Forbidden"
	header  string            // header lines (with CRLF) for that answer
	early   string            // sent right after a 200, in the same write
	resolve map[string]string // CONNECT target → real address
	raw     string            // when set, sent instead of any HTTP answer
	silent  bool              // never answer
	greet   string            // sent as soon as a client connects

	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	line   string
	header textproto.MIMEHeader
}

func (p *connectProxy) requests() []seenRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]seenRequest(nil), p.seen...)
}

func (p *connectProxy) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *connectProxy) handle(c net.Conn) {
	defer c.Close()
	if p.greet != "" {
		_, _ = io.WriteString(c, p.greet)
	}
	br := bufio.NewReader(c)
	tr := textproto.NewReader(br)
	line, err := tr.ReadLine()
	if err != nil {
		return
	}
	hdr, err := tr.ReadMIMEHeader()
	if err != nil {
		return
	}
	p.mu.Lock()
	p.seen = append(p.seen, seenRequest{line, hdr})
	p.mu.Unlock()
	switch {
	case p.silent:
		_, _ = io.Copy(io.Discard, br)
		return
	case p.raw != "":
		_, _ = io.WriteString(c, p.raw)
		return
	case p.status != "":
		_, _ = io.WriteString(c, "HTTP/1.1 "+p.status+"\r\n"+p.header+"Content-Length: 0\r\n\r\n")
		return
	}
	target := strings.Fields(line)[1]
	dst, err := net.Dial("tcp", p.resolve[target])
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer dst.Close()
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"+p.early)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(dst, br)
		_ = remote.CloseWrite(dst)
	}()
	_, _ = io.Copy(c, dst)
	_ = remote.CloseWrite(c)
	<-done
}

func startConnectProxy(t *testing.T, p *connectProxy, tlsConfig *tls.Config) string {
	ln := listen(t)
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	go p.serve(ln)
	return ln.Addr().String()
}

func fromEnv(t *testing.T, e env) Settings {
	t.Helper()
	s, err := FromEnv(e.get)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// talk checks a connection end to end: bytes both ways, then a half-close that the far
// end sees while its answer still comes back.
func talk(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("read %q, %v; want ping", b, err)
	}
	if _, err := io.WriteString(c, "pong"); err != nil {
		t.Fatal(err)
	}
	if err := remote.CloseWrite(c); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "pong<eof>" {
		t.Fatalf("after CloseWrite read %q, %v; want pong<eof>", rest, err)
	}
}

func TestHTTPConnect(t *testing.T) {
	echo := startEcho(t)
	tests := []struct {
		name, proxyURL, wantAuth string
	}{
		{name: "no credentials", proxyURL: "http://proxy.test:3128"},
		{name: "credentials", proxyURL: "http://alice:s3cr3t@proxy.test:3128",
			wantAuth: "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cr3t"))},
		{name: "encoded credentials", proxyURL: "http://DOM%5Calice:p%40ss%3Aw0rd@proxy.test:3128",
			wantAuth: "Basic " + base64.StdEncoding.EncodeToString([]byte(`DOM\alice:p@ss:w0rd`))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &connectProxy{resolve: map[string]string{"echo.test:443": echo}}
			direct := &fakeDirect{routes: map[string]string{"proxy.test:3128": startConnectProxy(t, p, nil)}}
			d := &Dialer{Settings: fromEnv(t, env{"HTTPS_PROXY": tt.proxyURL}), Direct: direct}
			c, err := d.DialContext(t.Context(), "tcp", "echo.test:443")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, ok := c.(*net.TCPConn); !ok {
				t.Errorf("conn is %T, want the *net.TCPConn itself", c)
			}
			talk(t, c)
			reqs := p.requests()
			if len(reqs) != 1 {
				t.Fatalf("proxy saw %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.line != "CONNECT echo.test:443 HTTP/1.1" || r.header.Get("Host") != "echo.test:443" {
				t.Errorf("request %q, Host %q", r.line, r.header.Get("Host"))
			}
			if got := r.header.Get("Proxy-Authorization"); got != tt.wantAuth {
				t.Errorf("Proxy-Authorization = %q, want %q", got, tt.wantAuth)
			}
			if got, want := direct.dialed(), []string{"tcp proxy.test:3128"}; strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("direct dials %q, want %q", got, want)
			}
		})
	}
}

func TestHTTPConnectIPv6Target(t *testing.T) {
	echo := startEcho(t)
	p := &connectProxy{resolve: map[string]string{"[2001:db8::1]:8443": echo}}
	direct := &fakeDirect{routes: map[string]string{"proxy.test:80": startConnectProxy(t, p, nil)}}
	d := &Dialer{Settings: fromEnv(t, env{"HTTPS_PROXY": "proxy.test"}), Direct: direct}
	c, err := d.DialContext(t.Context(), "tcp6", "[2001:db8::1]:8443")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	talk(t, c)
	if r := p.requests()[0]; r.line != "CONNECT [2001:db8::1]:8443 HTTP/1.1" || r.header.Get("Host") != "[2001:db8::1]:8443" {
		t.Errorf("request %q, Host %q", r.line, r.header.Get("Host"))
	}
}

func TestHTTPConnectBytesAfterAnswer(t *testing.T) {
	echo := startEcho(t)
	p := &connectProxy{resolve: map[string]string{"ssh.test:22": echo}, early: "SSH-2.0-test\r\n"}
	direct := &fakeDirect{routes: map[string]string{"proxy.test:3128": startConnectProxy(t, p, nil)}}
	d := &Dialer{Settings: fromEnv(t, env{"HTTPS_PROXY": "http://proxy.test:3128"}), Direct: direct}
	c, err := d.DialContext(t.Context(), "tcp", "ssh.test:22")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	// Small reads: the buffered bytes come out across several.
	var got []byte
	b := make([]byte, 5)
	for len(got) < len("SSH-2.0-test\r\n") {
		n, err := c.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b[:n]...)
	}
	if string(got) != "SSH-2.0-test\r\n" {
		t.Fatalf("first bytes %q, want the server's greeting", got)
	}
	talk(t, c)
}

func TestProxiedConnPendingAndCloseWrite(t *testing.T) {
	echo := startEcho(t)
	raw, err := net.Dial("tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	c := &proxiedConn{Conn: raw, raw: raw, pending: []byte("hello")}
	defer c.Close()
	b := make([]byte, 3)
	if n, _ := c.Read(b); string(b[:n]) != "hel" {
		t.Fatalf("read %q", b[:n])
	}
	if n, _ := c.Read(b); string(b[:n]) != "lo" {
		t.Fatalf("read %q", b[:n])
	}
	talk(t, c)
}

func TestHTTPSConnect(t *testing.T) {
	echo := startEcho(t)
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	serverTLS := &tls.Config{Certificates: srv.TLS.Certificates}

	t.Run("trusted", func(t *testing.T) {
		p := &connectProxy{resolve: map[string]string{"echo.test:443": echo}, early: "hi"}
		// The test certificate is for example.com: the default ServerName is the proxy's
		// host.
		direct := &fakeDirect{routes: map[string]string{"example.com:8443": startConnectProxy(t, p, serverTLS)}}
		d := &Dialer{Settings: fromEnv(t, env{"HTTPS_PROXY": "https://bob:pw@example.com:8443"}), Direct: direct,
			TLSConfig: &tls.Config{RootCAs: pool}}
		c, err := d.DialContext(t.Context(), "tcp", "echo.test:443")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b := make([]byte, 2)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "hi" {
			t.Fatalf("read %q, %v", b, err)
		}
		talk(t, c)
		if r := p.requests()[0]; r.line != "CONNECT echo.test:443 HTTP/1.1" || r.header.Get("Proxy-Authorization") == "" {
			t.Errorf("request %q, header %v", r.line, r.header)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		p := &connectProxy{}
		direct := &fakeDirect{routes: map[string]string{"example.com:8443": startConnectProxy(t, p, serverTLS)}}
		d := &Dialer{Settings: fromEnv(t, env{"HTTPS_PROXY": "https://bob:pw@example.com:8443"}), Direct: direct}
		_, err := d.DialContext(t.Context(), "tcp", "echo.test:443")
		want := "upstream proxy https://bob:xxxxx@example.com:8443 (from HTTPS_PROXY): its TLS certificate is not trusted: "
		if err == nil || !strings.HasPrefix(err.Error(), want) || remote.KindOf(err) != remote.Failed {
			t.Fatalf("err = %v, want Failed %q...", err, want)
		}
		if len(p.requests()) != 0 {
			t.Error("CONNECT sent over an untrusted TLS connection")
		}
	})
	t.Run("plain proxy behind https URL", func(t *testing.T) {
		p := &connectProxy{greet: "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"}
		direct := &fakeDirect{routes: map[string]string{"example.com:8443": startConnectProxy(t, p, nil)}}
		d := &Dialer{Settings: fromEnv(t, env{"HTTPS_PROXY": "https://example.com:8443"}), Direct: direct,
			TLSConfig: &tls.Config{RootCAs: pool}}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := d.DialContext(ctx, "tcp", "echo.test:443")
		if err == nil || err.Error() != "upstream proxy https://example.com:8443 (from HTTPS_PROXY) does not speak TLS: tls: first record does not look like a TLS handshake; most proxies take plain HTTP: use an http:// URL" {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestHTTPConnectErrors(t *testing.T) {
	const password = "s3cr3t"
	tests := []struct {
		name     string
		proxyURL string
		proxy    connectProxy
		kind     remote.Kind
		want     string // the whole error text
	}{
		{
			name: "407 without credentials", proxyURL: "http://proxy.test:3128",
			proxy: connectProxy{status: "407 Proxy Authentication Required", header: "Proxy-Authenticate: Basic realm=\"corp\"\r\n"},
			kind:  remote.Access,
			want:  "upstream proxy http://proxy.test:3128 (from HTTPS_PROXY) wants credentials for CONNECT to echo.test:443 (407 Proxy Authentication Required); put the credentials in the proxy URL: http://USER:PASSWORD@proxy.test:3128 (percent-encode special characters)",
		},
		{
			name: "407 with credentials", proxyURL: "http://alice:" + password + "@proxy.test:3128",
			proxy: connectProxy{status: "407 Proxy Authentication Required"},
			kind:  remote.Access,
			want:  `upstream proxy http://alice:xxxxx@proxy.test:3128 (from HTTPS_PROXY) wants credentials for CONNECT to echo.test:443 (407 Proxy Authentication Required); it rejected user "alice": fix the user or password in the proxy URL, http://USER:PASSWORD@proxy.test:3128 (percent-encode special characters)`,
		},
		{
			name: "407 Negotiate only", proxyURL: "http://alice:" + password + "@proxy.test:3128",
			proxy: connectProxy{status: "407 Proxy Authentication Required", header: "Proxy-Authenticate: Negotiate\r\nProxy-Authenticate: NTLM\r\n"},
			kind:  remote.Access,
			want:  `upstream proxy http://alice:xxxxx@proxy.test:3128 (from HTTPS_PROXY) wants credentials for CONNECT to echo.test:443 (407 Proxy Authentication Required); it takes only Negotiate, NTLM, and tp speaks Basic: run a local proxy that authenticates for you (cntlm, px) and point tp at it with --upstream-proxy`,
		},
		{
			name: "403", proxyURL: "http://alice:" + password + "@proxy.test:3128",
			proxy: connectProxy{status: "403 Forbidden"},
			kind:  remote.Forbidden,
			want:  "the upstream proxy http://alice:xxxxx@proxy.test:3128 (from HTTPS_PROXY) refused CONNECT to echo.test:443: 403 Forbidden; its policy does not allow this destination or port; if this machine can reach it directly, add it to NO_PROXY or --upstream-no-proxy",
		},
		{
			name: "502", proxyURL: "http://proxy.test:3128",
			proxy: connectProxy{status: "502 Bad Gateway"},
			kind:  remote.Unreachable,
			want:  "the upstream proxy http://proxy.test:3128 (from HTTPS_PROXY) could not reach echo.test:443: 502 Bad Gateway",
		},
		{
			name: "504", proxyURL: "http://proxy.test:3128",
			proxy: connectProxy{status: "504 Gateway Timeout"},
			kind:  remote.Timeout,
			want:  "the upstream proxy http://proxy.test:3128 (from HTTPS_PROXY) timed out reaching echo.test:443: 504 Gateway Timeout",
		},
		{
			name: "Proxy-Status connection_refused", proxyURL: "http://proxy.test:3128",
			proxy: connectProxy{status: "502 Bad Gateway", header: "Proxy-Status: corp; error=connection_refused\r\n"},
			kind:  remote.Refused,
			want:  "connection refused by echo.test:443 (said the upstream proxy http://proxy.test:3128 (from HTTPS_PROXY): 502 Bad Gateway)",
		},
		{
			name: "Squid DNS failure", proxyURL: "http://proxy.test:3128",
			proxy: connectProxy{status: "503 Service Unavailable", header: "X-Squid-Error: ERR_DNS_FAIL 0\r\n"},
			kind:  remote.NoSuchHost,
			want:  "the upstream proxy http://proxy.test:3128 (from HTTPS_PROXY) found no such host for CONNECT to echo.test:443 (503 Service Unavailable): lookup echo.test: no such host",
		},
		{
			name: "405", proxyURL: "http://proxy.test:3128",
			proxy: connectProxy{status: "405 Method Not Allowed"},
			kind:  remote.Failed,
			want:  "the upstream proxy http://proxy.test:3128 (from HTTPS_PROXY) answered CONNECT to echo.test:443 with 405 Method Not Allowed; is it a forward proxy that takes CONNECT? a SOCKS proxy needs a socks5:// or socks5h:// URL",
		},
		{
			name: "not HTTP", proxyURL: "http://proxy.test:3128",
			proxy: connectProxy{raw: "\x05\xff\x00\x00garbage\r\n\r\n"},
			kind:  remote.Failed,
			want:  `upstream proxy http://proxy.test:3128 (from HTTPS_PROXY) did not answer CONNECT to echo.test:443 in HTTP: malformed HTTP response "\x05\xff\x00\x00garbage"; is it an HTTP proxy? a SOCKS proxy needs a socks5:// or socks5h:// URL`,
		},
		{
			name: "closed", proxyURL: "http://proxy.test:3128",
			proxy: connectProxy{raw: "HTTP/1.1 200"},
			kind:  remote.Failed,
			want:  "upstream proxy http://proxy.test:3128 (from HTTPS_PROXY) closed the connection before answering CONNECT to echo.test:443: unexpected EOF",
		},
	}
	for i := range tests {
		tt := &tests[i]
		t.Run(tt.name, func(t *testing.T) {
			direct := &fakeDirect{routes: map[string]string{"proxy.test:3128": startConnectProxy(t, &tt.proxy, nil)}}
			d := &Dialer{Settings: fromEnv(t, env{"HTTPS_PROXY": tt.proxyURL}), Direct: direct}
			c, err := d.DialContext(t.Context(), "tcp", "echo.test:443")
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if err.Error() != tt.want {
				t.Errorf("err =\n%s\nwant\n%s", err, tt.want)
			}
			if k := remote.KindOf(err); k != tt.kind {
				t.Errorf("kind = %v, want %v", k, tt.kind)
			}
			if strings.Contains(err.Error(), password) || strings.Contains(fmt.Sprintf("%#v", err), password) {
				t.Errorf("the password shows in %q", err)
			}
			if tt.kind == remote.NoSuchHost {
				if _, ok := errors.AsType[*net.DNSError](err); !ok {
					t.Error("no *net.DNSError in the chain")
				}
			}
		})
	}
}

func TestUnreachableProxy(t *testing.T) {
	closed := listen(t)
	refusedAddr := closed.Addr().String()
	_ = closed.Close()
	silent := &connectProxy{silent: true}
	direct := &fakeDirect{routes: map[string]string{
		"refused.test:3128": refusedAddr,
		"silent.test:3128":  startConnectProxy(t, silent, nil),
		"refused.test:1080": refusedAddr,
	}}
	tests := []struct {
		name, proxyURL string
		timeout        time.Duration
		kind           remote.Kind
		want           string
	}{
		{name: "refused", proxyURL: "http://alice:s3cr3t@refused.test:3128", kind: remote.Refused,
			want: "upstream proxy http://alice:xxxxx@refused.test:3128 (from HTTPS_PROXY): connection refused"},
		{name: "refused socks", proxyURL: "socks5h://alice:s3cr3t@refused.test:1080", kind: remote.Refused,
			want: "upstream proxy socks5h://alice:xxxxx@refused.test:1080 (from HTTPS_PROXY): connection refused"},
		{name: "not routed", proxyURL: "http://nowhere.test:3128", kind: remote.Failed,
			want: "upstream proxy http://nowhere.test:3128 (from HTTPS_PROXY): cannot reach it: dial nowhere.test:3128: fake: no route"},
		{name: "no answer", proxyURL: "http://silent.test:3128", timeout: 200 * time.Millisecond, kind: remote.Timeout,
			want: "upstream proxy http://silent.test:3128 (from HTTPS_PROXY): no answer in time, dialing echo.test:443: context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &Dialer{Settings: fromEnv(t, env{"HTTPS_PROXY": tt.proxyURL}), Direct: direct}
			ctx := t.Context()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			start := time.Now()
			_, err := d.DialContext(ctx, "tcp", "echo.test:443")
			if err == nil || err.Error() != tt.want || remote.KindOf(err) != tt.kind {
				t.Fatalf("err = %v (%v), want %v %q", err, remote.KindOf(err), tt.kind, tt.want)
			}
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
		})
	}
}

func TestDirectDials(t *testing.T) {
	direct := &fakeDirect{}
	d := &Dialer{Settings: fromEnv(t, env{"HTTPS_PROXY": "http://proxy.test:3128", "ALL_PROXY": "socks5://Sock.test", "NO_PROXY": ".corp"}), Direct: direct}
	for _, a := range []struct{ network, address string }{
		{"udp", "dns.test:53"},        // UDP never goes through an upstream
		{"udp6", "[2001:db8::1]:443"}, //
		{"tcp", "proxy.test:3128"},    // the proxy itself
		{"tcp", "PROXY.test.:3128"},   //
		{"tcp", "sock.test:1080"},     //
		{"tcp", "git.corp:443"},       // NO_PROXY
		{"tcp", "localhost:8080"},     // always direct
		{"tcp", "127.0.0.1:443"},      //
	} {
		if _, err := d.DialContext(t.Context(), a.network, a.address); !errors.Is(err, errNoRoute) {
			t.Errorf("dial %s %s: err = %v, want the direct dialer's", a.network, a.address, err)
		}
	}
	want := "udp dns.test:53,udp6 [2001:db8::1]:443,tcp proxy.test:3128,tcp PROXY.test.:3128,tcp sock.test:1080,tcp git.corp:443,tcp localhost:8080,tcp 127.0.0.1:443"
	if got := strings.Join(direct.dialed(), ","); got != want {
		t.Errorf("direct dials\n%s\nwant\n%s", got, want)
	}
	// No upstream at all: everything is direct.
	none := &fakeDirect{}
	d = &Dialer{Direct: none}
	if _, err := d.DialContext(t.Context(), "tcp", "example.com:443"); !errors.Is(err, errNoRoute) || none.dialed()[0] != "tcp example.com:443" {
		t.Errorf("no upstream: err = %v, dials %q", err, none.dialed())
	}
}

func TestBadTargets(t *testing.T) {
	direct := &fakeDirect{}
	d := &Dialer{Settings: fromEnv(t, env{"HTTPS_PROXY": "http://proxy.test:3128"}), Direct: direct}
	for _, a := range []string{"evil.test\r\nX-Injected: 1:443", "no-port", "x.test:http"} {
		_, err := d.DialContext(t.Context(), "tcp", a)
		if err == nil || remote.KindOf(err) != remote.Failed {
			t.Errorf("dial %q: err = %v, want Failed", a, err)
		}
	}
	if got := direct.dialed(); len(got) != 0 {
		t.Errorf("dials %q, want none", got)
	}
}

// socksServer is a go-socks5 server that connects every request to echo and records
// the destination as the client sent it.
type socksServer struct {
	mu   sync.Mutex
	dsts []string // "name:port" or "ip:port"
}

func (s *socksServer) Allow(ctx context.Context, req *socks5.Request) (context.Context, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := req.RawDestAddr
	host := a.FQDN
	if host == "" {
		host = "ip " + a.IP.String()
	} else {
		host = "name " + host
	}
	s.dsts = append(s.dsts, fmt.Sprintf("%s:%d", host, a.Port))
	return ctx, true
}

func (s *socksServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.dsts...)
}

type socksNames map[string]net.IP

func (n socksNames) Resolve(ctx context.Context, name string) (context.Context, net.IP, error) {
	if ip, ok := n[name]; ok {
		return ctx, ip, nil
	}
	return ctx, nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func startSOCKS(t *testing.T, echo string, creds socks5.StaticCredentials) (*socksServer, string) {
	rec := &socksServer{}
	opts := []socks5.Option{
		socks5.WithRule(rec),
		socks5.WithResolver(socksNames{"echo.test": net.IPv4(192, 0, 2, 10)}),
		socks5.WithDial(func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, echo)
		}),
	}
	if creds != nil {
		opts = append(opts, socks5.WithCredential(creds))
	}
	ln := listen(t)
	go func() { _ = socks5.NewServer(opts...).Serve(ln) }()
	return rec, ln.Addr().String()
}

// names is a Resolver for socks5:// upstreams.
type names map[string][]netip.Addr

func (n names) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := n[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestSOCKS(t *testing.T) {
	echo := startEcho(t)
	resolver := names{"echo.test": {netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("198.51.100.7")}}
	tests := []struct {
		name, url, network string
		creds              socks5.StaticCredentials
		want               string // what the server saw
	}{
		{name: "socks5h sends the name", url: "socks5h://sock.test:1080", network: "tcp", want: "name echo.test:443"},
		{name: "socks5 sends an IP", url: "socks5://sock.test:1080", network: "tcp", want: "ip 2001:db8::7:443"},
		{name: "socks5 tcp4 sends an IPv4", url: "socks5://sock.test:1080", network: "tcp4", want: "ip 198.51.100.7:443"},
		{name: "credentials", url: "socks5h://alice:s%3Acr%40t@sock.test:1080", network: "tcp",
			creds: socks5.StaticCredentials{"alice": "s:cr@t"}, want: "name echo.test:443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, addr := startSOCKS(t, echo, tt.creds)
			direct := &fakeDirect{routes: map[string]string{"sock.test:1080": addr}}
			d := &Dialer{Settings: fromEnv(t, env{"ALL_PROXY": tt.url}), Direct: direct, Resolver: resolver}
			c, err := d.DialContext(t.Context(), tt.network, "echo.test:443")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			talk(t, c)
			if got := rec.seen(); len(got) != 1 || got[0] != tt.want {
				t.Errorf("server saw %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSOCKSErrors(t *testing.T) {
	echo := startEcho(t)
	_, open := startSOCKS(t, echo, nil)
	_, locked := startSOCKS(t, echo, socks5.StaticCredentials{"alice": "right"})
	direct := &fakeDirect{routes: map[string]string{"open.test:1080": open, "locked.test:1080": locked}}
	tests := []struct {
		name, url, target string
		kind              remote.Kind
		want              string
	}{
		{name: "wrong password", url: "socks5h://alice:wrong@locked.test:1080", target: "echo.test:443", kind: remote.Failed,
			want: "upstream proxy socks5h://alice:xxxxx@locked.test:1080 (from ALL_PROXY): dialing echo.test:443: the SOCKS5 proxy at locked.test:1080 refused the credentials in its URL: wrong user or password"},
		{name: "no credentials", url: "socks5h://locked.test:1080", target: "echo.test:443", kind: remote.Failed,
			want: "upstream proxy socks5h://locked.test:1080 (from ALL_PROXY): dialing echo.test:443: the SOCKS5 proxy at locked.test:1080 wants authentication (method 0xff) and its URL has no user and password"},
		{name: "proxy finds no such host", url: "socks5h://open.test:1080", target: "nowhere.test:443", kind: remote.NoSuchHost,
			want: "upstream proxy socks5h://open.test:1080 (from ALL_PROXY): no such host nowhere.test:443 (via open.test:1080: host unreachable)"},
		{name: "local resolution fails", url: "socks5://open.test:1080", target: "nowhere.test:443", kind: remote.NoSuchHost,
			want: "resolving nowhere.test for upstream proxy socks5://open.test:1080 (from ALL_PROXY): lookup nowhere.test: no such host; socks5:// resolves names on this machine; socks5h:// lets the proxy resolve them"},
		{name: "user without password", url: "socks5h://alice@open.test:1080", target: "echo.test:443", kind: remote.Usage,
			want: "upstream proxy socks5h://alice@open.test:1080 (from ALL_PROXY): the credentials in its URL: the password is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &Dialer{Settings: fromEnv(t, env{"ALL_PROXY": tt.url}), Direct: direct, Resolver: names{}}
			_, err := d.DialContext(t.Context(), "tcp", tt.target)
			if err == nil || err.Error() != tt.want || remote.KindOf(err) != tt.kind {
				t.Fatalf("err = %v (%v), want %v:\n%s", err, remote.KindOf(err), tt.kind, tt.want)
			}
			if strings.Contains(err.Error(), "wrong@") || strings.Contains(err.Error(), ":wrong") {
				t.Errorf("the password shows in %q", err)
			}
		})
	}
}

func TestLogsHidePasswords(t *testing.T) {
	echo := startEcho(t)
	p := &connectProxy{resolve: map[string]string{"echo.test:443": echo}}
	direct := &fakeDirect{routes: map[string]string{"proxy.test:3128": startConnectProxy(t, p, nil)}}
	var log testlog.Buffer
	d := &Dialer{Settings: fromEnv(t, env{"HTTPS_PROXY": "http://alice:s3cr3t@proxy.test:3128"}), Direct: direct, Log: log.Logger()}
	c, err := d.DialContext(t.Context(), "tcp", "echo.test:443")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	_, _ = d.DialContext(t.Context(), "udp", "dns.test:53")
	got := log.String()
	for _, want := range []string{
		`msg="upstream: via proxy" network=tcp address=echo.test:443 proxy="http://alice:xxxxx@proxy.test:3128 (from HTTPS_PROXY)"`,
		`msg="upstream: direct" network=udp address=dns.test:53 why="not TCP: upstream proxies carry TCP only"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, "s3cr3t") {
		t.Errorf("the password shows in the log:\n%s", got)
	}
}

// A dial to the upstream itself (tp's HTTP front end forwarding a plain request to it)
// that fails names the upstream, as a failed CONNECT through it does.
func TestDialToTheUpstreamItselfNamesIt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d := &Dialer{Settings: fromEnv(t, env{"HTTP_PROXY": "http://alice:pw@" + addr})}
	_, err = d.DialContext(t.Context(), "tcp", addr)
	if want := "upstream proxy http://alice:xxxxx@" + addr + " (from HTTP_PROXY): connection refused"; err == nil || err.Error() != want || remote.KindOf(err) != remote.Refused {
		t.Errorf("err = %v (%v), want Refused %q", err, remote.KindOf(err), want)
	}
}
