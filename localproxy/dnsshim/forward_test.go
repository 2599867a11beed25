package dnsshim

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// nameserver is a fake DNS server on one loopback port, UDP and TCP.
type nameserver struct {
	addr     string
	udp, tcp atomic.Int64 // queries seen per transport
	handle   func(tcp bool, q *dns.Msg) *dns.Msg
}

func startNameserver(t *testing.T, handle func(tcp bool, q *dns.Msg) *dns.Msg) *nameserver {
	t.Helper()
	ns := &nameserver{handle: handle}
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	// TCP on the UDP socket's port; another process may hold it, so try a few.
	for range 10 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	ns.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		tcp := w.RemoteAddr().Network() == "tcp"
		if tcp {
			ns.tcp.Add(1)
		} else {
			ns.udp.Add(1)
		}
		if r := ns.handle(tcp, q); r != nil {
			w.WriteMsg(r)
		}
	})
	servers := []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}}
	for _, srv := range servers {
		go srv.ActivateAndServe()
	}
	t.Cleanup(func() {
		for _, srv := range servers {
			srv.Shutdown()
		}
	})
	return ns
}

func answerA(q *dns.Msg, ips ...string) *dns.Msg {
	r := new(dns.Msg)
	r.SetReply(q)
	for _, ip := range ips {
		r.Answer = append(r.Answer, mustRR(q.Question[0].Name+" 60 IN A "+ip))
	}
	return r
}

func rcodeReply(q *dns.Msg, rcode int) *dns.Msg {
	r := new(dns.Msg)
	r.SetRcode(q, rcode)
	return r
}

func forwardA(t *testing.T, f *Forwarder, name string) (*dns.Msg, error) {
	t.Helper()
	wire, err := query(name, dns.TypeA).Pack()
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.Exchange(context.Background(), wire)
	if err != nil {
		return nil, err
	}
	r := new(dns.Msg)
	if err := r.Unpack(out); err != nil {
		t.Fatal(err)
	}
	return r, nil
}

func TestNewForwarderAddresses(t *testing.T) {
	f, err := NewForwarder([]string{"10.0.0.2", "10.0.0.3:5353", "::1", "[::1]:5353", "fe80::1%eth0"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.2:53", "10.0.0.3:5353", "[::1]:53", "[::1]:5353", "[fe80::1%eth0]:53"}
	if got := f.Servers(); !slices.Equal(got, want) {
		t.Errorf("servers = %q, want %q", got, want)
	}
	for _, bad := range [][]string{nil, {"dns.google"}, {"10.0.0.2", ""}, {"10.0.0.2:dns"}} {
		if _, err := NewForwarder(bad, 0); err == nil {
			t.Errorf("NewForwarder(%q) accepted", bad)
		}
	}
}

func TestForwarderRetriesTruncatedOverTCP(t *testing.T) {
	ns := startNameserver(t, func(tcp bool, q *dns.Msg) *dns.Msg {
		if !tcp {
			r := answerA(q)
			r.Truncated = true
			return r
		}
		return answerA(q, "192.0.2.1", "192.0.2.2", "192.0.2.3")
	})
	f, err := NewForwarder([]string{ns.addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r, err := forwardA(t, f, "big.example.")
	if err != nil {
		t.Fatal(err)
	}
	if r.Truncated || len(r.Answer) != 3 {
		t.Errorf("TC=%v with %d answers, want the full TCP answer", r.Truncated, len(r.Answer))
	}
	if ns.udp.Load() != 1 || ns.tcp.Load() != 1 {
		t.Errorf("udp %d, tcp %d queries; want one of each", ns.udp.Load(), ns.tcp.Load())
	}
}

func TestForwarderNextServer(t *testing.T) {
	good := startNameserver(t, func(tcp bool, q *dns.Msg) *dns.Msg { return answerA(q, "192.0.2.1") })
	servfail := startNameserver(t, func(tcp bool, q *dns.Msg) *dns.Msg { return rcodeReply(q, dns.RcodeServerFailure) })
	// A socket nobody reads: the server that never answers.
	mute, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()

	for _, tc := range []struct {
		name  string
		first string
	}{
		{"silent", mute.LocalAddr().String()},
		{"servfail", servfail.addr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := NewForwarder([]string{tc.first, good.addr}, 200*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			r, err := forwardA(t, f, "example.com.")
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Errorf("got %v, want the second server's answer", r)
			}
			if took := time.Since(begin); took > 2*time.Second {
				t.Errorf("took %v with a 200ms per-server timeout", took)
			}
		})
	}
}

func TestForwarderAllFail(t *testing.T) {
	servfail := startNameserver(t, func(tcp bool, q *dns.Msg) *dns.Msg { return rcodeReply(q, dns.RcodeServerFailure) })
	mute, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()

	f, _ := NewForwarder([]string{mute.LocalAddr().String()}, 100*time.Millisecond)
	if _, err := forwardA(t, f, "example.com."); err == nil || !strings.Contains(err.Error(), mute.LocalAddr().String()) {
		t.Errorf("error = %v, want one naming the silent server", err)
	}

	// When every server that answers says SERVFAIL, that is the answer, not an error.
	f, _ = NewForwarder([]string{mute.LocalAddr().String(), servfail.addr}, 100*time.Millisecond)
	r, err := forwardA(t, f, "example.com.")
	if err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Errorf("got %v, %v; want the SERVFAIL answer", r, err)
	}
}

func TestShimWithForwarder(t *testing.T) {
	ns := startNameserver(t, func(tcp bool, q *dns.Msg) *dns.Msg {
		if strings.EqualFold(q.Question[0].Name, "example.com.") {
			return answerA(q, "192.0.2.7")
		}
		return rcodeReply(q, dns.RcodeNameError)
	})
	f, err := NewForwarder([]string{ns.addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, Config{Cluster: &fakeCluster{}, Upstream: f})
	if r := ask(t, "udp", s.udp, query("example.com.", dns.TypeA)); len(r.Answer) != 1 {
		t.Errorf("got %v, want the nameserver's A", r)
	}
	if r := ask(t, "udp", s.udp, query("web-app.", dns.TypeA)); len(r.Answer) != 2 {
		t.Errorf("got %v, want the cluster's answer", r)
	}
	if r := ask(t, "tcp", s.tcp, query("nope.example.", dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Errorf("rcode = %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}

func TestReadResolvConf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	p := write("resolv.conf", `# generated by NetworkManager
search corp.example.com
nameserver 10.0.0.2 # office
nameserver   ::1
nameserver fe80::1%eth0
;nameserver 10.9.9.9
nameserver not-an-address
nameserver
options edns0 trust-ad
`)
	got, err := ReadResolvConf(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.2:53", "[::1]:53", "[fe80::1%eth0]:53"}; !slices.Equal(got, want) {
		t.Errorf("servers = %q, want %q", got, want)
	}
	if _, err := NewForwarder(got, 0); err != nil {
		t.Errorf("NewForwarder refuses what ReadResolvConf returned: %v", err)
	}

	if _, err := ReadResolvConf(write("empty", "search example.com\n")); err == nil {
		t.Error("a file without nameservers accepted")
	}
	if _, err := ReadResolvConf(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "resolv.conf") {
		t.Errorf("missing file: error %v, want one naming resolv.conf", err)
	}
}

func TestSearchDomains(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	_ = os.WriteFile(path, []byte("nameserver 10.0.0.1\ndomain old.example\nsearch corp.example lab.example # comment\n"), 0o644)
	if got := SearchDomains(path); len(got) != 2 || got[0] != "corp.example" || got[1] != "lab.example" {
		t.Fatalf("SearchDomains: %v", got)
	}
	if got := SearchDomains(filepath.Join(t.TempDir(), "missing")); got != nil {
		t.Fatalf("missing file: %v", got)
	}
}
