//go:build linux

package peer

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// otherUID owns the sockets the root-only tests make for "another user".
const otherUID = 65533

// asUser runs f on a thread whose filesystem uid is uid: sockets f creates belong to uid
// (a socket's owner is its creator's fsuid), while the process stays root.
func asUser(t *testing.T, uid int, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		prev, err := unix.SetfsuidRetUid(uid)
		if err != nil {
			t.Errorf("setfsuid %d: %v", uid, err)
			runtime.UnlockOSThread()
			return
		}
		f()
		if _, err := unix.SetfsuidRetUid(prev); err == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and dies with the goroutine
	}()
	<-done
}

func listenTCP(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// acceptFrom dials ln (with dial) and returns the server's end.
func acceptFrom(t *testing.T, ln net.Listener, dial func() (net.Conn, error)) (server, client net.Conn) {
	t.Helper()
	client, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return server, client
}

func TestKernelSameUserPasses(t *testing.T) {
	g := New(Config{})
	if !g.Checks() {
		t.Fatal("a Guard on Linux checks nothing")
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln := listenTCP(t, addr)
		server, _ := acceptFrom(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) })
		if err := g.CheckConn(server); err != nil {
			t.Errorf("tcp %s: this process's own connection refused: %v", addr, err)
		}
	}

	// A dual-stack listener sees an IPv4 client as IPv4-mapped.
	if ln, err := net.Listen("tcp", "[::]:0"); err == nil {
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		server, _ := acceptFrom(t, ln, func() (net.Conn, error) {
			return net.DialTCP("tcp", nil, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		})
		if err := g.CheckConn(server); err != nil {
			t.Errorf("tcp dual-stack: %v", err)
		}
	}

	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	// A connected client (as dig's) and a bound, unconnected one (sendto).
	connected, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer connected.Close()
	unconnected, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer unconnected.Close()
	if _, err := connected.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	if _, err := unconnected.WriteTo([]byte("q"), pc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, src, err := pc.ReadFromUDPAddrPort(make([]byte, 10))
		if err != nil {
			t.Fatal(err)
		}
		if err := g.CheckDatagram(pc.LocalAddr(), src); err != nil {
			t.Errorf("udp from %s: this process's own datagram refused: %v", src, err)
		}
	}
}

func TestKernelGoneClientRefused(t *testing.T) {
	ln := listenTCP(t, "127.0.0.1:0")
	server, client := acceptFrom(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) })
	client.Close()
	// The client's socket is closed: no process holds it, so its uid means nothing.
	err := New(Config{}).CheckConn(server)
	var re *RefusedError
	if !errors.As(err, &re) || re.Err == nil {
		t.Errorf("a closed client: %v, want a refusal for not knowing who it is", err)
	}
}

func TestKernelOtherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a socket owned by another uid")
	}
	g := New(Config{})
	ln := listenTCP(t, "127.0.0.1:0")
	var client net.Conn
	var err error
	asUser(t, otherUID, func() { client, err = net.Dial("tcp", ln.Addr().String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	var re *RefusedError
	if err := g.CheckConn(server); !errors.As(err, &re) || re.UID != otherUID || re.Err != nil {
		t.Errorf("tcp from uid %d: %v, want it refused as uid %d", otherUID, err, otherUID)
	}
	// The same user's next connection still passes.
	own, _ := acceptFrom(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) })
	if err := g.CheckConn(own); err != nil {
		t.Errorf("own connection after a refused one: %v", err)
	}

	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var udp *net.UDPConn
	asUser(t, otherUID, func() { udp, err = net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr)) })
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	if _, err := udp.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, src, err := pc.ReadFromUDPAddrPort(make([]byte, 10))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.CheckDatagram(pc.LocalAddr(), src); !errors.As(err, &re) || re.UID != otherUID {
		t.Errorf("udp from uid %d: %v, want it refused", otherUID, err)
	}
}

func TestKernelOwnerAnswers(t *testing.T) {
	ln := listenTCP(t, "127.0.0.1:0")
	_, client := acceptFrom(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) })
	c, s := client.LocalAddr().(*net.TCPAddr).AddrPort(), client.RemoteAddr().(*net.TCPAddr).AddrPort()
	uid, err := kernelOwner("tcp", c, s)
	if err != nil || uid != uint32(os.Getuid()) {
		t.Errorf("kernelOwner: %d, %v; want %d", uid, err, os.Getuid())
	}
	// A tuple no socket has.
	if _, err := kernelOwner("tcp", netip.AddrPortFrom(c.Addr(), 1), s); !errors.Is(err, ErrNotFound) {
		t.Errorf("no such socket: %v, want ErrNotFound", err)
	}
}

// BenchmarkCheckConn is the cost the check adds to each new client connection.
func BenchmarkCheckConn(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	g := New(Config{})
	for b.Loop() {
		if err := g.CheckConn(server); err != nil {
			b.Fatal(err)
		}
	}
}
