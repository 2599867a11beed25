package upstream

import (
	"net"
	"net/netip"
	"strings"
)

// MergeNoProxy builds the NO_PROXY tp exports for programs that use its proxy: the user's
// comma-separated list (spaces trimmed, empty and repeated entries dropped, order kept),
// without the entries keep rejects (nil keeps all), then each of add not already in it
// (e.g. "localhost", "127.0.0.1", "::1"). Entries compare case-insensitively, as
// NO_PROXY matching does.
func MergeNoProxy(user string, keep func(entry string) bool, add ...string) string {
	var out []string
	seen := map[string]bool{}
	put := func(e string) {
		e = strings.TrimSpace(e)
		if k := strings.ToLower(e); e != "" && !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	for e := range strings.SplitSeq(user, ",") {
		if e = strings.TrimSpace(e); e != "" && (keep == nil || keep(e)) {
			put(e)
		}
	}
	for _, e := range add {
		put(e)
	}
	return strings.Join(out, ",")
}

// CoversCluster reports whether a NO_PROXY entry would make a client skip tp's proxy for
// cluster destinations, which then never reach the cluster: "*"; a domain entry (with or
// without a leading "." or "*.", with or without a port) that is "svc", a suffix of
// "svc."+domain or of domain (".svc", "cluster.local", "local"), or a name under them
// ("default.svc", "ns.svc.cluster.local"); an IP inside one of ranges; a CIDR overlapping
// one of them. domain is the cluster's DNS domain; empty means "cluster.local".
func CoversCluster(entry string, domain string, ranges []netip.Prefix) bool {
	e := strings.ToLower(strings.TrimSpace(entry))
	switch e {
	case "":
		return false
	case "*":
		return true
	}
	if p, err := netip.ParsePrefix(e); err == nil {
		p = p.Masked()
		for _, r := range ranges {
			if r.Overlaps(p) {
				return true
			}
		}
		return false
	}
	if h, _, err := net.SplitHostPort(e); err == nil {
		e = h
	}
	e = strings.TrimSuffix(strings.TrimPrefix(e, "["), "]")
	if ip, err := netip.ParseAddr(e); err == nil {
		ip = ip.Unmap().WithZone("")
		for _, r := range ranges {
			if r.Contains(ip) {
				return true
			}
		}
		return false
	}
	e = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(e, "*"), "."), ".")
	if e == "" {
		return false
	}
	d := strings.TrimSuffix(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(domain)), "."), ".")
	if d == "" {
		d = "cluster.local"
	}
	// Names under the entry include cluster names: the entry is a suffix of the cluster's
	// zones ("local", "cluster.local", "svc.cluster.local").
	for _, zone := range []string{"svc." + d, d} {
		if zone == e || strings.HasSuffix(zone, "."+e) {
			return true
		}
	}
	// The entry is itself cluster names: under the cluster domain, or under "svc" as the
	// search path spells them ("web.default.svc").
	return e == "svc" || strings.HasSuffix(e, ".svc") || strings.HasSuffix(e, "."+d)
}
