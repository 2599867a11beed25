package manager

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/tpdev/tp/remote"
)

// Names resolves names the way a pod in a given namespace would (its resolv.conf search path
// "NS.svc.DOMAIN svc.DOMAIN DOMAIN"), but only inside the cluster domain: a name that is not
// a cluster name is never sent upstream, so the laptop dials it itself.
type Names struct {
	Domain string // e.g. cluster.local
	// Exchange sends one query to the cluster's DNS.
	Exchange func(ctx context.Context, m *dns.Msg) (*dns.Msg, error)

	// Dials look names up again and again (a client opening connection after connection);
	// answers are kept briefly, so that a dial costs no DNS round trip.
	mu    sync.Mutex
	hosts map[string]hostEntry
}

type hostEntry struct {
	fqdn    string
	addrs   []netip.Addr
	err     error
	expires time.Time
}

const (
	hostTTL         = 5 * time.Second // at most; a record's own TTL may be shorter
	hostNegativeTTL = 2 * time.Second
	hostCacheSize   = 4096
)

// NewNames asks the DNS server at addr (host:port) over UDP, retrying over TCP when an
// answer is truncated.
func NewNames(domain, addr string) *Names {
	udp := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	tcp := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	return &Names{Domain: domain, Exchange: func(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
		r, _, err := udp.ExchangeContext(ctx, m, addr)
		if err == nil && r.Truncated {
			r, _, err = tcp.ExchangeContext(ctx, m, addr)
		}
		return r, err
	}}
}

// Candidates lists the cluster names that name may stand for, for a client in namespace ns,
// in the order a pod's resolver tries them. An empty list means: not a cluster name.
func (n *Names) Candidates(name, ns string) []string {
	name = strings.ToLower(strings.TrimSpace(name))
	domain := strings.Trim(strings.ToLower(n.Domain), ".")
	if name == "" || domain == "" {
		return nil
	}
	if strings.HasSuffix(name, ".") { // absolute: only if inside the cluster domain
		bare := strings.TrimSuffix(name, ".")
		if bare == domain || strings.HasSuffix(bare, "."+domain) || isReverse(bare) {
			return []string{dns.Fqdn(bare)}
		}
		return nil
	}
	if name == domain || strings.HasSuffix(name, "."+domain) || isReverse(name) {
		return []string{dns.Fqdn(name)}
	}
	var out []string
	if ns != "" {
		out = append(out, dns.Fqdn(name+"."+ns+".svc."+domain))
	}
	// Only names of the shapes svc.ns[.svc] and host.subdomain.ns[.svc] can live under
	// svc.DOMAIN; skipping the rest spares a query per public name.
	if labels := dns.CountLabel(dns.Fqdn(name)); labels >= 2 && labels <= 4 {
		out = append(out, dns.Fqdn(name+".svc."+domain))
	}
	if strings.HasSuffix(name, ".svc") {
		out = append(out, dns.Fqdn(name+"."+domain))
	}
	return out
}

func isReverse(name string) bool {
	return strings.HasSuffix(name, ".in-addr.arpa") || strings.HasSuffix(name, ".ip6.arpa")
}

// Query asks the cluster about name for a client in ns. It returns the candidate that exists
// (fqdn, "" if none) and the DNS response for the name as asked: its question, a CNAME to
// fqdn when they differ, the cluster's answers; NXDOMAIN when no candidate exists.
func (n *Names) Query(ctx context.Context, name, ns string, qtype uint16) (fqdn string, resp *dns.Msg, err error) {
	asked := dns.Fqdn(name)
	resp = new(dns.Msg)
	resp.SetQuestion(asked, qtype)
	resp.Response, resp.Authoritative, resp.RecursionAvailable = true, true, true
	for _, cand := range n.Candidates(name, ns) {
		q := new(dns.Msg)
		q.SetQuestion(cand, qtype)
		r, err := n.Exchange(ctx, q)
		if err != nil {
			return "", nil, &remote.Error{Kind: remote.Failed, Msg: "cluster dns", Err: err}
		}
		switch r.Rcode {
		case dns.RcodeNameError:
			continue
		case dns.RcodeSuccess:
		default:
			return "", nil, remote.Errorf(remote.Failed, "cluster dns answered %s for %s", dns.RcodeToString[r.Rcode], cand)
		}
		resp.Rcode = dns.RcodeSuccess
		if !strings.EqualFold(cand, asked) {
			resp.Answer = append(resp.Answer, &dns.CNAME{
				Hdr:    dns.RR_Header{Name: asked, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: minTTL(r.Answer)},
				Target: cand,
			})
		}
		resp.Answer = append(resp.Answer, r.Answer...)
		resp.Extra = append(resp.Extra, withoutOPT(r.Extra)...)
		return cand, resp, nil
	}
	resp.Rcode = dns.RcodeNameError
	return "", resp, nil
}

// LookupHost returns the A and AAAA addresses of a cluster name; NoSuchHost, with a message
// naming service and namespace, when the cluster has none.
func (n *Names) LookupHost(ctx context.Context, name, ns string) (fqdn string, addrs []netip.Addr, err error) {
	if a, err := netip.ParseAddr(name); err == nil {
		return "", []netip.Addr{a}, nil
	}
	key := strings.ToLower(name) + "/" + ns
	now := time.Now()
	n.mu.Lock()
	e, ok := n.hosts[key]
	n.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.fqdn, e.addrs, e.err
	}
	fqdn, addrs, ttl, err := n.lookupHost(ctx, name, ns)
	if err == nil || remote.KindOf(err) == remote.NoSuchHost {
		if err != nil {
			ttl = hostNegativeTTL
		}
		n.mu.Lock()
		if n.hosts == nil || len(n.hosts) >= hostCacheSize {
			n.hosts = map[string]hostEntry{}
		}
		n.hosts[key] = hostEntry{fqdn: fqdn, addrs: addrs, err: err, expires: now.Add(ttl)}
		n.mu.Unlock()
	}
	return fqdn, addrs, err
}

func (n *Names) lookupHost(ctx context.Context, name, ns string) (fqdn string, addrs []netip.Addr, ttl time.Duration, err error) {
	ttl = hostTTL
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		found, resp, err := n.Query(ctx, name, ns, qtype)
		if err != nil {
			return "", nil, 0, err
		}
		if found == "" {
			break // no candidate exists for any type
		}
		fqdn = found
		for _, rr := range resp.Answer {
			if t := time.Duration(rr.Header().Ttl) * time.Second; t < ttl {
				ttl = t
			}
			switch rr := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					addrs = append(addrs, a)
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
					addrs = append(addrs, a)
				}
			}
		}
	}
	if len(addrs) == 0 {
		return fqdn, nil, 0, remote.NoSuchHostError(name, ns)
	}
	return fqdn, addrs, ttl, nil
}

func minTTL(rrs []dns.RR) uint32 {
	ttl := uint32(5)
	for i, rr := range rrs {
		if i == 0 || rr.Header().Ttl < ttl {
			ttl = rr.Header().Ttl
		}
	}
	return ttl
}

func withoutOPT(rrs []dns.RR) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}
