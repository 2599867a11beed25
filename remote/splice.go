package remote

import (
	"errors"
	"io"
	"net"
	"sync"
)

// A flow starts with a small buffer, because most flows are short and a thousand open ones
// must not hold a quarter GiB; one that keeps filling it moves to the large buffer, with
// which bulk flows cost few syscalls (a tunnel Conn's Read fills it with several frames).
const (
	smallBuf = 16 << 10
	largeBuf = 256 << 10
	// fullReads is how many full small reads in a row make a flow bulk.
	fullReads = 8
)

var (
	smallPool = sync.Pool{New: func() any { return new([smallBuf]byte) }}
	largePool = sync.Pool{New: func() any { return new([largeBuf]byte) }}
)

// Splice copies between a and b in both directions until both are done, then closes both.
// EOF in one direction is passed on as a half-close (CloseWrite) where the receiving conn
// can do it; where it can't, that conn is left open so its answer still comes back, and
// Splice ends when it closes. An error in either direction closes both at once. It returns
// the bytes copied each way.
func Splice(a, b net.Conn) (aToB, bToA int64, err error) {
	var wg sync.WaitGroup
	var errAB, errBA error
	var once sync.Once
	abort := func() { once.Do(func() { _ = Reset(a); _ = Reset(b) }) }
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
		n, err = copyAdaptive(dst, src)
	}
	if errors.Is(err, net.ErrClosed) {
		return n, nil // the other direction's abort closed src
	}
	if err != nil {
		return n, err // Splice aborts both: a broken side must not look like a clean end
	}
	_ = CloseWrite(dst) // where dst cannot, it stays open for its answer
	return n, nil
}

// copyAdaptive copies src to dst until EOF or an error, like io.Copy, with a buffer that
// grows once the flow shows it is bulk.
func copyAdaptive(dst io.Writer, src io.Reader) (int64, error) {
	small := smallPool.Get().(*[smallBuf]byte)
	var large *[largeBuf]byte
	defer func() {
		if small != nil {
			smallPool.Put(small)
		}
		if large != nil {
			largePool.Put(large)
		}
	}()
	buf, full := small[:], 0
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
			if nw != nr {
				return n, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
		if large != nil {
			continue
		}
		if nr == len(buf) {
			full++
		} else {
			full = 0
		}
		if full == fullReads {
			large = largePool.Get().(*[largeBuf]byte)
			buf = large[:]
			smallPool.Put(small)
			small = nil
		}
	}
}
