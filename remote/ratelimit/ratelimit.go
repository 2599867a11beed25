// Package ratelimit keeps logs readable under a flood: a line per refused connection or
// client is what an operator needs, until a scanner, a crowd of outdated agents or a
// misbehaving local program makes it thousands. A Limiter lets a few events through per
// period and counts the rest, so the next line that gets through can say how many were
// not logged. It is the standard library only: both sides of the tunnel use it.
package ratelimit

import (
	"sync"
	"time"
)

// Limiter lets at most n events through per period and counts the rest. The period starts
// with the first event let through after the last period ended. The zero value lets
// nothing through; make one with New. It is safe for concurrent use.
type Limiter struct {
	n      int
	period time.Duration

	mu      sync.Mutex
	start   time.Time
	count   int
	skipped int
}

// New makes a Limiter of n events per period.
func New(n int, period time.Duration) *Limiter {
	return &Limiter{n: n, period: period}
}

// Allow reports whether an event at now goes through and, if it does, how many did not
// since the last one that did.
func (l *Limiter) Allow(now time.Time) (ok bool, skipped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.period {
		l.start, l.count = now, 0
	}
	if l.count >= l.n {
		l.skipped++
		return false, 0
	}
	l.count++
	skipped = l.skipped
	l.skipped = 0
	return true, skipped
}
