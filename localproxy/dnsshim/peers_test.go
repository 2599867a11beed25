package dnsshim

import (
	"net/netip"
	"os"
	"testing"

	"github.com/miekg/dns"

	"github.com/tpdev/tp/localproxy/peer"
)

func TestOtherUserRefused(t *testing.T) {
	cluster, up := &fakeCluster{}, &fakeUpstream{}
	other := peer.New(peer.Config{Owner: func(string, netip.AddrPort, netip.AddrPort) (uint32, error) {
		return uint32(os.Getuid()) + 1, nil
	}})
	s := start(t, Config{Cluster: cluster, Upstream: up, Peers: other})
	for _, network := range []string{"udp", "tcp"} {
		addr := s.udp
		if network == "tcp" {
			addr = s.tcp
		}
		for _, name := range []string{"web-app.", "example.com."} {
			r := ask(t, network, addr, query(name, dns.TypeA))
			if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 || len(r.Question) != 1 || r.Question[0].Name != name {
				t.Errorf("%s %s from another user: %s, want REFUSED with the question", network, name, r)
			}
		}
	}
	if cluster.wasAsked("web-app") || up.calls.Load() != 0 {
		t.Error("another user's query reached the cluster or the upstream resolver")
	}
	if st := s.Stats(); st.Refused != 4 || st.Queries != 4 {
		t.Errorf("stats %+v, want 4 queries, 4 refused", st)
	}
}

// TestOwnUserAnswered runs the real check (the kernel's answer on Linux): this process's
// own queries are answered, over UDP and TCP.
func TestOwnUserAnswered(t *testing.T) {
	s := start(t, Config{Cluster: &fakeCluster{}})
	for _, network := range []string{"udp", "tcp"} {
		addr := s.udp
		if network == "tcp" {
			addr = s.tcp
		}
		if r := ask(t, network, addr, query("web-app.", dns.TypeA)); r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			t.Errorf("%s: own query answered %s", network, r)
		}
	}
	if st := s.Stats(); st.Refused != 0 {
		t.Errorf("%d of this process's own queries refused", st.Refused)
	}
}
