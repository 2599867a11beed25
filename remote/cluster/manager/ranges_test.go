package manager

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestClusterRanges(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.0.0/24"}}}
	inNode := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "app"}, Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.244.0.7"}}}}
	elsewhere := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "app"}, Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "100.64.3.9"}}}}
	hostNet := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "kube-system"}, Spec: corev1.PodSpec{HostNetwork: true}, Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "192.168.1.10"}}}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app"}, Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.12.34"}}}
	log := slog.New(slog.DiscardHandler)

	// Without ServiceCIDR objects: the /16 around ClusterIPs in use.
	r := NewClusterRanges(t.Context(), fake.NewClientset(node, inNode, elsewhere, hostNet, svc), nil, time.Hour, log)
	svcs, pods := r.Ranges()
	if !slices.Equal(svcs, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}) {
		t.Errorf("service ranges: %v", svcs)
	}
	if !slices.Equal(pods, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("100.64.0.0/16")}) {
		t.Errorf("pod ranges: %v (a host-network pod's IP must not count)", pods)
	}

	// With them: exactly what they say.
	sc := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/12"}}}
	r = NewClusterRanges(context.Background(), fake.NewClientset(node, sc, svc), nil, time.Hour, log)
	if svcs, _ := r.Ranges(); !slices.Equal(svcs, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}) {
		t.Errorf("service ranges from ServiceCIDRs: %v", svcs)
	}

	// Managed namespaces: pods elsewhere are not looked at.
	r = NewClusterRanges(context.Background(), fake.NewClientset(node, elsewhere), []string{"other"}, time.Hour, log)
	if _, pods := r.Ranges(); !slices.Equal(pods, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}) {
		t.Errorf("pod ranges with managed namespaces: %v", pods)
	}
}
