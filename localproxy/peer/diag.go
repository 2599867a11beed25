package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// The sock_diag messages (linux/sock_diag.h, linux/inet_diag.h). They are written out
// here, not taken from a netlink library, because the question is small and its answer is
// a security decision: every byte read is checked. Netlink headers and the uid are in the
// host's byte order; ports and addresses in network order.
const (
	sizeofNlmsghdr   = 16
	sizeofSockID     = 48 // inet_diag_sockid
	sizeofReqV2      = 8 + sizeofSockID
	sizeofDiagMsg    = 4 + sizeofSockID + 20 // inet_diag_msg
	sockDiagByFamily = 20                    // SOCK_DIAG_BY_FAMILY
	nlmsgError       = 2                     // NLMSG_ERROR
	nlmFRequest      = 1                     // NLM_F_REQUEST

	afInet     = 2
	afInet6    = 10
	ipprotoTCP = 6
	ipprotoUDP = 17

	tcpTimeWait = 6 // TCP_TIME_WAIT: a socket no process holds, reported with uid 0
)

// ErrNotFound is the kernel's answer when no socket has the 4-tuple asked about: the
// client closed before we asked, or (on a kernel without the diag module for the
// protocol) the kernel cannot tell.
var ErrNotFound = errors.New("the kernel knows no such socket")

// query is one exact-socket question. src and dst are as the kernel's lookup for the
// protocol wants them (see kernelQuery).
type query struct {
	proto    uint8
	src, dst netip.AddrPort
	seq      uint32
}

// kernelQuery is the question for the socket at client's end of a conversation with
// server. For TCP the kernel looks up the 4-tuple as the socket itself sees it (its
// address first). For UDP it looks up the socket that would receive a datagram from src
// to dst, so the two are the other way round ("swapped for historical reasons", says
// net/ipv4/udp_diag.c); that lookup also finds a client socket that is bound but not
// connected.
func kernelQuery(network string, client, server netip.AddrPort, seq uint32) (query, error) {
	q := query{src: client, dst: server, seq: seq}
	switch network {
	case "tcp":
		q.proto = ipprotoTCP
	case "udp":
		q.proto = ipprotoUDP
		q.src, q.dst = server, client
	default:
		return q, fmt.Errorf("sock_diag: network %q: want tcp or udp", network)
	}
	if client.Addr().Is4() != server.Addr().Is4() {
		return q, fmt.Errorf("sock_diag: %s and %s are not one address family", client, server)
	}
	return q, nil
}

// encode is the netlink message that asks q: an inet_diag_req_v2 for one socket.
func (q query) encode() []byte {
	b := make([]byte, sizeofNlmsghdr+sizeofReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], sockDiagByFamily)
	ne.PutUint16(b[6:], nlmFRequest)
	ne.PutUint32(b[8:], q.seq)
	// nlmsg_pid 0: the kernel fills in the sender.
	r := b[sizeofNlmsghdr:]
	r[0] = afInet6
	if q.src.Addr().Is4() {
		r[0] = afInet
	}
	r[1] = q.proto
	// idiag_ext 0 (no extensions), pad; idiag_states: any (the exact lookup ignores them).
	ne.PutUint32(r[4:], ^uint32(0))
	putSockID(r[8:], q.src, q.dst)
	return b
}

// putSockID writes an inet_diag_sockid for src and dst, interface 0 (any) and no cookie.
func putSockID(b []byte, src, dst netip.AddrPort) {
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	copy(b[4:20], addrBytes(src.Addr()))
	copy(b[20:36], addrBytes(dst.Addr()))
	binary.NativeEndian.PutUint32(b[36:], 0)
	// INET_DIAG_NOCOOKIE in both halves: find the socket by its tuple alone.
	binary.NativeEndian.PutUint32(b[40:], ^uint32(0))
	binary.NativeEndian.PutUint32(b[44:], ^uint32(0))
}

func addrBytes(a netip.Addr) []byte {
	if a.Is4() {
		v := a.As4()
		return v[:]
	}
	v := a.As16()
	return v[:]
}

// answer is the part of an inet_diag_msg a Guard needs.
type answer struct {
	state    uint8
	src, dst netip.AddrPort // the socket's own address, and its peer's (zero if unconnected)
	uid      uint32
	inode    uint32
}

// decodeAnswer reads the kernel's reply to the question numbered seq: the socket's
// description, ErrNotFound, or another error. A reply to another question, a short or
// overlong message, or one of an unknown type is an error, never a uid.
func decodeAnswer(b []byte, seq uint32) (answer, error) {
	var a answer
	ne := binary.NativeEndian
	if len(b) < sizeofNlmsghdr {
		return a, fmt.Errorf("sock_diag: reply of %d bytes is shorter than a netlink header", len(b))
	}
	n := ne.Uint32(b[0:])
	typ := ne.Uint16(b[4:])
	if n < sizeofNlmsghdr || uint64(n) > uint64(len(b)) {
		return a, fmt.Errorf("sock_diag: reply says it is %d bytes long, but %d arrived", n, len(b))
	}
	if got := ne.Uint32(b[8:]); got != seq {
		return a, fmt.Errorf("sock_diag: reply to question %d, not to ours (%d)", got, seq)
	}
	body := b[sizeofNlmsghdr:n]
	switch typ {
	case nlmsgError:
		if len(body) < 4 {
			return a, fmt.Errorf("sock_diag: error reply of %d bytes", len(body))
		}
		errno := -int32(ne.Uint32(body))
		switch {
		case errno == int32(syscall.ENOENT):
			return a, ErrNotFound
		case errno <= 0:
			// An acknowledgement carries no socket: not an answer to the question.
			return a, fmt.Errorf("sock_diag: the kernel acknowledged the question without answering it (code %d)", -errno)
		default:
			return a, fmt.Errorf("sock_diag: %w", syscall.Errno(errno))
		}
	case sockDiagByFamily:
	default:
		return a, fmt.Errorf("sock_diag: reply of unexpected type %d", typ)
	}
	if len(body) < sizeofDiagMsg {
		return a, fmt.Errorf("sock_diag: socket description of %d bytes, want at least %d", len(body), sizeofDiagMsg)
	}
	family := body[0]
	a.state = body[1]
	id := body[4 : 4+sizeofSockID]
	src, dst, err := sockID(family, id)
	if err != nil {
		return a, err
	}
	a.src, a.dst = src, dst
	rest := body[4+sizeofSockID:]
	// idiag_expires, idiag_rqueue, idiag_wqueue, then idiag_uid and idiag_inode.
	a.uid = ne.Uint32(rest[12:])
	a.inode = ne.Uint32(rest[16:])
	return a, nil
}

// sockID reads the addresses of an inet_diag_sockid, IPv4-mapped ones unmapped (an IPv6
// socket talking IPv4 is found by an IPv4 question).
func sockID(family uint8, id []byte) (src, dst netip.AddrPort, err error) {
	sp, dp := binary.BigEndian.Uint16(id[0:]), binary.BigEndian.Uint16(id[2:])
	var sa, da netip.Addr
	switch family {
	case afInet:
		sa, da = netip.AddrFrom4([4]byte(id[4:8])), netip.AddrFrom4([4]byte(id[20:24]))
	case afInet6:
		sa, da = netip.AddrFrom16([16]byte(id[4:20])).Unmap(), netip.AddrFrom16([16]byte(id[20:36])).Unmap()
	default:
		return src, dst, fmt.Errorf("sock_diag: socket of address family %d, want IPv4 or IPv6", family)
	}
	return netip.AddrPortFrom(sa, sp), netip.AddrPortFrom(da, dp), nil
}

// ownerOf checks that a describes the socket q asked about, held by a process, and returns
// its owner. The kernel's lookup is exact for TCP; for UDP it also matches sockets bound
// to the unspecified address or not connected, which are the client's as well.
func ownerOf(network string, client, server netip.AddrPort, a answer) (uint32, error) {
	matches := func(got, want netip.AddrPort) bool {
		return got.Port() == want.Port() && (got.Addr() == want.Addr() || network == "udp" && got.Addr().IsUnspecified())
	}
	connectedTo := a.dst == server || network == "udp" && a.dst.Port() == 0 && a.dst.Addr().IsUnspecified()
	if !matches(a.src, client) || !connectedTo {
		return 0, fmt.Errorf("sock_diag: asked about %s (%s to %s) and was told about the socket %s to %s",
			network, client, server, a.src, a.dst)
	}
	// A socket no process holds any longer (closed, in TIME_WAIT, or a half-open request)
	// is reported with inode 0 and, for TIME_WAIT, uid 0: its uid says nothing.
	if a.inode == 0 || network == "tcp" && a.state == tcpTimeWait {
		return 0, fmt.Errorf("sock_diag: the socket at %s is closed (state %d): no process holds it", client, a.state)
	}
	return a.uid, nil
}
