package netstack

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// maxDatagram holds any UDP payload over IPv4 or IPv6 (jumbograms aside), so no datagram is
// ever truncated on its way through.
const maxDatagram = 65535

// udpFlow relays the datagrams of one (src, dst) pair between a namespace-side endpoint and
// the host-side conn Dial returned.
type udpFlow struct {
	s        *Stack
	src, dst netip.AddrPort
	// ctx ends the flow: idle timeout, eviction, an error either way, or Stack.Close.
	ctx    context.Context
	cancel context.CancelFunc
	last   atomic.Int64 // time of the last datagram either way, on the stack's clock

	ep tcpip.Endpoint
	wq *waiter.Queue

	idleMu sync.Mutex
	idle   *time.Timer
}

// handleUDP runs in the link's dispatch goroutine for a datagram that matches no flow. It
// must not block, so it only registers the flow's endpoint (which queues this datagram
// and the next ones) and leaves the Dial to the flow's goroutine.
func (s *Stack) handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	src := addrPort(id.RemoteAddress, id.RemotePort)
	dst := addrPort(id.LocalAddress, id.LocalPort)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return true // dropped: an ICMP error would only confuse a program being shut down
	}
	var victim *udpFlow
	if len(s.udpFlows) >= s.cfg.MaxUDPFlows {
		// Evicting the idlest flow rather than refusing the new one suits the common case,
		// a resolver that uses a fresh port per query and never reuses the old ones.
		victim = s.idlestUDPFlowLocked()
		delete(s.udpFlows, victim)
	}
	f := &udpFlow{s: s, src: src, dst: dst}
	f.ctx, f.cancel = context.WithCancel(s.ctx)
	f.touch()
	s.udpFlows[f] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	if victim != nil {
		s.udpEvicted.Add(1)
		s.log.Debug("netstack: udp flow evicted", "src", victim.src, "dst", victim.dst, "max", s.cfg.MaxUDPFlows)
		victim.cancel()
	}

	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		s.log.Debug("netstack: udp endpoint failed", "src", src, "dst", dst, "err", err.String())
		f.cancel()
		s.removeUDP(f)
		s.wg.Done()
		return true
	}
	f.ep, f.wq = ep, &wq
	s.udpTotal.Add(1)
	go f.run()
	return true
}

func (s *Stack) idlestUDPFlowLocked() *udpFlow {
	var idlest *udpFlow
	for f := range s.udpFlows {
		if idlest == nil || f.last.Load() < idlest.last.Load() {
			idlest = f
		}
	}
	return idlest
}

func (s *Stack) removeUDP(f *udpFlow) {
	s.mu.Lock()
	delete(s.udpFlows, f)
	s.mu.Unlock()
}

// now is the stack's monotonic clock, cheap enough to read once per datagram.
func (s *Stack) now() int64 { return int64(time.Since(s.epoch)) }

func (f *udpFlow) touch() { f.last.Store(f.s.now()) }

func (f *udpFlow) run() {
	s := f.s
	defer s.wg.Done()
	defer s.removeUDP(f)
	defer f.cancel()
	start := time.Now()

	ns := gonet.NewUDPConn(f.wq, f.ep)
	defer ns.Close()
	stopNS := context.AfterFunc(f.ctx, func() { ns.Close() })
	defer stopNS()

	host, err := s.dial(f.ctx, "udp", f.src, f.dst)
	if err != nil {
		s.logDialFailure("udp", f.src, f.dst, err)
		return
	}
	defer host.Close()
	stopHost := context.AfterFunc(f.ctx, func() { host.Close() })
	defer stopHost()

	f.touch()
	f.idleMu.Lock()
	f.idle = time.AfterFunc(s.cfg.UDPIdleTimeout, f.checkIdle)
	f.idleMu.Unlock()
	defer func() {
		f.idleMu.Lock()
		f.idle.Stop()
		f.idleMu.Unlock()
	}()

	var wg sync.WaitGroup
	var out, in int64
	wg.Go(func() {
		in = f.hostToNS(host, ns)
		f.cancel()
	})
	out = f.nsToHost(host)
	f.cancel()
	wg.Wait()
	s.log.Debug("netstack: udp flow closed", "src", f.src, "dst", f.dst, "out", out, "in", in,
		"duration", time.Since(start).Round(time.Millisecond))
}

// checkIdle is the idle timer's function: it ends the flow, or rearms the timer for the
// rest of the timeout if a datagram passed meanwhile. One timer per flow costs less than
// resetting it for every datagram.
func (f *udpFlow) checkIdle() {
	if f.ctx.Err() != nil {
		return
	}
	rest := f.s.cfg.UDPIdleTimeout - time.Duration(f.s.now()-f.last.Load())
	if rest > 0 {
		f.idleMu.Lock()
		f.idle.Reset(rest)
		f.idleMu.Unlock()
		return
	}
	f.s.log.Debug("netstack: udp flow idle", "src", f.src, "dst", f.dst, "timeout", f.s.cfg.UDPIdleTimeout)
	f.cancel()
}

// nsToHost reads the endpoint directly instead of through gonet: it takes a buffer only
// once a datagram is waiting, so a thousand idle flows hold no 64 KiB buffers on this side.
func (f *udpFlow) nsToHost(host net.Conn) (bytes int64) {
	s := f.s
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	f.wq.EventRegister(&entry)
	defer f.wq.EventUnregister(&entry)
	for {
		buf := s.datagrams.Get().(*[maxDatagram]byte)
		w := tcpip.SliceWriter(buf[:])
		res, terr := f.ep.Read(&w, tcpip.ReadOptions{})
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
			s.datagrams.Put(buf)
			<-ready // closing the endpoint wakes this too
			continue
		}
		if terr != nil {
			s.datagrams.Put(buf)
			return bytes
		}
		f.touch()
		_, err := host.Write(buf[:res.Count])
		s.datagrams.Put(buf)
		if err != nil {
			if f.ctx.Err() == nil {
				s.log.Debug("netstack: udp write to host side failed", "src", f.src, "dst", f.dst, "err", err)
			}
			return bytes
		}
		bytes += int64(res.Count)
		s.bytesOut.Add(int64(res.Count))
	}
}

func (f *udpFlow) hostToNS(host net.Conn, ns *gonet.UDPConn) (bytes int64) {
	s := f.s
	buf := s.datagrams.Get().(*[maxDatagram]byte)
	defer s.datagrams.Put(buf)
	for {
		n, err := host.Read(buf[:])
		if err != nil {
			return bytes
		}
		f.touch()
		if _, err := ns.Write(buf[:n]); err != nil {
			return bytes
		}
		bytes += int64(n)
		s.bytesIn.Add(int64(n))
	}
}
