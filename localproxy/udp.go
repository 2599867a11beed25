package localproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/things-go/go-socks5"
	"github.com/things-go/go-socks5/statute"
	"github.com/tpdev/tp/remote/relay"
)

const (
	// maxUDPFlows bounds the destinations one association may talk to at once, so a client
	// spraying datagrams can't open unbounded remote flows.
	maxUDPFlows = 256
	// udpQueue is how many datagrams wait for a flow's dial; more are dropped, as a
	// router would.
	udpQueue    = 64
	maxDatagram = 64 << 10
	// maxUDPHeader is the longest SOCKS UDP header: one with a 255-byte name.
	maxUDPHeader = 4 + 1 + 255 + 2
)

// socksAssociate serves UDP ASSOCIATE (RFC 1928 §7) with tp's own relay: the library's
// would dial every destination locally. Each destination the client names gets one flow,
// dialed through the Server's Dialer as "udp" with the name unresolved; each Write or Read
// on a flow is one datagram. The association, and all its flows, end when the client's TCP
// control connection closes.
func (s *Server) socksAssociate(_ context.Context, w io.Writer, req *socks5.Request) error {
	fc, err := connOf(w)
	if err != nil {
		_ = socks5.SendReply(w, statute.RepServerFailure, nil)
		return err
	}
	// Bind where the client reached us: on loopback, so only this machine can send.
	bindIP := net.IPv4(127, 0, 0, 1)
	if a, ok := fc.LocalAddr().(*net.TCPAddr); ok {
		bindIP = a.IP
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: bindIP})
	if err != nil {
		_ = socks5.SendReply(w, statute.RepServerFailure, nil)
		return fmt.Errorf("socks5: udp associate: %w", err)
	}
	if err := socks5.SendReply(w, statute.RepSuccess, pc.LocalAddr()); err != nil {
		_ = pc.Close()
		return fmt.Errorf("socks5: udp associate: sending reply: %w", err)
	}
	_ = fc.SetDeadline(time.Time{})

	a := &association{
		s:    s,
		pc:   pc,
		ctrl: fc.remoteAddrPort(),
		want: wantedSource(req.RawDestAddr),
		flows: relay.New[string, *socksFlow](fc.ctx, relay.Config{
			Max: maxUDPFlows, Full: relay.DropNew, Idle: s.udpIdle, Headroom: maxUDPHeader,
			Name: "socks5", Log: s.log,
		}),
	}
	s.log.Debug("socks5: udp associate", clientAttr(fc), "relay", pc.LocalAddr().String())
	var wg sync.WaitGroup
	wg.Go(a.readClient)
	// The control connection carries nothing more; its end (EOF, error, or Serve closing
	// it) ends the association.
	_, _ = io.Copy(io.Discard, req.Reader)
	a.close()
	wg.Wait()
	return nil
}

// wantedSource is the address the client said it would send datagrams from; zero parts
// mean "not known yet".
func wantedSource(a *statute.AddrSpec) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port))
}

type association struct {
	s    *Server
	pc   *net.UDPConn
	ctrl netip.AddrPort // the control connection's client address
	want netip.AddrPort
	// client is the source of the first accepted datagram; later ones must match it and
	// replies go to it.
	client atomic.Pointer[netip.AddrPort]
	// flows holds one flow per destination the client names; they end with the
	// association.
	flows *relay.Table[string, *socksFlow]
}

func (a *association) close() {
	_ = a.pc.Close()
	a.flows.Close()
}

// acceptFrom reports whether a datagram from src belongs to this association.
func (a *association) acceptFrom(src netip.AddrPort) bool {
	if c := a.client.Load(); c != nil {
		return *c == src
	}
	switch {
	case a.want.Addr().IsValid() && !a.want.Addr().IsUnspecified() && a.want.Addr() != src.Addr():
		return false
	case a.want.Port() != 0 && a.want.Port() != src.Port():
		return false
	// No address given: only the host that holds the control connection may use the relay.
	case a.ctrl.IsValid() && a.ctrl.Addr() != src.Addr():
		return false
	}
	// The control connection's user was checked, but the relay port is open to every
	// local user: the first datagram, which claims the association, must be theirs too.
	// Later ones must come from the same address and port, which another user cannot
	// take while the client's socket holds it (unless the client shares it: SO_REUSEADDR).
	if a.s.peers.CheckDatagram(a.pc.LocalAddr(), src) != nil {
		return false
	}
	a.client.Store(&src)
	return true
}

func (a *association) readClient() {
	log := a.s.log
	buf := make([]byte, maxDatagram)
	for {
		n, src, err := a.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Debug("socks5: udp read", "err", err)
			continue
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if !a.acceptFrom(src) {
			log.Debug("socks5: udp datagram from a stranger dropped", "from", src.String())
			continue
		}
		target, hdrLen, err := parseUDPHeader(buf[:n])
		if err != nil {
			log.Debug("socks5: udp datagram dropped", "from", src.String(), "err", err)
			continue
		}
		a.send(target, buf[:hdrLen], buf[hdrLen:n])
	}
}

// send queues payload on target's flow, opening the flow if needed. Datagrams that can't
// be queued are dropped: UDP promises no delivery, and blocking here would stall every
// other destination of the association.
func (a *association) send(target string, hdr, payload []byte) {
	f, ok := a.flows.Get(target)
	if !ok {
		h := append([]byte(nil), hdr...)
		h[0], h[1], h[2] = 0, 0, 0 // RSV and FRAG
		f = &socksFlow{Queue: relay.NewQueue(udpQueue), a: a, hdr: h}
		dial := func(ctx context.Context) (net.Conn, error) {
			conn, err := a.s.dial(ctx, "udp", target)
			if err != nil {
				a.s.log.Info("socks5: udp flow failed", "target", target, "err", err)
			}
			return conn, err
		}
		if err := a.flows.Add(target, f, dial); err != nil {
			if errors.Is(err, relay.ErrFull) {
				a.s.log.Info("socks5: udp datagram dropped: too many destinations", "target", target)
			}
			return
		}
	}
	if !f.Push(payload) {
		a.s.log.Debug("socks5: udp datagram dropped: queue full", "target", target)
	}
}

// socksFlow is the client's side of the flow to one destination: its datagrams waiting
// for the flow's dial or write, and the header its replies carry.
type socksFlow struct {
	*relay.Queue
	a   *association
	hdr []byte // SOCKS UDP header naming the destination as the client did
}

// Reply wraps a datagram from the destination in the flow's SOCKS UDP header and sends it
// to the client.
func (f *socksFlow) Reply(b []byte) error {
	c := f.a.client.Load()
	if c == nil {
		return nil
	}
	d := b[maxUDPHeader-len(f.hdr):]
	copy(d, f.hdr)
	if _, err := f.a.pc.WriteToUDPAddrPort(d, *c); err != nil {
		if errors.Is(err, net.ErrClosed) {
			return err
		}
		f.a.s.log.Debug("socks5: udp write to client", "err", err)
	}
	return nil
}

// parseUDPHeader reads a SOCKS5 UDP request header (RFC 1928 §7):
//
//	RSV(2) FRAG(1) ATYP(1) DST.ADDR DST.PORT(2) DATA
//
// and returns the destination as host:port (names unresolved) and the header's length.
func parseUDPHeader(b []byte) (target string, hdrLen int, err error) {
	if len(b) < 4 {
		return "", 0, errors.New("udp header too short")
	}
	if b[2] != 0 {
		// Reassembly is optional in RFC 1928 and no common client fragments.
		return "", 0, fmt.Errorf("fragmented datagram (frag %d) not supported", b[2])
	}
	var host string
	switch b[3] {
	case statute.ATYPIPv4:
		hdrLen = 4 + 4 + 2
		if len(b) < hdrLen {
			return "", 0, errors.New("udp header too short for an IPv4 address")
		}
		host = netip.AddrFrom4([4]byte(b[4:8])).String()
	case statute.ATYPIPv6:
		hdrLen = 4 + 16 + 2
		if len(b) < hdrLen {
			return "", 0, errors.New("udp header too short for an IPv6 address")
		}
		host = netip.AddrFrom16([16]byte(b[4:20])).String()
	case statute.ATYPDomain:
		if len(b) < 5 || b[4] == 0 {
			return "", 0, errors.New("udp header has no name")
		}
		hdrLen = 5 + int(b[4]) + 2
		if len(b) < hdrLen {
			return "", 0, errors.New("udp header too short for its name")
		}
		host = string(b[5 : 5+int(b[4])])
	default:
		return "", 0, fmt.Errorf("udp header has unknown address type %d", b[3])
	}
	port := binary.BigEndian.Uint16(b[hdrLen-2 : hdrLen])
	return net.JoinHostPort(host, strconv.Itoa(int(port))), hdrLen, nil
}
