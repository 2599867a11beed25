package manager

import (
	"crypto/sha256"
	"time"
)

// tokenKey is a token's SHA-256: caches hold no token a dump of the manager's memory would
// hand to someone else.
type tokenKey [sha256.Size]byte

func keyOf(token string) tokenKey { return sha256.Sum256([]byte(token)) }

// verdict is what a review said about a token: the agent it proves, or why not.
type verdict struct {
	id      AgentIdentity
	err     error
	expires time.Time
}

// verdicts is a bounded cache of verdicts. When full it forgets the oldest entry: an
// attacker who floods it only evicts their own tokens' verdicts (a real agent's comes back
// at the cost of one review).
type verdicts struct {
	max  int
	m    map[tokenKey]verdict
	ring []tokenKey // insertion order; ring[next] is the oldest once full
	next int
}

func newVerdicts(max int) *verdicts {
	return &verdicts{max: max, m: make(map[tokenKey]verdict)}
}

func (c *verdicts) get(k tokenKey, now time.Time) (verdict, bool) {
	v, ok := c.m[k]
	if !ok || !now.Before(v.expires) {
		return verdict{}, false
	}
	return v, true
}

func (c *verdicts) put(k tokenKey, v verdict) {
	if _, ok := c.m[k]; ok {
		c.m[k] = v
		return
	}
	if len(c.ring) < c.max {
		c.ring = append(c.ring, k)
	} else {
		delete(c.m, c.ring[c.next])
		c.ring[c.next] = k
		c.next = (c.next + 1) % c.max
	}
	c.m[k] = v
}

// sourceLimits is a token bucket per peer address for reviews of tokens nobody has seen:
// a pod that makes up a new well-formed token per call gets a few reviews, then waits, and
// other pods' agents are not behind it. A review that proves an agent gives its token back,
// so agents that share an address (behind SNAT) are only slowed by that address's garbage.
type sourceLimits struct {
	burst, perSecond float64
	max              int
	m                map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newSourceLimits(burst int, perSecond float64, max int) *sourceLimits {
	return &sourceLimits{burst: float64(burst), perSecond: perSecond, max: max, m: map[string]*bucket{}}
}

func (s *sourceLimits) take(src string, now time.Time) bool {
	b := s.m[src]
	if b == nil {
		if len(s.m) >= s.max {
			s.prune(now)
		}
		b = &bucket{tokens: s.burst, last: now}
		s.m[src] = b
	}
	b.tokens = min(s.burst, b.tokens+now.Sub(b.last).Seconds()*s.perSecond)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (s *sourceLimits) giveBack(src string) {
	if b := s.m[src]; b != nil {
		b.tokens = min(s.burst, b.tokens+1)
	}
}

// prune forgets the sources whose bucket has refilled (they lose nothing); if every source
// is still draining, it forgets them all rather than grow without bound.
func (s *sourceLimits) prune(now time.Time) {
	for k, b := range s.m {
		if b.tokens+now.Sub(b.last).Seconds()*s.perSecond >= s.burst {
			delete(s.m, k)
		}
	}
	if len(s.m) >= s.max {
		clear(s.m)
	}
}
