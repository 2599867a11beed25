// Package tunnel is tp's tunnel protocol: one gRPC stream per TCP connection or UDP flow,
// dial-then-stream, half-close in-band (tunnelpb/tunnel.proto). It sees gRPC only through
// the tiny Stream interface, so it is tested without gRPC, and it never imports Kubernetes.
package tunnel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Stream is what a tunnel needs of a gRPC stream; client and server streams of
// Manager.Tunnel both have it. Send and Recv may run at the same time, each from one goroutine.
type Stream interface {
	Send(*tunnelpb.Frame) error
	Recv() (*tunnelpb.Frame, error)
}

// MaxChunk is the largest Data frame a TCP Conn sends. Big enough that per-message costs
// vanish next to copying, small enough to keep streams fair on one HTTP/2 connection.
const MaxChunk = 64 << 10

// MaxDatagram is the largest UDP datagram a Conn carries.
const MaxDatagram = 65535

// Conn is a net.Conn over a tunnel stream whose dial phase is over. Writes become Data
// frames; CloseWrite sends CloseWrite; reads end with io.EOF at the peer's CloseWrite.
// In packet mode (UDP) each Write is one datagram and each Read returns one.
type Conn struct {
	s      Stream
	end    func() // ends the stream (the RPC) for good
	packet bool
	local  net.Addr
	remote net.Addr

	in      chan recvd // from the receiving goroutine
	pending []byte     // the rest of a Data frame a short Read left
	frame   []byte     // all of that frame, recycled once read
	rerr    error      // sticky read error

	wmu     sync.Mutex
	wclosed bool
	// dial is an early-data conn's Dial until it is sent, with the first Write (or before
	// the first Read); the manager's DialResult then comes first on the stream.
	dial *tunnelpb.Dial

	readDL, writeDL deadline

	closeOnce sync.Once
	closed    chan struct{}
}

type recvd struct {
	data []byte
	err  error
}

// NewConn wraps s. end must end the stream when called (a client cancels its RPC context;
// a server returns from its handler). packet selects UDP semantics.
func NewConn(s Stream, end func(), packet bool, local, remote net.Addr) *Conn {
	c := newConn(s, end, packet, local, remote)
	go c.receive(false)
	return c
}

func newConn(s Stream, end func(), packet bool, local, remote net.Addr) *Conn {
	return &Conn{
		s: s, end: end, packet: packet, local: local, remote: remote,
		in:      make(chan recvd, 4),
		readDL:  makeDeadline(),
		writeDL: makeDeadline(),
		closed:  make(chan struct{}),
	}
}

// receive moves frames from the stream to Read, so that Read can honour deadlines and Close.
// With result set, the first frame must be the manager's DialResult.
func (c *Conn) receive(result bool) {
	for {
		f, err := c.s.Recv()
		var r recvd
		if err != nil {
			r.err = streamError(err)
		} else if result {
			result = false
			res := f.GetDialResult()
			if res == nil {
				r.err = fmt.Errorf("tunnel: manager answered a dial with %T, not a result", f.GetKind())
			} else if r.err = ResultError(res); r.err == nil {
				continue
			}
		} else {
			switch k := f.GetKind().(type) {
			case *tunnelpb.Frame_Data:
				if len(k.Data) == 0 && !c.packet {
					continue // nothing to read; an empty datagram, though, is one
				}
				r.data = k.Data
			case *tunnelpb.Frame_CloseWrite:
				r.err = io.EOF
			case nil:
				continue // an empty frame: a newer peer's kind this side does not know
			default:
				r.err = fmt.Errorf("tunnel: unexpected %T frame after the dial", k)
			}
		}
		select {
		case c.in <- r:
		case <-c.closed:
			return
		}
		if r.err != nil {
			return
		}
	}
}

func (c *Conn) Read(p []byte) (int, error) {
	if err := c.sendDial(nil); err != nil {
		return 0, err
	}
	if len(c.pending) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		select {
		case <-c.closed:
			return 0, net.ErrClosed
		default:
		}
		select {
		case r := <-c.in:
			if r.err != nil {
				c.rerr = r.err
				return 0, r.err
			}
			c.pending, c.frame = r.data, r.data
		case <-c.readDL.wait():
			return 0, os.ErrDeadlineExceeded
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
	n := copy(p, c.pending)
	if c.packet {
		c.pending = nil // a datagram longer than p is truncated, as with a UDP socket
	} else {
		c.pending = c.pending[n:]
	}
	// A stream read also takes the frames already waiting, so a large buffer moves several
	// frames per syscall downstream.
more:
	for !c.packet && n < len(p) && c.rerr == nil {
		select {
		case r := <-c.in:
			releasePayload(c.frame)
			c.pending, c.frame = nil, nil
			if r.err != nil {
				c.rerr = r.err // reported by the next Read
				break more
			}
			c.pending, c.frame = r.data, r.data
			m := copy(p[n:], c.pending)
			c.pending = c.pending[m:]
			n += m
		default:
			break more
		}
	}
	if len(c.pending) == 0 {
		releasePayload(c.frame)
		c.pending, c.frame = nil, nil
	}
	return n, nil
}

func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wclosed {
		return 0, fmt.Errorf("tunnel: write after CloseWrite: %w", net.ErrClosed)
	}
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	case <-c.writeDL.wait():
		return 0, os.ErrDeadlineExceeded
	default:
	}
	if c.packet && len(p) > MaxDatagram {
		return 0, fmt.Errorf("tunnel: datagram of %d bytes exceeds %d", len(p), MaxDatagram)
	}
	if c.dial != nil {
		first := p
		if !c.packet && len(first) > MaxChunk {
			first = first[:MaxChunk]
		}
		if err := c.sendDialLocked(first); err != nil {
			return 0, err
		}
		if len(first) == len(p) {
			return len(p), nil
		}
		n, err := c.writeLocked(p[len(first):])
		return len(first) + n, err
	}
	return c.writeLocked(p)
}

func (c *Conn) writeLocked(p []byte) (int, error) {
	// A Send blocked on flow control past the write deadline can only be stopped by ending
	// the stream; the Conn is then unusable, as after a timed-out write on many sockets.
	var expired atomic.Bool
	if stop := c.writeDL.onExpiry(func() { expired.Store(true); c.end() }); stop != nil {
		defer stop()
	}
	n := 0
	for n < len(p) || (len(p) == 0 && c.packet && n == 0) {
		chunk := p[n:]
		if !c.packet && len(chunk) > MaxChunk {
			chunk = chunk[:MaxChunk]
		}
		// Capped to its length: a chunk must never look like a recyclable payload.
		chunk = chunk[:len(chunk):len(chunk)]
		if err := c.s.Send(&tunnelpb.Frame{Kind: &tunnelpb.Frame_Data{Data: chunk}}); err != nil {
			if expired.Load() {
				return n, os.ErrDeadlineExceeded
			}
			return n, streamError(err)
		}
		n += len(chunk)
		if len(p) == 0 {
			break
		}
	}
	return n, nil
}

// CloseWrite tells the peer this side sends no more; it may go on sending.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wclosed {
		return nil
	}
	c.wclosed = true
	if c.dial != nil {
		if err := c.sendDialLocked(nil); err != nil {
			return err
		}
	}
	if err := c.s.Send(&tunnelpb.Frame{Kind: &tunnelpb.Frame_CloseWrite{CloseWrite: &tunnelpb.CloseWrite{}}}); err != nil {
		return streamError(err)
	}
	return nil
}

// sendDial sends an early-data conn's Dial frame now, with data, if it is still pending.
func (c *Conn) sendDial(data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.dial == nil {
		return nil
	}
	return c.sendDialLocked(data)
}

func (c *Conn) sendDialLocked(data []byte) error {
	d := proto.CloneOf(c.dial) // every field the dialer set (Via too), with the first bytes
	d.Data = data
	c.dial = nil
	err := c.s.Send(&tunnelpb.Frame{Kind: &tunnelpb.Frame_Dial{Dial: d}})
	go c.receive(true)
	if err != nil {
		return streamError(err)
	}
	return nil
}

// Close ends the stream in both directions; data not yet read is dropped.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.end()
		c.readDL.set(time.Time{})
		c.writeDL.set(time.Time{})
	})
	return nil
}

func (c *Conn) LocalAddr() net.Addr  { return c.local }
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

func (c *Conn) SetDeadline(t time.Time) error {
	c.readDL.set(t)
	c.writeDL.set(t)
	return nil
}
func (c *Conn) SetReadDeadline(t time.Time) error  { c.readDL.set(t); return nil }
func (c *Conn) SetWriteDeadline(t time.Time) error { c.writeDL.set(t); return nil }

// streamError turns a gRPC stream error into what a net.Conn user expects: io.EOF for a
// stream the peer ended, net.ErrClosed for one we cancelled, TunnelDown when the
// connection to the manager broke.
func streamError(err error) error {
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	switch status.Code(err) {
	case codes.Canceled:
		return net.ErrClosed
	case codes.Unavailable:
		return &remote.Error{Kind: remote.TunnelDown, Msg: "the tunnel to the cluster broke"}
	case codes.DeadlineExceeded:
		return os.ErrDeadlineExceeded
	}
	return fmt.Errorf("tunnel: %w", err)
}

// deadline is a settable point in time whose channel closes when it passes (as in net.Pipe).
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline passes
	at     time.Time
}

func makeDeadline() deadline { return deadline{cancel: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired; wait for its close before reopening
	}
	d.timer = nil
	d.at = t
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		ch := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

// onExpiry runs f if the deadline passes before the returned stop is called; nil when no
// deadline is set.
func (d *deadline) onExpiry(f func()) (stop func()) {
	d.mu.Lock()
	at := d.at
	d.mu.Unlock()
	if at.IsZero() {
		return nil
	}
	t := time.AfterFunc(time.Until(at), f)
	return func() { t.Stop() }
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
