package manager

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/tpdev/tp/remote"
)

// AllowedCIDRsEnv carries tp install --allow-cidr to the manager: a comma-separated list.
const AllowedCIDRsEnv = "TP_ALLOWED_CIDRS"

// Policy decides which addresses the manager dials for clients. The right to use tp
// (tp-connect) would otherwise grant network reach as the manager's pod into everything the
// pod reaches: cloud metadata, the node's kubelet, the pod's own loopback. So it dials
//   - addresses in the cluster's service and pod ranges,
//   - addresses the cluster's DNS answered for a cluster name (ExternalName targets too),
//   - addresses in ranges the admin allowed at install (tp install --allow-cidr),
//
// and never a loopback, link-local or unspecified address, whatever the name or the
// allowed ranges say.
type Policy struct {
	// Ranges are the cluster's service and pod ranges, kept current; nil: none.
	Ranges Ranges
	// Allowed are the admin's extra ranges.
	Allowed []netip.Prefix
}

// policyScope is what a refusal tells the user the manager may dial.
const policyScope = "tp's dial policy: cluster service and pod ranges, cluster names, and ranges the admin allowed with tp install --allow-cidr"

// Check says whether the manager may dial addr at port. byName is the name the client asked
// for when the cluster's DNS answered it with addr, "" when the client gave addr itself. A
// refusal is a remote.Forbidden error naming what was asked and the policy.
func (p *Policy) Check(addr netip.Addr, port, byName string) error {
	addr = addr.Unmap()
	what := joinHostPort(addr.String(), port)
	if byName != "" {
		what = fmt.Sprintf("%s (%s)", joinHostPort(byName, port), what)
	}
	if reason := NeverDialed(addr); reason != "" {
		return &remote.Error{Kind: remote.Forbidden, Msg: fmt.Sprintf(
			"%s is %s, which tp's dial policy never lets the manager dial (not even with tp install --allow-cidr)", what, reason)}
	}
	if byName != "" || p.inRanges(addr) {
		return nil
	}
	return &remote.Error{Kind: remote.Forbidden, Msg: fmt.Sprintf(
		"%s is outside what tp's manager may dial (%s)", what, policyScope)}
}

func (p *Policy) inRanges(addr netip.Addr) bool {
	if containsAddr(p.Allowed, addr) {
		return true
	}
	if p.Ranges == nil {
		return false
	}
	svc, pods := p.Ranges.Ranges()
	return containsAddr(svc, addr) || containsAddr(pods, addr)
}

// NeverDialed says why the manager never dials addr ("link-local", "loopback",
// "unspecified"), or "" when the policy's other rules decide.
func NeverDialed(addr netip.Addr) string {
	addr = addr.Unmap()
	switch {
	case !addr.IsValid(), addr.IsUnspecified():
		return "unspecified"
	case addr.IsLoopback():
		return "loopback"
	case addr.IsLinkLocalUnicast(), addr.IsLinkLocalMulticast(), addr.IsInterfaceLocalMulticast():
		return "link-local"
	case addr.Is4() && addr.As4()[0] == 0: // 0.0.0.0/8: "this network", dials land on the pod itself
		return "unspecified"
	case nat64.Contains(addr):
		// On an IPv6 cluster with NAT64 this is the IPv4 address in its last 4 bytes.
		b := addr.As16()
		return NeverDialed(netip.AddrFrom4([4]byte(b[12:])))
	}
	return ""
}

// nat64 is the well-known NAT64 prefix (RFC 6052).
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// ParseAllowedCIDRs reads the admin's ranges: CIDRs, comma-separated or one per element.
// A range the policy never dials in full (169.254.0.0/16, 127.0.0.0/8, ...) is an error,
// since allowing it would only mislead.
func ParseAllowedCIDRs(list ...string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("allowed CIDR %q: want a range like 10.0.0.0/8 or 192.0.2.7/32: %w", s, err)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())).Masked()
			if reason := neverPrefix(p); reason != "" {
				return nil, fmt.Errorf("allowed CIDR %s is %s: tp's manager never dials it, whatever is allowed", p, reason)
			}
			out = append(out, p)
		}
	}
	return dedupe(out), nil
}

// unmapBits is what an IPv4-mapped prefix loses to become an IPv4 one.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// neverPrefix says why every address in p is never dialed, "" when some may be.
func neverPrefix(p netip.Prefix) string {
	first, last := p.Masked().Addr(), lastAddr(p)
	for _, n := range neverRanges {
		if n.Contains(first) && n.Contains(last) {
			return NeverDialed(first)
		}
	}
	return ""
}

// neverRanges are the blocks NeverDialed refuses, for checking allowed ranges against.
var neverRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/24"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff01::/16"),
	netip.MustParsePrefix("ff02::/16"),
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == "" {
		return host
	}
	return host + ":" + port
}
