package dnsshim

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tpdev/tp/remote"
)

const canonical = "web-app.default.svc.cluster.local."

// fakeCluster answers as the tunnel's resolver would for a session in namespace default.
type fakeCluster struct {
	down    atomic.Bool
	entered chan struct{} // if set, receives when a "slow" query starts

	mu    sync.Mutex
	asked []string
}

func (f *fakeCluster) LookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	return nil, errors.New("fake cluster: LookupHost is not used by the shim")
}

func (f *fakeCluster) Query(ctx context.Context, name string, qtype uint16) ([]byte, error) {
	f.mu.Lock()
	f.asked = append(f.asked, name)
	f.mu.Unlock()
	if f.down.Load() {
		return nil, remote.Errorf(remote.TunnelDown, "tunnel down: reconnecting")
	}
	owner := dns.Fqdn(name)
	m := new(dns.Msg)
	m.SetQuestion(owner, qtype)
	m.Response = true
	soa := mustRR("cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30")
	switch lname := strings.ToLower(name); {
	case lname == "web-app" && qtype == dns.TypeA:
		m.Answer = []dns.RR{
			mustRR(owner + " 30 IN CNAME " + canonical),
			mustRR(canonical + " 30 IN A 10.96.0.42"),
		}
	case lname == "web-app" && qtype == dns.TypeAAAA:
		m.Answer = []dns.RR{mustRR(owner + " 30 IN CNAME " + canonical)}
		m.Ns = []dns.RR{soa}
	case lname == "web-app": // NODATA for any other type
		m.Ns = []dns.RR{soa}
	case lname == "_http._tcp.web-app" && qtype == dns.TypeSRV:
		m.Answer = []dns.RR{mustRR(owner + " 30 IN SRV 0 100 8080 " + canonical)}
		m.Extra = []dns.RR{mustRR(canonical + " 30 IN A 10.96.0.42")}
	case lname == "42.0.96.10.in-addr.arpa" && qtype == dns.TypePTR:
		m.Answer = []dns.RR{mustRR(owner + " 30 IN PTR " + canonical)}
	case lname == "headless" && qtype == dns.TypeA:
		// Enough pods that the answer outgrows any UDP buffer the shim allows.
		for i := range 200 {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
				A:   net.IPv4(10, 244, byte(i/250), byte(1+i%250)),
			})
		}
	case lname == "slow":
		if f.entered != nil {
			f.entered <- struct{}{}
		}
		<-ctx.Done()
		return nil, &remote.Error{Kind: remote.Timeout, Err: ctx.Err()}
	case lname == "broken":
		return []byte{1, 2, 3}, nil
	case strings.HasPrefix(lname, "wire-nx"):
		// The other way to say "no such name": a wire NXDOMAIN instead of an error.
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa}
	default:
		return nil, remote.Errorf(remote.NoSuchHost, "no service %q in namespace %q", name, "default")
	}
	return m.Pack()
}

func (f *fakeCluster) wasAsked(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.asked {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// fakeUpstream plays the host's resolver.
type fakeUpstream struct {
	calls atomic.Int64
	err   error
}

func (f *fakeUpstream) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	f.calls.Add(1)
	if f.err != nil {
		return nil, f.err
	}
	q := new(dns.Msg)
	if err := q.Unpack(query); err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	name := strings.ToLower(q.Question[0].Name)
	switch {
	case name == "example.com." && q.Question[0].Qtype == dns.TypeA:
		m.Answer = []dns.RR{mustRR("example.com. 3600 IN A 93.184.215.14")}
	case name == "1.1.168.192.in-addr.arpa." && q.Question[0].Qtype == dns.TypePTR:
		m.Answer = []dns.RR{mustRR("1.1.168.192.in-addr.arpa. 3600 IN PTR router.lan.")}
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{mustRR(". 86400 IN SOA a.root-servers.net. nstld.verisign-grs.com. 2026010100 1800 900 604800 86400")}
	}
	return m.Pack()
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

func clusterRoutes() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.244.0.0/16")}
}

// shim is a running Server with its two sockets.
type shim struct {
	*Server
	udp, tcp string
}

// start serves cfg on loopback UDP and TCP until the test ends, then checks that both serve
// loops return nil promptly.
func start(t *testing.T, cfg Config) *shim {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log == nil {
		cfg.Log = testLogger(t)
	}
	s := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { errs <- s.ServeUDP(ctx, pc) }()
	go func() { errs <- s.ServeTCP(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			select {
			case err := <-errs:
				if err != nil {
					t.Errorf("serve returned %v after cancel, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("serve did not return after cancel")
				return
			}
		}
	})
	return &shim{Server: s, udp: pc.LocalAddr().String(), tcp: ln.Addr().String()}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func ask(t *testing.T, network, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	r, err := tryAsk(network, addr, m, 2*time.Second)
	if err != nil {
		t.Fatalf("%s query %s: %v", network, m.Question[0].String(), err)
	}
	return r
}

func tryAsk(network, addr string, m *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: timeout}
	r, _, err := c.Exchange(m, addr)
	return r, err
}
