package relay

import (
	"net"
	"sync"
)

// Queue is the client side of a flow for a front end that reads its clients' datagrams
// itself, one socket for many flows (SOCKS5 UDP ASSOCIATE): datagrams wait in it for the
// flow's dial and writes. A type that embeds it and adds Reply is a Client.
type Queue struct {
	out  chan []byte
	done chan struct{}
	once sync.Once
}

// NewQueue makes a Queue that holds up to n datagrams.
func NewQueue(n int) *Queue {
	return &Queue{out: make(chan []byte, n), done: make(chan struct{})}
}

// Push queues a copy of p. It reports false, dropping p, when the queue is full or closed:
// UDP promises no delivery, and waiting would stall every other flow of the front end.
func (q *Queue) Push(p []byte) bool {
	select {
	case <-q.done:
		return false
	default:
	}
	select {
	case q.out <- append([]byte(nil), p...):
		return true
	default:
		return false
	}
}

// Next waits for the next queued datagram; it fails once the queue is closed.
func (q *Queue) Next() ([]byte, func(), error) {
	select {
	case p := <-q.out:
		return p, nil, nil
	case <-q.done:
		return nil, nil, net.ErrClosed
	}
}

// Close ends the queue and wakes a waiting Next; datagrams still in it are dropped.
func (q *Queue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}
