package dnsshim

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The in-process Dialer answers as the sockets do: over "udp" one message per Write and
// Read, over "tcp" as a DNS stream.
func TestDialerAnswersInProcess(t *testing.T) {
	s := New(Config{Cluster: &fakeCluster{}, Routes: clusterRoutes, Log: testLogger(t)})
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			c, err := s.Dialer().DialContext(t.Context(), network, "198.18.0.1:53")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			write, read := datagrams(c)
			if network == "tcp" {
				dc := &dns.Conn{Conn: c}
				write, read = dc.WriteMsg, dc.ReadMsg
			}
			for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
				if err := write(query("web-app.", qtype)); err != nil {
					t.Fatal(err)
				}
			}
			got := map[uint16]int{}
			for range 2 {
				r, err := read()
				if err != nil {
					t.Fatal(err)
				}
				if r.Rcode != dns.RcodeSuccess {
					t.Fatalf("%s: rcode %s", r.Question[0].String(), dns.RcodeToString[r.Rcode])
				}
				got[r.Question[0].Qtype] = len(r.Answer)
			}
			if got[dns.TypeA] != 2 || got[dns.TypeAAAA] != 1 {
				t.Fatalf("answers per type %v, want 2 for A (CNAME, A) and 1 for AAAA (CNAME)", got)
			}
		})
	}
	if st := s.Stats(); st.Queries != 4 || st.Cluster != 4 {
		t.Fatalf("stats %+v, want 4 queries answered from the cluster", st)
	}
}

// datagrams sends and receives one DNS message per Write and Read on c.
func datagrams(c net.Conn) (write func(*dns.Msg) error, read func() (*dns.Msg, error)) {
	write = func(m *dns.Msg) error {
		b, err := m.Pack()
		if err == nil {
			_, err = c.Write(b)
		}
		return err
	}
	read = func() (*dns.Msg, error) {
		buf := make([]byte, dns.MaxMsgSize)
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		m := new(dns.Msg)
		return m, m.Unpack(buf[:n])
	}
	return write, read
}
