package localproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
)

func proxyClient(t *testing.T, proxyAddr string) *http.Client {
	t.Helper()
	u := &url.URL{Scheme: "http", Host: proxyAddr}
	tr := &http.Transport{Proxy: http.ProxyURL(u)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestHTTPPlainRequest(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host=%s path=%s proxy-conn=%q", r.Host, r.URL.Path, r.Header.Get("Proxy-Connection"))
	}))
	defer backend.Close()
	d := dialTo(backend.Listener.Addr().String())
	_, addr := startServer(t, Config{Dialer: d})

	resp, err := proxyClient(t, addr).Get("http://web-app.other-ns/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `host=web-app.other-ns path=/hello proxy-conn=""` {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if got := d.Calls(); !slices.Equal(got, []string{"tcp web-app.other-ns:80"}) {
		t.Fatalf("dialer got %q, want the unresolved name", got)
	}
}

func TestHTTPErrors(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		status     int
		body       string // exact, without the trailing newline
		bodyPrefix string
		status9209 string // the Proxy-Status header, exact; "" for any
	}{
		{name: "forbidden by policy", err: kindErr(remote.Forbidden, `169.254.169.254:80 is outside what tp's manager may dial (tp's dial policy: ... tp install --allow-cidr)`),
			status: 403, body: `tp: 169.254.169.254:80 is outside what tp's manager may dial (tp's dial policy: ... tp install --allow-cidr)`,
			status9209: `tp; error=destination_ip_prohibited; details="169.254.169.254:80 is outside what tp's manager may dial (tp's dial policy: ... tp install --allow-cidr)"`},
		{name: "upstream refused tp's credentials", err: kindErr(remote.Access, `the upstream proxy http://alice:xxxxx@proxy.corp:3128 (from HTTPS_PROXY) rejected user "alice"`),
			status: 502, body: `tp: the upstream proxy http://alice:xxxxx@proxy.corp:3128 (from HTTPS_PROXY) rejected user "alice"`,
			status9209: `tp; error=http_request_denied; details="the upstream proxy http://alice:xxxxx@proxy.corp:3128 (from HTTPS_PROXY) rejected user \"alice\""`},
		{name: "no such host", err: kindErr(remote.NoSuchHost, `no service "web-ap" in namespace "default"`),
			status: 502, body: `tp: no service "web-ap" in namespace "default"`},
		{name: "refused", err: kindErr(remote.Refused, `nothing listens on web-app:8080`),
			status: 502, body: `tp: connection refused: nothing listens on web-app:8080`},
		{name: "refused already said", err: kindErr(remote.Refused, `connection refused by web-app:8080`),
			status: 502, body: `tp: connection refused by web-app:8080`},
		{name: "timeout", err: kindErr(remote.Timeout, `web-app:8080 did not answer`),
			status: 504, body: `tp: timed out: web-app:8080 did not answer`},
		{name: "tunnel down", err: kindErr(remote.TunnelDown, `port-forward dropped`),
			status: 503, body: `tp: the tunnel to the cluster is down (reconnecting): port-forward dropped`},
		{name: "unreachable", err: kindErr(remote.Unreachable, `no pod has 10.1.2.3`),
			status: 502, bodyPrefix: "unreachable: no pod has 10.1.2.3"},
		{name: "other", err: errors.New("manager said: boom"),
			status: 502, body: "tp: manager said: boom"},
	}
	for _, tt := range tests {
		check := func(t *testing.T, resp *http.Response) {
			t.Helper()
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d (body %q)", resp.StatusCode, tt.status, body)
			}
			if tt.body != "" && strings.TrimSuffix(string(body), "\n") != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
			if !strings.HasPrefix(string(body), "tp: "+tt.bodyPrefix) {
				t.Errorf("body %q does not begin with %q", body, "tp: "+tt.bodyPrefix)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q", ct)
			}
			if ps := resp.Header.Get("Proxy-Status"); ps == "" || tt.status9209 != "" && ps != tt.status9209 {
				t.Errorf("Proxy-Status %q, want %q", ps, tt.status9209)
			}
		}
		t.Run(tt.name+"/plain", func(t *testing.T) {
			_, addr := startServer(t, Config{Dialer: failWith(tt.err)})
			resp, err := proxyClient(t, addr).Get("http://web-ap:8080/")
			if err != nil {
				t.Fatal(err)
			}
			check(t, resp)
		})
		t.Run(tt.name+"/connect", func(t *testing.T) {
			_, addr := startServer(t, Config{Dialer: failWith(tt.err)})
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "CONNECT web-ap:443 HTTP/1.1\r\nHost: web-ap:443\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil {
				t.Fatal(err)
			}
			if resp.ProtoMajor != 1 || resp.ProtoMinor != 1 {
				t.Errorf("CONNECT error answered in %s", resp.Proto)
			}
			check(t, resp)
			// Then the proxy closes the connection.
			if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Errorf("connection still open after the error response: %d %v", n, err)
			}
		})
	}
}

// A plain request's dial sends the request with it (early data), so the manager's refusal
// comes back as the first Read's error: it must still be a 403 naming the policy.
func TestHTTPPlainRequestRefusedAtFirstRead(t *testing.T) {
	refusal := kindErr(remote.Forbidden, "169.254.169.254:80 is link-local, which tp's dial policy never lets the manager dial")
	d := &fakeDialer{fn: func(context.Context, string, string) (net.Conn, error) {
		return refusingConn{err: refusal}, nil
	}}
	_, addr := startServer(t, Config{Dialer: d})
	resp, err := proxyClient(t, addr).Get("http://169.254.169.254/latest/meta-data/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.HasPrefix(resp.Header.Get("Proxy-Status"), "tp; error=destination_ip_prohibited") ||
		string(body) != "tp: "+refusal.Error()+"\n" {
		t.Fatalf("%d %q %q, want 403, destination_ip_prohibited and the refusal", resp.StatusCode, resp.Header.Get("Proxy-Status"), body)
	}
}

// refusingConn takes what is written and fails every Read with err.
type refusingConn struct {
	net.Conn
	err error
}

func (c refusingConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c refusingConn) Read([]byte) (int, error)         { return 0, c.err }
func (c refusingConn) Close() error                     { return nil }
func (c refusingConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c refusingConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c refusingConn) SetDeadline(time.Time) error      { return nil }
func (c refusingConn) SetReadDeadline(time.Time) error  { return nil }
func (c refusingConn) SetWriteDeadline(time.Time) error { return nil }

// Proxy-Status details are an RFC 8941 string: a message cannot break out of it or the header.
func TestProxyStatusDetailsAreAStructuredFieldString(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:             `"plain"`,
		`say "no"`:          `"say \"no\""`,
		`a\b`:               `"a\\b"`,
		"line\r\nX-Evil: 1": `"line??X-Evil: 1"`,
		"caf\u00e9":         `"caf?"`,
	} {
		if got := sfString(in); got != want {
			t.Errorf("sfString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestHTTPConnectTLS(t *testing.T) {
	backend := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "secure %s", r.Host)
	}))
	defer backend.Close()
	d := dialTo(backend.Listener.Addr().String())
	_, addr := startServer(t, Config{Dialer: d})

	// httptest's certificate is valid for example.com; the dialer sends it to the backend.
	tr := backend.Client().Transport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: addr})
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for range 3 { // the second and third reuse the tunnel
		resp, err := client.Get("https://example.com/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "secure example.com" {
			t.Fatalf("got %q", body)
		}
	}
	if got := d.Calls(); !slices.Equal(got, []string{"tcp example.com:443"}) {
		t.Fatalf("dialer got %q", got)
	}
}

// Bytes a client sends right behind the CONNECT header (in the same packet) must reach the
// destination: goproxy's own hijack path would drop them.
func TestHTTPConnectEarlyBytes(t *testing.T) {
	d := dialTo(startEcho(t))
	_, addr := startServer(t, Config{Dialer: d})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "CONNECT db.data:5432 HTTP/1.1\r\nHost: db.data:5432\r\n\r\nearly-bytes"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	buf := make([]byte, len("early-bytes"))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "early-bytes" {
		t.Fatalf("echo of early bytes: %q %v", buf, err)
	}
}

func TestHTTPNotAProxyRequest(t *testing.T) {
	d := failWith(errors.New("must not dial"))
	_, addr := startServer(t, Config{Dialer: d})
	direct := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	for _, path := range []string{"/", "/favicon.ico"} {
		resp, err := direct.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.HasPrefix(string(body), "tp: ") || !strings.Contains(string(body), "socks5h://"+addr) {
			t.Errorf("GET %s: %d %q", path, resp.StatusCode, body)
		}
	}
	// CONNECT without a port is malformed.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT web-app HTTP/1.1\r\nHost: web-app\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 400 {
		t.Errorf("CONNECT without port: %v %v", resp, err)
	}
	if calls := d.Calls(); len(calls) != 0 {
		t.Errorf("dialed %q", calls)
	}
}

// A user who exported HTTP(S)_PROXY at tp itself must not make tp proxy to itself: the
// requests go straight to the Dialer.
func TestHTTPIgnoresProxyEnvironment(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := "http://" + ln.Addr().String()
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"} {
		t.Setenv(k, self)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")

	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "plain ok")
	}))
	defer plain.Close()
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secure ok")
	}))
	defer secure.Close()
	d := &fakeDialer{fn: func(ctx context.Context, network, address string) (net.Conn, error) {
		to := plain.Listener.Addr().String()
		if strings.HasSuffix(address, ":443") {
			to = secure.Listener.Addr().String()
		}
		var nd net.Dialer
		return nd.DialContext(ctx, network, to)
	}}
	// New after the environment is set: goproxy reads it when the proxy is made.
	s := serveOn(t, Config{Dialer: d}, ln)

	tr := secure.Client().Transport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: ln.Addr().String()})
	tr.DisableKeepAlives = true
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, u := range []string{"http://web-app.default/", "https://example.com/"} {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasSuffix(string(body), " ok") {
			t.Fatalf("%s: %d %q", u, resp.StatusCode, body)
		}
	}
	want := []string{"tcp web-app.default:80", "tcp example.com:443"}
	if got := d.Calls(); !slices.Equal(got, want) {
		t.Fatalf("dialer got %q, want %q", got, want)
	}
	// Two client connections; a proxy that looped to itself would have accepted more.
	eventually(t, "connections to close", func() bool { return s.Stats().Open == 0 })
	if st := s.Stats(); st.Total != 2 {
		t.Fatalf("proxy accepted %d connections, want 2 (a loop through the environment?)", st.Total)
	}
}
