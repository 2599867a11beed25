package localproxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
)

// fakeResolver answers LookupHost from a table; names not in it are NoSuchHost.
type fakeResolver struct {
	names map[string]error // nil: known
	all   error            // if set, every lookup fails with it
	gate  chan struct{}    // if set, lookups wait for it
	calls atomic.Int32
}

func (r *fakeResolver) LookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	r.calls.Add(1)
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if r.all != nil {
		return nil, r.all
	}
	if err, ok := r.names[host]; ok {
		if err != nil {
			return nil, err
		}
		return []netip.Addr{netip.MustParseAddr("10.96.0.5")}, nil
	}
	return nil, kindErr(remote.NoSuchHost, `no service "`+strings.Split(host, ".")[0]+`" in namespace "default"`)
}

func (r *fakeResolver) Query(context.Context, string, uint16) ([]byte, error) {
	return nil, errors.New("not used")
}

// markConn says which dialer made it.
type markConn struct {
	net.Conn
	via string
}

func markDialer(via string, err error, calls *[]string, mu *sync.Mutex) remote.Dialer {
	return remote.DialFunc(func(_ context.Context, network, address string) (net.Conn, error) {
		mu.Lock()
		*calls = append(*calls, via+" "+network+" "+address)
		mu.Unlock()
		if err != nil {
			return nil, err
		}
		return markConn{via: via}, nil
	})
}

func dnsNotFound(name string) error {
	return &net.OpError{Op: "dial", Net: "tcp",
		Err: &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}}
}

func TestRouter(t *testing.T) {
	routes := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.244.0.0/16"),
		netip.MustParsePrefix("fd00:10:96::/112")}
	never := []netip.Prefix{netip.MustParsePrefix("10.96.99.0/24")}
	clusterNames := map[string]error{
		"web-app": nil, "web-app.other-ns": nil, "x.ns.svc": nil, "db.data.svc.cluster.local": nil,
		"pod-0.headless.ns": nil,
		"flaky":             kindErr(remote.TunnelDown, "port-forward dropped"),
		"slow":              kindErr(remote.Timeout, "cluster DNS did not answer"),
	}
	refused := kindErr(remote.Refused, "nothing listens")

	tests := []struct {
		name      string
		address   string
		directErr error
		tunnelErr error
		resolver  *fakeResolver // default: clusterNames
		wantVia   string        // "tunnel" or "direct"; "" means an error
		wantCalls []string
		wantKind  remote.Kind
		wantMsg   string // substring of the error
	}{
		{name: "cluster IP", address: "10.96.0.10:53", wantVia: "tunnel",
			wantCalls: []string{"tunnel tcp 10.96.0.10:53"}},
		{name: "pod IP", address: "10.244.1.7:8080", wantVia: "tunnel",
			wantCalls: []string{"tunnel tcp 10.244.1.7:8080"}},
		{name: "IPv6 cluster IP", address: "[fd00:10:96::a]:443", wantVia: "tunnel",
			wantCalls: []string{"tunnel tcp [fd00:10:96::a]:443"}},
		{name: "IPv4-mapped cluster IP", address: "[::ffff:10.96.0.10]:53", wantVia: "tunnel",
			wantCalls: []string{"tunnel tcp [::ffff:10.96.0.10]:53"}},
		{name: "never-proxy wins over routes", address: "10.96.99.1:80", wantVia: "direct",
			wantCalls: []string{"direct tcp 10.96.99.1:80"}},
		{name: "public IP", address: "1.1.1.1:443", wantVia: "direct",
			wantCalls: []string{"direct tcp 1.1.1.1:443"}},
		{name: "zoned link-local", address: "[fe80::1%eth0]:80", wantVia: "direct",
			wantCalls: []string{"direct tcp [fe80::1%eth0]:80"}},
		{name: "tunnel error passes through", address: "10.96.0.11:80", tunnelErr: refused,
			wantKind: remote.Refused, wantMsg: "nothing listens", wantCalls: []string{"tunnel tcp 10.96.0.11:80"}},
		{name: "localhost", address: "localhost:8080", wantVia: "direct",
			wantCalls: []string{"direct tcp localhost:8080"}},
		{name: "x.localhost", address: "app.LOCALHOST.:8080", wantVia: "direct",
			wantCalls: []string{"direct tcp app.LOCALHOST.:8080"}},
		{name: "service in session namespace", address: "web-app:80", wantVia: "tunnel",
			wantCalls: []string{"tunnel tcp web-app:80"}},
		{name: "service in other namespace", address: "web-app.other-ns:80", wantVia: "tunnel",
			wantCalls: []string{"tunnel tcp web-app.other-ns:80"}},
		{name: "svc name", address: "x.ns.svc:80", wantVia: "tunnel",
			wantCalls: []string{"tunnel tcp x.ns.svc:80"}},
		{name: "cluster.local", address: "db.data.svc.cluster.local:5432", wantVia: "tunnel",
			wantCalls: []string{"tunnel tcp db.data.svc.cluster.local:5432"}},
		{name: "headless pod", address: "pod-0.headless.ns:9042", wantVia: "tunnel",
			wantCalls: []string{"tunnel tcp pod-0.headless.ns:9042"}},
		{name: "udp name", address: "web-app:53", wantVia: "tunnel",
			wantCalls: []string{"tunnel udp web-app:53"}},
		{name: "public name", address: "example.com:443", wantVia: "direct",
			wantCalls: []string{"direct tcp example.com:443"}},
		{name: "typo of a service: cluster's answer", address: "web-ap:80", directErr: dnsNotFound("web-ap"),
			wantKind: remote.NoSuchHost, wantMsg: `no service "web-ap" in namespace "default"`,
			wantCalls: []string{"direct tcp web-ap:80"}},
		{name: "name.namespace typo: cluster's answer", address: "web-ap.other-ns:80",
			directErr: dnsNotFound("web-ap.other-ns"),
			wantKind:  remote.NoSuchHost, wantMsg: `no service "web-ap" in namespace "default"`,
			wantCalls: []string{"direct tcp web-ap.other-ns:80"}},
		{name: "any local DNS failure counts", address: "web-ap:80",
			directErr: &net.DNSError{Err: "server misbehaving", Name: "web-ap", IsTemporary: true},
			wantKind:  remote.NoSuchHost, wantMsg: `no service "web-ap"`,
			wantCalls: []string{"direct tcp web-ap:80"}},
		{name: "three labels: local answer", address: "www.example.invalid:80",
			directErr: dnsNotFound("www.example.invalid"), wantKind: remote.Failed, wantMsg: "no such host",
			wantCalls: []string{"direct tcp www.example.invalid:80"}},
		{name: "direct refused is not a DNS failure", address: "web-ap:80", directErr: refused,
			wantKind: remote.Refused, wantCalls: []string{"direct tcp web-ap:80"}},
		{name: "tunnel down: no direct fallback", address: "flaky:80",
			wantKind: remote.TunnelDown, wantMsg: "port-forward dropped"},
		{name: "lookup timeout: no direct fallback", address: "slow:80",
			wantKind: remote.Timeout, wantMsg: `looking up "slow"`},
		{name: "whole tunnel down", address: "github.com:443",
			resolver: &fakeResolver{all: kindErr(remote.TunnelDown, "reconnecting")},
			wantKind: remote.TunnelDown, wantMsg: "reconnecting"},
		{name: "bad address", address: "no-port", wantKind: remote.Failed, wantMsg: "bad address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var calls []string
			res := tt.resolver
			if res == nil {
				res = &fakeResolver{names: clusterNames}
			}
			r := &Router{
				Tunnel: markDialer("tunnel", tt.tunnelErr, &calls, &mu),
				Direct: markDialer("direct", tt.directErr, &calls, &mu),
				Names:  res,
				Routes: func() []netip.Prefix { return routes },
				Never:  never,
			}
			network := "tcp"
			if strings.HasPrefix(tt.name, "udp") {
				network = "udp"
			}
			c, err := r.DialContext(context.Background(), network, tt.address)
			switch {
			case tt.wantVia != "":
				if err != nil {
					t.Fatalf("err %v, want a conn via %s", err, tt.wantVia)
				}
				if via := c.(markConn).via; via != tt.wantVia {
					t.Fatalf("via %s, want %s", via, tt.wantVia)
				}
			default:
				if err == nil {
					t.Fatalf("got a conn via %s, want an error", c.(markConn).via)
				}
				if k := remote.KindOf(err); k != tt.wantKind {
					t.Errorf("kind %v, want %v (err %v)", k, tt.wantKind, err)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("err %q does not contain %q", err, tt.wantMsg)
				}
			}
			if !slices.Equal(calls, tt.wantCalls) {
				t.Errorf("dials %q, want %q", calls, tt.wantCalls)
			}
		})
	}
}

func TestRouterIPsAndLocalhostSkipLookup(t *testing.T) {
	res := &fakeResolver{}
	r := &Router{Tunnel: failWith(errors.New("t")), Direct: failWith(errors.New("d")), Names: res}
	for _, a := range []string{"10.0.0.1:80", "[::1]:80", "localhost:80", "a.b.localhost:80"} {
		_, _ = r.DialContext(context.Background(), "tcp", a)
	}
	if n := res.calls.Load(); n != 0 {
		t.Fatalf("%d cluster lookups for IPs and localhost", n)
	}
}

func TestRouterRoutesReadAtDialTime(t *testing.T) {
	var routes atomic.Pointer[[]netip.Prefix]
	routes.Store(&[]netip.Prefix{})
	var mu sync.Mutex
	var calls []string
	r := &Router{
		Tunnel: markDialer("tunnel", nil, &calls, &mu),
		Direct: markDialer("direct", nil, &calls, &mu),
		Routes: func() []netip.Prefix { return *routes.Load() },
	}
	_, _ = r.DialContext(context.Background(), "tcp", "10.1.0.1:80")
	routes.Store(&[]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")})
	_, _ = r.DialContext(context.Background(), "tcp", "10.1.0.1:80")
	if want := []string{"direct tcp 10.1.0.1:80", "tunnel tcp 10.1.0.1:80"}; !slices.Equal(calls, want) {
		t.Fatalf("dials %q, want %q", calls, want)
	}
}

func TestRouterCache(t *testing.T) {
	now := time.Unix(1000, 0)
	var clockMu sync.Mutex
	advance := func(d time.Duration) {
		clockMu.Lock()
		now = now.Add(d)
		clockMu.Unlock()
	}
	newRouter := func(res *fakeResolver) *Router {
		return &Router{
			Tunnel: remote.DialFunc(func(context.Context, string, string) (net.Conn, error) { return markConn{via: "tunnel"}, nil }),
			Direct: remote.DialFunc(func(context.Context, string, string) (net.Conn, error) { return markConn{via: "direct"}, nil }),
			Names:  res,
			now: func() time.Time {
				clockMu.Lock()
				defer clockMu.Unlock()
				return now
			},
		}
	}
	dial := func(r *Router, addr string) string {
		c, err := r.DialContext(context.Background(), "tcp", addr)
		if err != nil {
			return "error: " + err.Error()
		}
		return c.(markConn).via
	}

	t.Run("positive and negative answers are reused within the TTL", func(t *testing.T) {
		res := &fakeResolver{names: map[string]error{"web-app": nil}}
		r := newRouter(res)
		for range 5 {
			if got := dial(r, "web-app:80"); got != "tunnel" {
				t.Fatal(got)
			}
			if got := dial(r, "example.com:80"); got != "direct" {
				t.Fatal(got)
			}
		}
		if n := res.calls.Load(); n != 2 {
			t.Fatalf("%d lookups, want 2", n)
		}
		_ = dial(r, "WEB-APP:80") // names are case-insensitive
		if n := res.calls.Load(); n != 2 {
			t.Fatalf("%d lookups after a case change, want 2", n)
		}
		advance(DefaultLookupCacheTTL)
		_ = dial(r, "web-app:80")
		if n := res.calls.Load(); n != 3 {
			t.Fatalf("%d lookups after the TTL, want 3", n)
		}
	})

	t.Run("a burst costs one lookup", func(t *testing.T) {
		res := &fakeResolver{names: map[string]error{"web-app": nil}, gate: make(chan struct{})}
		r := newRouter(res)
		var wg sync.WaitGroup
		results := make(chan string, 50)
		for range 50 {
			wg.Go(func() { results <- dial(r, "web-app:80") })
		}
		eventually(t, "the lookup to start", func() bool { return res.calls.Load() == 1 })
		time.Sleep(50 * time.Millisecond) // let the rest pile up behind it
		close(res.gate)
		wg.Wait()
		close(results)
		for got := range results {
			if got != "tunnel" {
				t.Fatal(got)
			}
		}
		if n := res.calls.Load(); n != 1 {
			t.Fatalf("%d lookups for a burst, want 1", n)
		}
	})

	t.Run("a caller giving up does not fail the others", func(t *testing.T) {
		res := &fakeResolver{names: map[string]error{"web-app": nil}, gate: make(chan struct{})}
		r := newRouter(res)
		ctx, cancel := context.WithCancel(context.Background())
		first := make(chan error, 1)
		go func() {
			_, err := r.DialContext(ctx, "tcp", "web-app:80")
			first <- err
		}()
		eventually(t, "the lookup to start", func() bool { return res.calls.Load() == 1 })
		second := make(chan string, 1)
		go func() { second <- dial(r, "web-app:80") }()
		cancel()
		if err := <-first; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled caller got %v", err)
		}
		close(res.gate)
		if got := <-second; got != "tunnel" {
			t.Fatalf("second caller got %s", got)
		}
	})

	t.Run("failures are not cached", func(t *testing.T) {
		res := &fakeResolver{all: kindErr(remote.TunnelDown, "down")}
		r := newRouter(res)
		_ = dial(r, "web-app:80")
		_ = dial(r, "web-app:80")
		if n := res.calls.Load(); n != 2 {
			t.Fatalf("%d lookups, want 2", n)
		}
	})

	t.Run("disabled cache", func(t *testing.T) {
		res := &fakeResolver{names: map[string]error{"web-app": nil}}
		r := newRouter(res)
		r.CacheTTL = -1
		_ = dial(r, "web-app:80")
		_ = dial(r, "web-app:80")
		if n := res.calls.Load(); n != 2 {
			t.Fatalf("%d lookups, want 2", n)
		}
	})

	t.Run("bounded", func(t *testing.T) {
		res := &fakeResolver{}
		r := newRouter(res)
		r.CacheSize = 10
		for i := range 100 {
			_ = dial(r, "name-"+string(rune('a'+i%26))+string(rune('a'+i/26))+":80")
		}
		r.mu.Lock()
		n := len(r.cache)
		r.mu.Unlock()
		if n > 10 {
			t.Fatalf("cache holds %d names, bound is 10", n)
		}
	})
}

// An upstream proxy is dialed directly even when the cluster has a service of its name or
// its address is in a cluster range: the cluster must never get its credentials, and
// asking the cluster about it would cost a lookup per request.
func TestRouterBypass(t *testing.T) {
	var calls []string
	var mu sync.Mutex
	res := &fakeResolver{names: map[string]error{"proxy": nil}}
	r := &Router{
		Tunnel: markDialer("tunnel", nil, &calls, &mu), Direct: markDialer("direct", nil, &calls, &mu), Names: res,
		Routes: func() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")} },
		Bypass: func(address string) bool { return address == "proxy:3128" || address == "10.96.0.9:3128" },
	}
	for _, a := range []string{"proxy:3128", "10.96.0.9:3128", "proxy:80"} {
		if _, err := r.DialContext(t.Context(), "tcp", a); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"direct tcp proxy:3128", "direct tcp 10.96.0.9:3128", "tunnel tcp proxy:80"}; !slices.Equal(calls, want) {
		t.Errorf("dials %q, want %q", calls, want)
	}
	if n := res.calls.Load(); n != 1 {
		t.Errorf("%d cluster lookups, want 1 (for proxy:80 only)", n)
	}
}
