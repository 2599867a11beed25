//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/things-go/go-socks5"

	"github.com/tpdev/tp/localproxy/pac"
	"github.com/tpdev/tp/tests/cluster"
	"github.com/tpdev/tp/tests/kit"
)

// TestUpstreamProxy is a locked-down laptop: the internet only through a corporate proxy
// that HTTPS_PROXY names (here test proxies in the laptop namespace that answer every
// request themselves with a marker, standing in for the internet), an intranet in NO_PROXY.
// tp sends cluster destinations through the tunnel and everything else where it went
// without tp, from every front end, tp run in both modes, and keeps the user's NO_PROXY.
func TestUpstreamProxy(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-upstream")
	w := deployWorkload(t, cs, ns, "web")
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")

	internet := newFakeInternet(t)
	// The corporate proxy also carries CONNECTs to the API server for real, as kubectl and tp
	// use it (HTTPS_PROXY) to reach it.
	apiURL, err := url.Parse(restConfig(t, laptopDial).Host)
	if err != nil {
		t.Fatal(err)
	}
	internet.real = map[string]func(ctx context.Context) (net.Conn, error){
		apiURL.Host: func(ctx context.Context) (net.Conn, error) { return l.Dial(ctx, "tcp", apiURL.Host) },
	}
	httpUp := internet.httpProxy(t, l, "alice", "s3cret")
	socksUp := internet.socksProxy(t, l, "bob", "pw0rd")
	// The intranet: a server on the laptop's own address, which NO_PROXY names.
	intranet := serveAt(t, l.Net.Netns, l.Net.IP+":0", "intranet")
	_, intranetPort, _ := net.SplitHostPort(intranet)
	deadPort := closedPort(t, l)

	userNoProxy := ".corp.test," + l.Net.IP + ",.svc,.cluster.local"
	env := []string{
		"HTTPS_PROXY=http://alice:s3cret@" + httpUp, "HTTP_PROXY=http://alice:s3cret@" + httpUp,
		"NO_PROXY=" + userNoProxy,
	}
	tp := func(timeout time.Duration, env []string, args ...string) kit.Result {
		return l.Run(timeout, env, l.TP, args...)
	}
	mustTP := func(t *testing.T, env []string, args ...string) kit.Result {
		t.Helper()
		r := tp(3*time.Minute, env, args...)
		if r.Err != nil {
			t.Fatalf("tp %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Err, r.Stdout, r.Stderr)
		}
		return r
	}
	curl := func(t *testing.T, env []string, args ...string) string {
		t.Helper()
		base := []string{"-sS", "--max-time", "30", "-k"}
		r := l.Run(40*time.Second, env, "curl", append(base, args...)...)
		if r.Err != nil {
			t.Fatalf("curl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Err, r.Stdout, r.Stderr)
		}
		return r.Stdout
	}
	const tpProxy = "127.0.0.1:1080"
	pacFile := filepath.Join(l.Home, "tp.pac")

	connect := mustTP(t, env, "connect", "--namespace", ns, "--shell", "posix", "--pac", pacFile)
	exports := parsePosixExports(t, connect.Stdout)
	if n := internet.realConnects.Load(); n == 0 {
		t.Errorf("tp connect reached the API server without the corporate proxy that HTTPS_PROXY names")
	}

	t.Run("ExportsKeepNoProxy", func(t *testing.T) {
		for _, name := range []string{"NO_PROXY", "no_proxy"} {
			got := strings.Split(exports[name], ",")
			for _, want := range []string{".corp.test", l.Net.IP, "localhost", "127.0.0.1", "::1"} {
				if !contains(got, want) {
					t.Errorf("%s=%q lacks the user's or loopback's %q", name, exports[name], want)
				}
			}
			for _, gone := range []string{".svc", ".cluster.local"} {
				if contains(got, gone) {
					t.Errorf("%s=%q keeps %q, which would send cluster names around tp", name, exports[name], gone)
				}
			}
		}
		if exports["HTTPS_PROXY"] != "http://"+tpProxy || exports["ALL_PROXY"] != "socks5h://"+tpProxy || exports["NODE_USE_ENV_PROXY"] != "1" {
			t.Errorf("exports %v", exports)
		}
	})

	t.Run("OutsideTheClusterGoesUpstream", func(t *testing.T) {
		if got := curl(t, nil, "-x", "http://"+tpProxy, "https://example.test/a"); got != "upstream http CONNECT example.test:443 auth=alice:s3cret GET /a" {
			t.Errorf("HTTPS through tp's HTTP proxy: %q", got)
		}
		if got := curl(t, nil, "-x", "http://"+tpProxy, "http://example.test/b?q=1"); got != "upstream http auth=alice:s3cret GET http://example.test/b?q=1" {
			t.Errorf("plain HTTP through tp's HTTP proxy (forwarded, not CONNECT): %q", got)
		}
		if got := curl(t, nil, "-x", "socks5h://"+tpProxy, "https://example.test/c"); got != "upstream http CONNECT example.test:443 auth=alice:s3cret GET /c" {
			t.Errorf("HTTPS through tp's SOCKS5 proxy: %q", got)
		}
	})

	t.Run("ClusterAndNoProxyDoNot", func(t *testing.T) {
		if got := curl(t, nil, "-x", "http://"+tpProxy, "http://web."+ns+"/d"); got != fmt.Sprintf("pod=%s path=/d\n", w.Pod) {
			t.Errorf("cluster name: %q", got)
		}
		if got := curl(t, nil, "-x", "socks5h://"+tpProxy, "http://"+w.ClusterIP+"/e"); got != fmt.Sprintf("pod=%s path=/e\n", w.Pod) {
			t.Errorf("ClusterIP: %q", got)
		}
		if got := curl(t, nil, "-x", "http://"+tpProxy, "http://"+intranet+"/f"); got != "intranet GET /f" {
			t.Errorf("NO_PROXY address: %q", got)
		}
		if got := curl(t, nil, "-x", "socks5h://"+tpProxy, "http://"+intranet+"/g"); got != "intranet GET /g" {
			t.Errorf("NO_PROXY address through SOCKS5: %q", got)
		}
	})

	t.Run("Status", func(t *testing.T) {
		out := mustTP(t, nil, "status").Stdout
		if !strings.Contains(out, "upstream:    http://alice:xxxxx@"+httpUp+" (from HTTP_PROXY, HTTPS_PROXY") || !strings.Contains(out, "), except NO_PROXY="+userNoProxy+"\n") {
			t.Errorf("tp status does not show the upstream:\n%s", out)
		}
		if strings.Contains(out, "s3cret") {
			t.Errorf("tp status shows the upstream's password:\n%s", out)
		}
	})

	t.Run("Run", func(t *testing.T) {
		for _, vif := range []string{"off", "on"} {
			r := tp(2*time.Minute, env, "run", "--namespace", ns, "--vif="+vif, "--", "curl", "-sS", "--max-time", "30", "-k", "https://example.test/run")
			if r.Err != nil || r.Stdout != "upstream http CONNECT example.test:443 auth=alice:s3cret GET /run" {
				t.Errorf("tp run --vif=%s curl https://example.test/run: %v %q %s", vif, r.Err, r.Stdout, r.Stderr)
			}
			r = tp(2*time.Minute, env, "run", "--namespace", ns, "--vif="+vif, "--", "curl", "-sS", "--max-time", "30", "http://web/run")
			if r.Err != nil || r.Stdout != fmt.Sprintf("pod=%s path=/run\n", w.Pod) {
				t.Errorf("tp run --vif=%s curl http://web/run: %v %q %s", vif, r.Err, r.Stdout, r.Stderr)
			}
			r = tp(2*time.Minute, env, "run", "--namespace", ns, "--vif="+vif, "--", "curl", "-sS", "--max-time", "30", "http://"+intranet+"/run")
			if r.Err != nil || r.Stdout != "intranet GET /run" {
				t.Errorf("tp run --vif=%s curl of a NO_PROXY address: %v %q %s", vif, r.Err, r.Stdout, r.Stderr)
			}
		}
		r := tp(time.Minute, env, "run", "--namespace", ns, "--vif=off", "--", "sh", "-c", `echo "$NODE_USE_ENV_PROXY $NO_PROXY"`)
		if r.Err != nil || r.Stdout != "1 .corp.test,"+l.Net.IP+",localhost,127.0.0.1,::1\n" {
			t.Errorf("tp run --vif=off's environment: %v %q %s", r.Err, r.Stdout, r.Stderr)
		}
		// In the VIF, the variables point at tp at the host's address, which (this
		// machine's loopback seen from inside) is never proxied.
		r = tp(time.Minute, env, "run", "--namespace", ns, "--vif=on", "--", "sh", "-c", `echo "$HTTPS_PROXY $NO_PROXY"`)
		if r.Err != nil || r.Stdout != "http://198.18.0.1:1080 .corp.test,"+l.Net.IP+",localhost,127.0.0.1,::1,198.18.0.1\n" {
			t.Errorf("tp run --vif=on's environment: %v %q %s", r.Err, r.Stdout, r.Stderr)
		}
	})

	t.Run("Shells", func(t *testing.T) {
		fish, err := exec.LookPath("fish")
		if err != nil {
			t.Fatal("fish is not installed (.ci/run installs it): apt-get install fish")
		}
		names := []string{"ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "no_proxy", "NODE_USE_ENV_PROXY"}
		script := l.TP + " env --shell fish | source; for n in " + strings.Join(names, " ") + "; echo $n=$$n; end"
		r := l.Run(time.Minute, nil, fish, "--no-config", "-c", script)
		if r.Err != nil {
			t.Fatalf("fish: %v %s %s", r.Err, r.Stdout, r.Stderr)
		}
		for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
			name, value, _ := strings.Cut(line, "=")
			if exports[name] != value {
				t.Errorf("fish set %s=%q, the POSIX exports %q", name, value, exports[name])
			}
		}
		ps := mustTP(t, nil, "env", "--shell", "powershell").Stdout
		if !strings.Contains(ps, "$env:NO_PROXY = '"+exports["NO_PROXY"]+"'") {
			t.Errorf("powershell:\n%s", ps)
		}
	})

	t.Run("PAC", func(t *testing.T) {
		served := curl(t, nil, "http://"+tpProxy+"/proxy.pac")
		written, err := os.ReadFile(pacFile)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(written), "FindProxyForURL") {
			t.Errorf("tp connect --pac wrote %q", written)
		}
		node, err := exec.LookPath("node")
		if err != nil {
			t.Fatal("node is not installed (.ci/run installs nodejs): the PAC file is evaluated by a real JavaScript engine")
		}
		tpDirective := "PROXY " + tpProxy + "; SOCKS5 " + tpProxy
		want := map[string]string{
			"http://web/":                                   tpDirective,
			"http://web." + ns + "/":                        tpDirective,
			"http://web." + ns + ".svc.cluster.local/":      tpDirective,
			"http://" + w.ClusterIP + "/":                   tpDirective,
			"http://" + w.PodIP + ":8080/":                  tpDirective,
			"https://example.com/":                          "PROXY " + httpUp,
			"http://intranet.corp.test/":                    "DIRECT",
			"http://" + l.Net.IP + ":" + intranetPort + "/": "DIRECT",
		}
		var urls []string
		for u := range want {
			urls = append(urls, u)
		}
		for name, text := range map[string]string{"served": served, "written": string(written)} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			got, err := pac.Eval(ctx, node, []byte(text), urls)
			cancel()
			if err != nil {
				t.Fatalf("%s PAC: %v\n%s", name, err, text)
			}
			for u, directive := range want {
				if got[u] != directive {
					t.Errorf("%s PAC: FindProxyForURL(%s) = %q, want %q", name, u, got[u], directive)
				}
			}
		}
	})

	t.Run("RememberedAfterEval", func(t *testing.T) {
		// A shell that ran eval "$(tp connect)" points its variables at tp; tp quit and tp
		// connect from it chain to the same upstream.
		mustTP(t, nil, "quit")
		evald := []string{"HTTPS_PROXY=" + exports["HTTPS_PROXY"], "HTTP_PROXY=" + exports["HTTP_PROXY"], "ALL_PROXY=" + exports["ALL_PROXY"], "NO_PROXY=" + exports["NO_PROXY"]}
		if out := mustTP(t, evald, "connect", "--namespace", ns, "--print-env=false").Stdout; out != "" {
			t.Errorf("tp connect --print-env=false printed %q", out)
		}
		if got := curl(t, nil, "-x", "http://"+tpProxy, "https://example.test/again"); got != "upstream http CONNECT example.test:443 auth=alice:s3cret GET /again" {
			t.Errorf("after eval and reconnect: %q", got)
		}
	})

	t.Run("SOCKSUpstream", func(t *testing.T) {
		mustTP(t, nil, "quit")
		mustTP(t, []string{"NO_PROXY=" + l.Net.IP}, "connect", "--namespace", ns, "--upstream-proxy", "socks5h://bob:pw0rd@"+socksUp, "--print-env=false")
		if got := curl(t, nil, "-x", "http://"+tpProxy, "https://example.test/s"); got != "upstream socks5 bob example.test:443 GET /s" {
			t.Errorf("HTTPS through a SOCKS5 upstream: %q", got)
		}
		if got := curl(t, nil, "-x", "socks5h://"+tpProxy, "http://example.test/t"); got != "upstream socks5 bob example.test:80 GET /t" {
			t.Errorf("plain HTTP through a SOCKS5 upstream: %q", got)
		}
		if got := curl(t, nil, "-x", "http://"+tpProxy, "http://web."+ns+"/u"); got != fmt.Sprintf("pod=%s path=/u\n", w.Pod) {
			t.Errorf("cluster name: %q", got)
		}
	})

	t.Run("DeadUpstream", func(t *testing.T) {
		mustTP(t, nil, "quit")
		// The API server is on the intranet (NO_PROXY) here: the upstream is down.
		mustTP(t, nil, "connect", "--namespace", ns, "--upstream-proxy", "http://127.0.0.1:"+deadPort, "--upstream-no-proxy", apiURL.Hostname(), "--print-env=false")
		r := l.Run(40*time.Second, nil, "curl", "-sS", "--max-time", "30", "-k", "-x", "http://"+tpProxy, "-w", "\n%{http_code}", "http://example.test/")
		if want := "tp: upstream proxy http://127.0.0.1:" + deadPort + " (from --upstream-proxy): connection refused\n\n502"; r.Err != nil || r.Stdout != want {
			t.Errorf("a dead upstream: %v %q %s", r.Err, r.Stdout, r.Stderr)
		}
		r = l.Run(40*time.Second, nil, "curl", "-sS", "--max-time", "30", "-k", "-x", "http://"+tpProxy, "-w", "%{http_connect}", "-o", "/dev/null", "https://example.test/")
		if r.Stdout != "502" {
			t.Errorf("CONNECT with a dead upstream: %v %q %s", r.Err, r.Stdout, r.Stderr)
		}
		if got := curl(t, nil, "-x", "http://"+tpProxy, "http://web."+ns+"/v"); got != fmt.Sprintf("pod=%s path=/v\n", w.Pod) {
			t.Errorf("cluster name with a dead upstream: %q", got)
		}
	})
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// parsePosixExports runs tp's POSIX exports through a real sh and reads the variables back.
func parsePosixExports(t *testing.T, text string) map[string]string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "exports.sh")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", ". "+f+"; env").Output()
	if err != nil {
		t.Fatalf("sh could not source tp's exports %q: %v", text, err)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	return vars
}

// closedPort is a port on the laptop's loopback where nothing listens.
func closedPort(t *testing.T, l *kit.Laptop) string {
	t.Helper()
	ln, err := l.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	return port
}

// serveAt answers HTTP on address in the laptop namespace with "<marker> METHOD PATH".
func serveAt(t *testing.T, netns, address, marker string) string {
	t.Helper()
	ln, err := cluster.ListenInNetns(netns, address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s %s", marker, r.Method, r.URL.RequestURI())
		}))
	}()
	return ln.Addr().String()
}

// fakeInternet answers, in place of every site, with a marker saying which upstream proxy
// carried the request: HTTP or HTTPS (a certificate it makes up; clients use -k).
type fakeInternet struct {
	tls *tls.Config
	// real are the destinations a CONNECT reaches for real (the API server), with their dial.
	real         map[string]func(ctx context.Context) (net.Conn, error)
	realConnects atomic.Int64
}

func newFakeInternet(t *testing.T) *fakeInternet {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "the internet"}, DNSNames: []string{"example.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeInternet{tls: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}}
}

// answer serves HTTP or HTTPS (told by the first byte) on c until it closes: "<marker> METHOD
// PATH" for each request.
func (fi *fakeInternet) answer(c net.Conn, marker string) {
	defer c.Close()
	br := bufio.NewReader(c)
	var rw io.ReadWriter = struct {
		io.Reader
		io.Writer
	}{br, c}
	if b, err := br.Peek(1); err == nil && b[0] == 0x16 {
		tc := tls.Server(&bufConn{Conn: c, r: br}, fi.tls)
		rw, br = tc, bufio.NewReader(tc)
		rw = struct {
			io.Reader
			io.Writer
		}{br, tc}
	}
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		body := fmt.Sprintf("%s %s %s", marker, req.Method, req.URL.RequestURI())
		fmt.Fprintf(rw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s", len(body), body)
	}
}

// relayReal connects a CONNECT's client to the real destination.
func relayReal(c net.Conn, br *bufio.Reader, dial func(ctx context.Context) (net.Conn, error)) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dst, err := dial(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer dst.Close()
	fmt.Fprintf(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(dst, br); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, dst); done <- struct{}{} }()
	<-done
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// httpProxy is a corporate HTTP proxy on the laptop's loopback that asks for user:password:
// CONNECT tunnels and absolute-URI requests both reach the fake internet.
func (fi *fakeInternet) httpProxy(t *testing.T, l *kit.Laptop, user, password string) string {
	t.Helper()
	ln, err := l.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					c.Close()
					return
				}
				if req.Header.Get("Proxy-Authorization") != want {
					fmt.Fprintf(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
					c.Close()
					return
				}
				if dial := fi.real[req.Host]; req.Method == http.MethodConnect && dial != nil {
					fi.realConnects.Add(1)
					relayReal(c, br, dial)
					return
				}
				if req.Method == http.MethodConnect {
					fmt.Fprintf(c, "HTTP/1.1 200 Connection established\r\n\r\n")
					fi.answer(&bufConn{Conn: c, r: br}, fmt.Sprintf("upstream http CONNECT %s auth=%s:%s", req.Host, user, password))
					return
				}
				defer c.Close()
				_, _ = io.Copy(io.Discard, req.Body)
				body := fmt.Sprintf("upstream http auth=%s:%s %s %s", user, password, req.Method, req.RequestURI)
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
			}()
		}
	}()
	return ln.Addr().String()
}

// socksProxy is a SOCKS5 upstream on the laptop's loopback that asks for user:password and
// answers every CONNECT from the fake internet, naming the destination it was asked for.
func (fi *fakeInternet) socksProxy(t *testing.T, l *kit.Laptop, user, password string) string {
	t.Helper()
	ln, err := l.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	srv := socks5.NewServer(
		socks5.WithCredential(socks5.StaticCredentials{user: password}),
		// Names are not resolved here: the fake internet answers for every one.
		socks5.WithResolver(nameKeeper{}),
		socks5.WithDialAndRequest(func(ctx context.Context, network, addr string, req *socks5.Request) (net.Conn, error) {
			// The name as the client sent it (socks5h): the resolver filled in an IP beside it.
			host := req.RawDestAddr.FQDN
			if host == "" {
				host = req.RawDestAddr.IP.String()
			}
			dest := net.JoinHostPort(host, strconv.Itoa(req.RawDestAddr.Port))
			if dial := fi.real[dest]; dial != nil {
				fi.realConnects.Add(1)
				return dial(ctx)
			}
			a, b := net.Pipe()
			go fi.answer(b, fmt.Sprintf("upstream socks5 %s %s", req.AuthContext.Payload["username"], dest))
			// The reply names the bound address, which must be an IP one.
			return tcpAddrConn{a}, nil
		}),
	)
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String()
}

type tcpAddrConn struct{ net.Conn }

func (tcpAddrConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9} }

type nameKeeper struct{}

func (nameKeeper) Resolve(ctx context.Context, name string) (context.Context, net.IP, error) {
	return ctx, net.IPv4(192, 0, 2, 1), nil
}
