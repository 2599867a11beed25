package route

import (
	"errors"
	"io"
	"net/http"
	"sync"
)

// A filtered wiretap of an HTTP/2 stream gets a copy of the request as a request of its
// own, over the wiretap's HTTP/2 connection (one per client connection, as for routes):
// the same method, path, headers and body, the body fed from the caller's as the upstream
// reads it, through a bounded queue that never makes the caller wait. The wiretap's answer
// is read and dropped.

var errTapDropped = errors.New("the wiretap's copy was dropped: its client was too slow")

// tapsFor starts a copy of r for each filtered wiretap that matches it, and returns r with
// a body that feeds them (r itself when none matches).
func (p *h2Proxy) tapsFor(r *http.Request) *http.Request {
	s := p.s
	if s.Taps == nil {
		return r
	}
	var pipes []*tapPipe
	for _, rt := range s.Taps() {
		if !rt.Match.Match(h2Request{r}) {
			continue
		}
		pipe := &tapPipe{stats: s.stats}
		pipe.cond = sync.NewCond(&pipe.mu)
		pipes = append(pipes, pipe)
		s.stats.Tapped.Add(1)
		copyReq := outgoing(r)
		if r.ContentLength != 0 {
			copyReq.Body = pipe
		}
		copyReq = copyReq.WithContext(s.ctx) // the copy may outlive the caller's stream
		go p.sendCopy(rt.ID, copyReq, pipe)
	}
	if len(pipes) == 0 {
		return r
	}
	if r.ContentLength == 0 {
		for _, pipe := range pipes {
			pipe.finish(io.EOF)
		}
		return r
	}
	out := r.WithContext(r.Context())
	out.Body = &teeBody{ReadCloser: r.Body, pipes: pipes}
	return out
}

// sendCopy sends a wiretap's copy of a request and drops its answer.
func (p *h2Proxy) sendCopy(id string, req *http.Request, pipe *tapPipe) {
	defer pipe.Close()
	cc, err := p.ups.get(p.s.ctx, id)
	if err != nil {
		pipe.fail()
		p.s.log.Info("route: a wiretap's copy goes nowhere", "route", id, "why", err)
		return
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// teeBody is a request's body that copies what is read of it to wiretaps.
type teeBody struct {
	io.ReadCloser
	pipes []*tapPipe
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	for _, pipe := range b.pipes {
		pipe.Write(p[:n])
		if err != nil {
			pipe.finish(err)
		}
	}
	return n, err
}

func (b *teeBody) Close() error {
	for _, pipe := range b.pipes {
		pipe.finish(io.ErrUnexpectedEOF) // a body not read to its end is a cut copy
	}
	return b.ReadCloser.Close()
}

// tapPipe is the body of a wiretap's copy: Write never blocks; a copy that does not fit
// its queue (or the taps' budget) is dropped, and its reader fails.
type tapPipe struct {
	mu    sync.Mutex
	cond  *sync.Cond
	bufs  [][]byte
	held  int
	done  bool  // no more writes
	err   error // what Read returns once bufs are read (io.EOF at a whole body's end)
	stats *Stats
}

func (q *tapPipe) Write(p []byte) {
	if len(p) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.done {
		return
	}
	if q.held+len(p) > TapQueue || !q.stats.reserveTap(len(p)) {
		q.failLocked()
		return
	}
	q.bufs = append(q.bufs, append([]byte(nil), p...))
	q.held += len(p)
	q.cond.Signal()
}

// finish ends the copy's body with err once what it holds is read.
func (q *tapPipe) finish(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.done {
		q.done, q.err = true, err
		q.cond.Broadcast()
	}
}

func (q *tapPipe) fail() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.failLocked()
}

func (q *tapPipe) failLocked() {
	if q.err != errTapDropped {
		q.stats.TapDrops.Add(1)
	}
	q.stats.tapHeld.Add(-int64(q.held))
	q.bufs, q.held, q.done, q.err = nil, 0, true, errTapDropped
	q.cond.Broadcast()
}

func (q *tapPipe) Read(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.bufs) == 0 && !q.done {
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

// Close gives back what the copy still holds: the transport is done with it.
func (q *tapPipe) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stats.tapHeld.Add(-int64(q.held))
	q.bufs, q.held = nil, 0
	if !q.done {
		q.done, q.err = true, io.ErrClosedPipe
	}
	q.cond.Broadcast()
	return nil
}
