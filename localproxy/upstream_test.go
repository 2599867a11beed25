package localproxy

import (
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
)

// A plain request for a destination Config.Upstream names is forwarded to that proxy as an
// absolute-URI request with its credentials, not tunnelled with CONNECT (which corporate
// proxies refuse on port 80); one it does not name goes to the Dialer's destination.
func TestHTTPPlainRequestThroughUpstream(t *testing.T) {
	var seen []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, fmt.Sprintf("%s %s auth=%q", r.Method, r.RequestURI, r.Header.Get("Proxy-Authorization")))
		io.WriteString(w, "from upstream")
	}))
	defer upstream.Close()
	cluster := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from cluster")
	}))
	defer cluster.Close()
	up := &url.URL{Scheme: "http", Host: "proxy.corp:3128", User: url.UserPassword("alice", "s3cret")}
	d := &fakeDialer{fn: func(ctx context.Context, network, address string) (net.Conn, error) {
		to := cluster.Listener.Addr().String()
		if address == "proxy.corp:3128" {
			to = upstream.Listener.Addr().String()
		}
		var nd net.Dialer
		return nd.DialContext(ctx, network, to)
	}}
	_, addr := startServer(t, Config{Dialer: d, Upstream: func(r *http.Request) (*url.URL, error) {
		if r.URL.Hostname() == "web-app" {
			return nil, nil
		}
		return up, nil
	}})
	client := proxyClient(t, addr)
	for url, want := range map[string]string{"http://example.test/x?y=1": "from upstream", "http://web-app/": "from cluster"} {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != want {
			t.Errorf("GET %s: %d %q, want %q", url, resp.StatusCode, body, want)
		}
	}
	if want := []string{`GET http://example.test/x?y=1 auth="Basic YWxpY2U6czNjcmV0"`}; !slices.Equal(seen, want) {
		t.Errorf("upstream saw %q, want %q", seen, want)
	}
	if calls := d.Calls(); !slices.Contains(calls, "tcp proxy.corp:3128") || !slices.Contains(calls, "tcp web-app:80") {
		t.Errorf("dialed %q", calls)
	}
}

// A failing choice (the cluster lookup could not answer) is the client's 502 with tp's words.
func TestHTTPUpstreamChoiceFails(t *testing.T) {
	d := failWith(errors.New("must not dial"))
	_, addr := startServer(t, Config{Dialer: d, Upstream: func(*http.Request) (*url.URL, error) {
		return nil, kindErr(0, "looking up \"web\" in the cluster: tunnel down")
	}})
	resp, err := proxyClient(t, addr).Get("http://web/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "tunnel down") {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
}

func TestPACServedWithoutCredentials(t *testing.T) {
	calls := 0
	_, addr := startServer(t, Config{Dialer: failWith(errors.New("must not dial")), Credentials: &Credentials{User: "u", Password: "p"},
		PAC: func(context.Context) ([]byte, error) {
			calls++
			if calls > 2 {
				return nil, errors.New("not connected yet")
			}
			return []byte("function FindProxyForURL(url, host) { return \"DIRECT\"; }"), nil
		}})
	direct := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	for _, path := range []string{"/proxy.pac", "/wpad.dat"} {
		resp, err := direct.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ns-proxy-autoconfig" || !strings.HasPrefix(string(body), "function FindProxyForURL") {
			t.Errorf("GET %s: %d %q %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	resp, err := direct.Get("http://" + addr + "/proxy.pac")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "not connected yet") {
		t.Errorf("failing PAC: %d %q", resp.StatusCode, body)
	}
	// Without a PAC function the path is just not a proxy request.
	_, plain := startServer(t, Config{Dialer: failWith(errors.New("must not dial"))})
	resp, err = direct.Get("http://" + plain + "/proxy.pac")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no PAC: %d", resp.StatusCode)
	}
}

// An upstream's 407 to a plain request becomes tp's 502 naming it: the client cannot answer
// it, and a 407 would look as if tp asked for credentials.
func TestHTTPUpstream407(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Proxy-Authenticate", `Basic realm="corp"`)
		w.WriteHeader(http.StatusProxyAuthRequired)
		io.WriteString(w, "corp says no")
	}))
	defer upstream.Close()
	for _, tt := range []struct {
		user *url.Userinfo
		want string
	}{
		{nil, "tp: the upstream proxy http://proxy.corp:3128 asks for credentials (407 Proxy Authentication Required): put them in its URL, http://USER:PASSWORD@proxy.corp:3128 (HTTP_PROXY, or tp connect --upstream-proxy)\n"},
		{url.UserPassword("alice", "s3cret"), "tp: the upstream proxy http://alice:xxxxx@proxy.corp:3128 asks for credentials (407 Proxy Authentication Required): it rejected user \"alice\": fix the URL's credentials (HTTP_PROXY, or tp connect --upstream-proxy)\n"},
	} {
		up := &url.URL{Scheme: "http", Host: "proxy.corp:3128", User: tt.user}
		_, addr := startServer(t, Config{Dialer: dialTo(upstream.Listener.Addr().String()), Upstream: func(*http.Request) (*url.URL, error) { return up, nil }})
		resp, err := proxyClient(t, addr).Get("http://example.test/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || string(body) != tt.want || resp.Header.Get("Proxy-Authenticate") != "" {
			t.Errorf("got %d %q (Proxy-Authenticate %q), want 502 %q", resp.StatusCode, body, resp.Header.Get("Proxy-Authenticate"), tt.want)
		}
	}
}

func TestIsLoopbackClient(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:5000": true, "[::1]:5000": true, "[::ffff:127.0.0.1]:1": true, "192.168.1.9:5000": false, "bogus": false} {
		if got := isLoopbackClient(addr); got != want {
			t.Errorf("isLoopbackClient(%q) = %v", addr, got)
		}
	}
}
