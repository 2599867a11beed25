package managerspec

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The admin's allowed ranges are checked where they are given (tp install) and where they
// are used (the manager's dial policy) by the same rules, so that install refuses what the
// manager would never dial instead of letting it mislead.

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
// since allowing it would only mislead. The result is canonical (see Dedupe), so the same
// set always renders the same.
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
	return Dedupe(out), nil
}

// Dedupe sorts prefixes and drops those inside another: the canonical form of a list of
// ranges.
func Dedupe(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	var out []netip.Prefix
	for _, p := range ps {
		if len(out) > 0 && out[len(out)-1].Contains(p.Addr()) && out[len(out)-1].Bits() <= p.Bits() {
			continue
		}
		out = append(out, p)
	}
	return out
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
