package peer

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

// reply builds a kernel reply: a netlink header of type typ numbered seq around body.
func reply(typ uint16, seq uint32, body []byte) []byte {
	b := make([]byte, sizeofNlmsghdr, sizeofNlmsghdr+len(body))
	b = append(b, body...)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint32(b[8:], seq)
	return b
}

// diagMsg is an inet_diag_msg describing a socket, followed by an attribute as the kernel
// sends (INET_DIAG_SHUTDOWN), which the decoder must skip.
func diagMsg(family, state uint8, src, dst netip.AddrPort, uid, inode uint32) []byte {
	b := make([]byte, sizeofDiagMsg, sizeofDiagMsg+8)
	b[0], b[1] = family, state
	putSockID(b[4:], src, dst)
	if family == afInet6 && src.Addr().Is4() {
		s16, d16 := netip.AddrFrom16(src.Addr().As16()), netip.AddrFrom16(dst.Addr().As16())
		copy(b[8:24], s16.AsSlice())
		copy(b[24:40], d16.AsSlice())
	}
	binary.NativeEndian.PutUint32(b[4+sizeofSockID+12:], uid)
	binary.NativeEndian.PutUint32(b[4+sizeofSockID+16:], inode)
	return append(b, 5, 0, 8, 0, 0, 0, 0, 0)
}

func errMsg(errno int32) []byte {
	b := make([]byte, 4+sizeofNlmsghdr)
	binary.NativeEndian.PutUint32(b, uint32(-errno))
	return b
}

var (
	cli = netip.MustParseAddrPort("127.0.0.1:40000")
	srv = netip.MustParseAddrPort("127.0.0.1:1080")
)

func TestQueryEncoding(t *testing.T) {
	q, err := kernelQuery("tcp", cli, srv, 7)
	if err != nil {
		t.Fatal(err)
	}
	b := q.encode()
	if len(b) != 72 {
		t.Fatalf("request is %d bytes, want 72 (nlmsghdr 16 + inet_diag_req_v2 56)", len(b))
	}
	ne := binary.NativeEndian
	if ne.Uint32(b) != 72 || ne.Uint16(b[4:]) != 20 || ne.Uint16(b[6:]) != 1 || ne.Uint32(b[8:]) != 7 {
		t.Errorf("header %x", b[:16])
	}
	r := b[16:]
	if r[0] != afInet || r[1] != ipprotoTCP {
		t.Errorf("family %d protocol %d", r[0], r[1])
	}
	id := r[8:]
	if binary.BigEndian.Uint16(id) != 40000 || binary.BigEndian.Uint16(id[2:]) != 1080 {
		t.Errorf("tcp ports %x: want the client's first", id[:4])
	}
	if string(id[4:8]) != "\x7f\x00\x00\x01" || string(id[20:24]) != "\x7f\x00\x00\x01" {
		t.Errorf("addresses %x", id[4:36])
	}
	if ne.Uint32(id[40:]) != ^uint32(0) || ne.Uint32(id[44:]) != ^uint32(0) {
		t.Errorf("cookie %x: want INET_DIAG_NOCOOKIE", id[40:48])
	}

	q, _ = kernelQuery("udp", cli, srv, 8)
	id = q.encode()[16+8:]
	if q.encode()[16+1] != ipprotoUDP || binary.BigEndian.Uint16(id) != 1080 || binary.BigEndian.Uint16(id[2:]) != 40000 {
		t.Errorf("udp question %x: want the server's port first (the kernel's receive-side lookup)", id[:4])
	}

	q, _ = kernelQuery("tcp", netip.MustParseAddrPort("[::1]:40000"), netip.MustParseAddrPort("[::1]:1080"), 9)
	if b := q.encode(); b[16] != afInet6 || b[16+8+4+15] != 1 {
		t.Errorf("ipv6 question %x", b[16:])
	}
	if _, err := kernelQuery("tcp", cli, netip.MustParseAddrPort("[::1]:1"), 1); err == nil {
		t.Error("mixed families: want an error")
	}
	if _, err := kernelQuery("sctp", cli, srv, 1); err == nil {
		t.Error("sctp: want an error")
	}
}

func TestDecodeAnswer(t *testing.T) {
	good := diagMsg(afInet, 1, cli, srv, 1000, 4242)
	a, err := decodeAnswer(reply(sockDiagByFamily, 3, good), 3)
	if err != nil || a.uid != 1000 || a.inode != 4242 || a.src != cli || a.dst != srv || a.state != 1 {
		t.Fatalf("got %+v, %v", a, err)
	}
	if uid, err := ownerOf("tcp", cli, srv, a); err != nil || uid != 1000 {
		t.Errorf("ownerOf: %d, %v", uid, err)
	}

	// An IPv6 socket talking IPv4 answers an IPv4 question with mapped addresses.
	a, err = decodeAnswer(reply(sockDiagByFamily, 3, diagMsg(afInet6, 1, cli, srv, 1000, 1)), 3)
	if err != nil || a.src != cli || a.dst != srv {
		t.Errorf("mapped: %+v, %v", a, err)
	}

	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"not found", reply(nlmsgError, 3, errMsg(int32(syscall.ENOENT))), "no such socket"},
		{"other errno", reply(nlmsgError, 3, errMsg(int32(syscall.EPERM))), "not permitted"},
		{"ack", reply(nlmsgError, 3, errMsg(0)), "without answering"},
		{"short error", reply(nlmsgError, 3, []byte{1, 2}), "error reply of 2 bytes"},
		{"wrong question", reply(sockDiagByFamily, 4, good), "not to ours"},
		{"unknown type", reply(3, 3, good), "unexpected type 3"},
		{"short message", reply(sockDiagByFamily, 3, good[:40]), "want at least 72"},
		{"short header", []byte{1, 2, 3}, "shorter than a netlink header"},
		{"length beyond the data", reply(sockDiagByFamily, 3, good)[:60], "but 60 arrived"},
		{"unknown family", reply(sockDiagByFamily, 3, diagMsg(7, 1, cli, srv, 1, 1)), "address family 7"},
	} {
		_, err := decodeAnswer(tc.in, 3)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := decodeAnswer(reply(nlmsgError, 3, errMsg(int32(syscall.ENOENT))), 3); !errors.Is(err, ErrNotFound) {
		t.Errorf("ENOENT: %v, want ErrNotFound", err)
	}
	// A length field shorter than the header must not be trusted either.
	short := reply(sockDiagByFamily, 3, good)
	binary.NativeEndian.PutUint32(short, 8)
	if _, err := decodeAnswer(short, 3); err == nil {
		t.Error("length 8: want an error")
	}
}

func TestOwnerOf(t *testing.T) {
	other := netip.MustParseAddrPort("127.0.0.1:40001")
	any4 := netip.MustParseAddrPort("0.0.0.0:0")
	for _, tc := range []struct {
		name    string
		network string
		a       answer
		ok      bool
	}{
		{"tcp exact", "tcp", answer{state: 1, src: cli, dst: srv, uid: 5, inode: 9}, true},
		{"tcp another socket", "tcp", answer{state: 1, src: other, dst: srv, uid: 5, inode: 9}, false},
		{"tcp connected elsewhere", "tcp", answer{state: 1, src: cli, dst: other, uid: 5, inode: 9}, false},
		{"tcp listener on the wildcard", "tcp", answer{state: 10, src: netip.AddrPortFrom(any4.Addr(), cli.Port()), dst: any4, uid: 5, inode: 9}, false},
		{"tcp time-wait", "tcp", answer{state: tcpTimeWait, src: cli, dst: srv, uid: 0, inode: 9}, false},
		{"tcp closed by its process", "tcp", answer{state: 4, src: cli, dst: srv, uid: 5, inode: 0}, false},
		{"udp connected", "udp", answer{src: cli, dst: srv, uid: 5, inode: 9}, true},
		{"udp unconnected", "udp", answer{src: cli, dst: any4, uid: 5, inode: 9}, true},
		{"udp bound to the wildcard", "udp", answer{src: netip.AddrPortFrom(any4.Addr(), cli.Port()), dst: any4, uid: 5, inode: 9}, true},
		{"udp another port", "udp", answer{src: other, dst: any4, uid: 5, inode: 9}, false},
		{"udp connected elsewhere", "udp", answer{src: cli, dst: other, uid: 5, inode: 9}, false},
	} {
		uid, err := ownerOf(tc.network, cli, srv, tc.a)
		if tc.ok != (err == nil) || tc.ok && uid != 5 {
			t.Errorf("%s: %d, %v; want ok=%v", tc.name, uid, err, tc.ok)
		}
	}
}

// FuzzDecodeAnswer feeds arbitrary bytes to the reply decoder: it must never panic, and
// any reply it accepts must be long enough to hold what it read.
func FuzzDecodeAnswer(f *testing.F) {
	f.Add(reply(sockDiagByFamily, 1, diagMsg(afInet, 1, cli, srv, 1000, 4242)))
	f.Add(reply(sockDiagByFamily, 1, diagMsg(afInet6, 1, cli, srv, 1000, 4242)))
	f.Add(reply(nlmsgError, 1, errMsg(int32(syscall.ENOENT))))
	f.Add(reply(nlmsgError, 1, errMsg(0)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := decodeAnswer(b, 1)
		if err != nil {
			return
		}
		if len(b) < sizeofNlmsghdr+sizeofDiagMsg {
			t.Fatalf("accepted a %d-byte reply", len(b))
		}
		_, _ = ownerOf("tcp", cli, srv, a)
		_, _ = ownerOf("udp", cli, srv, a)
	})
}
