package server

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tpdev/tp/remote/tunnel"
)

// The client API's connections keep the TCP user timeout gRPC gives the connections it
// accepts itself, wrapped as they are.
func TestClientConnectionsKeepGRPCsTCPUserTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := watchGRPC(ln, "client API", tunnel.ServerKeepaliveTimeout, testLogger(t))
	defer l.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	raw, _ := sc.(*watchedConn).Conn.(*net.TCPConn).SyscallConn()
	var got int
	var gerr error
	_ = raw.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT) })
	if gerr != nil || time.Duration(got)*time.Millisecond != tunnel.ServerKeepaliveTimeout {
		t.Fatalf("TCP_USER_TIMEOUT = %d ms, %v; want %v", got, gerr, tunnel.ServerKeepaliveTimeout)
	}
}
