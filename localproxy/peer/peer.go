// Package peer decides whether a client of tp's ports on this machine is the developer:
// tp's proxy and DNS ports carry the developer's cluster rights, and loopback is shared by
// every user of the machine (and every container on the host network).
//
// On Linux a Guard asks the kernel (sock_diag netlink, the interface ss uses) which user owns
// the socket at the client's end, and lets in only the user tp runs as. A client whose
// address is not one of this machine's is another machine: the uid check does not apply
// (credentials protect a port shared beyond loopback). A client on one of this machine's
// non-loopback addresses is as local as one on loopback and is checked the same way.
// Containers with a network namespace of their own reach tp from addresses that are not
// this namespace's, and so count as other machines.
//
// Elsewhere (macOS, Windows) there is no such check yet: every local user can use
// loopback ports there.
package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/tpdev/tp/remote/ratelimit"
)

// Config configures a Guard; the zero value checks every local client and logs nothing.
type Config struct {
	// AllowOtherUsers turns the check off: every local user may use tp's ports, as on
	// systems without the check. For a kernel that cannot answer the question (no
	// sock_diag), where the check would otherwise refuse every local client.
	AllowOtherUsers bool
	// Log receives one line per refused client, at most one per user every logEvery
	// (with a count of those refused in between), so a flood shows without becoming the log.
	Log *slog.Logger
	// Owner, when set, replaces the kernel's answer (for tests): the uid owning the socket
	// that sends from client to server over network ("tcp" or "udp").
	Owner func(network string, client, server netip.AddrPort) (uint32, error)
}

// Guard checks clients of tp's ports. It is safe for concurrent use; one Guard may serve
// every listener of a process.
type Guard struct {
	off   bool
	uid   uint32
	log   *slog.Logger
	owner func(network string, client, server netip.AddrPort) (uint32, error)

	locals localAddrs
	logs   rateLog
}

// New returns a Guard that lets in only the user this process runs as.
func New(cfg Config) *Guard {
	g := &Guard{off: cfg.AllowOtherUsers, uid: uint32(os.Getuid()), log: cfg.Log, owner: cfg.Owner}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.owner == nil {
		if !supported {
			g.off = true
		}
		g.owner = kernelOwner
	}
	return g
}

// Checks reports whether the Guard checks anything: false when turned off, or on a system
// where it cannot ask who a client is.
func (g *Guard) Checks() bool { return !g.off }

// RefusedError says why a client on this machine was turned away.
type RefusedError struct {
	Client netip.AddrPort
	// UID owns the client's socket, when the kernel said (Err is nil).
	UID uint32
	// Self is the uid tp runs as, the only one it serves.
	Self uint32
	// Err is why the client's owner is not known; the client is refused all the same.
	Err error
}

func (e *RefusedError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("refused %s: cannot tell which user of this machine it is (%v), and tp's ports serve only uid %d, "+
			"who started tp (tp connect --allow-other-users turns this check off)", e.Client, e.Err, e.Self)
	}
	return fmt.Sprintf("refused %s: it is uid %d on this machine, and tp's ports serve only uid %d, who started tp",
		e.Client, e.UID, e.Self)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// CheckConn returns nil if c's client may use the port it connected to, else a
// *RefusedError (already logged). Only TCP connections are checked: a Unix socket's file
// mode is its guard, and other kinds of connection are tests'.
func (g *Guard) CheckConn(c net.Conn) error {
	if g.off {
		return nil
	}
	client, ok1 := addrPort(c.RemoteAddr())
	server, ok2 := addrPort(c.LocalAddr())
	if !ok1 || !ok2 {
		return nil
	}
	return g.check("tcp", client, server)
}

// CheckDatagram returns nil if a datagram from client to the socket at local may be
// answered, else a *RefusedError (already logged). local may be the unspecified address;
// then the client is taken to have sent to loopback if it sent from loopback, and to its
// own address otherwise (the usual ways to reach this machine from itself), and refused if
// no such socket is found.
func (g *Guard) CheckDatagram(local net.Addr, client netip.AddrPort) error {
	if g.off {
		return nil
	}
	server, ok := addrPort(local)
	if !ok {
		return nil
	}
	client = unmap(client)
	if server.Addr().IsUnspecified() {
		a := client.Addr()
		if a.IsLoopback() && a.Is4() {
			a = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
		server = netip.AddrPortFrom(a, server.Port())
	}
	return g.check("udp", client, server)
}

func (g *Guard) check(network string, client, server netip.AddrPort) error {
	client, server = unmap(client), unmap(server)
	if !g.locals.has(client.Addr(), server.Addr()) {
		return nil
	}
	uid, err := g.owner(network, client, server)
	switch {
	case err == nil && uid == g.uid:
		return nil
	case err == nil:
		g.logs.note(g.log, uid, "refused a client: it is another user of this machine", "client", client.String(),
			"network", network, "port", server.Port(), "uid", uid, "tp_uid", g.uid)
		return &RefusedError{Client: client, UID: uid, Self: g.uid}
	default:
		level := slog.LevelWarn
		if errors.Is(err, ErrNotFound) {
			level = slog.LevelInfo // a client gone before we asked; nothing to fix
		}
		g.logs.noteErr(g.log, level, "refused a client of this machine: cannot tell which user it is", "client", client.String(),
			"network", network, "port", server.Port(), "err", err, "tp_uid", g.uid,
			"hint", "if this kernel cannot answer sock_diag queries, tp connect --allow-other-users lets every local user in")
		return &RefusedError{Client: client, Self: g.uid, Err: err}
	}
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return unmap(a.AddrPort()), a != nil
	case *net.UDPAddr:
		return unmap(a.AddrPort()), a != nil
	}
	return netip.AddrPort{}, false
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// localAddrs knows this machine's (this network namespace's) addresses.
type localAddrs struct {
	mu   sync.Mutex
	set  map[netip.Addr]struct{}
	when time.Time
}

// refreshEvery bounds how often a client from another machine makes us list the
// interfaces again: a local address added since is seen within this long.
const refreshEvery = time.Second

// has reports whether client is an address of this machine. server, the address the
// client reached, is one for sure.
func (l *localAddrs) has(client, server netip.Addr) bool {
	if client.IsLoopback() || client == server {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.set[client]; ok {
		return true
	}
	if time.Since(l.when) < refreshEvery && l.set != nil {
		return false
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		// Not knowing, count it as local: the uid check then decides, and refuses
		// rather than lets a local stranger in.
		return true
	}
	l.set, l.when = map[netip.Addr]struct{}{}, time.Now()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				l.set[ip.Unmap()] = struct{}{}
			}
		}
	}
	_, ok := l.set[client]
	return ok
}

// logEvery is the least time between two log lines about one uid's refused clients.
const logEvery = 10 * time.Second

// rateLog logs refusals at most once per logEvery per uid.
type rateLog struct {
	mu     sync.Mutex
	limits map[int64]*ratelimit.Limiter
}

// errKey is rateLog's key for refusals whose uid is unknown.
const errKey = -1

func (r *rateLog) note(log *slog.Logger, uid uint32, msg string, args ...any) {
	r.emit(log, slog.LevelWarn, int64(uid), msg, args)
}

func (r *rateLog) noteErr(log *slog.Logger, level slog.Level, msg string, args ...any) {
	r.emit(log, level, errKey, msg, args)
}

func (r *rateLog) emit(log *slog.Logger, level slog.Level, key int64, msg string, args []any) {
	r.mu.Lock()
	// Forgetting every uid now and then bounds the memory a flood of uids can take.
	if r.limits == nil || len(r.limits) > 1024 {
		r.limits = map[int64]*ratelimit.Limiter{}
	}
	l := r.limits[key]
	if l == nil {
		l = ratelimit.New(1, logEvery)
		r.limits[key] = l
	}
	r.mu.Unlock()
	ok, quiet := l.Allow(time.Now())
	if !ok {
		return
	}
	log.Log(context.Background(), level, msg, append(args, "also_refused_since_last_line", quiet)...)
}
