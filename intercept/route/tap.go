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
// wait for it: a Tap takes copies into a bounded queue and sends them on its own
// goroutine; when the queue is full (a slow or vanished client) the tap ends and the loss
// is counted, and the caller's bytes go on as if there were no tap.

// TapQueue bounds the bytes one tap holds for its client, and TapBudget those all the taps
// that share a Stats hold (an agent's): a thousand callers' uploads beside a wiretap whose
// client is gone must not take the pod's memory.
const (
	TapQueue  = 1 << 20
	TapBudget = 32 << 20
)

// tapLinger bounds how long an ended tap keeps sending what it holds.
const tapLinger = 5 * time.Second

// Tap is one copy of a connection's (or of some requests') bytes on their way to a
// wiretap's client.
type Tap struct {
	mu     sync.Mutex
	queue  [][]byte
	queued int  // bytes held: those queued and those being written
	ended  bool // no more copies: Close, or a drop
	lost   bool // dropped: what it held is gone
	wake   chan struct{}
	stats  *Stats
}

// OpenTap starts a tap whose copies go to the connection dial opens: dial runs on the
// tap's goroutine (finding the client may take the manager seconds), and copies wait in
// the queue meanwhile. Whatever the client answers is read and dropped.
func OpenTap(ctx context.Context, dial func(context.Context) (net.Conn, error), stats *Stats) *Tap {
	if stats == nil {
		stats = &Stats{}
	}
	t := &Tap{wake: make(chan struct{}, 1), stats: stats}
	stats.Tapped.Add(1)
	go t.run(ctx, dial)
	return t
}

// Write queues a copy of p; it never blocks. A copy that does not fit ends the tap.
func (t *Tap) Write(p []byte) {
	if len(p) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return
	}
	if t.queued+len(p) > TapQueue || !t.stats.reserveTap(len(p)) {
		t.dropLocked()
		return
	}
	t.queue = append(t.queue, append([]byte(nil), p...))
	t.queued += len(p)
	t.signal()
}

// reserveTap takes n bytes of the taps' budget; false when they are not there.
func (s *Stats) reserveTap(n int) bool {
	if s.tapHeld.Add(int64(n)) > TapBudget {
		s.tapHeld.Add(-int64(n))
		return false
	}
	return true
}

// Close ends the tap once what it holds is sent.
func (t *Tap) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ended = true
	t.signal()
}

// dropLocked ends the tap at once, losing what it holds; the run loop gives back what it
// was writing.
func (t *Tap) dropLocked() {
	if !t.lost && (len(t.queue) > 0 || !t.ended) {
		t.stats.TapDrops.Add(1)
	}
	for _, b := range t.queue {
		t.queued -= len(b)
		t.stats.tapHeld.Add(-int64(len(b)))
	}
	t.ended, t.lost, t.queue = true, true, nil
	t.signal()
}

func (t *Tap) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *Tap) run(ctx context.Context, dial func(context.Context) (net.Conn, error)) {
	defer func() { // what it still holds goes back to the budget
		t.mu.Lock()
		t.stats.tapHeld.Add(-int64(t.queued))
		t.queued, t.queue = 0, nil
		t.ended = true
		t.mu.Unlock()
	}()
	conn, err := dial(ctx)
	if err != nil {
		t.mu.Lock()
		t.dropLocked()
		t.mu.Unlock()
		return
	}
	defer conn.Close()
	go func() { _, _ = io.Copy(io.Discard, conn) }() // the client's answers: nobody waits for them
	for {
		t.mu.Lock()
		batch, ended := t.queue, t.ended
		t.queue = nil
		t.mu.Unlock()
		if len(batch) > 0 {
			_ = conn.SetWriteDeadline(time.Now().Add(tapLinger))
			for _, b := range batch {
				_, err := conn.Write(b)
				t.mu.Lock()
				t.queued -= len(b)
				t.stats.tapHeld.Add(-int64(len(b)))
				if err != nil {
					t.dropLocked()
				}
				lost := t.lost
				t.mu.Unlock()
				if lost {
					return
				}
			}
			continue
		}
		if ended {
			_ = remote.CloseWrite(conn)
			time.Sleep(min(tapLinger, 100*time.Millisecond)) // its last answer may be on its way
			return
		}
		select {
		case <-t.wake:
		case <-ctx.Done():
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
