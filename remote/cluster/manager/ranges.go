package manager

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/managerspec"
)

// ClusterRanges finds the cluster's service and pod CIDRs through the API and keeps them
// current: ServiceCIDR objects (Kubernetes 1.33+) and the nodes' pod CIDRs, and where those
// are not available, the smallest /16s that cover the ClusterIPs and pod IPs in use.
type ClusterRanges struct {
	cs  kubernetes.Interface
	log *slog.Logger
	// namespaces limits the pods and services looked at (tp install --managed-namespaces,
	// whose RBAC allows no more); empty means all.
	namespaces []string

	mu        sync.RWMutex
	svc, pods []netip.Prefix
}

// NewClusterRanges reads the ranges once and refreshes them every period until ctx ends.
// With namespaces, only their pods and services are looked at.
func NewClusterRanges(ctx context.Context, cs kubernetes.Interface, namespaces []string, period time.Duration, log *slog.Logger) *ClusterRanges {
	r := &ClusterRanges{cs: cs, log: log, namespaces: namespaces}
	r.refresh(ctx)
	go remote.Every(ctx, period, func(time.Time) bool { r.refresh(ctx); return true })
	return r
}

// Ranges returns the service and pod CIDRs last found.
func (r *ClusterRanges) Ranges() (services, pods []netip.Prefix) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.svc), slices.Clone(r.pods)
}

func (r *ClusterRanges) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	svc := r.serviceCIDRs(ctx)
	pods := r.podCIDRs(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(svc) > 0 {
		r.svc = svc
	}
	if len(pods) > 0 {
		r.pods = pods
	}
}

func (r *ClusterRanges) serviceCIDRs(ctx context.Context) []netip.Prefix {
	var out []netip.Prefix
	list, err := r.cs.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, sc := range list.Items {
			for _, c := range sc.Spec.CIDRs {
				if p, err := netip.ParsePrefix(c); err == nil {
					out = append(out, p.Masked())
				}
			}
		}
		if len(out) > 0 {
			return managerspec.Dedupe(out)
		}
	} else {
		r.log.Debug("service CIDRs from ServiceCIDR objects unavailable; deriving them from ClusterIPs", "err", err)
	}
	for _, ns := range r.scope() {
		svcs, err := r.cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			r.log.Warn("cannot list services to find the service CIDR", "namespace", ns, "err", err)
			continue
		}
		for _, s := range svcs.Items {
			for _, ip := range s.Spec.ClusterIPs {
				if a, err := netip.ParseAddr(ip); err == nil {
					out = append(out, cover(a))
				}
			}
		}
	}
	return managerspec.Dedupe(out)
}

func (r *ClusterRanges) podCIDRs(ctx context.Context) []netip.Prefix {
	var out []netip.Prefix
	nodes, err := r.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, n := range nodes.Items {
			for _, c := range n.Spec.PodCIDRs {
				if p, err := netip.ParsePrefix(c); err == nil {
					out = append(out, p.Masked())
				}
			}
		}
	} else {
		r.log.Debug("cannot list nodes for their pod CIDRs", "err", err)
	}
	// Pod IPs in use show ranges that nodes' podCIDRs miss (CNIs with their own IPAM).
	for _, ns := range r.scope() {
		pods, err := r.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			r.log.Debug("cannot list pods for the pod IPs in use", "namespace", ns, "err", err)
			continue
		}
		for _, p := range pods.Items {
			if p.Spec.HostNetwork {
				continue
			}
			for _, ip := range p.Status.PodIPs {
				a, err := netip.ParseAddr(ip.IP)
				if err != nil || containsAddr(out, a) {
					continue
				}
				out = append(out, cover(a))
			}
		}
	}
	return managerspec.Dedupe(out)
}

// scope is the namespaces to list in: all ("") or the managed ones.
func (r *ClusterRanges) scope() []string {
	if len(r.namespaces) == 0 {
		return []string{""}
	}
	return r.namespaces
}

// cover is the /16 (IPv4) or /64 (IPv6) around an address seen in use.
func cover(a netip.Addr) netip.Prefix {
	bits := 16
	if a.Is6() && !a.Is4In6() {
		bits = 64
	}
	p, _ := a.Unmap().Prefix(bits)
	return p
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
