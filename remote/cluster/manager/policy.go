package manager

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/managerspec"
)

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
	if reason := managerspec.NeverDialed(addr); reason != "" {
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

func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == "" {
		return host
	}
	return host + ":" + port
}
