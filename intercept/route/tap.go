package route

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/tpdev/tp/remote"
)

// A wiretap's client gets a copy of what callers send, and the caller's path must never
// wait for it: copies go into a bounded queue (copyQueue), which the wiretap's side reads
// on a goroutine of its own; when the queue is full (a slow or vanished client) the copy
// ends and the loss is counted, and the caller's bytes go on as if there were no wiretap.

// TapQueue bounds the bytes one copy holds for its client, and TapBudget those all the
// copies that share a Stats hold (an agent's): a thousand callers' uploads beside a wiretap
// whose client is gone must not take the pod's memory.
const (
	TapQueue  = 1 << 20
	TapBudget = 32 << 20
)

// tapLinger bounds how long an ended tap keeps sending what it holds.
const tapLinger = 5 * time.Second

var errTapDropped = errors.New("the wiretap's copy was dropped: its client was too slow")

// copyQueue is one copy on its way to a wiretap's client: Write never blocks; a Write that
// does not fit drops the copy, losing what it held; Read waits for what comes.
type copyQueue struct {
	mu    sync.Mutex
	cond  *sync.Cond
	bufs  [][]byte
	held  int
	ended bool  // no more writes: the copy's end, or a drop
	err   error // what Read returns once bufs are read: io.EOF at a whole copy's end
	stats *Stats
}

func newCopyQueue(stats *Stats) *copyQueue {
	q := &copyQueue{stats: stats}
	q.cond = sync.NewCond(&q.mu)
	stats.Tapped.Add(1)
	return q
}

// Write queues a copy of p.
func (q *copyQueue) Write(p []byte) {
	if len(p) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ended {
		return
	}
	if q.held+len(p) > TapQueue || !q.stats.reserveTap(len(p)) {
		q.dropLocked()
		return
	}
	q.bufs = append(q.bufs, append([]byte(nil), p...))
	q.held += len(p)
	q.cond.Signal()
}

// reserveTap takes n bytes of the copies' budget; false when they are not there.
func (s *Stats) reserveTap(n int) bool {
	if s.tapHeld.Add(int64(n)) > TapBudget {
		s.tapHeld.Add(-int64(n))
		return false
	}
	return true
}

// finish ends the copy with err once what it holds is read (io.EOF: it is whole).
func (q *copyQueue) finish(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.ended {
		q.ended, q.err = true, err
		q.cond.Broadcast()
	}
}

// drop ends the copy at once, losing what it holds.
func (q *copyQueue) drop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropLocked()
}

func (q *copyQueue) dropLocked() {
	if q.err == errTapDropped {
		return
	}
	if !q.ended || q.held > 0 { // a loss: copies were coming, or waiting
		q.stats.TapDrops.Add(1)
	}
	q.releaseLocked()
	q.ended, q.err = true, errTapDropped
	q.cond.Broadcast()
}

func (q *copyQueue) releaseLocked() {
	q.stats.tapHeld.Add(-int64(q.held))
	q.bufs, q.held = nil, 0
}

func (q *copyQueue) Read(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.bufs) == 0 && !q.ended {
		q.cond.Wait()
	}
	if len(q.bufs) == 0 {
		return 0, q.err
	}
	n := copy(p, q.bufs[0])
	if n == len(q.bufs[0]) {
		q.bufs = q.bufs[1:]
	} else {
		q.bufs[0] = q.bufs[0][n:]
	}
	q.held -= n
	q.stats.tapHeld.Add(-int64(n))
	return n, nil
}

// Close says the reader is done: what the copy still holds goes back to the budget.
func (q *copyQueue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.releaseLocked()
	if !q.ended {
		q.ended, q.err = true, io.ErrClosedPipe
	}
	q.cond.Broadcast()
	return nil
}

// Tap is a copy of a connection's bytes (or of some of its requests) on its way to a
// wiretap's client, over a connection of its own.
type Tap struct{ q *copyQueue }

// OpenTap starts a tap whose copies go to the connection dial opens: dial runs on the
// tap's goroutine (finding the client may take the manager seconds), and copies wait in
// the queue meanwhile. Whatever the client answers is read and dropped.
func OpenTap(ctx context.Context, dial func(context.Context) (net.Conn, error), stats *Stats) *Tap {
	if stats == nil {
		stats = &Stats{}
	}
	t := &Tap{q: newCopyQueue(stats)}
	go t.run(ctx, dial)
	return t
}

// Write queues a copy of p; it never blocks.
func (t *Tap) Write(p []byte) { t.q.Write(p) }

// Close ends the tap once what it holds is sent.
func (t *Tap) Close() { t.q.finish(io.EOF) }

func (t *Tap) run(ctx context.Context, dial func(context.Context) (net.Conn, error)) {
	defer t.q.Close()
	conn, err := dial(ctx)
	if err != nil {
		t.q.drop()
		return
	}
	defer conn.Close()
	go func() { _, _ = io.Copy(io.Discard, conn) }() // the client's answers: nobody waits for them
	stop := context.AfterFunc(ctx, t.q.drop)
	defer stop()
	buf := make([]byte, bufSize)
	for {
		n, err := t.q.Read(buf)
		if n > 0 {
			_ = conn.SetWriteDeadline(time.Now().Add(tapLinger))
			if _, werr := conn.Write(buf[:n]); werr != nil {
				t.q.drop()
				return
			}
		}
		if err == io.EOF {
			_ = remote.CloseWrite(conn)
			time.Sleep(100 * time.Millisecond) // its last answer may be on its way
			return
		}
		if err != nil {
			return
		}
	}
}

// TapConn is a connection whose bytes from the peer are also copied to taps.
type TapConn struct {
	net.Conn
	Taps []*Tap
}

func (c *TapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	for _, t := range c.Taps {
		t.Write(p[:n])
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) { // a read deadline is the reader's own, not the stream's end
		for _, t := range c.Taps {
			t.Close()
		}
	}
	return n, err
}

func (c *TapConn) CloseWrite() error { return remote.CloseWrite(c.Conn) }

func (c *TapConn) Close() error {
	for _, t := range c.Taps {
		t.Close()
	}
	return c.Conn.Close()
}
