package dnsshim

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzQuery feeds arbitrary bytes to the query handler, as a UDP datagram and as a TCP
// message: it must not panic, and it either stays silent or answers with a well-formed
// response to that query that fits the transport.
func FuzzQuery(f *testing.F) {
	for _, m := range seedQueries() {
		wire, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wire)
	}
	f.Add([]byte{})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	// A question name whose compression pointer points at itself.
	f.Add([]byte{0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01})

	s := New(Config{
		Cluster:  &fakeCluster{},
		Upstream: &fakeUpstream{},
		Routes:   clusterRoutes,
		Timeout:  50 * time.Millisecond, // "slow." is a valid input too
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, tcp := range []bool{false, true} {
			out := s.answer(context.Background(), data, tcp)
			if out == nil {
				continue
			}
			var req, resp dns.Msg
			if err := req.Unpack(data); err != nil {
				t.Fatalf("answered a message that does not parse: %v", err)
			}
			if err := resp.Unpack(out); err != nil {
				t.Fatalf("answer does not parse: %v\n%x", err, out)
			}
			if !resp.Response || resp.Id != req.Id || resp.Opcode != req.Opcode {
				t.Fatalf("answer header %v to query header %v", resp.MsgHdr, req.MsgHdr)
			}
			if len(resp.Question) > 0 && !slices.Equal(resp.Question, req.Question) {
				t.Fatalf("answer question %v, asked %v", resp.Question, req.Question)
			}
			limit := dns.MaxMsgSize
			if !tcp {
				limit = udpLimit(&req)
			}
			if len(out) > limit {
				t.Fatalf("answer is %d bytes, limit %d (tcp %v)", len(out), limit, tcp)
			}
			if (req.IsEdns0() == nil) != (resp.IsEdns0() == nil) {
				t.Fatalf("OPT in query: %v, in answer: %v", req.IsEdns0() != nil, resp.IsEdns0() != nil)
			}
		}
	})
}

func seedQueries() []*dns.Msg {
	var ms []*dns.Msg
	add := func(name string, qtype uint16, edit func(*dns.Msg)) {
		m := query(name, qtype)
		if edit != nil {
			edit(m)
		}
		ms = append(ms, m)
	}
	edns := func(size uint16, do bool) func(*dns.Msg) {
		return func(m *dns.Msg) { m.SetEdns0(size, do) }
	}
	add("web-app.", dns.TypeA, nil)
	add("Web-App.", dns.TypeAAAA, edns(1232, true))
	add("_http._tcp.web-app.", dns.TypeSRV, nil)
	add("42.0.96.10.in-addr.arpa.", dns.TypePTR, nil)
	add("1.1.168.192.in-addr.arpa.", dns.TypePTR, nil)
	add("example.com.", dns.TypeA, edns(4096, false))
	add("headless.", dns.TypeA, nil)
	add("headless.", dns.TypeA, edns(600, false))
	add("cluster.local.", dns.TypeAXFR, nil)
	add("version.bind.", dns.TypeTXT, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS })
	add("web-app.", dns.TypeA, func(m *dns.Msg) {
		m.Question = append(m.Question, dns.Question{Name: "b.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	})
	add("web-app.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) })
	add("web-app.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false); m.SetEdns0(512, false) })
	add("web-app.", dns.TypeA, func(m *dns.Msg) { m.Response = true })
	add("web-app.", dns.TypeA, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify })
	return ms
}
