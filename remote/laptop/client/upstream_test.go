package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/localproxy/upstream"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/session"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestResolveUpstream(t *testing.T) {
	shortHome(t)
	env := map[string]string{"HTTPS_PROXY": "http://alice:pw@proxy.corp:3128", "no_proxy": ".corp"}
	s, err := resolveUpstream(ConnectConfig{}, envOf(env), "127.0.0.1:1080", nil)
	if err != nil || s.HTTPS.String() != "http://alice:pw@proxy.corp:3128" || s.NoProxy != ".corp" {
		t.Fatalf("from the environment: %+v, %v", s, err)
	}
	s, err = resolveUpstream(ConnectConfig{UpstreamProxy: "socks5h://s:1080", UpstreamNoProxy: "10.0.0.0/8"}, envOf(env), "127.0.0.1:1080", nil)
	if err != nil || s.HTTPS.String() != "socks5h://s:1080" || s.HTTP.String() != "socks5h://s:1080" || s.NoProxy != "10.0.0.0/8" {
		t.Fatalf("flags over the environment: %+v, %v", s, err)
	}
	s, err = resolveUpstream(ConnectConfig{UpstreamProxy: "none"}, envOf(env), "127.0.0.1:1080", nil)
	if err != nil || !s.Empty() {
		t.Fatalf("--upstream-proxy none: %+v, %v", s, err)
	}
	_, err = resolveUpstream(ConnectConfig{}, envOf(map[string]string{"HTTPS_PROXY": "ftp://x:21"}), "127.0.0.1:1080", nil)
	if err == nil || remote.KindOf(err) != remote.Usage || !strings.Contains(err.Error(), "ftp") || !strings.Contains(err.Error(), "--upstream-proxy") {
		t.Errorf("a bad HTTPS_PROXY: %v", err)
	}
}

// A shell that ran eval "$(tp connect)" has its proxy variables at tp: the next connection
// from it chains to what that session chained to, and never to itself.
func TestUpstreamNeverTp(t *testing.T) {
	shortHome(t)
	atTp := map[string]string{"HTTPS_PROXY": "http://127.0.0.1:1080", "HTTP_PROXY": "http://127.0.0.1:1080", "ALL_PROXY": "socks5h://127.0.0.1:1080", "NO_PROXY": ".corp,localhost"}
	s, err := resolveUpstream(ConnectConfig{}, envOf(atTp), "127.0.0.1:1080", nil)
	if err != nil || !s.Empty() {
		t.Fatalf("variables at tp itself, nothing saved: %+v, %v; want no upstream", s, err)
	}
	saved, err := upstream.FromEnv(envOf(map[string]string{"HTTPS_PROXY": "http://alice:pw@proxy.corp:3128", "NO_PROXY": ".corp"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := saveUpstream("default", "127.0.0.1:1080", saved); err != nil {
		t.Fatal(err)
	}
	s, err = resolveUpstream(ConnectConfig{}, envOf(atTp), "127.0.0.1:1080", nil)
	if err != nil || s.HTTPS == nil || s.HTTPS.String() != "http://alice:pw@proxy.corp:3128" || s.NoProxy != ".corp" {
		t.Fatalf("variables at tp, its upstream saved: %+v, %v", s, err)
	}
	// Another session's port: that session's upstream too.
	s, err = resolveUpstream(ConnectConfig{}, envOf(atTp), "127.0.0.1:1081", nil)
	if err != nil || s.HTTPS == nil || s.HTTPS.Host != "proxy.corp:3128" {
		t.Fatalf("another session's variables: %+v, %v", s, err)
	}
	// A session without an upstream forgets it.
	if err := saveUpstream("default", "127.0.0.1:1080", upstream.Settings{}); err != nil {
		t.Fatal(err)
	}
	if s, _ := resolveUpstream(ConnectConfig{}, envOf(atTp), "127.0.0.1:1080", nil); !s.Empty() {
		t.Errorf("after forgetting: %+v", s)
	}
	// A corporate proxy on loopback (a local agent) on another port is kept.
	local := map[string]string{"HTTPS_PROXY": "http://127.0.0.1:3128"}
	if s, _ := resolveUpstream(ConnectConfig{}, envOf(local), "127.0.0.1:1080", nil); s.HTTPS == nil || s.HTTPS.Host != "127.0.0.1:3128" {
		t.Errorf("a local proxy agent: %+v", s)
	}
}

func TestPlainUpstream(t *testing.T) {
	s, err := upstream.FromEnv(envOf(map[string]string{"HTTP_PROXY": "http://proxy.corp:3128", "NO_PROXY": ".corp"}))
	if err != nil {
		t.Fatal(err)
	}
	names := fakeNames{"web": true}
	router := &localproxy.Router{Names: names, Routes: func() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")} }}
	choose := plainUpstream(router, s)
	for in, want := range map[string]string{
		"http://example.com/":       "http://proxy.corp:3128",
		"http://example.com:8080/x": "http://proxy.corp:3128",
		"http://web/":               "",
		"http://10.96.0.1/":         "",
		"http://wiki.corp/":         "",
		"http://127.0.0.1:9/":       "",
	} {
		req, _ := http.NewRequest(http.MethodGet, in, nil)
		u, err := choose(req)
		got := ""
		if u != nil {
			got = u.String()
		}
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", in, got, err, want)
		}
	}
	if plainUpstream(router, upstream.Settings{}) != nil {
		t.Error("no upstream: want no Proxy function at all")
	}
	socks, _ := upstream.WithFlags(upstream.Settings{}, "socks5h://s:1080", "")
	req, _ := http.NewRequest(http.MethodGet, "http://example.com/", nil)
	if u, err := plainUpstream(router, socks)(req); u != nil || err != nil {
		t.Errorf("a SOCKS upstream: %v, %v; want the dial to go through it instead", u, err)
	}
}

type fakeNames map[string]bool

func (fakeNames) Query(context.Context, string, uint16) ([]byte, error) {
	return nil, &remote.Error{Kind: remote.Failed, Msg: "not asked in this test"}
}

func (f fakeNames) LookupHost(_ context.Context, host string) ([]netip.Addr, error) {
	if f[host] {
		return []netip.Addr{netip.MustParseAddr("10.96.0.10")}, nil
	}
	return nil, &remote.Error{Kind: remote.NoSuchHost, Msg: "no such host " + host}
}

func TestDescribeUpstream(t *testing.T) {
	s, _ := upstream.FromEnv(envOf(map[string]string{"HTTPS_PROXY": "http://alice:pw@proxy.corp:3128", "HTTP_PROXY": "http://alice:pw@proxy.corp:3128", "NO_PROXY": ".corp"}))
	info := upstreamInfo(s)
	got := describeUpstream(info)
	if !strings.HasPrefix(got, "http://alice:xxxxx@proxy.corp:3128 (from ") || !strings.HasSuffix(got, "), except NO_PROXY=.corp") || strings.Contains(got, "pw") {
		t.Errorf("describeUpstream = %q", got)
	}
	two := upstreamInfo(upstream.Settings{HTTP: &url.URL{Scheme: "http", Host: "a:1"}, HTTPS: &url.URL{Scheme: "http", Host: "b:2"}})
	if got := describeUpstream(two); got != "port 80: http://a:1, other ports: http://b:2" {
		t.Errorf("two proxies: %q", got)
	}
	httpsOnly := upstreamInfo(upstream.Settings{HTTPS: &url.URL{Scheme: "http", Host: "b:2"}})
	if got := describeUpstream(httpsOnly); got != "port 80: direct, other ports: http://b:2" {
		t.Errorf("HTTPS_PROXY alone: %q", got)
	}
	if upstreamInfo(upstream.Settings{NoProxy: ".corp"}) != nil {
		t.Error("NO_PROXY alone is no upstream")
	}
}

// The API server is reached through the kubeconfig's proxy, else the upstream one, never
// through tp itself.
func TestAPIProxy(t *testing.T) {
	up, _ := upstream.FromEnv(envOf(map[string]string{"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "intranet.corp"}))
	for host, want := range map[string]string{"https://api.example:6443/api": "http://proxy.corp:3128", "https://intranet.corp:6443/api": ""} {
		cfg := &rest.Config{}
		apiProxy(cfg, up, "127.0.0.1:1080")
		req, _ := http.NewRequest(http.MethodGet, host, nil)
		u, err := cfg.Proxy(req)
		if got := fmt.Sprint(u); err != nil || (want == "" && u != nil) || (want != "" && got != want) {
			t.Errorf("%s: %v, %v; want %q", host, u, err, want)
		}
	}
	cfg := &rest.Config{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: "127.0.0.1:1080"})}
	apiProxy(cfg, up, "127.0.0.1:1080")
	req, _ := http.NewRequest(http.MethodGet, "https://api.example:6443/api", nil)
	if u, err := cfg.Proxy(req); u != nil || err != nil {
		t.Errorf("a kubeconfig proxy that is tp itself: %v, %v; want none", u, err)
	}
}

func TestNoteOtherUpstream(t *testing.T) {
	a := &control.Upstream{HTTPS: "http://a:1", Source: "HTTPS_PROXY"}
	var out strings.Builder
	noteOtherUpstream(&out, a, &control.Upstream{HTTPS: "http://a:1", Source: "HTTPS_PROXY"})
	noteOtherUpstream(&out, nil, nil)
	if out.String() != "" {
		t.Errorf("same upstream: %q", out.String())
	}
	noteOtherUpstream(&out, a, nil)
	if want := "tp: note: the running session chains to port 80: direct, other ports: http://a:1 (from HTTPS_PROXY), not to no upstream proxy: to change it, tp quit, then tp connect again\n"; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}

// Saved upstreams never make tp chain to itself or to another tp, the newest of a port wins,
// and a port something else listens on now is not tp's any more.
func TestUpstreamSavedEdges(t *testing.T) {
	shortHome(t)
	// Session b (1081) chained to a's port; a, restarted on 1080 from b's shell, must not
	// chain to itself.
	viaA, _ := upstream.FromEnv(envOf(map[string]string{"HTTPS_PROXY": "http://127.0.0.1:1080"}))
	if err := saveUpstream("b", "127.0.0.1:1081", viaA); err != nil {
		t.Fatal(err)
	}
	atB := map[string]string{"HTTPS_PROXY": "http://127.0.0.1:1081"}
	if s, err := resolveUpstream(ConnectConfig{}, envOf(atB), "127.0.0.1:1080", nil); err != nil || !s.Empty() {
		t.Errorf("a saved upstream that is tp itself: %+v, %v; want none", s, err)
	}
	// The newest saved upstream of a port wins.
	old, _ := upstream.FromEnv(envOf(map[string]string{"HTTPS_PROXY": "http://old.corp:1"}))
	if err := saveUpstream("a", "127.0.0.1:1082", old); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	newer, _ := upstream.FromEnv(envOf(map[string]string{"HTTPS_PROXY": "http://new.corp:1"}))
	if err := saveUpstream("z", "127.0.0.1:1082", newer); err != nil {
		t.Fatal(err)
	}
	if s, _ := resolveUpstream(ConnectConfig{}, envOf(map[string]string{"HTTPS_PROXY": "http://127.0.0.1:1082"}), "127.0.0.1:1090", nil); s.HTTPS == nil || s.HTTPS.Host != "new.corp:1" {
		t.Errorf("two saved upstreams of one port: %+v, want the newest", s)
	}
	// Something else listens on a saved session's old port now (ssh -D, a proxy agent): it
	// is the user's proxy, not tp.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := saveUpstream("c", ln.Addr().String(), old); err != nil {
		t.Fatal(err)
	}
	agent := map[string]string{"ALL_PROXY": "socks5h://" + ln.Addr().String()}
	if s, _ := resolveUpstream(ConnectConfig{}, envOf(agent), "127.0.0.1:1090", nil); s.All == nil || s.All.Host != ln.Addr().String() {
		t.Errorf("a proxy that listens on a quit session's port: %+v, want it kept", s)
	}
	// A bad variable does not matter when --upstream-proxy replaces it.
	bad := map[string]string{"HTTPS_PROXY": "socks4://x:1080", "NO_PROXY": ".corp"}
	if s, err := resolveUpstream(ConnectConfig{UpstreamProxy: "none"}, envOf(bad), "127.0.0.1:1080", nil); err != nil || !s.Empty() {
		t.Errorf("a bad variable with --upstream-proxy none: %+v, %v", s, err)
	}
	if _, err := resolveUpstream(ConnectConfig{UpstreamProxy: "ftp://x"}, envOf(nil), "127.0.0.1:1080", nil); err == nil || strings.Count(err.Error(), "--upstream-proxy") != 1 {
		t.Errorf("a bad --upstream-proxy: %v", err)
	}
}

// The exported NO_PROXY loses entries over --also-proxy ranges too: those go through tp.
func TestExportsDropNoProxyOverAlsoProxy(t *testing.T) {
	st, _ := json.Marshal(session.Status{ClusterDomain: "cluster.local", ServiceCIDRs: []string{"10.96.0.0/12"}, PodCIDRs: []string{"10.244.0.0/16"}})
	info := control.Info{Listen: "127.0.0.1:1080", Session: st, AlsoProxy: []string{"172.20.0.0/16"}, NoProxy: "172.16.0.0/12,.corp,10.96.0.0/12"}
	for _, v := range exportVars(info) {
		if v.Name == "NO_PROXY" && v.Value != ".corp,localhost,127.0.0.1,::1" {
			t.Errorf("NO_PROXY=%q", v.Value)
		}
	}
}

func TestViaUpstream(t *testing.T) {
	up, _ := upstream.FromEnv(envOf(map[string]string{"HTTPS_PROXY": "http://bob:pw@proxy.corp:3128"}))
	k := &Kube{Cluster: "https://10.250.0.1:6443"}
	err := errors.New(`Get "https://10.250.0.1:6443/api": proxyconnect tcp: dial tcp 10.0.0.1:3128: connect: connection refused`)
	got := viaUpstream(err, k, up)
	if !strings.Contains(got, "upstream proxy http://bob:xxxxx@proxy.corp:3128") || !strings.Contains(got, "reaches 10.250.0.1 directly, add it to NO_PROXY") || strings.Contains(got, "pw@") {
		t.Errorf("viaUpstream = %q", got)
	}
	if viaUpstream(errors.New("forbidden"), k, up) != "" || viaUpstream(err, k, upstream.Settings{}) != "" {
		t.Error("only a failed proxy connect with an upstream is explained")
	}
}
