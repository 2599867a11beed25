package peer

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// fakeOwner answers every question with uid (or err) and counts the questions.
type fakeOwner struct {
	uid   uint32
	err   error
	asked atomic.Int32
	last  [2]netip.AddrPort
}

func (f *fakeOwner) owner(_ string, client, server netip.AddrPort) (uint32, error) {
	f.asked.Add(1)
	f.last = [2]netip.AddrPort{client, server}
	return f.uid, f.err
}

func tcpConn(remote, local string) net.Conn {
	return fakeConn{remote: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(remote)), local: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(local))}
}

// fakeConn is a connection with addresses only: the Guard reads nothing else.
type fakeConn struct {
	net.Conn
	remote, local net.Addr
}

func (c fakeConn) RemoteAddr() net.Addr { return c.remote }
func (c fakeConn) LocalAddr() net.Addr  { return c.local }

func TestGuardDecides(t *testing.T) {
	self := uint32(os.Getuid())
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	same := &fakeOwner{uid: self}
	g := New(Config{Owner: same.owner, Log: log})
	if err := g.CheckConn(tcpConnOf(t, "127.0.0.1:40000", "127.0.0.1:1080")); err != nil {
		t.Errorf("same user: %v", err)
	}
	if same.last != [2]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:1080")} {
		t.Errorf("asked about %v", same.last)
	}
	// IPv4-mapped addresses (a dual-stack listener) are asked about as IPv4.
	if err := g.CheckConn(tcpConnOf(t, "[::ffff:127.0.0.1]:40000", "[::ffff:127.0.0.1]:1080")); err != nil || !same.last[0].Addr().Is4() {
		t.Errorf("mapped: %v, asked about %v", err, same.last)
	}

	other := &fakeOwner{uid: self + 1}
	g = New(Config{Owner: other.owner, Log: log})
	err := g.CheckConn(tcpConnOf(t, "127.0.0.1:40000", "127.0.0.1:1080"))
	var re *RefusedError
	if !errors.As(err, &re) || re.UID != self+1 || re.Self != self {
		t.Fatalf("other user: %v", err)
	}
	if !strings.Contains(err.Error(), "serve only uid") {
		t.Errorf("message %q does not say who is served", err)
	}
	if err := g.CheckDatagram(net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[::1]:1053")), netip.MustParseAddrPort("[::1]:5000")); err == nil {
		t.Error("other user over udp: let in")
	}
	// The client's own address is one of this machine's, whichever it is.
	if err := g.CheckConn(tcpConnOf(t, "192.0.2.9:40000", "192.0.2.9:1080")); err == nil {
		t.Error("other user on a non-loopback local address: let in")
	}

	// Another machine is not asked about: credentials are its guard.
	asked := other.asked.Load()
	if err := g.CheckConn(tcpConnOf(t, "203.0.113.7:40000", "192.0.2.9:1080")); err != nil {
		t.Errorf("another machine: %v", err)
	}
	if other.asked.Load() != asked {
		t.Error("asked the kernel about another machine's connection")
	}

	broken := &fakeOwner{err: errors.New("no sock_diag")}
	g = New(Config{Owner: broken.owner, Log: log})
	if err := g.CheckConn(tcpConnOf(t, "127.0.0.1:40000", "127.0.0.1:1080")); !errors.As(err, &re) || re.Err == nil ||
		!strings.Contains(err.Error(), "--allow-other-users") {
		t.Errorf("no answer from the kernel: %v, want a refusal that names --allow-other-users", err)
	}

	g = New(Config{Owner: other.owner, AllowOtherUsers: true})
	if err := g.CheckConn(tcpConnOf(t, "127.0.0.1:40000", "127.0.0.1:1080")); err != nil || g.Checks() {
		t.Errorf("AllowOtherUsers: %v, checks %v", err, g.Checks())
	}
	// Not an IP connection: nothing to ask.
	if err := New(Config{Owner: other.owner}).CheckConn(fakeConn{remote: &net.UnixAddr{Name: "@x"}, local: &net.UnixAddr{Name: "@y"}}); err != nil {
		t.Errorf("unix socket: %v", err)
	}
}

func TestGuardDatagramOnWildcard(t *testing.T) {
	f := &fakeOwner{uid: uint32(os.Getuid())}
	g := New(Config{Owner: f.owner})
	wild := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("0.0.0.0:1053"))
	if err := g.CheckDatagram(wild, netip.MustParseAddrPort("127.0.0.9:5000")); err != nil {
		t.Fatal(err)
	}
	if f.last[1] != netip.MustParseAddrPort("127.0.0.1:1053") {
		t.Errorf("a datagram from loopback to the wildcard was asked about as sent to %s, want 127.0.0.1:1053", f.last[1])
	}
}

func TestGuardLogsRefusalsSparingly(t *testing.T) {
	var logs bytes.Buffer
	other := &fakeOwner{uid: uint32(os.Getuid()) + 1}
	g := New(Config{Owner: other.owner, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	for range 100 {
		_ = g.CheckConn(tcpConnOf(t, "127.0.0.1:40000", "127.0.0.1:1080"))
	}
	if n := strings.Count(logs.String(), "refused a client"); n != 1 {
		t.Errorf("100 refusals logged %d lines, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "client=127.0.0.1:40000") || !strings.Contains(logs.String(), "uid=") {
		t.Errorf("log line lacks the client or its uid: %s", logs.String())
	}
}

// tcpConnOf is a connection whose ends are remote and local, for CheckConn.
func tcpConnOf(t *testing.T, remote, local string) net.Conn {
	t.Helper()
	return tcpConn(remote, local)
}
