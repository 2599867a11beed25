package dnsshim

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestClusterA(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			s := start(t, Config{Cluster: &fakeCluster{}, Upstream: &fakeUpstream{}})
			addr := map[string]string{"udp": s.udp, "tcp": s.tcp}[network]
			// Mixed case: the question and the owner must come back spelled as asked.
			q := query("Web-App.", dns.TypeA)
			r := ask(t, network, addr, q)

			if r.Rcode != dns.RcodeSuccess || !r.Response || !r.RecursionAvailable || r.Id != q.Id {
				t.Fatalf("header = %v, want NOERROR response with RA and id %d", r.MsgHdr, q.Id)
			}
			if len(r.Question) != 1 || r.Question[0] != q.Question[0] {
				t.Errorf("question = %v, want exactly %v", r.Question, q.Question)
			}
			if len(r.Answer) != 2 {
				t.Fatalf("answers = %v, want CNAME and A", r.Answer)
			}
			cname, ok := r.Answer[0].(*dns.CNAME)
			if !ok || cname.Hdr.Name != "Web-App." || cname.Target != canonical {
				t.Errorf("first answer = %v, want Web-App. CNAME %s", r.Answer[0], canonical)
			}
			a, ok := r.Answer[1].(*dns.A)
			if !ok || a.A.String() != "10.96.0.42" {
				t.Errorf("second answer = %v, want A 10.96.0.42", r.Answer[1])
			}
			for _, rr := range r.Answer {
				if rr.Header().Ttl > 5 {
					t.Errorf("TTL of %v above the 5s default cap", rr)
				}
			}
		})
	}
}

func TestTTLCapConfigurable(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}, TTL: 2})
	r := ask(t, "udp", s.udp, query("web-app.", dns.TypeA))
	for _, rr := range r.Answer {
		if rr.Header().Ttl != 2 {
			t.Errorf("TTL of %v, want capped to 2", rr)
		}
	}
}

func TestClusterNoDataStaysNoData(t *testing.T) {
	up := &fakeUpstream{}
	s := start(t, Config{Cluster: &fakeCluster{}, Upstream: up})
	r := ask(t, "udp", s.udp, query("web-app.", dns.TypeAAAA))
	if r.Rcode != dns.RcodeSuccess {
		t.Fatalf("rcode = %s, want NOERROR (NODATA)", dns.RcodeToString[r.Rcode])
	}
	for _, rr := range r.Answer {
		if rr.Header().Rrtype == dns.TypeAAAA {
			t.Errorf("unexpected AAAA %v", rr)
		}
	}
	if up.calls.Load() != 0 {
		t.Error("upstream asked about a cluster name the cluster knows")
	}
	if len(r.Ns) != 1 {
		t.Fatalf("authority = %v, want the cluster's SOA", r.Ns)
	}
	soa := r.Ns[0].(*dns.SOA)
	if soa.Hdr.Ttl > 5 || soa.Minttl > 5 {
		t.Errorf("SOA %v: negative-caching TTL not capped to 5", soa)
	}
}

func TestClusterSRV(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}})
	r := ask(t, "udp", s.udp, query("_http._tcp.web-app.", dns.TypeSRV))
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("got %v, want one SRV", r)
	}
	srv, ok := r.Answer[0].(*dns.SRV)
	if !ok || srv.Port != 8080 || srv.Target != canonical {
		t.Errorf("answer = %v, want SRV 0 100 8080 %s", r.Answer[0], canonical)
	}
	if len(r.Extra) != 1 || r.Extra[0].Header().Rrtype != dns.TypeA {
		t.Errorf("additional = %v, want the target's A", r.Extra)
	}
}

func TestPTR(t *testing.T) {
	cluster, up := &fakeCluster{}, &fakeUpstream{}
	s := start(t, Config{Cluster: cluster, Upstream: up, Routes: clusterRoutes})

	t.Run("cluster address", func(t *testing.T) {
		r := ask(t, "udp", s.udp, query("42.0.96.10.in-addr.arpa.", dns.TypePTR))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("got %v, want one PTR", r)
		}
		if ptr, ok := r.Answer[0].(*dns.PTR); !ok || ptr.Ptr != canonical {
			t.Errorf("answer = %v, want PTR %s", r.Answer[0], canonical)
		}
	})
	t.Run("cluster address without a name", func(t *testing.T) {
		before := up.calls.Load()
		r := ask(t, "udp", s.udp, query("99.0.96.10.in-addr.arpa.", dns.TypePTR))
		if r.Rcode != dns.RcodeNameError {
			t.Errorf("rcode = %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
		}
		if up.calls.Load() != before {
			t.Error("upstream asked about an address in the cluster's range")
		}
	})
	t.Run("outside address", func(t *testing.T) {
		r := ask(t, "udp", s.udp, query("1.1.168.192.in-addr.arpa.", dns.TypePTR))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "router.lan." {
			t.Errorf("got %v, want upstream's PTR router.lan.", r)
		}
		if cluster.wasAsked("1.1.168.192.in-addr.arpa") {
			t.Error("cluster asked about an address outside its ranges")
		}
	})
}

func TestUnknownNameNXDOMAINQuickly(t *testing.T) {
	// No upstream: a name that is not the cluster's has no one else to ask.
	s := start(t, Config{Cluster: &fakeCluster{}})
	for _, name := range []string{"nope.example.", "wire-nx-web-ap."} {
		for _, network := range []string{"udp", "tcp"} {
			addr := map[string]string{"udp": s.udp, "tcp": s.tcp}[network]
			begin := time.Now()
			r := ask(t, network, addr, query(name, dns.TypeA))
			if took := time.Since(begin); took > time.Second {
				t.Errorf("%s %s: NXDOMAIN took %v, want well under the 3s timeout", network, name, took)
			}
			if r.Rcode != dns.RcodeNameError {
				t.Errorf("%s %s: rcode = %s, want NXDOMAIN", network, name, dns.RcodeToString[r.Rcode])
			}
		}
	}
	if st := s.Stats(); st.NXDomain != 4 {
		t.Errorf("stats = %+v, want 4 NXDOMAIN", st)
	}
}

func TestUpstream(t *testing.T) {
	cluster, up := &fakeCluster{}, &fakeUpstream{}
	s := start(t, Config{Cluster: cluster, Upstream: up})

	r := ask(t, "udp", s.udp, query("Example.COM.", dns.TypeA))
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("got %v, want upstream's A", r)
	}
	if r.Question[0].Name != "Example.COM." || r.Answer[0].Header().Name != "Example.COM." {
		t.Errorf("question %v, owner %q: want the client's spelling", r.Question[0], r.Answer[0].Header().Name)
	}
	// Outside names do not churn like cluster ones: their TTLs stay.
	if ttl := r.Answer[0].Header().Ttl; ttl != 3600 {
		t.Errorf("upstream TTL = %d, want 3600 untouched", ttl)
	}
	if !cluster.wasAsked("Example.COM") {
		t.Error("cluster not asked first")
	}

	r = ask(t, "udp", s.udp, query("missing.example.", dns.TypeA))
	if r.Rcode != dns.RcodeNameError {
		t.Fatalf("rcode = %s, want upstream's NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	if soa := r.Ns[0].(*dns.SOA); soa.Hdr.Ttl > 5 || soa.Minttl > 5 {
		t.Errorf("upstream negative answer %v not capped: a cluster service created later would stay hidden", soa)
	}
	if st := s.Stats(); st.Upstream != 2 || st.Cluster != 0 {
		t.Errorf("stats = %+v, want 2 upstream answers", st)
	}
}

func TestUpstreamFailureIsServfail(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}, Upstream: &fakeUpstream{err: errors.New("connection refused")}})
	r := ask(t, "udp", s.udp, query("example.com.", dns.TypeA))
	if r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode = %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func TestTunnelDownIsServfail(t *testing.T) {
	cluster, up := &fakeCluster{}, &fakeUpstream{}
	cluster.down.Store(true)
	s := start(t, Config{Cluster: cluster, Upstream: up})

	q := query("web-app.", dns.TypeA)
	q.SetEdns0(1232, false)
	begin := time.Now()
	r := ask(t, "udp", s.udp, q)
	if took := time.Since(begin); took > time.Second {
		t.Errorf("SERVFAIL took %v, want it at once", took)
	}
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode = %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if up.calls.Load() != 0 {
		t.Error("upstream asked while the tunnel is down: its NXDOMAIN would hide a cluster name")
	}
	opt := r.IsEdns0()
	if opt == nil {
		t.Fatal("no OPT in the answer to an EDNS query")
	}
	var ede *dns.EDNS0_EDE
	for _, o := range opt.Option {
		if e, ok := o.(*dns.EDNS0_EDE); ok {
			ede = e
		}
	}
	if ede == nil || !strings.Contains(ede.ExtraText, "tunnel") {
		t.Errorf("extended error = %v, want one saying the tunnel is down", ede)
	}
	if st := s.Stats(); st.Failures != 1 {
		t.Errorf("stats = %+v, want 1 failure", st)
	}
}

// While the tunnel reconnects, names no cluster could have still resolve upstream; those a
// cluster could have get SERVFAIL, never an upstream NXDOMAIN.
func TestTunnelDownLeavesOtherNamesToUpstream(t *testing.T) {
	cluster, up := &fakeCluster{}, &fakeUpstream{}
	cluster.down.Store(true)
	s := start(t, Config{Cluster: cluster, Upstream: up})
	for _, name := range []string{"www.example.com.", "api.github.com.", "example.com."} {
		if r := ask(t, "udp", s.udp, query(name, dns.TypeA)); r.Rcode == dns.RcodeServerFailure {
			t.Errorf("%s: SERVFAIL while the tunnel is down; want upstream's answer", name)
		}
	}
	if n := up.calls.Load(); n != 3 {
		t.Errorf("upstream asked %d times, want 3", n)
	}
	for _, name := range []string{"web-app.", "web-app.shop.", "web-app.shop.svc.", "web-app.shop.svc.cluster.local.", "10-244-0-7.shop.pod.cluster.local.", "web-app.dev."} {
		if r := ask(t, "udp", s.udp, query(name, dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("%s: %s while the tunnel is down, want SERVFAIL", name, dns.RcodeToString[r.Rcode])
		}
	}
	if n := up.calls.Load(); n != 3 {
		t.Errorf("upstream asked about a cluster-shaped name while the tunnel is down (%d calls)", n)
	}
}

func TestSlowClusterAnswersWithinTimeout(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}, Timeout: 200 * time.Millisecond})
	begin := time.Now()
	r := ask(t, "udp", s.udp, query("slow.", dns.TypeA))
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("answer took %v with a 200ms budget", took)
	}
	if r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode = %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func TestUnreadableClusterAnswerIsServfail(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}})
	if r := ask(t, "udp", s.udp, query("broken.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode = %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func TestTruncationThenTCP(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}})

	for _, tc := range []struct {
		name  string
		edns  uint16 // 0: no EDNS
		limit int
	}{
		{"no EDNS", 0, 512},
		{"EDNS 1232", 1232, 1232},
		{"EDNS 4096 capped", 4096, 1232},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := query("headless.", dns.TypeA)
			if tc.edns != 0 {
				q.SetEdns0(tc.edns, false)
			}
			wire := rawExchange(t, s.udp, q)
			if len(wire) > tc.limit {
				t.Errorf("UDP answer is %d bytes, limit %d", len(wire), tc.limit)
			}
			var r dns.Msg
			if err := r.Unpack(wire); err != nil {
				t.Fatal(err)
			}
			if !r.Truncated || r.Rcode != dns.RcodeSuccess {
				t.Errorf("header = %v, want NOERROR with TC", r.MsgHdr)
			}
			if tc.edns != 0 && r.IsEdns0() == nil {
				t.Error("truncation lost the OPT record")
			}
			tr := ask(t, "tcp", s.tcp, q)
			if tr.Truncated || len(tr.Answer) != 200 {
				t.Errorf("over TCP: TC=%v and %d answers, want all 200", tr.Truncated, len(tr.Answer))
			}
		})
	}
}

// rawExchange sends m over UDP and returns the raw answer, whose size the client's parsed
// form would hide.
func rawExchange(t *testing.T, addr string, m *dns.Msg) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wire, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1<<16)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestEDNSEcho(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}})
	q := query("web-app.", dns.TypeA)
	q.SetEdns0(4096, true)
	r := ask(t, "udp", s.udp, q)
	opt := r.IsEdns0()
	if opt == nil || !opt.Do() || opt.UDPSize() != ednsSize {
		t.Errorf("OPT = %v, want DO echoed and size %d", opt, ednsSize)
	}
	r = ask(t, "udp", s.udp, query("web-app.", dns.TypeA))
	if r.IsEdns0() != nil {
		t.Error("OPT in the answer to a query without EDNS")
	}
}

func TestRejects(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}, Upstream: &fakeUpstream{}})
	for _, tc := range []struct {
		name  string
		msg   func() *dns.Msg
		rcode int
	}{
		{"two questions", func() *dns.Msg {
			m := query("web-app.", dns.TypeA)
			m.Question = append(m.Question, dns.Question{Name: "example.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
			return m
		}, dns.RcodeFormatError},
		{"no question", func() *dns.Msg {
			m := query("web-app.", dns.TypeA)
			m.Question = nil
			return m
		}, dns.RcodeFormatError},
		{"update opcode", func() *dns.Msg {
			m := query("web-app.", dns.TypeA)
			m.Opcode = dns.OpcodeUpdate
			return m
		}, dns.RcodeNotImplemented},
		{"zone transfer", func() *dns.Msg { return query("cluster.local.", dns.TypeAXFR) }, dns.RcodeNotImplemented},
		{"chaos class", func() *dns.Msg {
			m := query("version.bind.", dns.TypeTXT)
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}, dns.RcodeNotImplemented},
		{"EDNS version 1", func() *dns.Msg {
			m := query("web-app.", dns.TypeA)
			m.SetEdns0(1232, false)
			m.IsEdns0().SetVersion(1)
			return m
		}, dns.RcodeBadVers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.msg()
			// miekg's client insists on one question; speak TCP framing by hand.
			r := rawTCPExchange(t, s.tcp, m)
			if r.Rcode != tc.rcode || r.Id != m.Id || !r.Response {
				t.Errorf("got %v, want %s", r.MsgHdr, dns.RcodeToString[tc.rcode])
			}
		})
	}
}

func rawTCPExchange(t *testing.T, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	co := &dns.Conn{Conn: c}
	if err := co.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	r, err := co.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestGarbageUDPDoesNotStopServer(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}})
	c, err := net.Dial("udp", s.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	response := query("web-app.", dns.TypeA)
	response.Response = true
	responseWire, _ := response.Pack()
	for _, junk := range [][]byte{
		{},
		{0x00},
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3f}, // a question cut short
		responseWire, // a response: never answered
	} {
		if _, err := c.Write(junk); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing comes back for any of them...
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 512)); err == nil {
		t.Errorf("got a %d-byte reply to junk", n)
	}
	// ...and real queries still work.
	if r := ask(t, "udp", s.udp, query("web-app.", dns.TypeA)); r.Rcode != dns.RcodeSuccess {
		t.Errorf("rcode after junk = %s", dns.RcodeToString[r.Rcode])
	}
	if st := s.Stats(); st.Dropped < 4 {
		t.Errorf("stats = %+v, want the junk counted as dropped", st)
	}
}

func TestGarbageTCPClosesConnection(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}})
	for _, tc := range []struct {
		junk  []byte
		hangs bool // the server waits for the rest of what looks like a long message
	}{
		{junk: []byte{0x00, 0x05, 'h', 'e', 'l', 'l', 'o'}},
		{junk: []byte{0x00, 0x00}}, // an empty message
		{junk: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), hangs: true},
	} {
		junk := tc.junk
		c, err := net.Dial("tcp", s.tcp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(junk); err != nil {
			t.Fatal(err)
		}
		if tc.hangs {
			// "GE" reads as an 18245-byte message: cut it short rather than wait
			// for the idle timeout.
			c.(*net.TCPConn).CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(make([]byte, 512)); !errors.Is(err, io.EOF) {
			t.Errorf("junk %q: read %d bytes, %v; want the server to close", junk, n, err)
		}
		c.Close()
	}
	if r := ask(t, "tcp", s.tcp, query("web-app.", dns.TypeA)); r.Rcode != dns.RcodeSuccess {
		t.Errorf("rcode after junk = %s", dns.RcodeToString[r.Rcode])
	}
}

func TestTCPSeveralQueriesOneConnection(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}, Upstream: &fakeUpstream{}})
	c, err := net.Dial("tcp", s.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	co := &dns.Conn{Conn: c}
	c.SetDeadline(time.Now().Add(5 * time.Second))

	// One after the other.
	for _, name := range []string{"web-app.", "example.com.", "nope.example."} {
		q := query(name, dns.TypeA)
		if err := co.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		r, err := co.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		if r.Id != q.Id || r.Question[0].Name != name {
			t.Errorf("answer %v to %s", r.Question, name)
		}
	}
	// Pipelined, as a stub sends A and AAAA together; answers may come in any order.
	qa, qaaaa := query("web-app.", dns.TypeA), query("web-app.", dns.TypeAAAA)
	qaaaa.Id = qa.Id + 1
	for _, q := range []*dns.Msg{qa, qaaaa} {
		if err := co.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint16]uint16{}
	for range 2 {
		r, err := co.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		seen[r.Id] = r.Question[0].Qtype
	}
	if seen[qa.Id] != dns.TypeA || seen[qaaaa.Id] != dns.TypeAAAA {
		t.Errorf("pipelined answers = %v", seen)
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}, IdleTimeout: 100 * time.Millisecond})
	c, err := net.Dial("tcp", s.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	begin := time.Now()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read = %v, want EOF from the idle timeout", err)
	}
	if took := time.Since(begin); took > time.Second {
		t.Errorf("idle connection closed after %v, want about 100ms", took)
	}
}

func TestConcurrentQueries(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			s := start(t, Config{Cluster: &fakeCluster{}, Upstream: &fakeUpstream{}})
			addr := map[string]string{"udp": s.udp, "tcp": s.tcp}[network]
			cases := []struct {
				name  string
				qtype uint16
				rcode int
			}{
				{"web-app.", dns.TypeA, dns.RcodeSuccess},
				{"web-app.", dns.TypeAAAA, dns.RcodeSuccess},
				{"_http._tcp.web-app.", dns.TypeSRV, dns.RcodeSuccess},
				{"example.com.", dns.TypeA, dns.RcodeSuccess},
				{"nope.example.", dns.TypeA, dns.RcodeNameError},
			}
			var wg sync.WaitGroup
			for i := range 100 {
				tc := cases[i%len(cases)]
				wg.Go(func() {
					r, err := tryAsk(network, addr, query(tc.name, tc.qtype), 5*time.Second)
					if err != nil || r.Rcode != tc.rcode {
						t.Errorf("%s %s: %v, rcode %v", tc.name, dns.TypeToString[tc.qtype], err, r)
					}
				})
			}
			wg.Wait()
			if st := s.Stats(); st.Queries != 100 || st.Dropped != 0 {
				t.Errorf("stats = %+v, want 100 queries none dropped", st)
			}
		})
	}
}

func TestOverloadDropsUDP(t *testing.T) {
	cluster := &fakeCluster{entered: make(chan struct{}, 1)}
	// The slow query holds the only slot for the whole Timeout, long enough on a loaded
	// machine for the second query to arrive while it does.
	s := start(t, Config{Cluster: cluster, MaxInFlight: 1, Timeout: 2 * time.Second})

	slow := make(chan error, 1)
	go func() {
		_, err := tryAsk("udp", s.udp, query("slow.", dns.TypeA), 5*time.Second)
		slow <- err
	}()
	<-cluster.entered // the only slot is taken
	if _, err := tryAsk("udp", s.udp, query("web-app.", dns.TypeA), 200*time.Millisecond); err == nil {
		t.Error("a query over the in-flight bound was answered")
	}
	if err := <-slow; err != nil {
		t.Errorf("slow query: %v", err)
	}
	// The slot is released just after the slow answer is sent, so the next query may
	// still find it taken; a client retries, and so does this one.
	var r *dns.Msg
	var err error
	for range 10 {
		if r, err = tryAsk("udp", s.udp, query("web-app.", dns.TypeA), 200*time.Millisecond); err == nil {
			break
		}
	}
	if err != nil || r.Rcode != dns.RcodeSuccess {
		t.Errorf("after the slot is free: %v, %v", r, err)
	}
	if st := s.Stats(); st.Dropped < 1 {
		t.Errorf("stats = %+v, want the query over the bound dropped", st)
	}
}

func TestNoClusterUsesUpstream(t *testing.T) {
	s := start(t, Config{Upstream: &fakeUpstream{}})
	if r := ask(t, "udp", s.udp, query("example.com.", dns.TypeA)); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("got %v, want upstream's answer", r)
	}
}

func TestReverseAddr(t *testing.T) {
	for _, tc := range []struct {
		name string
		want string // "" for no address
	}{
		{"42.0.96.10.in-addr.arpa.", "10.96.0.42"},
		{"42.0.96.10.IN-ADDR.ARPA.", "10.96.0.42"},
		{"0.96.10.in-addr.arpa.", ""},
		{"042.0.96.10.in-addr.arpa.", ""},
		{"256.0.96.10.in-addr.arpa.", ""},
		{"b._dns-sd._udp.0.96.10.in-addr.arpa.", ""},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.", "::1"},
		{"a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "2001:db8::a"},
		{"g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", ""},
		{"web-app.", ""},
	} {
		got, ok := reverseAddr(tc.name)
		if tc.want == "" {
			if ok {
				t.Errorf("reverseAddr(%q) = %v, want none", tc.name, got)
			}
			continue
		}
		if !ok || got != netip.MustParseAddr(tc.want) {
			t.Errorf("reverseAddr(%q) = %v, %v; want %s", tc.name, got, ok, tc.want)
		}
	}
}

// TestTCPFrameExactLength checks that the frame reader honours the length prefix exactly.
func TestTCPFrameExactLength(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}})
	c, err := net.Dial("tcp", s.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	// Two frames in one write: the reader must split them at the prefix.
	var buf []byte
	for _, name := range []string{"web-app.", "example.com."} {
		wire, _ := query(name, dns.TypeA).Pack()
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(wire)))
		buf = append(buf, wire...)
	}
	if _, err := c.Write(buf); err != nil {
		t.Fatal(err)
	}
	co := &dns.Conn{Conn: c}
	for range 2 {
		if _, err := co.ReadMsg(); err != nil {
			t.Fatalf("reading the answers to two frames in one segment: %v", err)
		}
	}
}

func TestShutdownClosesConnections(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Cluster: &fakeCluster{}, Log: testLogger(t)}) // default 10s idle
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { errs <- s.ServeUDP(ctx, pc) }()
	go func() { errs <- s.ServeTCP(ctx, ln) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask(t, "tcp", ln.Addr().String(), query("web-app.", dns.TypeA)) // the server is up

	cancel()
	for range 2 {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("serve returned %v, want nil", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("serve still running 2s after cancel with an idle connection open")
		}
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("read on the open connection = %v, want EOF", err)
	}
}

// TestGarbageIsLoggedNotFlooded: malformed messages show in the log (at info, where a user
// sees them), once per period however many arrive.
func TestGarbageIsLoggedNotFlooded(t *testing.T) {
	var buf bytes.Buffer
	s := New(Config{Cluster: &fakeCluster{}, Log: slog.New(slog.NewTextHandler(&buf, nil))})
	for range 100 {
		if out := s.answer(context.Background(), []byte{1, 2, 3}, false); out != nil {
			t.Fatalf("answered garbage: %x", out)
		}
	}
	if n := strings.Count(buf.String(), "dropped a malformed message"); n != 1 {
		t.Errorf("%d log lines for 100 malformed messages, want 1:\n%s", n, buf.String())
	}
	if got := s.Stats().Dropped; got != 100 {
		t.Errorf("dropped %d, want 100", got)
	}
}
