// Package relay is tp's one UDP relay: the table of flows a front end's clients open, its
// bound, idle timeouts, and the copying between each client and the conn dialed for its
// destination. Front ends keep only their framing (the SOCKS5 UDP header, gVisor's
// endpoints) and their dial. It is standard library only, like remote.
package relay

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MaxDatagram holds any UDP payload over IPv4 or IPv6 (jumbograms aside), so no reply is
// ever truncated on its way through.
const MaxDatagram = 65535

// Full says what a Table does with a new flow when it holds Config.Max flows already.
type Full int

const (
	// DropNew refuses the new flow (its datagram is dropped), so a client spraying
	// destinations cannot open unbounded flows.
	DropNew Full = iota
	// EvictIdlest ends the flow idle the longest to make room. It suits the common case of
	// a resolver that uses a fresh port per query and never reuses the old ones.
	EvictIdlest
)

// Errors of Add.
var (
	ErrFull   = errors.New("relay: too many flows")
	ErrClosed = errors.New("relay: table closed")
)

// Config configures a Table.
type Config struct {
	// Max bounds the flows alive at once (dialing or relaying); Full says what happens
	// beyond it.
	Max  int
	Full Full
	// Idle ends a flow after this long without a datagram either way.
	Idle time.Duration
	// Headroom is how many bytes each reply buffer keeps free before the datagram, for the
	// front end's header: the reply then goes out without a copy.
	Headroom int
	// Name starts the table's log messages ("socks5", "netstack").
	Name string
	// Log receives the table's messages; nil discards them.
	Log *slog.Logger
}

// Client is a front end's side of one flow.
type Client interface {
	// Next waits for the client's next datagram to the flow's destination. done, when not
	// nil, is called once p is sent on (it may return p's buffer to a pool). Next returns
	// an error once the client side is closed.
	Next() (p []byte, done func(), err error)
	// Reply sends a datagram from the destination to the client: b[Config.Headroom:] is
	// the datagram, b[:Config.Headroom] is free for the front end's header. An error means
	// the client side is gone and ends the flow; a datagram the client can't take is
	// dropped without one, as a router would.
	Reply(b []byte) error
	// Close ends the client side and wakes a Next that waits. It may be called more than
	// once.
	Close() error
}

// Dial opens a flow's conn to its destination: each Write on it is one datagram, each
// Read one datagram back. It must return when ctx is done; the front end logs its failure.
type Dial func(ctx context.Context) (net.Conn, error)

// Stats counts a Table's flows.
type Stats struct {
	Open    int64 // flows alive now (dialing or relaying)
	Total   int64 // flows added
	Evicted int64 // flows ended early to make room under Config.Max
}

// Table relays the flows of a front end, each under a key of the front end's choosing (a
// destination, a source and destination pair). It is safe for concurrent use.
type Table[K comparable, C Client] struct {
	cfg     Config
	log     *slog.Logger
	ctx     context.Context // ends with the table, ending every flow
	cancel  context.CancelFunc
	epoch   time.Time // origin of the flows' monotonic activity clock
	replies sync.Pool // Headroom+MaxDatagram buffers, held while a flow waits for a reply

	mu     sync.Mutex
	flows  map[K]*flow[K, C]
	closed bool
	// wg counts flow goroutines; Add is only called under mu while !closed, which orders
	// every Add before Close's Wait.
	wg sync.WaitGroup

	total, evicted atomic.Int64
}

// New makes a Table whose flows end when ctx does, or at Close.
func New[K comparable, C Client](ctx context.Context, cfg Config) *Table[K, C] {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Table[K, C]{cfg: cfg, log: log, epoch: time.Now(), flows: map[K]*flow[K, C]{}}
	t.ctx, t.cancel = context.WithCancel(ctx)
	size := cfg.Headroom + MaxDatagram
	t.replies.New = func() any { b := make([]byte, size); return &b }
	return t
}

// flow is one client's datagrams to one destination.
type flow[K comparable, C Client] struct {
	key    K
	client C
	// ctx ends the flow: idle timeout, eviction, an end either way, or the table's end.
	ctx    context.Context
	cancel context.CancelFunc
	last   atomic.Int64 // time of the last datagram either way, on the table's clock

	idleMu sync.Mutex
	idle   *time.Timer
}

// Get returns the client of key's flow, if one is alive.
func (t *Table[K, C]) Get(key K) (C, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.flows[key]
	if !ok {
		var zero C
		return zero, false
	}
	return f.client, true
}

// Add starts a flow for key between c and the conn dial returns, which lasts until either
// side ends, it idles out, it is evicted, or the table ends; both sides are closed then.
// A flow still under key is ending (its client side is done), so the new one takes its
// place. Add returns ErrFull or ErrClosed, having closed c, if the flow can't start.
func (t *Table[K, C]) Add(key K, c C, dial Dial) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = c.Close()
		return ErrClosed
	}
	var victim *flow[K, C]
	if t.cfg.Max > 0 && len(t.flows) >= t.cfg.Max {
		if t.cfg.Full == DropNew {
			t.mu.Unlock()
			_ = c.Close()
			return ErrFull
		}
		victim = t.idlestLocked()
		delete(t.flows, victim.key)
	}
	f := &flow[K, C]{key: key, client: c}
	f.ctx, f.cancel = context.WithCancel(t.ctx)
	f.last.Store(t.now())
	t.flows[key] = f
	t.wg.Add(1)
	t.mu.Unlock()
	t.total.Add(1)
	if victim != nil {
		t.evicted.Add(1)
		t.log.Debug(t.cfg.Name+": udp flow evicted", "flow", victim.key, "max", t.cfg.Max)
		victim.cancel()
	}
	go t.run(f, dial)
	return nil
}

func (t *Table[K, C]) idlestLocked() *flow[K, C] {
	var idlest *flow[K, C]
	for _, f := range t.flows {
		if idlest == nil || f.last.Load() < idlest.last.Load() {
			idlest = f
		}
	}
	return idlest
}

func (t *Table[K, C]) remove(f *flow[K, C]) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.flows[f.key] == f {
		delete(t.flows, f.key)
	}
}

// Stats returns the table's counters.
func (t *Table[K, C]) Stats() Stats {
	t.mu.Lock()
	open := int64(len(t.flows))
	t.mu.Unlock()
	return Stats{Open: open, Total: t.total.Load(), Evicted: t.evicted.Load()}
}

// Close ends every flow and waits for them; later Adds fail with ErrClosed.
func (t *Table[K, C]) Close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
}

// now is the table's monotonic clock, cheap enough to read once per datagram.
func (t *Table[K, C]) now() int64 { return int64(time.Since(t.epoch)) }

func (t *Table[K, C]) touch(f *flow[K, C]) { f.last.Store(t.now()) }

func (t *Table[K, C]) run(f *flow[K, C], dial Dial) {
	defer t.wg.Done()
	// Forget first, so a datagram arriving now opens a new flow instead of waiting on this
	// closing one.
	defer t.remove(f)
	defer f.cancel()
	defer f.client.Close()
	stopClient := context.AfterFunc(f.ctx, func() { _ = f.client.Close() })
	defer stopClient()
	start := time.Now()

	conn, err := dial(f.ctx)
	if err != nil {
		return
	}
	defer conn.Close()
	stopConn := context.AfterFunc(f.ctx, func() { _ = conn.Close() })
	defer stopConn()

	t.touch(f)
	f.idleMu.Lock()
	f.idle = time.AfterFunc(t.cfg.Idle, func() { t.checkIdle(f) })
	f.idleMu.Unlock()
	defer func() {
		f.idleMu.Lock()
		f.idle.Stop()
		f.idleMu.Unlock()
	}()

	var wg sync.WaitGroup
	var out, in int64
	wg.Go(func() {
		in = t.toClient(f, conn)
		f.cancel()
	})
	out = t.toDest(f, conn)
	f.cancel()
	wg.Wait()
	t.log.Debug(t.cfg.Name+": udp flow closed", "flow", f.key, "out", out, "in", in,
		"duration", time.Since(start).Round(time.Millisecond))
}

// checkIdle is the idle timer's function: it ends the flow, or rearms the timer for the
// rest of the timeout if a datagram passed meanwhile. One timer per flow costs less than
// resetting it for every datagram.
func (t *Table[K, C]) checkIdle(f *flow[K, C]) {
	if f.ctx.Err() != nil {
		return
	}
	rest := t.cfg.Idle - time.Duration(t.now()-f.last.Load())
	if rest > 0 {
		f.idleMu.Lock()
		f.idle.Reset(rest)
		f.idleMu.Unlock()
		return
	}
	t.log.Debug(t.cfg.Name+": udp flow idle", "flow", f.key, "timeout", t.cfg.Idle)
	f.cancel()
}

// toDest sends the client's datagrams to the destination until either side ends.
func (t *Table[K, C]) toDest(f *flow[K, C], conn net.Conn) (bytes int64) {
	for {
		p, done, err := f.client.Next()
		if err != nil {
			return bytes
		}
		t.touch(f)
		_, err = conn.Write(p)
		n := len(p)
		if done != nil {
			done()
		}
		if err != nil {
			if f.ctx.Err() == nil {
				t.log.Debug(t.cfg.Name+": udp write to the destination failed", "flow", f.key, "err", err)
			}
			return bytes
		}
		bytes += int64(n)
	}
}

// toClient hands the destination's datagrams to the client until either side ends.
func (t *Table[K, C]) toClient(f *flow[K, C], conn net.Conn) (bytes int64) {
	bp := t.replies.Get().(*[]byte)
	defer t.replies.Put(bp)
	b, h := *bp, t.cfg.Headroom
	for {
		n, err := conn.Read(b[h:])
		if err != nil {
			return bytes
		}
		t.touch(f)
		if err := f.client.Reply(b[:h+n]); err != nil {
			return bytes
		}
		bytes += int64(n)
	}
}
