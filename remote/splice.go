package remote

import (
	"errors"
	"io"
	"net"
	"sync"
)

// spliceBuf is large so that bulk flows cost few syscalls: a tunnel Conn's Read fills it
// with several frames at once.
const spliceBuf = 256 << 10

var bufPool = sync.Pool{New: func() any { return new([spliceBuf]byte) }}

// Splice copies between a and b in both directions until both are done, then closes both.
// EOF in one direction is passed on as a half-close (CloseWrite) where the receiving conn
// can do it; where it can't, that conn is left open so its answer still comes back, and
// Splice ends when it closes. An error in either direction closes both at once. It returns
// the bytes copied each way.
func Splice(a, b net.Conn) (aToB, bToA int64, err error) {
	var wg sync.WaitGroup
	var errAB, errBA error
	var once sync.Once
	abort := func() { once.Do(func() { reset(a); reset(b) }) }
	done := func() { once.Do(func() { a.Close(); b.Close() }) }
	wg.Go(func() {
		aToB, errAB = copyHalf(b, a)
		if errAB != nil {
			abort()
		}
	})
	bToA, errBA = copyHalf(a, b)
	if errBA != nil {
		abort()
	}
	wg.Wait()
	done()
	return aToB, bToA, errors.Join(errAB, errBA)
}

// reset closes c so that its peer sees the connection broken, not ended: a TCP connection
// closes with RST. Other conns (a tunnel stream) report a cancelled close on their own.
func reset(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	_ = c.Close()
}

// copyHalf copies src to dst, then half-closes dst at src's EOF. A source closed by the
// other direction's abort is not an error of its own.
func copyHalf(dst, src net.Conn) (int64, error) {
	var n int64
	var err error
	dt, dok := dst.(*net.TCPConn)
	st, sok := src.(*net.TCPConn)
	if dok && sok {
		n, err = dt.ReadFrom(st) // splice(2): the kernel moves the bytes
	} else {
		buf := bufPool.Get().(*[spliceBuf]byte)
		// Hide ReadFrom and WriteTo, which would bring their own 32 KiB buffers.
		n, err = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf[:])
		bufPool.Put(buf)
	}
	if errors.Is(err, net.ErrClosed) {
		return n, nil // the other direction's abort closed src
	}
	if err != nil {
		return n, err // Splice aborts both: a broken side must not look like a clean end
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	return n, nil
}
