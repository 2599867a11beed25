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
)

const (
	// maxUDPFlows bounds the destinations one association may talk to at once, so a client
	// spraying datagrams can't open unbounded remote flows.
	maxUDPFlows = 256
	// udpQueue is how many datagrams wait for a flow's dial; more are dropped, as a
	// router would.
	udpQueue    = 64
	maxDatagram = 64 << 10
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

	ctx, cancel := context.WithCancel(fc.ctx)
	a := &association{
		s:      s,
		ctx:    ctx,
		cancel: cancel,
		pc:     pc,
		ctrl:   fc.remoteAddrPort(),
		want:   wantedSource(req.RawDestAddr),
		flows:  map[string]*udpFlow{},
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
	s      *Server
	ctx    context.Context // ends with the association, closing its flows
	cancel context.CancelFunc
	pc     *net.UDPConn
	ctrl   netip.AddrPort // the control connection's client address
	want   netip.AddrPort
	// client is the source of the first accepted datagram; later ones must match it and
	// replies go to it.
	client atomic.Pointer[netip.AddrPort]

	mu     sync.Mutex
	flows  map[string]*udpFlow
	closed bool
	wg     sync.WaitGroup
}

type udpFlow struct {
	target string
	hdr    []byte // SOCKS UDP header naming target as the client did, for replies
	out    chan []byte
	last   atomic.Int64 // unix nanos of the last datagram either way
}

func (f *udpFlow) touch() { f.last.Store(time.Now().UnixNano()) }

func (a *association) close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.cancel()
	_ = a.pc.Close()
	a.wg.Wait()
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
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	f := a.flows[target]
	if f == nil {
		if len(a.flows) >= maxUDPFlows {
			a.s.log.Info("socks5: udp datagram dropped: too many destinations", "target", target)
			return
		}
		h := append([]byte(nil), hdr...)
		h[0], h[1], h[2] = 0, 0, 0 // RSV and FRAG
		f = &udpFlow{target: target, hdr: h, out: make(chan []byte, udpQueue)}
		f.touch()
		a.flows[target] = f
		a.wg.Go(func() { a.runFlow(f) })
	}
	select {
	case f.out <- append([]byte(nil), payload...):
	default:
		a.s.log.Debug("socks5: udp datagram dropped: queue full", "target", target)
	}
}

func (a *association) forget(f *udpFlow) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.flows[f.target] == f {
		delete(a.flows, f.target)
	}
}

// runFlow dials f's destination, then writes queued datagrams to it until the association
// ends, the flow idles out, or the remote side closes it.
func (a *association) runFlow(f *udpFlow) {
	conn, err := a.s.dial(a.ctx, "udp", f.target)
	if err != nil {
		a.forget(f)
		a.s.log.Info("socks5: udp flow failed", "target", f.target, "err", err)
		return
	}
	stop := context.AfterFunc(a.ctx, func() { _ = conn.Close() })
	defer stop()

	remoteDone := make(chan struct{})
	go func() {
		defer close(remoteDone)
		a.readRemote(f, conn)
	}()
	defer func() {
		// Forget first, so a datagram arriving now opens a new flow instead of queueing on
		// this closing one.
		a.forget(f)
		_ = conn.Close()
		<-remoteDone
	}()

	idle := time.NewTimer(a.s.udpIdle)
	defer idle.Stop()
	for {
		select {
		case p := <-f.out:
			if _, err := conn.Write(p); err != nil {
				a.s.log.Debug("socks5: udp write", "target", f.target, "err", err)
				return
			}
			f.touch()
		case <-idle.C:
			if left := a.s.udpIdle - time.Since(time.Unix(0, f.last.Load())); left > 0 {
				idle.Reset(left)
				continue
			}
			a.s.log.Debug("socks5: udp flow idle; closing", "target", f.target)
			return
		case <-remoteDone:
			return
		case <-a.ctx.Done():
			return
		}
	}
}

// readRemote wraps each reply from the destination in f's SOCKS UDP header and sends it to
// the client.
func (a *association) readRemote(f *udpFlow, conn net.Conn) {
	buf := make([]byte, len(f.hdr)+maxDatagram)
	copy(buf, f.hdr)
	for {
		n, err := conn.Read(buf[len(f.hdr):])
		if err != nil {
			return
		}
		f.touch()
		c := a.client.Load()
		if c == nil {
			continue
		}
		if _, err := a.pc.WriteToUDPAddrPort(buf[:len(f.hdr)+n], *c); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			a.s.log.Debug("socks5: udp write to client", "err", err)
		}
	}
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
