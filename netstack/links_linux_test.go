//go:build linux

package netstack

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

func testLinks() map[string]linkFunc {
	return map[string]linkFunc{"channel": channelLink, "socketpair": socketpairLink}
}

// socketpairLink gives tp one end of an AF_UNIX SOCK_SEQPACKET pair through Attach, the path
// a TUN fd takes, and the client an fdbased endpoint on the other.
func socketpairLink(tb testing.TB, tp *Stack) stack.LinkEndpoint {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("socketpair: %v", err)
	}
	for _, fd := range fds {
		growSocketBuffers(fd)
	}
	if err := tp.Attach(fds[0]); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		tb.Fatalf("Attach: %v", err)
	}
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{fds[1]}, MTU: tp.cfg.MTU, PacketDispatchMode: fdbased.Readv})
	if err != nil {
		unix.Close(fds[1])
		tb.Fatalf("client link: %v", err)
	}
	// Registered before newEnv's cleanup, so it runs after the client stack is gone. Until
	// then fds[0] keeps the socket open after tp closed its duplicate: closing the last
	// descriptor of a unix socket with unread packets makes the peer's next read fail with
	// ECONNRESET, which would lose what tp wrote last (its resets at Close). A TUN has no
	// such rule.
	tb.Cleanup(func() {
		unix.Close(fds[0])
		unix.Close(fds[1])
	})
	return ep
}

// growSocketBuffers raises the send buffer, which bounds the packets in flight on a unix
// socket: fdbased drops a packet when a write would block, and the default (about three
// 64 KiB packets) would make the test link lossy where a TUN is not. Without root only
// net.core.wmem_max is allowed.
func growSocketBuffers(fd int) {
	const want = 16 << 20
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, want) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, want)
	}
}

// Attach works on its own duplicate: the caller may close its descriptor at once, and
// Close releases the link (the peer reads EOF).
func TestAttachDuplicatesFD(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	ln := listenTCP(t, echoTCP)
	rec := newRecorder(ln.Addr().String())
	tp, err := New(Config{Dial: rec.Dial})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if err := tp.Attach(fds[0]); err != nil {
		t.Fatal(err)
	}
	if err := tp.Attach(fds[0]); err == nil {
		t.Fatal("a second Attach succeeded")
	}
	unix.Close(fds[0]) // the caller's copy
	linkGone := make(chan struct{})
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{fds[1]}, MTU: tp.cfg.MTU, ClosedFunc: func(tcpip.Error) { close(linkGone) }})
	if err != nil {
		t.Fatal(err)
	}
	client := newClientStack(t, ep)
	defer client.Destroy()
	e := &env{tp: tp, client: client}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.dialTCP(ctx, netip.MustParseAddrPort("203.0.113.3:3"))
	if err != nil {
		t.Fatalf("connect after the caller closed its fd: %v", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 2)); err != nil || n != 2 {
		t.Fatalf("echo: %d, %v", n, err)
	}
	c.Close()
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-linkGone:
	case <-time.After(5 * time.Second):
		t.Fatal("the link's peer did not see it closed")
	}
	if err := tp.Attach(fds[1]); err == nil {
		t.Fatal("Attach after Close succeeded")
	}
}
