package localproxy

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// guessLimit slows down password guessing against a proxy that other machines reach: after
// freeGuesses wrong tries from one address, that address is turned away unchecked, right or
// wrong, for a lockout that doubles with each further wrong try (1 s, 2 s, ... up to
// maxLockout). A right password clears the address's count. IPv6 addresses count per /64,
// the block one host usually holds.
type guessLimit struct {
	now func() time.Time

	mu sync.Mutex
	by map[netip.Prefix]*guesses
}

type guesses struct {
	wrong int       // wrong tries in a row
	until time.Time // turned away until then
	last  time.Time // the latest try
}

const (
	freeGuesses = 5
	maxLockout  = 5 * time.Minute
	// forgetAfter is how long an address's count is kept after its latest try.
	forgetAfter = 15 * time.Minute
	// maxTracked bounds the addresses kept; past it, the ones not locked out are forgotten.
	maxTracked = 10000
)

func newGuessLimit() *guessLimit {
	return &guessLimit{now: time.Now, by: map[netip.Prefix]*guesses{}}
}

// source is the block a client address ("host:port") counts in; the zero Prefix for an
// address it cannot read, which counts as one source.
func source(clientAddr string) netip.Prefix {
	host, _, err := net.SplitHostPort(clientAddr)
	if err != nil {
		host = clientAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}
	}
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// wait is how long the source of clientAddr is still turned away; 0: it may try.
func (g *guessLimit) wait(clientAddr string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s, ok := g.by[source(clientAddr)]; ok {
		return max(0, s.until.Sub(g.now()))
	}
	return 0
}

// record counts one try from clientAddr.
func (g *guessLimit) record(clientAddr string, right bool) {
	src := source(clientAddr)
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if right {
		delete(g.by, src)
		return
	}
	s, ok := g.by[src]
	if ok && now.Sub(s.last) > forgetAfter {
		*s = guesses{}
	}
	if !ok {
		if len(g.by) >= maxTracked {
			g.forgetLocked(now)
		}
		s = &guesses{}
		g.by[src] = s
	}
	s.wrong++
	s.last = now
	if over := s.wrong - freeGuesses; over > 0 {
		lockout := maxLockout
		if over <= 20 {
			lockout = min(maxLockout, time.Second<<(over-1))
		}
		s.until = now.Add(lockout)
	}
}

// forgetLocked drops the sources whose latest try is old, and if that is not enough, every
// source not locked out now.
func (g *guessLimit) forgetLocked(now time.Time) {
	for src, s := range g.by {
		if now.Sub(s.last) > forgetAfter {
			delete(g.by, src)
		}
	}
	if len(g.by) < maxTracked {
		return
	}
	for src, s := range g.by {
		if !now.Before(s.until) {
			delete(g.by, src)
		}
	}
}
