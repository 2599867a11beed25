package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// The tests play the namespace with a second gVisor stack, the "client", joined to the
// Stack under test by a link of their own: channel endpoints pumped into each other
// (everywhere) or, on Linux, a SOCK_SEQPACKET socketpair handed to Attach, which carries one
// IP packet per message as a TUN does.

var (
	clientV4 = netip.MustParseAddr("10.0.0.2")
	clientV6 = netip.MustParseAddr("fd00::2")
)

// linkFunc attaches tp to one end of a new link and returns the other end, for the client.
type linkFunc func(tb testing.TB, tp *Stack) stack.LinkEndpoint

// channelLink joins two channel endpoints with a goroutine each way, copying packets as a
// wire would (asynchronously, dropping when a queue is full).
func channelLink(tb testing.TB, tp *Stack) stack.LinkEndpoint {
	a := channel.New(1024, tp.cfg.MTU, "")
	b := channel.New(1024, tp.cfg.MTU, "")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	pump := func(from, to *channel.Endpoint) {
		for {
			pkt := from.ReadContext(ctx)
			if pkt == nil {
				return
			}
			in := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: pkt.ToBuffer()})
			proto := pkt.NetworkProtocolNumber
			pkt.DecRef()
			to.InjectInbound(proto, in)
			in.DecRef()
		}
	}
	wg.Go(func() { pump(a, b) })
	wg.Go(func() { pump(b, a) })
	stop := func() error {
		cancel()
		wg.Wait()
		// Deliver what tp wrote last (its resets at Close).
		for pkt := a.Read(); pkt != nil; pkt = a.Read() {
			in := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: pkt.ToBuffer()})
			b.InjectInbound(pkt.NetworkProtocolNumber, in)
			pkt.DecRef()
			in.DecRef()
		}
		a.Close()
		b.Close()
		return nil
	}
	if err := tp.attach(wireEndpoint{a}, stop); err != nil {
		stop()
		tb.Fatalf("attach: %v", err)
	}
	return b
}

// wireEndpoint keeps the packets queued in a channel endpoint when the stack closes it
// (channel's Close discards them); stop delivers them, as a TUN delivers what was written
// to it before its writer went away.
type wireEndpoint struct{ *channel.Endpoint }

func (wireEndpoint) Close() {}

type env struct {
	tp     *Stack
	client *stack.Stack
}

// newEnv makes a Stack with cfg, links it to a client stack and cleans both up at the end
// of the test (the Stack first, so the client sees its resets).
func newEnv(tb testing.TB, cfg Config, link linkFunc) *env {
	tb.Helper()
	tp, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ep := link(tb, tp)
	client := newClientStack(tb, ep)
	tb.Cleanup(func() {
		if err := tp.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		client.Destroy()
	})
	return &env{tp: tp, client: client}
}

func newClientStack(tb testing.TB, ep stack.LinkEndpoint) *stack.Stack {
	tb.Helper()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	// Tuned like the Stack, standing in for a Linux kernel's autotuned buffers.
	if err := configureTCP(s); err != nil {
		tb.Fatal(err)
	}
	if err := s.CreateNIC(1, ep); err != nil {
		tb.Fatalf("client NIC: %s", err)
	}
	for _, a := range []netip.Addr{clientV4, clientV6} {
		pa := tcpip.ProtocolAddress{Protocol: protoOf(a), AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
			tb.Fatalf("client address %s: %s", a, err)
		}
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: 1},
		{Destination: header.IPv6EmptySubnet, NIC: 1},
	})
	return s
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
}

func (e *env) dialTCP(ctx context.Context, dst netip.AddrPort) (*gonet.TCPConn, error) {
	return gonet.DialContextTCP(ctx, e.client, fullAddr(dst), protoOf(dst.Addr()))
}

func (e *env) dialUDP(tb testing.TB, dst netip.AddrPort) *gonet.UDPConn {
	tb.Helper()
	fa := fullAddr(dst)
	c, err := gonet.DialUDP(e.client, nil, &fa, protoOf(dst.Addr()))
	if err != nil {
		tb.Fatalf("client udp to %s: %v", dst, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// dialCall is one call of a Dial hook.
type dialCall struct {
	network  string
	src, dst netip.AddrPort
}

// recorder is a Dial hook that records its calls and dials one host-side address for all
// of them, whatever their destination, with the closes of the conns it returns counted.
type recorder struct {
	addr   string // host:port to dial; network follows the call's
	mu     sync.Mutex
	calls  []dialCall
	closed chan dialCall // one send per conn closed by the stack
}

func newRecorder(addr string) *recorder {
	return &recorder{addr: addr, closed: make(chan dialCall, 1024)}
}

func (r *recorder) Dial(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error) {
	call := dialCall{network, src, dst}
	r.mu.Lock()
	r.calls = append(r.calls, call)
	r.mu.Unlock()
	var d net.Dialer
	c, err := d.DialContext(ctx, network, r.addr)
	if err != nil {
		return nil, err
	}
	return &notifyConn{Conn: c, closed: r.closed, call: call}, nil
}

func (r *recorder) Calls() []dialCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]dialCall(nil), r.calls...)
}

// notifyConn reports its first Close. It keeps *net.TCPConn's CloseWrite and SetLinger
// visible, so the stack half-closes and resets through it as through a real host-side conn.
type notifyConn struct {
	net.Conn
	closed chan dialCall
	call   dialCall
	once   sync.Once
}

func (c *notifyConn) Close() error {
	c.once.Do(func() { c.closed <- c.call })
	return c.Conn.Close()
}

func (c *notifyConn) SetLinger(sec int) error {
	if l, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

func (c *notifyConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// listenTCP serves each connection of a loopback listener with handle, until the test ends.
func listenTCP(tb testing.TB, handle func(net.Conn)) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln
}

func echoTCP(c net.Conn) {
	io.Copy(c, c)
}

// listenUDPEcho answers each datagram with itself, until the test ends.
func listenUDPEcho(tb testing.TB) *net.UDPConn {
	tb.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	tb.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc
}

// eventually polls cond until it holds or d passes.
func eventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
