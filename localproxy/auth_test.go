package localproxy

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/things-go/go-socks5"
	"golang.org/x/net/proxy"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/testlog"
)

var testCreds = Credentials{User: "alice", Password: "s3cret:with-colon"}

// The store is go-socks5's CredentialStore; a wrong store type would not compile here.
var _ socks5.CredentialStore = (*credentialStore)(nil)

func TestCredentialStore(t *testing.T) {
	s := newCredentialStore(testCreds)
	tests := []struct {
		name, user, password string
		want                 bool
	}{
		{"right", "alice", "s3cret:with-colon", true},
		{"wrong user", "bob", "s3cret:with-colon", false},
		{"wrong password", "alice", "s3cret:with-colo", false},
		{"both wrong", "bob", "guess", false},
		{"password prefix", "alice", "s3cret", false},
		{"password longer", "alice", "s3cret:with-colon!", false},
		{"user prefix", "alic", "s3cret:with-colon", false},
		{"user case", "Alice", "s3cret:with-colon", false},
		{"swapped", "s3cret:with-colon", "alice", false},
		{"empty", "", "", false},
		{"empty password", "alice", "", false},
		{"joined in the user", "alice:s3cret:with-colon", "", false},
	}
	for _, tt := range tests {
		if got := s.Valid(tt.user, tt.password, "192.0.2.1:4242"); got != tt.want {
			t.Errorf("%s: Valid(%q, %q) = %v, want %v", tt.name, tt.user, tt.password, got, tt.want)
		}
	}
}

func TestCredentialsValidate(t *testing.T) {
	tests := []struct {
		c    Credentials
		want string // "" for valid
	}{
		{Credentials{User: "u", Password: "hunter2"}, ""},
		{Credentials{User: "u", Password: "hunter2:a:b"}, ""},
		{Credentials{User: strings.Repeat("u", 255), Password: strings.Repeat("p", 255)}, ""},
		{Credentials{Password: "hunter2"}, "the user is empty"},
		{Credentials{User: "u"}, "the password is empty"},
		{Credentials{User: "u:v", Password: "hunter2"}, `the user contains ":"`},
		{Credentials{User: strings.Repeat("u", 256), Password: "hunter2"}, "the user is 256 bytes long; SOCKS5 allows at most 255"},
		{Credentials{User: "u", Password: strings.Repeat("p", 300)}, "the password is 300 bytes long; SOCKS5 allows at most 255"},
	}
	for _, tt := range tests {
		err := tt.c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%v: %v, want valid", tt.c, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%v: %v, want an error with %q", tt.c, err, tt.want)
		case err != nil && tt.c.Password != "" && strings.Contains(err.Error(), tt.c.Password):
			t.Errorf("%v: the error %q shows the password", tt.c, err)
		}
	}
}

func TestCredentialsPrintWithoutPassword(t *testing.T) {
	c := &testCreds
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, v := range []any{*c, c} {
			if got := fmt.Sprintf(verb, v); strings.Contains(got, c.Password) || !strings.Contains(got, c.User) {
				t.Errorf("Sprintf(%q) = %q: want the user and not the password", verb, got)
			}
		}
	}
}

func TestNewPanicsOnInvalidCredentials(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "the password is empty") {
			t.Errorf("recovered %v, want a panic naming the problem", r)
		}
	}()
	New(Config{Dialer: failWith(io.EOF), Credentials: &Credentials{User: "u"}})
}

func TestSOCKSCredentials(t *testing.T) {
	echo := startEcho(t)
	d := dialTo(echo)
	var logs testlog.Buffer
	_, addr := startServer(t, Config{Dialer: d, Log: logs.Logger(), Credentials: &testCreds})

	tests := []struct {
		name string
		auth *proxy.Auth
		log  string
	}{
		{"wrong user", &proxy.Auth{User: "bob", Password: testCreds.Password}, "wrong user or password"},
		{"wrong password", &proxy.Auth{User: testCreds.User, Password: "guess"}, "wrong user or password"},
		{"no-auth only", nil, "did not offer username/password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := proxy.SOCKS5("tcp", addr, tt.auth, proxy.Direct)
			if err != nil {
				t.Fatal(err)
			}
			if c, err := client.Dial("tcp", "web-app:80"); err == nil {
				_ = c.Close()
				t.Fatal("dial succeeded, want the proxy to refuse the client")
			}
			logs.Expect(t, tt.log, 1, 5*time.Second)
		})
	}
	if calls := d.Calls(); len(calls) != 0 {
		t.Fatalf("rejected clients reached the dialer: %q", calls)
	}

	client, err := proxy.SOCKS5("tcp", addr, &proxy.Auth{User: testCreds.User, Password: testCreds.Password}, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial("tcp", "web-app.other-ns:8080")
	if err != nil {
		t.Fatalf("right credentials: %v", err)
	}
	scEcho(t, c, "ping")
	_ = c.Close()
	if calls := d.Calls(); len(calls) != 1 || calls[0] != "tcp web-app.other-ns:8080" {
		t.Fatalf("dialer got %q", calls)
	}
	if strings.Contains(logs.String(), testCreds.Password) || strings.Contains(logs.String(), "guess") {
		t.Errorf("the log shows a password:\n%s", logs.String())
	}
}

// With credentials the server must not pick "no authentication" even when the client
// offers it first; a client offering only that gets "no acceptable methods".
func TestSOCKSCredentialsMethodChoice(t *testing.T) {
	_, addr := startServer(t, Config{Dialer: failWith(io.EOF), Credentials: &testCreds})
	for _, tt := range []struct {
		greeting []byte
		want     [2]byte
	}{
		{[]byte{5, 2, 0, 2}, [2]byte{5, 2}},
		{[]byte{5, 1, 0}, [2]byte{5, 0xff}},
		{[]byte{5, 2, 0, 1}, [2]byte{5, 0xff}},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(tt.greeting); err != nil {
			t.Fatal(err)
		}
		var got [2]byte
		if _, err := io.ReadFull(c, got[:]); err != nil || got != tt.want {
			t.Errorf("greeting %v: chose %v (%v), want %v", tt.greeting, got, err, tt.want)
		}
		_ = c.Close()
	}
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

func TestHTTPCredentialsPlain(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "proxy-authorization=%q", r.Header.Get("Proxy-Authorization"))
	}))
	defer backend.Close()
	d := dialTo(backend.Listener.Addr().String())
	var logs testlog.Buffer
	_, addr := startServer(t, Config{Dialer: d, Log: logs.Logger(), Credentials: &testCreds})

	tests := []struct {
		name, header string
		status       int
		body         string
	}{
		{"none", "", 407, "tp: this proxy asks for a user and password."},
		{"wrong user", basic("bob", testCreds.Password), 407, "tp: wrong proxy user or password."},
		{"wrong password", basic(testCreds.User, "guess"), 407, "tp: wrong proxy user or password."},
		{"not basic", "Bearer " + testCreds.Password, 407, "tp: this proxy takes only Basic"},
		{"not base64", "Basic !!!", 407, "tp: this proxy takes only Basic"},
		{"right", basic(testCreds.User, testCreds.Password), 200, `proxy-authorization=""`},
		{"right, scheme in lower case", "basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret:with-colon")), 200, `proxy-authorization=""`},
	}
	client := proxyClient(t, addr)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://web-app/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.header != "" {
				req.Header.Set("Proxy-Authorization", tt.header)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || !strings.HasPrefix(string(body), tt.body) {
				t.Fatalf("got %d %q, want %d %q...", resp.StatusCode, body, tt.status, tt.body)
			}
			if tt.status == 407 {
				check407(t, resp, string(body), addr)
			}
		})
	}
	if calls := d.Calls(); len(calls) != 1 {
		t.Errorf("dialer got %q, want only the authorized request", calls)
	}
	if n := strings.Count(logs.String(), "http: rejected client"); n != 5 {
		t.Errorf("%d log lines for 5 rejected requests:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), testCreds.Password) || strings.Contains(logs.String(), "guess") {
		t.Errorf("the log shows a password:\n%s", logs.String())
	}
}

func check407(t *testing.T, resp *http.Response, body, proxyAddr string) {
	t.Helper()
	if got := resp.Header.Get("Proxy-Authenticate"); got != `Basic realm="tp"` {
		t.Errorf("Proxy-Authenticate %q", got)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	if !strings.Contains(body, "http://USER:PASSWORD@"+proxyAddr) {
		t.Errorf("body %q does not say how to give credentials to this proxy", body)
	}
}

func TestHTTPCredentialsConnect(t *testing.T) {
	d := dialTo(startEcho(t))
	_, addr := startServer(t, Config{Dialer: d, Credentials: &testCreds})

	connect := func(header string) (*http.Response, string, net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "CONNECT web-app:443 HTTP/1.1\r\nHost: web-app:443\r\n%s\r\n", header)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			return resp, "", c, br // the tunnel, not a body
		}
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body), c, br
	}
	for _, header := range []string{
		"",
		"Proxy-Authorization: " + basic("bob", testCreds.Password) + "\r\n",
		"Proxy-Authorization: " + basic(testCreds.User, "guess") + "\r\n",
	} {
		resp, body, _, br := connect(header)
		if resp.StatusCode != http.StatusProxyAuthRequired {
			t.Fatalf("%q: status %d, want 407", header, resp.StatusCode)
		}
		check407(t, resp, body, addr)
		if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Errorf("%q: connection still open after the 407: %d %v", header, n, err)
		}
	}
	if calls := d.Calls(); len(calls) != 0 {
		t.Fatalf("rejected CONNECTs reached the dialer: %q", calls)
	}

	resp, _, c, br := connect("Proxy-Authorization: " + basic(testCreds.User, testCreds.Password) + "\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("right credentials: status %d", resp.StatusCode)
	}
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through CONNECT: %q %v", buf, err)
	}
}

// Browsing the proxy port reaches nothing, so it needs no credentials: the same 400.
func TestHTTPCredentialsNotAProxyRequest(t *testing.T) {
	_, addr := startServer(t, Config{Dialer: failWith(io.EOF), Credentials: &testCreds})
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
}

// A client that puts the credentials in the proxy URL, as users will, gets through.
func TestHTTPCredentialsInProxyURL(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ok")
	}))
	defer backend.Close()
	_, addr := startServer(t, Config{Dialer: dialTo(backend.Listener.Addr().String()), Credentials: &testCreds})
	u := &url.URL{Scheme: "http", Host: addr, User: url.UserPassword(testCreds.User, testCreds.Password)}
	tr := &http.Transport{Proxy: http.ProxyURL(u)}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://web-app/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

func TestSOCKSDialerCredentials(t *testing.T) {
	d := dialTo(startEcho(t))
	addr, _ := scServe(t, Config{Dialer: d, Credentials: &testCreds})

	c, err := (&SOCKSDialer{Proxy: addr, Credentials: &testCreds}).DialContext(t.Context(), "tcp", "web-app:80")
	if err != nil {
		t.Fatalf("right credentials: %v", err)
	}
	scEcho(t, c, "ping")
	_ = c.Close()

	for _, tt := range []struct {
		name  string
		creds *Credentials
		msg   string
	}{
		{"none", nil, "wants authentication"},
		{"wrong", &Credentials{User: testCreds.User, Password: "guess"}, "refused the proxy credentials: wrong user or password"},
		{"invalid", &Credentials{User: "u"}, "proxy credentials: the password is empty"},
	} {
		for _, network := range []string{"tcp", "udp"} {
			_, err := (&SOCKSDialer{Proxy: addr, Credentials: tt.creds}).DialContext(t.Context(), network, "web-app:80")
			if re := scRemoteError(t, err); re.Kind != remote.Failed || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("%s %s: %v (kind %v), want a failure saying %q", tt.name, network, err, re.Kind, tt.msg)
			}
		}
	}
}

func TestSOCKSDialerCredentialsEncoding(t *testing.T) {
	got := make(chan []byte, 1)
	addr := scFakeProxy(t, func(c net.Conn) {
		b := make([]byte, 3+2+5+1+17)
		if _, err := io.ReadFull(c, b); err == nil {
			got <- b
		}
		_, _ = c.Write([]byte{5, 2, 1, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
	})
	_, err := (&SOCKSDialer{Proxy: addr, Credentials: &testCreds}).DialContext(t.Context(), "tcp", "web-app:80")
	if remote.KindOf(err) != remote.Refused {
		t.Errorf("%v, want the scripted refusal after a successful authentication", err)
	}
	want := "\x05\x01\x02" + "\x01\x05alice" + "\x11s3cret:with-colon"
	if b := <-got; string(b) != want {
		t.Errorf("greeting and authentication %q, want %q (username/password only)", b, want)
	}
}

func TestSOCKSDialerCredentialsOddMethod(t *testing.T) {
	addr := scFakeProxy(t, func(c net.Conn) {
		_, _ = c.Read(make([]byte, 64))
		_, _ = c.Write([]byte{5, 0})
	})
	_, err := (&SOCKSDialer{Proxy: addr, Credentials: &testCreds}).DialContext(t.Context(), "tcp", "web-app:80")
	if !strings.Contains(fmt.Sprint(err), "does not take username/password authentication (it chose method 0x00)") {
		t.Errorf("%v, want an error saying the proxy chose no authentication", err)
	}
}

// tp run's VIF sends UDP through a proxy that asks for credentials: the association's
// control connection carries them.
func TestSOCKSDialerCredentialsUDP(t *testing.T) {
	backend := newUDPDialer(t, startUDPEcho(t))
	addr, _ := scServe(t, Config{Dialer: backend, Credentials: &testCreds})
	c, err := (&SOCKSDialer{Proxy: addr, Credentials: &testCreds}).DialContext(t.Context(), "udp", "dns.kube-system:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	scReadDatagram(t, c, 100, "re:query")
}

func TestSOCKSDialerAuthenticate(t *testing.T) {
	_, guarded := startServer(t, Config{Dialer: failWith(io.EOF), Credentials: &testCreds})
	_, open := startServer(t, Config{Dialer: failWith(io.EOF)})
	wrong := Credentials{User: testCreds.User, Password: "guess"}
	for _, c := range []struct {
		name  string
		proxy string
		creds *Credentials
		want  string // "" for success
	}{
		{"right credentials", guarded, &testCreds, ""},
		{"wrong password", guarded, &wrong, "refused the proxy credentials: wrong user or password"},
		{"none where asked", guarded, nil, "wants authentication"},
		{"none where not asked", open, nil, ""},
	} {
		err := (&SOCKSDialer{Proxy: c.proxy, Credentials: c.creds}).Authenticate(t.Context())
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if refused := errors.Is(err, ErrCredentialsRefused); refused != (c.name == "wrong password") {
			t.Errorf("%s: marked as refused credentials: %v", c.name, refused)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := (&SOCKSDialer{Proxy: ln.Addr().String(), Credentials: &testCreds}).Authenticate(t.Context()); !errors.Is(err, remote.ErrTunnelDown) || errors.Is(err, ErrCredentialsRefused) {
		t.Errorf("no proxy listening: %v, want a tunnel-down error", err)
	}
}
