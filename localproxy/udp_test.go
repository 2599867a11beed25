package localproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/testlog"
)

// startUDPEcho runs a UDP server that answers each datagram with "re:" + datagram.
func startUDPEcho(t *testing.T) *net.UDPAddr {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteToUDP(append([]byte("re:"), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr)
}

// udpDialer sends every "udp" dial to the echo server and tracks the flows it opened.
type udpDialer struct {
	fakeDialer
	open atomic.Int32
}

type trackedConn struct {
	net.Conn
	once sync.Once
	open *atomic.Int32
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

func newUDPDialer(t *testing.T, echo *net.UDPAddr) *udpDialer {
	d := &udpDialer{}
	d.fn = func(ctx context.Context, network, address string) (net.Conn, error) {
		if network != "udp" {
			return nil, errors.New("want udp, got " + network)
		}
		if address == "nowhere.svc:53" {
			return nil, kindErr(remote.NoSuchHost, `no service "nowhere"`)
		}
		c, err := net.DialUDP("udp", nil, echo)
		if err != nil {
			return nil, err
		}
		d.open.Add(1)
		return &trackedConn{Conn: c, open: &d.open}, nil
	}
	return d
}

func udpHeaderName(name string, port uint16) []byte {
	b := append([]byte{0, 0, 0, 3, byte(len(name))}, name...)
	return binary.BigEndian.AppendUint16(b, port)
}

func udpHeaderIPv4(ip [4]byte, port uint16) []byte {
	b := append([]byte{0, 0, 0, 1}, ip[:]...)
	return binary.BigEndian.AppendUint16(b, port)
}

func TestUDPAssociateRoundTrip(t *testing.T) {
	echo := startUDPEcho(t)
	d := newUDPDialer(t, echo)
	s, addr := startServer(t, Config{Dialer: d})

	ctrl, code, relayAddr := socksRequest(t, addr, 3, "0.0.0.0", 0)
	if code != 0 {
		t.Fatalf("UDP ASSOCIATE reply %#02x", code)
	}
	if !relayAddr.IP.IsLoopback() || relayAddr.Port == 0 {
		t.Fatalf("relay address %v, want a loopback port", relayAddr)
	}
	uc, err := net.DialUDP("udp", nil, relayAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()

	exchange := func(hdr []byte, payload string) {
		t.Helper()
		if _, err := uc.Write(append(slices.Clone(hdr), payload...)); err != nil {
			t.Fatal(err)
		}
		_ = uc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 65535)
		n, err := uc.Read(buf)
		if err != nil {
			t.Fatalf("no reply to %q: %v", payload, err)
		}
		want := append(slices.Clone(hdr), "re:"+payload...)
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("reply %q, want %q (the header must name the destination as the client did)", buf[:n], want)
		}
	}
	byName := udpHeaderName("dns.kube-system", 53)
	exchange(byName, "query-1")
	exchange(byName, "query-2") // same flow
	byIP := udpHeaderIPv4([4]byte{10, 96, 0, 10}, 53)
	exchange(byIP, "query-3")

	want := []string{"udp dns.kube-system:53", "udp 10.96.0.10:53"}
	if got := d.Calls(); !slices.Equal(got, want) {
		t.Fatalf("dialer got %q, want %q (one flow per destination, names unresolved)", got, want)
	}
	// The echo can reach the client before the relay counts what it wrote: wait for it.
	eventually(t, "BytesOut to count the payload bytes", func() bool {
		return s.Stats().BytesOut == int64(len("query-1query-2query-3"))
	})

	// A datagram to a name the cluster doesn't have is dropped; the association lives on.
	_, _ = uc.Write(append(udpHeaderName("nowhere.svc", 53), "lost"...))
	// Fragments are not supported and are dropped.
	frag := udpHeaderName("dns.kube-system", 53)
	frag[2] = 1
	_, _ = uc.Write(append(frag, "fragment"...))
	exchange(byName, "query-4")

	// Closing the control connection ends the association and its flows.
	_ = ctrl.Close()
	eventually(t, "flows to close", func() bool { return d.open.Load() == 0 })
	_, _ = uc.Write(append(slices.Clone(byName), "after close"...))
	_ = uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := uc.Read(make([]byte, 100)); err == nil {
		t.Fatalf("reply after the association ended: %d bytes", n)
	}
}

func TestUDPStrangerIgnored(t *testing.T) {
	echo := startUDPEcho(t)
	d := newUDPDialer(t, echo)
	_, addr := startServer(t, Config{Dialer: d})
	_, code, relayAddr := socksRequest(t, addr, 3, "0.0.0.0", 0)
	if code != 0 {
		t.Fatalf("reply %#02x", code)
	}
	owner, err := net.DialUDP("udp", nil, relayAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	stranger, err := net.DialUDP("udp", nil, relayAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()

	hdr := udpHeaderName("a.svc", 7)
	_, _ = owner.Write(append(slices.Clone(hdr), "mine"...))
	_ = owner.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := owner.Read(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	// The first sender owns the association; another port is dropped.
	_, _ = stranger.Write(append(udpHeaderName("b.svc", 7), "theirs"...))
	_ = stranger.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := stranger.Read(make([]byte, 100)); err == nil {
		t.Fatal("a stranger's datagram was relayed")
	}
	if got := d.Calls(); !slices.Equal(got, []string{"udp a.svc:7"}) {
		t.Fatalf("dialer got %q", got)
	}
}

func TestUDPIdleFlowCloses(t *testing.T) {
	echo := startUDPEcho(t)
	d := newUDPDialer(t, echo)
	_, addr := startServer(t, Config{Dialer: d, UDPIdleTimeout: 200 * time.Millisecond})
	_, _, relayAddr := socksRequest(t, addr, 3, "0.0.0.0", 0)
	uc, err := net.DialUDP("udp", nil, relayAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	roundTrip := func(payload string) {
		t.Helper()
		_, _ = uc.Write(append(udpHeaderName("a.svc", 7), payload...))
		_ = uc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		n, err := uc.Read(buf)
		if err != nil || !bytes.HasSuffix(buf[:n], []byte("re:"+payload)) {
			t.Fatalf("reply %q %v", buf[:n], err)
		}
	}
	roundTrip("x")
	eventually(t, "the idle flow to close", func() bool { return d.open.Load() == 0 })
	// A new datagram opens a new flow.
	roundTrip("y")
	if n := len(d.Calls()); n != 2 {
		t.Fatalf("%d dials, want 2", n)
	}
}

func TestParseUDPHeader(t *testing.T) {
	tests := []struct {
		in     []byte
		target string
		hdrLen int
		ok     bool
	}{
		{append(udpHeaderName("web", 80), "x"...), "web:80", 10, true},
		{udpHeaderName("web", 80), "web:80", 10, true}, // empty payload is legal
		{udpHeaderIPv4([4]byte{1, 2, 3, 4}, 53), "1.2.3.4:53", 10, true},
		{append([]byte{0, 0, 0, 4}, append(net.ParseIP("fd00::1").To16(), 0, 53)...), "[fd00::1]:53", 22, true},
		{[]byte{0, 0, 0}, "", 0, false},
		{[]byte{0, 0, 1, 1, 1, 2, 3, 4, 0, 53}, "", 0, false}, // fragment
		{[]byte{0, 0, 0, 9, 1, 2, 3, 4, 0, 53}, "", 0, false}, // address type
		{[]byte{0, 0, 0, 3, 0, 0, 53}, "", 0, false},          // empty name
		{[]byte{0, 0, 0, 3, 10, 'a', 'b'}, "", 0, false},      // short name
		{[]byte{0, 0, 0, 1, 1, 2}, "", 0, false},
		{[]byte{0, 0, 0, 4, 1, 2, 3}, "", 0, false},
	}
	for _, tt := range tests {
		target, n, err := parseUDPHeader(tt.in)
		if (err == nil) != tt.ok || target != tt.target || n != tt.hdrLen {
			t.Errorf("parseUDPHeader(%v) = %q, %d, %v", tt.in, target, n, err)
		}
	}
}

func FuzzParseUDPHeader(f *testing.F) {
	f.Add(udpHeaderName("web", 80))
	f.Add(udpHeaderIPv4([4]byte{1, 2, 3, 4}, 53))
	f.Fuzz(func(t *testing.T, b []byte) {
		target, n, err := parseUDPHeader(b)
		if err == nil && (n > len(b) || target == "") {
			t.Fatalf("parseUDPHeader(%v) = %q, %d", b, target, n)
		}
	})
}

// A datagram whose flow cannot be dialed is dropped, as UDP may be, but not in silence: the
// failure is counted and logged with what failed.
func TestUDPDialFailureIsLoggedAndCounted(t *testing.T) {
	var logs testlog.Buffer
	s, addr := startServer(t, Config{Dialer: failWith(remote.Errorf(remote.NoSuchHost, "no service %q in namespace %q", "metrics", "default")), Log: logs.Logger()})
	ctrl, code, relayAddr := socksRequest(t, addr, 3, "0.0.0.0", 0)
	if code != 0 {
		t.Fatalf("UDP ASSOCIATE reply %#02x", code)
	}
	defer ctrl.Close()
	uc, err := net.DialUDP("udp", nil, relayAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if _, err := uc.Write(append(udpHeaderName("metrics", 8125), "hits:1|c"...)); err != nil {
		t.Fatal(err)
	}
	logs.Expect(t, `level=INFO msg="socks5: udp flow failed" target=metrics:8125`, 1, 5*time.Second)
	if !strings.Contains(logs.String(), `no service \"metrics\" in namespace \"default\"`) {
		t.Errorf("the log does not say why:\n%s", logs.String())
	}
	if n := s.Stats().DialErrors; n != 1 {
		t.Errorf("%d dial errors counted, want 1", n)
	}
}
