//go:build linux

package peer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

const supported = true

var seq atomic.Uint32

// kernelOwner asks the kernel which uid owns the socket at client's end. Without sock_diag
// for the protocol the kernel answers "no such socket", as it does for a client that has
// gone: the first such answer makes it ask about a socket of its own, so that the log says
// which of the two it was.
func kernelOwner(network string, client, server netip.AddrPort) (uint32, error) {
	uid, err := ask(network, client, server)
	if errors.Is(err, ErrNotFound) {
		if perr := probe(network); perr != nil {
			return 0, perr
		}
	}
	return uid, err
}

func ask(network string, client, server netip.AddrPort) (uint32, error) {
	q, err := kernelQuery(network, client, server, seq.Add(1))
	if err != nil {
		return 0, err
	}
	b, err := exchange(q.encode())
	if err != nil {
		return 0, err
	}
	a, err := decodeAnswer(b, q.seq)
	if err != nil {
		return 0, err
	}
	return ownerOf(network, client, server, a)
}

// exchange sends one request on a fresh NETLINK_SOCK_DIAG socket and returns the reply.
// The socket is connected to the kernel (port id 0), so that no other process can slip a
// forged reply into it (netlink refuses other senders to a connected socket), and the
// reply's sender is checked as well.
func exchange(req []byte) ([]byte, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: netlink socket: %w", err)
	}
	defer unix.Close(fd)
	// The kernel answers while the request is being sent, so the reply is queued by the
	// time Send returns; the timeout only guards against a kernel that never answers.
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("sock_diag: netlink receive timeout: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: netlink connect: %w", err)
	}
	if err := unix.Send(fd, req, 0); err != nil {
		return nil, fmt.Errorf("sock_diag: sending the question: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sock_diag: reading the answer: %w", err)
		}
		if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
			return nil, fmt.Errorf("sock_diag: answer not from the kernel (%+v)", from)
		}
		return buf[:n], nil
	}
}

// probes remember, per protocol, whether the kernel answers questions about a socket of
// this process.
var probes sync.Map // network -> func() error

func probe(network string) error {
	f, _ := probes.LoadOrStore(network, sync.OnceValue(func() error { return probeOnce(network) }))
	return f.(func() error)()
}

// probeOnce asks about a loopback connection of this process's own.
func probeOnce(network string) error {
	var client, server netip.AddrPort
	switch network {
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil // loopback itself is missing: nothing to say about sock_diag
		}
		defer ln.Close()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil
		}
		defer c.Close()
		client, server = c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
	case "udp":
		s, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil
		}
		defer s.Close()
		c, err := net.DialUDP("udp", nil, s.LocalAddr().(*net.UDPAddr))
		if err != nil {
			return nil
		}
		defer c.Close()
		client, server = c.LocalAddr().(*net.UDPAddr).AddrPort(), s.LocalAddr().(*net.UDPAddr).AddrPort()
	default:
		return nil
	}
	uid, err := ask(network, unmap(client), unmap(server))
	switch {
	case err != nil:
		return fmt.Errorf("this kernel does not answer sock_diag questions about %s sockets, not even about tp's own (%v): "+
			"tp cannot tell which user a client is", network, err)
	case uid != uint32(os.Getuid()):
		return fmt.Errorf("sock_diag says tp's own %s socket belongs to uid %d, not %d: tp cannot tell which user a client is",
			network, uid, os.Getuid())
	}
	return nil
}
