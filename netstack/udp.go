package netstack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tpdev/tp/remote"
)

// udpKey names a UDP flow: the namespace's socket and the address it sends to.
type udpKey struct{ src, dst netip.AddrPort }

func (k udpKey) String() string { return fmt.Sprintf("%s->%s", k.src, k.dst) }

// handleUDP runs in the link's dispatch goroutine for a datagram that matches no flow. It
// must not block, so it only registers the flow's endpoint (which queues this datagram
// and the next ones) and leaves the Dial to the relay's flow goroutine.
func (s *Stack) handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	key := udpKey{src: addrPort(id.RemoteAddress, id.RemotePort), dst: addrPort(id.LocalAddress, id.LocalPort)}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return true // dropped: an ICMP error would only confuse a program being shut down
	}
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		s.log.Debug("netstack: udp endpoint failed", "src", key.src, "dst", key.dst, "err", err.String())
		return true
	}
	dial := func(ctx context.Context) (net.Conn, error) {
		host, err := s.dial(ctx, "udp", key.src, key.dst)
		if err != nil {
			s.logDialFailure("udp", key.src, key.dst, err)
			return nil, err
		}
		return remote.Count(host, &s.bytesIn, &s.bytesOut), nil
	}
	// An error (the stack closing) has closed the endpoint: the datagram is dropped.
	_ = s.udp.Add(key, newNSUDP(s, ep, &wq), dial)
	return true
}

// nsUDP is the namespace side of a UDP flow: its gVisor endpoint.
type nsUDP struct {
	s     *Stack
	ep    tcpip.Endpoint
	wq    *waiter.Queue
	conn  *gonet.UDPConn // replies go through it
	entry waiter.Entry
	ready chan struct{}
	once  sync.Once
}

func newNSUDP(s *Stack, ep tcpip.Endpoint, wq *waiter.Queue) *nsUDP {
	c := &nsUDP{s: s, ep: ep, wq: wq, conn: gonet.NewUDPConn(wq, ep)}
	c.entry, c.ready = waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&c.entry)
	return c
}

// Next reads the endpoint directly instead of through gonet: it takes a buffer only once
// a datagram is waiting, so a thousand idle flows hold no 64 KiB buffers on this side.
func (c *nsUDP) Next() ([]byte, func(), error) {
	for {
		buf := c.s.datagrams.Get().(*[maxDatagram]byte)
		w := tcpip.SliceWriter(buf[:])
		res, terr := c.ep.Read(&w, tcpip.ReadOptions{})
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
			c.s.datagrams.Put(buf)
			<-c.ready // closing the endpoint wakes this too
			continue
		}
		if terr != nil {
			c.s.datagrams.Put(buf)
			return nil, nil, fmt.Errorf("netstack: udp read: %s", terr)
		}
		return buf[:res.Count], func() { c.s.datagrams.Put(buf) }, nil
	}
}

func (c *nsUDP) Reply(b []byte) error {
	_, err := c.conn.Write(b)
	return err
}

func (c *nsUDP) Close() error {
	c.once.Do(func() {
		c.conn.Close()
		c.wq.EventUnregister(&c.entry)
	})
	return nil
}
