package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/ratelimit"
	"github.com/tpdev/tp/remote/relay"
)

// maxDatagram holds any UDP payload over IPv4 or IPv6 (jumbograms aside), so no datagram is
// ever truncated on its way through.
const maxDatagram = relay.MaxDatagram

// Defaults of Config's zero fields.
const (
	// DefaultMTU is large so that bulk transfers cost few packets (and few syscalls on the
	// TUN); the TUN device in the namespace must be given the same MTU.
	DefaultMTU = 65520
	// DefaultDialTimeout bounds one Dial.
	DefaultDialTimeout = 30 * time.Second
	// DefaultUDPIdleTimeout ends a UDP flow after this long without a datagram either way.
	DefaultUDPIdleTimeout = 2 * time.Minute
	// DefaultMaxPendingDials bounds the TCP connections waiting for their Dial.
	DefaultMaxPendingDials = 1024
	// DefaultMaxUDPFlows bounds the UDP flows alive at once.
	DefaultMaxUDPFlows = 1024
)

const (
	nicID tcpip.NICID = 1

	// TCP buffers: 1 MiB to start with, grown by receive-buffer moderation and the send
	// window up to 8 MiB, enough for a fast local link and a tunnel with some latency.
	tcpBufMin     = 4 << 10
	tcpBufDefault = 1 << 20
	tcpBufMax     = 8 << 20

	// Keepalive on the namespace side of TCP flows: a program whose socket vanished without
	// a FIN or RST (its namespace torn down under it) is noticed after about 4 minutes, and
	// its host-side conn is closed with it.
	keepaliveIdle     = 2 * time.Minute
	keepaliveInterval = 30 * time.Second
	keepaliveCount    = 4
)

// Config configures a Stack. Dial or Dialer is required.
type Config struct {
	// Dial opens the host-side end of a flow the namespace started from src to dst; network
	// is "tcp" or "udp". For udp the returned conn carries datagrams: each Write is one
	// datagram to dst, each Read one datagram from it. Any error (a *remote.Error of kind
	// Refused, NoSuchHost, Unreachable, Timeout, or another) makes the program see a
	// failure: for TCP a RST to its SYN, so its connect() fails with ECONNREFUSED; for UDP
	// its datagrams are dropped. Dial is called concurrently, once per flow (for UDP on the
	// flow's first datagram; later ones wait in the flow's buffer meanwhile), and must
	// return when ctx is done.
	Dial func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error)
	// Dialer, used when Dial is nil, opens each flow's host-side end as
	// Dialer.DialContext(ctx, network, dst.String()), with Dial's contract. It is where the
	// flows go, chosen by the caller: the connection's own dialer when the tunnel is in the
	// same process (localproxy.Server.Dialer), so flows skip the loopback SOCKS hop and
	// its errors keep their kind (TunnelDown stays TunnelDown), or a
	// *localproxy.SOCKSDialer when attaching to another process's connection.
	Dialer remote.Dialer
	// MTU of the link; default DefaultMTU. The TUN device must have the same MTU.
	MTU uint32
	// DialTimeout bounds each Dial; default DefaultDialTimeout.
	DialTimeout time.Duration
	// UDPIdleTimeout ends a UDP flow after this long without a datagram either way;
	// default DefaultUDPIdleTimeout.
	UDPIdleTimeout time.Duration
	// MaxPendingDials bounds the TCP connections whose Dial is under way; SYNs beyond it
	// are ignored (the program's kernel retransmits them). Default DefaultMaxPendingDials.
	MaxPendingDials int
	// MaxUDPFlows bounds the UDP flows alive at once; a new flow beyond it evicts the flow
	// that has been idle longest. Default DefaultMaxUDPFlows.
	MaxUDPFlows int
	// Address, when valid, is the stack's own IPv4 address on the link: DialNamespace's
	// connections into the namespace come from it. It must be an address the namespace
	// routes to the link and that no flow of the namespace dials (flows to it end in the
	// stack, not in Dial).
	Address netip.Addr
	// Log receives the stack's messages; nil discards them.
	Log *slog.Logger
}

// Stats counts a Stack's flows and bytes since New.
type Stats struct {
	TCPOpen  int64 // TCP flows being spliced now
	TCPTotal int64 // TCP flows spliced
	UDPOpen  int64 // UDP flows alive now (dialling or relaying)
	UDPTotal int64 // UDP flows started
	// FailedDials counts flows whose Dial failed: answered with a RST (TCP) or dropped (UDP).
	FailedDials int64
	// TCPDropped counts SYNs ignored because MaxPendingDials dials were under way.
	TCPDropped int64
	// UDPEvicted counts UDP flows closed early to make room under MaxUDPFlows.
	UDPEvicted int64
	BytesOut   int64 // payload from the namespace to the host side
	BytesIn    int64 // payload from the host side into the namespace
}

// Stack is a userspace TCP/IP stack (IPv4 and IPv6) that hands every TCP connection and
// UDP flow arriving on its link to Config.Dial. It is safe for concurrent use.
type Stack struct {
	cfg     Config
	log     *slog.Logger
	ipstack *stack.Stack
	// ctx is cancelled by Close: it aborts pending dials and closes the conns of open flows.
	ctx    context.Context
	cancel context.CancelFunc
	// udp relays the UDP flows; its table ends with ctx.
	udp *relay.Table[udpKey, *nsUDP]

	mu       sync.Mutex
	closed   bool
	attached bool
	release  func() error // frees the link (closes its fd) once the stack no longer reads it

	// datagrams pools the buffers of datagrams from the namespace, which are large and
	// needed only while a datagram passes.
	datagrams sync.Pool

	// wg counts the goroutines that serve TCP flows (udp counts its own), so Close can
	// wait for them; Add is only called under mu while !closed, which orders every Add
	// before Close's Wait.
	wg sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	tcpOpen, tcpTotal atomic.Int64
	failedDials       atomic.Int64
	// udpFailures bounds the log lines of failed UDP dials: a program retrying a dead
	// destination (a resolver, a metrics agent) dials again for each datagram.
	udpFailures       *ratelimit.Limiter
	bytesOut, bytesIn atomic.Int64
}

// New makes a Stack with its TCP and UDP handlers installed; Attach gives it a link.
func New(cfg Config) (*Stack, error) {
	if cfg.Dial == nil && cfg.Dialer != nil {
		d := cfg.Dialer
		cfg.Dial = func(ctx context.Context, network string, _, dst netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, network, dst.String())
		}
	}
	if cfg.Dial == nil {
		return nil, errors.New("netstack: config has no Dial function or Dialer")
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < header.IPv6MinimumMTU {
		return nil, fmt.Errorf("netstack: MTU %d is below %d, the minimum for IPv6", cfg.MTU, header.IPv6MinimumMTU)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.UDPIdleTimeout <= 0 {
		cfg.UDPIdleTimeout = DefaultUDPIdleTimeout
	}
	if cfg.MaxPendingDials <= 0 {
		cfg.MaxPendingDials = DefaultMaxPendingDials
	}
	if cfg.MaxUDPFlows <= 0 {
		cfg.MaxUDPFlows = DefaultMaxUDPFlows
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	ipstack := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	if err := configureTCP(ipstack); err != nil {
		ipstack.Destroy()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Stack{
		cfg:         cfg,
		log:         log,
		udpFailures: ratelimit.New(5, 10*time.Second),
		ipstack:     ipstack,
		ctx:         ctx,
		cancel:      cancel,
		udp: relay.New[udpKey, *nsUDP](ctx, relay.Config{
			Max: cfg.MaxUDPFlows, Full: relay.EvictIdlest, Idle: cfg.UDPIdleTimeout,
			Name: "netstack", Log: log,
		}),
	}
	s.datagrams.New = func() any { return new([maxDatagram]byte) }
	// The handlers go in before any NIC exists (Attach makes it), so no early SYN or
	// datagram meets a stack without them and is answered with a RST or ICMP error.
	tcpFwd := tcp.NewForwarder(ipstack, tcpBufDefault, cfg.MaxPendingDials, s.handleTCP)
	ipstack.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	udpFwd := udp.NewForwarder(ipstack, s.handleUDP)
	ipstack.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)
	return s, nil
}

// configureTCP pins the TCP settings throughput depends on, rather than trusting gVisor's
// defaults, which have changed between versions.
func configureTCP(s *stack.Stack) error {
	sack := tcpip.TCPSACKEnabled(true)
	// RACK loss detection (gVisor's default, pinned): with this gVisor version it moved
	// 2-2.5x the bytes of classic fast retransmit at 0.5% loss in BenchmarkTCPThroughput,
	// and the same without loss. Tailscale turned it off for an older version; measure
	// again when bumping gVisor.
	recovery := tcpip.TCPRACKLossDetection
	// Reno is gVisor's default; pinned because cubic has had window-arithmetic bugs.
	cc := tcpip.CongestionControlOption("reno")
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	send := tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax}
	recv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax}
	opts := []struct {
		name string
		opt  tcpip.SettableTransportProtocolOption
	}{
		{"SACK", &sack}, {"loss recovery", &recovery}, {"congestion control", &cc},
		{"receive buffer moderation", &moderate},
		{"send buffer sizes", &send}, {"receive buffer sizes", &recv},
	}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); err != nil {
			return fmt.Errorf("netstack: set TCP %s: %s", o.name, err)
		}
	}
	return nil
}

// attach makes ep the stack's one NIC. release, if not nil, runs once the stack has stopped
// using ep, in Close.
func (s *Stack) attach(ep stack.LinkEndpoint, release func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.canAttachLocked(); err != nil {
		return err
	}
	return s.attachLocked(ep, release)
}

func (s *Stack) canAttachLocked() error {
	if s.closed {
		return errors.New("netstack: stack is closed")
	}
	if s.attached {
		return errors.New("netstack: a link is already attached")
	}
	return nil
}

func (s *Stack) attachLocked(ep stack.LinkEndpoint, release func() error) error {
	// Disabled until configured: a packet arriving before promiscuous mode is on would be
	// dropped as not ours.
	if err := s.ipstack.CreateNICWithOptions(nicID, ep, stack.NICOptions{Name: "tp0", Disabled: true}); err != nil {
		return fmt.Errorf("netstack: create NIC: %s", err)
	}
	// Promiscuous: accept packets for every destination, since every address the program
	// dials is "ours". Spoofing: answer from those addresses, which the NIC does not own.
	if err := s.ipstack.SetPromiscuousMode(nicID, true); err != nil {
		s.ipstack.RemoveNIC(nicID)
		return fmt.Errorf("netstack: set NIC promiscuous: %s", err)
	}
	if err := s.ipstack.SetSpoofing(nicID, true); err != nil {
		s.ipstack.RemoveNIC(nicID)
		return fmt.Errorf("netstack: set NIC spoofing: %s", err)
	}
	s.ipstack.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	if s.cfg.Address.Is4() {
		pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
			AddressWithPrefix: tcpip.AddrFrom4(s.cfg.Address.As4()).WithPrefix()}
		if err := s.ipstack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			s.ipstack.RemoveNIC(nicID)
			return fmt.Errorf("netstack: add address %s: %s", s.cfg.Address, err)
		}
	}
	if err := s.ipstack.EnableNIC(nicID); err != nil {
		s.ipstack.RemoveNIC(nicID)
		return fmt.Errorf("netstack: enable NIC: %s", err)
	}
	s.attached = true
	s.release = release
	return nil
}

// enter registers a flow goroutine with Close's wait group; false means the stack is
// closing and the flow must be refused.
func (s *Stack) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// Close ends every flow (the program sees its TCP connections reset), stops reading the
// link and closes the stack's duplicate of Attach's descriptor. It waits for all of the
// stack's goroutines, so Config.Dial must honour its context. Later calls return nil.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Stack) close() error {
	s.mu.Lock()
	s.closed = true
	release := s.release
	s.mu.Unlock()

	s.cancel()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		s.udp.Close()
		close(done)
	}()
	// Aborting endpoints resets the program's connections and wakes the flow goroutines
	// reading them. It is repeated because a flow whose Dial returned just now may still
	// create an endpoint, which could otherwise wait out a whole handshake.
	for waiting := true; waiting; {
		for _, ep := range s.ipstack.RegisteredEndpoints() {
			ep.Abort()
		}
		select {
		case <-done:
			waiting = false
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.ipstack.Close()
	// Wait removes the NIC, which stops the link's reader; only then is its fd free.
	s.ipstack.Wait()
	if release != nil {
		if err := release(); err != nil {
			return fmt.Errorf("netstack: release link: %w", err)
		}
	}
	return nil
}

// Stats returns the stack's counters.
func (s *Stack) Stats() Stats {
	udp := s.udp.Stats()
	return Stats{
		TCPOpen:     s.tcpOpen.Load(),
		TCPTotal:    s.tcpTotal.Load(),
		UDPOpen:     udp.Open,
		UDPTotal:    udp.Total,
		FailedDials: s.failedDials.Load(),
		TCPDropped:  int64(s.ipstack.Stats().TCP.ForwardMaxInFlightDrop.Value()),
		UDPEvicted:  udp.Evicted,
		BytesOut:    s.bytesOut.Load(),
		BytesIn:     s.bytesIn.Load(),
	}
}

// dial calls Config.Dial with the stack's timeout; a nil conn without an error counts as
// a failure, so a careless hook cannot make the stack splice with nothing.
func (s *Stack) dial(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	c, err := s.cfg.Dial(ctx, network, src, dst)
	if err == nil && c == nil {
		err = fmt.Errorf("netstack: dial %s %s returned no conn", network, dst)
	}
	if err != nil {
		if c != nil {
			c.Close()
		}
		s.failedDials.Add(1)
		return nil, err
	}
	return c, nil
}

// logDialFailure logs a failed Dial: quietly when the program is told what happened (the
// destination refused, does not exist, cannot be reached or did not answer), louder when
// the cause is tp's own (the tunnel is down, or an unknown failure) or tp's dial policy
// refused it: the program sees only a refused connection, the log says why.
func (s *Stack) logDialFailure(network string, src, dst netip.AddrPort, err error) {
	kind := remote.KindOf(err)
	level := slog.LevelDebug
	if kind == remote.TunnelDown || kind == remote.Failed || kind == remote.Forbidden {
		level = slog.LevelInfo
	}
	attrs := []any{"network", network, "src", src, "dst", dst, "kind", kind.String(), "err", err}
	if network == "udp" {
		// A TCP program sees its refusal (a RST); a UDP one only silence: the log says it.
		ok, skipped := s.udpFailures.Allow(time.Now())
		if !ok {
			return
		}
		level = slog.LevelInfo
		if skipped > 0 {
			attrs = append(attrs, "notLogged", skipped)
		}
	}
	s.log.Log(context.Background(), level, "netstack: dial failed", attrs...)
}

// closeAll closes each closer, ignoring errors: it is used where the flow is over anyway.
func closeAll(cs ...io.Closer) {
	for _, c := range cs {
		c.Close()
	}
}

func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), port)
}

// DialNamespace opens a TCP connection from the stack's Address into the namespace, to a
// program listening there (an intercepted connection coming to the program tp run runs).
func (s *Stack) DialNamespace(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	if !s.cfg.Address.Is4() || !dst.Addr().Is4() {
		return nil, fmt.Errorf("netstack: dial into the namespace: the stack has no IPv4 address (Config.Address)")
	}
	c, err := gonet.DialContextTCP(ctx, s.ipstack,
		tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(dst.Addr().As4()), Port: dst.Port()}, ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("netstack: dial %s in the namespace: %w", dst, err)
	}
	return c, nil
}
