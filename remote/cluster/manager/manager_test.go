package manager

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/managerspec"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

func TestCandidatesFollowAPodsSearchPathInsideTheDomainOnly(t *testing.T) {
	n := &Names{Domain: "cluster.local"}
	for name, want := range map[string][]string{
		"web-app":                             {"web-app.default.svc.cluster.local."},
		"web-app.other-ns":                    {"web-app.other-ns.default.svc.cluster.local.", "web-app.other-ns.svc.cluster.local."},
		"web-app.other-ns.svc":                {"web-app.other-ns.svc.default.svc.cluster.local.", "web-app.other-ns.svc.svc.cluster.local.", "web-app.other-ns.svc.cluster.local."},
		"pod-0.headless.ns":                   {"pod-0.headless.ns.default.svc.cluster.local.", "pod-0.headless.ns.svc.cluster.local."},
		"web-app.other-ns.svc.cluster.local":  {"web-app.other-ns.svc.cluster.local."},
		"web-app.other-ns.svc.cluster.local.": {"web-app.other-ns.svc.cluster.local."},
		"Web-App":                             {"web-app.default.svc.cluster.local."},
		"42.0.96.10.in-addr.arpa.":            {"42.0.96.10.in-addr.arpa."},
		"example.com.":                        nil,
		"":                                    nil,
	} {
		if got := n.Candidates(name, "default"); !slices.Equal(got, want) {
			t.Errorf("Candidates(%q) = %q, want %q", name, got, want)
		}
	}
	// A public name with many labels is never tried under svc.DOMAIN.
	if got := n.Candidates("a.b.c.d.example.com", "default"); len(got) != 1 {
		t.Errorf("public name: %q", got)
	}
}

// fakeDNS answers from a table of A records, NXDOMAIN for the rest, NODATA for AAAA of known names.
func fakeDNS(records map[string]string) func(context.Context, *dns.Msg) (*dns.Msg, error) {
	return func(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
		r := new(dns.Msg)
		r.SetReply(q)
		name := q.Question[0].Name
		ip, ok := records[name]
		if !ok {
			r.Rcode = dns.RcodeNameError
			return r, nil
		}
		if q.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(name + " 5 IN A " + ip)
			r.Answer = append(r.Answer, rr)
		}
		return r, nil
	}
}

func TestQueryAnswersForTheNameAsAsked(t *testing.T) {
	n := &Names{Domain: "cluster.local", Exchange: fakeDNS(map[string]string{"web-app.other-ns.svc.cluster.local.": "10.96.0.42"})}
	fqdn, resp, err := n.Query(context.Background(), "web-app.other-ns", "default", dns.TypeA)
	if err != nil || fqdn != "web-app.other-ns.svc.cluster.local." {
		t.Fatalf("query: %q %v", fqdn, err)
	}
	if resp.Question[0].Name != "web-app.other-ns." || len(resp.Answer) != 2 {
		t.Fatalf("response: %v", resp)
	}
	if c, ok := resp.Answer[0].(*dns.CNAME); !ok || c.Target != fqdn {
		t.Fatalf("first answer %v, want a CNAME to %s", resp.Answer[0], fqdn)
	}
	// NODATA stays NODATA: the name exists, it has no AAAA.
	if fqdn, resp, _ := n.Query(context.Background(), "web-app.other-ns", "default", dns.TypeAAAA); fqdn == "" || resp.Rcode != dns.RcodeSuccess {
		t.Fatalf("AAAA: %q %v", fqdn, resp)
	}
	if fqdn, resp, _ := n.Query(context.Background(), "web-ap", "default", dns.TypeA); fqdn != "" || resp.Rcode != dns.RcodeNameError {
		t.Fatalf("unknown: %q %v", fqdn, resp)
	}
	_, addrs, err := n.LookupHost(context.Background(), "web-ap", "default")
	if !errors.Is(err, remote.ErrNoSuchHost) || err.Error() != `no service "web-ap" in namespace "default"` || addrs != nil {
		t.Fatalf("lookup unknown: %v", err)
	}
}

// serve runs a Server over an in-memory gRPC connection.
func serve(t *testing.T, cfg Config) tunnelpb.ManagerClient {
	t.Helper()
	return tunnelpb.NewManagerClient(inMemory(t, func(gs *grpc.Server) { tunnelpb.RegisterManagerServer(gs, New(cfg)) }))
}

// inMemory serves what register registers over an in-memory gRPC connection, until the
// test ends, and returns a client connection to it.
func inMemory(t *testing.T, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	register(gs)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func open(t *testing.T, client tunnelpb.ManagerClient, address string) (*tunnel.Conn, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.Tunnel(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return tunnel.Open(ctx, stream, cancel, &tunnelpb.Dial{Network: "tcp", Address: address, Namespace: "default"})
}

func TestTunnelDialsByClusterNameAndReportsFailures(t *testing.T) {
	port := echoServer(t).Addr().(*net.TCPAddr).Port
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	// The policy never dials loopback: the service has a cluster address, and the dials to
	// it land on this machine's loopback.
	names := &Names{Domain: "cluster.local", Exchange: fakeDNS(map[string]string{"web-app.default.svc.cluster.local.": "10.96.0.7"})}
	client := serve(t, Config{Names: names, Dial: onLoopback})

	c, err := open(t, client, net.JoinHostPort("web-app", itoa(port)))
	if err != nil {
		t.Fatalf("dial web-app: %v", err)
	}
	_, _ = c.Write([]byte("hello through the manager"))
	_ = c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello through the manager" {
		t.Fatalf("echo: %q %v", got, err)
	}
	c.Close()

	if _, err := open(t, client, "web-ap:80"); !errors.Is(err, remote.ErrNoSuchHost) || !strings.Contains(err.Error(), `no service "web-ap" in namespace "default"`) {
		t.Fatalf("unknown service: %v", err)
	}
	if _, err := open(t, client, net.JoinHostPort("web-app", itoa(closedPort))); !errors.Is(err, remote.ErrRefused) || !strings.Contains(err.Error(), "web-app:"+itoa(closedPort)) {
		t.Fatalf("closed port: %v", err)
	}
}

// onLoopback dials the port of address on 127.0.0.1, standing in for the cluster.
func onLoopback(ctx context.Context, network, address string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
}

func TestInfoReportsRanges(t *testing.T) {
	client := serve(t, Config{Version: "v9", Names: &Names{Domain: "cluster.local"}, Ranges: fixedRanges{},
		Allowed: []netip.Prefix{netip.MustParsePrefix("10.250.0.1/32")}})
	info, err := client.Info(context.Background(), &tunnelpb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetVersion() != "v9" || !slices.Equal(info.GetServiceCidrs(), []string{"10.96.0.0/16"}) || !slices.Equal(info.GetPodCidrs(), []string{"10.244.0.0/24"}) ||
		!slices.Equal(info.GetAllowedCidrs(), []string{"10.250.0.1/32"}) {
		t.Fatalf("info: %v", info)
	}
}

type fixedRanges struct{}

func (fixedRanges) Ranges() ([]netip.Prefix, []netip.Prefix) {
	return []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}
}

func TestDedupeAndCover(t *testing.T) {
	in := []netip.Prefix{
		netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.0.0/16"),
		cover(netip.MustParseAddr("10.96.3.4")), netip.MustParsePrefix("10.244.0.0/16"),
	}
	got := managerspec.Dedupe(in)
	want := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("10.244.0.0/16")}
	if !slices.Equal(got, want) {
		t.Fatalf("dedupe: %v, want %v", got, want)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestLookupHostIsCachedBriefly(t *testing.T) {
	var queries int
	exchange := fakeDNS(map[string]string{"web-app.default.svc.cluster.local.": "10.96.0.42"})
	n := &Names{Domain: "cluster.local", Exchange: func(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
		queries++
		return exchange(ctx, m)
	}}
	for range 3 {
		if _, addrs, err := n.LookupHost(context.Background(), "web-app", "default"); err != nil || len(addrs) != 1 {
			t.Fatalf("lookup: %v %v", addrs, err)
		}
		if _, _, err := n.LookupHost(context.Background(), "web-ap", "default"); !errors.Is(err, remote.ErrNoSuchHost) {
			t.Fatalf("lookup of an unknown name: %v", err)
		}
	}
	if queries != 2+1 { // A and AAAA for the known name, one NXDOMAIN for the unknown
		t.Fatalf("%d DNS queries for three rounds of two lookups, want 3: answers must be cached", queries)
	}
	if _, _, err := n.LookupHost(context.Background(), "web-app", "other"); err == nil {
		t.Fatal("a name in another namespace must not come from the cache")
	}
}
