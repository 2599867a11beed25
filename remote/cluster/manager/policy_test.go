package manager

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

func TestPolicyDialsTheClusterAndWhatTheAdminAllowedOnly(t *testing.T) {
	nodeOnly := []netip.Prefix{netip.MustParsePrefix("10.250.0.1/32")}
	everything := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	for _, c := range []struct {
		addr, byName string
		allowed      []netip.Prefix
		want         string // "" allowed, else a piece of the refusal
	}{
		{addr: "10.96.0.10", want: ""},                                   // a ClusterIP
		{addr: "10.244.0.7", want: ""},                                   // a pod
		{addr: "::ffff:10.96.0.10", want: ""},                            // the same, IPv4-mapped
		{addr: "10.250.0.1", want: "outside what tp's manager may dial"}, // the node: kubelet
		{addr: "10.250.0.1", allowed: nodeOnly, want: ""},
		{addr: "10.250.0.2", allowed: nodeOnly, want: "outside"},
		{addr: "203.0.113.5", byName: "db.prod", want: ""}, // an ExternalName target the cluster's DNS answered
		{addr: "169.254.169.254", want: "link-local"},
		{addr: "169.254.169.254", allowed: everything, want: "link-local"},
		{addr: "169.254.169.254", byName: "metadata.default", want: "link-local"},
		{addr: "::ffff:169.254.169.254", allowed: everything, want: "link-local"},
		{addr: "fe80::1", allowed: everything, want: "link-local"},
		{addr: "64:ff9b::a9fe:a9fe", allowed: everything, want: "link-local"}, // 169.254.169.254 through NAT64
		{addr: "64:ff9b::a60:1", allowed: everything, want: ""},
		{addr: "127.0.0.1", allowed: everything, want: "loopback"},
		{addr: "127.1.2.3", byName: "web-app", want: "loopback"},
		{addr: "::1", allowed: everything, want: "loopback"},
		{addr: "0.0.0.0", allowed: everything, want: "unspecified"},
		{addr: "0.1.2.3", allowed: everything, want: "unspecified"},
		{addr: "::", allowed: everything, want: "unspecified"},
		{addr: "8.8.8.8", allowed: everything, want: ""},
	} {
		p := &Policy{Ranges: fixedRanges{}, Allowed: c.allowed}
		err := p.Check(netip.MustParseAddr(c.addr), "80", c.byName)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s (name %q, allowed %v): refused: %v", c.addr, c.byName, c.allowed, err)
		case c.want != "" && err == nil:
			t.Errorf("%s (name %q, allowed %v): allowed, want refused (%s)", c.addr, c.byName, c.allowed, c.want)
		case c.want != "" && (!strings.Contains(err.Error(), c.want) || !errors.Is(err, remote.ErrForbidden) ||
			!strings.Contains(err.Error(), "tp's dial policy") || !strings.Contains(err.Error(), "tp install --allow-cidr")):
			t.Errorf("%s (name %q): refusal %q (kind %s) does not say %q, name the policy and the way out", c.addr, c.byName, err, remote.KindOf(err), c.want)
		}
	}
}

func TestPolicyRefusalNamesWhatWasAsked(t *testing.T) {
	p := &Policy{}
	err := p.Check(netip.MustParseAddr("169.254.169.254"), "80", "")
	if err == nil || !strings.HasPrefix(err.Error(), "169.254.169.254:80 is link-local") {
		t.Fatalf("literal: %v", err)
	}
	err = p.Check(netip.MustParseAddr("fe80::1"), "443", "metadata")
	if err == nil || !strings.HasPrefix(err.Error(), "metadata:443 ([fe80::1]:443) is link-local") {
		t.Fatalf("name: %v", err)
	}
}

// A refused dial is answered with the policy's error and no packet sent, over TCP and UDP,
// for literals and for names the cluster resolves to a never-dialed address.
func TestTunnelRefusesWhatThePolicyForbidsWithoutDialing(t *testing.T) {
	var dials atomic.Int64
	names := &Names{Domain: "cluster.local", Exchange: fakeDNS(map[string]string{
		"metadata.default.svc.cluster.local.": "169.254.169.254",
		"web-app.default.svc.cluster.local.":  "10.96.0.7",
	})}
	client := serve(t, Config{Names: names, Ranges: fixedRanges{}, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		dials.Add(1)
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}})
	for _, c := range []struct{ network, address, says string }{
		{"tcp", "169.254.169.254:80", "169.254.169.254:80 is link-local"},
		{"udp", "169.254.169.254:53", "169.254.169.254:53 is link-local"},
		{"tcp", "127.0.0.1:8081", "loopback"},
		{"tcp", "10.250.0.1:10250", "10.250.0.1:10250 is outside what tp's manager may dial"},
		{"udp", "10.250.0.1:53", "outside"},
		{"tcp", "metadata:80", "metadata:80 (169.254.169.254:80) is link-local"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		stream, err := client.Tunnel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = tunnel.Open(ctx, stream, cancel, &tunnelpb.Dial{Network: c.network, Address: c.address, Namespace: "default"})
		cancel()
		if !errors.Is(err, remote.ErrForbidden) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s %s: %v (kind %s), want Forbidden saying %q", c.network, c.address, err, remote.KindOf(err), c.says)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s %s: refused after %v", c.network, c.address, took)
		}
	}
	if n := dials.Load(); n != 0 {
		t.Fatalf("%d forbidden destinations were dialed", n)
	}
	// An allowed destination is dialed (and here refused by the fake network).
	if _, err := open(t, client, "web-app:80"); !errors.Is(err, remote.ErrRefused) || dials.Load() != 1 {
		t.Fatalf("web-app: %v after %d dials", err, dials.Load())
	}
}
