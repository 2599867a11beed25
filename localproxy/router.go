package localproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/tpdev/tp/remote"
)

// Defaults for the zero values in Router.
const (
	DefaultLookupCacheTTL  = 5 * time.Second
	DefaultLookupCacheSize = 1024
	DefaultLookupTimeout   = 10 * time.Second
)

// Router is a remote.Dialer that decides, per destination, whether a connection goes
// through the tunnel to the cluster or directly from this machine. It is policy only: all
// I/O is its dialers' and resolver's.
//
//   - An IP goes through the tunnel if it is inside Routes() and not inside Never;
//     otherwise direct.
//   - "localhost" and names under ".localhost" go direct.
//   - Any other name is looked up in the cluster (Names, which applies the session
//     namespace's search path). If the cluster knows it, the connection goes through the
//     tunnel with the name unresolved, so the cluster side resolves it again and the
//     manager sees the name. If the cluster has no such name, it goes direct. If the
//     lookup fails otherwise (tunnel down, timeout), the dial fails with that error:
//     sending a possibly-cluster name to the local resolver would only hide the real
//     problem.
//   - If a direct dial then fails to resolve a name that looks like a cluster name (one
//     label, or two as in name.namespace), the error returned is the cluster's "no such
//     host", which names the service and namespace the user most likely meant.
//
// Lookups, found or not found, are cached for CacheTTL, and concurrent lookups of one name
// share a single question, so a burst of connections costs one lookup.
//
// A Router must not be copied after first use.
type Router struct {
	Tunnel remote.Dialer   // to the cluster
	Direct remote.Dialer   // from this machine (a net.Dialer in production)
	Names  remote.Resolver // cluster name lookups
	// Routes returns the cluster's CIDRs (service and pod) plus --also-proxy; it is called
	// at every dial of an IP, so it may change over a session. Nil means none.
	Routes func() []netip.Prefix
	// Never lists --never-proxy CIDRs: IPs in them always go direct, even inside Routes.
	// It applies to IP destinations; names the cluster resolves go through the tunnel.
	Never []netip.Prefix
	// Bypass, when set, names addresses that go Direct without a cluster lookup, whatever
	// the cluster knows: the upstream proxies, whose credentials the cluster must never see.
	Bypass func(address string) bool
	Log    *slog.Logger // nil discards

	// CacheTTL is how long a lookup's answer is reused; 0 means DefaultLookupCacheTTL, a
	// negative value disables the cache.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached names; 0 means DefaultLookupCacheSize.
	CacheSize int
	// LookupTimeout bounds one cluster lookup, which is shared by every dial waiting for
	// it and so can't use any one dial's deadline; 0 means DefaultLookupTimeout.
	LookupTimeout time.Duration

	now func() time.Time // for tests; nil means time.Now

	mu       sync.Mutex
	cache    map[string]lookupEntry
	inflight singleflight.Group
}

type lookupEntry struct {
	err     error // nil: the cluster knows the name; else its NoSuchHost error
	expires time.Time
}

// DialContext dials address through the tunnel or directly; see Router.
func (r *Router) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("bad address %q", address), Err: err}
	}
	if r.Bypass != nil && r.Bypass(address) {
		return r.direct(ctx, network, address, "bypass (an upstream proxy)")
	}
	tunnel, why, lookupErr := r.decide(ctx, host)
	switch {
	case tunnel:
		return r.viaTunnel(ctx, network, address, why)
	case lookupErr != nil && remote.KindOf(lookupErr) != remote.NoSuchHost:
		return nil, lookupErr
	}
	c, err := r.direct(ctx, network, address, why)
	if err != nil && lookupErr != nil {
		if _, dnsFailed := errors.AsType[*net.DNSError](err); dnsFailed && looksLikeClusterName(host) {
			r.log().Debug("router: unresolvable here too; reporting the cluster's answer",
				"address", address, "local_err", err)
			return nil, lookupErr
		}
	}
	return c, err
}

// Tunnels reports whether a connection to host (a name or an IP) goes through the tunnel.
// The HTTP front end asks it to choose between the cluster and an upstream proxy for a
// plain request before any dial. The error is a failed cluster lookup (the tunnel is down,
// say), which leaves the answer unknown.
func (r *Router) Tunnels(ctx context.Context, host string) (bool, error) {
	tunnel, _, err := r.decide(ctx, host)
	if err != nil && remote.KindOf(err) == remote.NoSuchHost {
		err = nil
	}
	return tunnel, err
}

// decide is the policy of Router: tunnel or not, why, and the cluster's lookup error for a
// name it has not (NoSuchHost, then direct) or could not say (anything else).
func (r *Router) decide(ctx context.Context, host string) (tunnel bool, why string, lookupErr error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if r.tunnelsIP(ip) {
			return true, "cluster route", nil
		}
		return false, "not a cluster route", nil
	}
	if isLocalhostName(host) {
		return false, "localhost", nil
	}
	if err := r.lookup(ctx, host); err != nil {
		return false, "not a cluster name", err
	}
	return true, "cluster name", nil
}

func (r *Router) tunnelsIP(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("") // Prefix.Contains never matches a zoned address
	for _, p := range r.Never {
		if p.Contains(ip) {
			return false
		}
	}
	if r.Routes == nil {
		return false
	}
	for _, p := range r.Routes() {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (r *Router) viaTunnel(ctx context.Context, network, address, why string) (net.Conn, error) {
	r.log().Debug("router: tunnel", "network", network, "address", address, "why", why)
	if r.Tunnel == nil {
		return nil, &remote.Error{Kind: remote.TunnelDown, Msg: "no tunnel to the cluster"}
	}
	return r.Tunnel.DialContext(ctx, network, address)
}

func (r *Router) direct(ctx context.Context, network, address, why string) (net.Conn, error) {
	r.log().Debug("router: direct", "network", network, "address", address, "why", why)
	if r.Direct == nil {
		return nil, &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("no direct route for %s", address)}
	}
	return r.Direct.DialContext(ctx, network, address)
}

// lookup asks the cluster about host: nil if it knows the name, its NoSuchHost error if
// not, any other error if it could not say.
func (r *Router) lookup(ctx context.Context, host string) error {
	if r.Names == nil {
		return &remote.Error{Kind: remote.NoSuchHost, Msg: fmt.Sprintf("no cluster names to look %q up in", host)}
	}
	key := strings.ToLower(host)
	if e, ok := r.cached(key); ok {
		return e.err
	}
	ch := r.inflight.DoChan(key, func() (any, error) {
		// Detached from ctx: other dials share this lookup, and one caller giving up must
		// not fail the rest.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.lookupTimeout())
		defer cancel()
		_, err := r.Names.LookupHost(lctx, host)
		if err == nil || remote.KindOf(err) == remote.NoSuchHost {
			r.store(key, err)
		}
		return nil, err
	})
	select {
	case res := <-ch:
		if res.Err != nil && remote.KindOf(res.Err) != remote.NoSuchHost {
			return fmt.Errorf("looking up %q in the cluster: %w", host, res.Err)
		}
		return res.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Router) cached(key string) (lookupEntry, bool) {
	if r.cacheTTL() < 0 {
		return lookupEntry{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[key]
	if !ok || !r.clock().Before(e.expires) {
		return lookupEntry{}, false
	}
	return e, true
}

func (r *Router) store(key string, err error) {
	ttl := r.cacheTTL()
	if ttl < 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock()
	if r.cache == nil {
		r.cache = map[string]lookupEntry{}
	}
	if _, ok := r.cache[key]; !ok && len(r.cache) >= r.cacheSize() {
		for k, e := range r.cache {
			if !now.Before(e.expires) {
				delete(r.cache, k)
			}
		}
		// Still full of live entries: drop arbitrary ones. A few extra lookups are the only
		// cost, and the cache stays bounded.
		for k := range r.cache {
			if len(r.cache) < r.cacheSize() {
				break
			}
			delete(r.cache, k)
		}
	}
	r.cache[key] = lookupEntry{err: err, expires: now.Add(ttl)}
}

func (r *Router) cacheTTL() time.Duration {
	if r.CacheTTL == 0 {
		return DefaultLookupCacheTTL
	}
	return r.CacheTTL
}

func (r *Router) cacheSize() int {
	if r.CacheSize <= 0 {
		return DefaultLookupCacheSize
	}
	return r.CacheSize
}

func (r *Router) lookupTimeout() time.Duration {
	return orDefault(r.LookupTimeout, DefaultLookupTimeout)
}

func (r *Router) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

func (r *Router) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

// isLocalhostName reports whether host is "localhost" or under ".localhost" (RFC 6761:
// always this machine).
func isLocalhostName(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

// looksLikeClusterName reports whether a name has the shape of a service name a user would
// type: "web-app" or "web-app.namespace".
func looksLikeClusterName(host string) bool {
	h := strings.TrimSuffix(host, ".")
	return h != "" && strings.Count(h, ".") <= 1
}
