package localproxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
)

// Server.Dialer, the in-process way out, keeps the dialer's error kind (a SOCKS reply
// would turn TunnelDown into a general failure), refuses loops, and counts bytes.
func TestServerDialer(t *testing.T) {
	down := New(Config{Dialer: failWith(kindErr(remote.TunnelDown, "port-forward dropped"))})
	if _, err := down.Dialer().DialContext(t.Context(), "tcp", "web-app:81"); remote.KindOf(err) != remote.TunnelDown {
		t.Fatalf("dial through a tunnel that is down: %v (kind %v), want TunnelDown", err, remote.KindOf(err))
	}

	self := netip.MustParseAddrPort("127.0.0.1:1080")
	s := New(Config{Dialer: dialTo(startEcho(t)), SelfAddrs: []netip.AddrPort{self}})
	if _, err := s.Dialer().DialContext(t.Context(), "tcp", self.String()); err == nil || !strings.Contains(err.Error(), "a loop") {
		t.Fatalf("dial to the proxy itself: %v, want a loop refused", err)
	}
	c, err := s.Dialer().DialContext(t.Context(), "tcp", "web-app:81")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.BytesOut != 4 || st.BytesIn != 4 {
		t.Fatalf("stats %+v, want 4 bytes each way", st)
	}
}
