//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/tests/kit"
)

// TestEgressAsWorkload: a NetworkPolicy (enforced by the cluster's kube-router) admits only
// app's pods to a database-like server, db. A plain tp run leaves from tp's manager and is
// refused; tp run --as deploy/app --egress workload leaves from an app pod, through the agent
// tp adds, and connects, with or without the VIF; as another workload it is refused at once,
// not left hanging. No egress grant outlives its run.
func TestEgressAsWorkload(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "egress")
	ctx := context.Background()
	deployWorkload(t, cs, ns, "db")
	for _, name := range []string{"app", "other"} {
		deployWorkload(t, cs, ns, name)
		onlyHTTP(t, cs, ns, name) // one Service port: tp adds its agent without being told which
	}
	_, err := cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "db-admits-app"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "app"}}}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")
	curl := []string{"curl", "-sS", "-m", "20", "http://db/source-ip"}
	run := func(t *testing.T, args ...string) (kit.Result, time.Duration) {
		t.Helper()
		start := time.Now()
		r := l.Run(3*time.Minute, nil, l.TP, append(append([]string{"run", "--namespace", ns}, args...), append([]string{"--"}, curl...)...)...)
		return r, time.Since(start)
	}

	t.Run("PlainRunIsRefused", func(t *testing.T) {
		// kube-router needs a moment to program a new policy.
		var r kit.Result
		var took time.Duration
		kit.WaitFor(t, 60*time.Second, "the policy refusing tp's manager", func() error {
			r, took = run(t, "--vif=off")
			if !strings.Contains(r.Stdout, "connection refused") {
				return fmt.Errorf("db answered tp's manager: %q %q", r.Stdout, r.Stderr)
			}
			return nil
		})
		t.Logf("a plain tp run: %s (in %s)", strings.TrimSpace(r.Stdout), took.Round(time.Millisecond))
		if took > 15*time.Second {
			t.Errorf("the refusal took %s: a denied connection must be reported, not left to time out", took)
		}
	})

	t.Run("AsTheWorkloadConnects", func(t *testing.T) {
		r, took := run(t, "--vif=off", "--as", "deploy/app", "--egress", "workload")
		t.Logf("tp run --as deploy/app --egress workload (%s) said:\n%s", took.Round(time.Millisecond), r.Stderr)
		if !strings.Contains(r.Stderr, "added tp's traffic agent to deployment/app") {
			t.Errorf("tp run did not say it added the agent the egress needs:\n%s", r.Stderr)
		}
		// The new pods' addresses reach kube-router's sets a moment after they are ready.
		kit.WaitFor(t, 30*time.Second, "a connection from an app pod", func() error {
			if r.Err != nil || !strings.HasPrefix(r.Stdout, "source=") {
				err := fmt.Errorf("tp run --as deploy/app --egress workload: %v\n%s\n%s", r.Err, r.Stdout, r.Stderr)
				r, _ = run(t, "--vif=off", "--as", "deploy/app", "--egress", "workload")
				return err
			}
			return nil
		})
		peer := strings.TrimSpace(strings.TrimPrefix(r.Stdout, "source="))
		if ips := podIPs(t, cs, ns, "app"); !ips[peer] {
			t.Errorf("db saw the connection come from %s, not from an app pod (%v)", peer, ips)
		}
		// In the VIF, a program that ignores proxies leaves from the pod too.
		r, _ = run(t, "--vif=on", "--as", "deploy/app", "--egress", "workload")
		peer = strings.TrimSpace(strings.TrimPrefix(r.Stdout, "source="))
		if ips := podIPs(t, cs, ns, "app"); r.Err != nil || !ips[peer] {
			t.Errorf("in the VIF: %v, peer %q (app pods %v)\n%s", r.Err, r.Stdout, ips, r.Stderr)
		}
	})

	t.Run("AnotherWorkloadIsRefused", func(t *testing.T) {
		r, took := run(t, "--vif=off", "--as", "deploy/other", "--egress", "workload")
		t.Logf("as deploy/other: %s (in %s)", strings.TrimSpace(r.Stdout), took.Round(time.Millisecond))
		if !strings.Contains(r.Stdout, "connection refused") || !strings.Contains(r.Stdout, "from pod "+ns+"/other-") {
			t.Errorf("as a workload the policy does not admit: want a refusal from its pod, got %v\n%s\n%s", r.Err, r.Stdout, r.Stderr)
		}
		start := time.Now()
		r = l.Run(time.Minute, nil, l.TP, "run", "--namespace", ns, "--vif=off", "--as", "deploy/other", "--egress", "workload", "--",
			"curl", "-sS", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}", "http://db/source-ip")
		if r.Stdout != "502" || time.Since(start) > 20*time.Second {
			t.Errorf("a refused connection: HTTP %q after %s, want tp's 502 at once", r.Stdout, time.Since(start).Round(time.Millisecond))
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"--egress", "workload"}, "add --as [KIND/]WORKLOAD"},
			{[]string{"--as", "deploy/app", "--egress", "pods"}, `--egress "pods": want manager`},
			{[]string{"--as", "deploy/nope", "--egress", "workload"}, "nope"},
		} {
			r := l.Run(time.Minute, nil, l.TP, append(append([]string{"run", "--namespace", ns}, c.args...), "--", "true")...)
			if r.Code != 2 || !strings.Contains(r.Stderr, c.want) {
				t.Errorf("tp run %s: exit %d, %q; want exit 2 and %q", strings.Join(c.args, " "), r.Code, r.Stderr, c.want)
			}
		}
	})

	// Each run removed its grant; the intercept grants' label marks egress grants too.
	leases, err := cs.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{LabelSelector: grant.Label})
	if err != nil {
		t.Fatal(err)
	}
	for _, le := range leases.Items {
		t.Errorf("grant %s stays after its run", le.Name)
	}
}

// onlyHTTP leaves name's Service with its http port alone.
func onlyHTTP(t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	ctx := context.Background()
	svc, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}
	if _, err := cs.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// podIPs are the addresses of name's live pods.
func podIPs(t *testing.T, cs kubernetes.Interface, ns, name string) map[string]bool {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		t.Fatal(err)
	}
	ips := map[string]bool{}
	for _, p := range pods.Items {
		if p.Status.PodIP != "" && p.DeletionTimestamp == nil {
			ips[p.Status.PodIP] = true
		}
	}
	return ips
}
