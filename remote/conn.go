package remote

import (
	"errors"
	"net"
	"sync/atomic"
)

// CloseWrite half-closes c where c can (a TCP conn, a tunnel stream, a wrapper that keeps
// its conn's half-close), so the peer sees EOF while the other direction keeps flowing: a
// client that shuts down its send side still gets its answer. Where c cannot, it returns
// errors.ErrUnsupported and leaves c open, so that an answer can still come back.
func CloseWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Reset closes c so that its peer sees the connection broken, not ended: a TCP connection
// closes with RST. Other conns (a tunnel stream) report a cancelled close on their own.
func Reset(c net.Conn) error {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	return c.Close()
}

// Counted is a conn that reports each Read and Write as it returns, so that counters show
// a long transfer while it runs, and a watcher sees what a conn carried and how it ended.
// It keeps the half-close of the conn it wraps. Types that need more (a hook on Close)
// embed it.
type Counted struct {
	net.Conn
	// OnRead and OnWrite, when set, get each Read's and Write's bytes moved (p[:n]) and
	// its error. They run on the caller's goroutine, so they must be quick.
	OnRead, OnWrite func(p []byte, err error)
}

// Count wraps c so that bytes read from it add to in and bytes written to it add to out;
// either may be nil.
func Count(c net.Conn, in, out *atomic.Int64) *Counted {
	return &Counted{Conn: c, OnRead: adder(in), OnWrite: adder(out)}
}

func adder(n *atomic.Int64) func([]byte, error) {
	if n == nil {
		return nil
	}
	return func(p []byte, _ error) { n.Add(int64(len(p))) }
}

func (c *Counted) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.OnRead != nil {
		c.OnRead(p[:n], err)
	}
	return n, err
}

func (c *Counted) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.OnWrite != nil {
		c.OnWrite(p[:n], err)
	}
	return n, err
}

// CloseWrite half-closes the wrapped conn where it can (see CloseWrite).
func (c *Counted) CloseWrite() error { return CloseWrite(c.Conn) }
