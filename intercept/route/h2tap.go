package route

import (
	"io"
	"net/http"
)

// A filtered wiretap of an HTTP/2 stream gets a copy of the request as a request of its
// own, over the wiretap's HTTP/2 connection (one per client connection, as for routes):
// the same method, path, headers and body, the body fed from the caller's as the upstream
// reads it, through a bounded queue that never makes the caller wait. The wiretap's answer
// is read and dropped.

// tapsFor starts a copy of r for each filtered wiretap that matches it, and returns r with
// a body that feeds them (r itself when none matches).
func (p *h2Proxy) tapsFor(r *http.Request) *http.Request {
	s := p.s
	if s.Taps == nil {
		return r
	}
	var pipes []*copyQueue
	for _, rt := range s.Taps() {
		if !rt.Match.Match(h2Request{r}) {
			continue
		}
		pipe := newCopyQueue(s.stats)
		pipes = append(pipes, pipe)
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
func (p *h2Proxy) sendCopy(id string, req *http.Request, pipe *copyQueue) {
	defer pipe.Close()
	cc, err := p.ups.get(p.s.ctx, id)
	if err != nil {
		pipe.drop()
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
	pipes []*copyQueue
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
