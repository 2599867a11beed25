package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tpdev/tp/remote"
)

// handleTCP serves one SYN from the namespace, in a goroutine of its own that the forwarder
// started. The request stays in the forwarder's in-flight set (which bounds pending dials
// and absorbs the program's SYN retransmits) until Complete, which every path calls.
func (s *Stack) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	src := addrPort(id.RemoteAddress, id.RemotePort)
	dst := addrPort(id.LocalAddress, id.LocalPort)
	if !s.enter() {
		r.Complete(true)
		return
	}
	defer s.wg.Done()

	// Dial first, complete the handshake after: a destination that refuses must refuse the
	// program's connect(), not accept it and reset it.
	host, err := s.dial(s.ctx, "tcp", src, dst)
	if err != nil {
		s.logDialFailure("tcp", src, dst, err)
		r.Complete(true)
		return
	}
	if s.ctx.Err() != nil {
		host.Close()
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		// The program gave up or reset during the handshake.
		s.log.Debug("netstack: tcp handshake failed", "src", src, "dst", dst, "err", terr.String())
		host.Close()
		r.Complete(true)
		return
	}
	r.Complete(false)
	setKeepalive(ep)
	s.spliceTCP(ep, &wq, host, src, dst)
}

func setKeepalive(ep tcpip.Endpoint) {
	idle := tcpip.KeepaliveIdleOption(keepaliveIdle)
	interval := tcpip.KeepaliveIntervalOption(keepaliveInterval)
	// Errors are ignored: these options cannot fail on a connected TCP endpoint, and a flow
	// without keepalive still works.
	_ = ep.SetSockOpt(&idle)
	_ = ep.SetSockOpt(&interval)
	_ = ep.SetSockOptInt(tcpip.KeepaliveCountOption, keepaliveCount)
	ep.SocketOptions().SetKeepAlive(true)
}

func (s *Stack) spliceTCP(ep tcpip.Endpoint, wq *waiter.Queue, host net.Conn, src, dst netip.AddrPort) {
	s.tcpOpen.Add(1)
	s.tcpTotal.Add(1)
	defer s.tcpOpen.Add(-1)
	start := time.Now()
	f := &tcpFlow{s: s}
	// The namespace side counts bytes as they pass, so Stats shows long transfers while
	// they run; both sides watch for errors.
	ns := &nsTCPConn{ep: ep, flow: f, Counted: remote.Counted{Conn: gonet.NewTCPConn(wq, ep),
		OnRead:  func(p []byte, err error) { s.bytesOut.Add(int64(len(p))); f.check(err) },
		OnWrite: func(p []byte, err error) { s.bytesIn.Add(int64(len(p))); f.check(err) },
	}}
	hc := &hostTCPConn{flow: f, Counted: remote.Counted{Conn: host,
		OnRead:  func(_ []byte, err error) { f.check(err) },
		OnWrite: func(_ []byte, err error) { f.check(err) },
	}}
	// Close (the stack's ctx) must end flows that are idle or waiting on a slow host side,
	// and end them as failures: a FIN would pass a cut-off transfer for a complete one.
	stop := context.AfterFunc(s.ctx, func() {
		f.failed.Store(true)
		closeAll(ns, hc)
	})
	defer stop()
	out, in, err := remote.Splice(ns, hc)
	s.log.Debug("netstack: tcp flow closed", "src", src, "dst", dst, "out", out, "in", in,
		"duration", time.Since(start).Round(time.Millisecond), "reset", f.failed.Load(), "err", err)
}

// tcpFlow is what the two sides of a spliced TCP flow share: whether it failed. A flow that
// ends in an error on either side (or by Stack.Close) is closed with a RST on both, so
// neither the program nor the destination mistakes the cut for a clean end of stream.
type tcpFlow struct {
	s      *Stack
	failed atomic.Bool
}

func (f *tcpFlow) check(err error) {
	if err != nil && !errors.Is(err, io.EOF) {
		f.failed.Store(true)
	}
}

// nsTCPConn is the namespace side of a flow (a gonet.TCPConn, whose CloseWrite Splice's
// half-close needs).
type nsTCPConn struct {
	remote.Counted
	ep   tcpip.Endpoint
	flow *tcpFlow
}

// CloseWrite half-closes, unless the flow failed: Splice half-closes even after a read
// error, and a FIN ahead of the coming RST would read as a clean end of stream.
func (c *nsTCPConn) CloseWrite() error {
	if c.flow.failed.Load() {
		return nil
	}
	return c.Counted.CloseWrite()
}

func (c *nsTCPConn) Close() error {
	if c.flow.failed.Load() {
		// SO_LINGER 0: Close sends a RST.
		c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	}
	return c.Conn.Close()
}

// hostTCPConn is the host side of a flow, watched for errors and reset on failure where
// the conn allows it (a *net.TCPConn does).
type hostTCPConn struct {
	remote.Counted
	flow *tcpFlow
}

// CloseWrite half-closes where the conn can and the flow has not failed (see
// nsTCPConn.CloseWrite); where it cannot, the conn stays open for the answer, which is
// what Splice does for such conns.
func (c *hostTCPConn) CloseWrite() error {
	if c.flow.failed.Load() {
		return nil
	}
	return c.Counted.CloseWrite()
}

func (c *hostTCPConn) Close() error {
	if c.flow.failed.Load() {
		return remote.Reset(c.Conn)
	}
	return c.Conn.Close()
}
