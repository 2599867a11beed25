package intercept

import (
	"context"
	"fmt"
	"time"

	"github.com/tpdev/tp/remote/agentspec"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// WaitRolledOut waits until every live pod of the workload runs the agent and is ready, and
// the Service's endpoints are those pods alone: the pods of the old template still receive
// Service traffic while they terminate (and a moment after, until the endpoints catch up),
// and an intercept is only whole once they are gone.
func WaitRolledOut(ctx context.Context, cs kubernetes.Interface, ref Ref, service string, timeout time.Duration) error {
	ref, err := normalize(ref)
	if err != nil {
		return err
	}
	w, err := getWorkload(ctx, cs, ref)
	if err != nil {
		return err
	}
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil {
		return fmt.Errorf("%s: selector: %w", ref.describe(), err)
	}
	deadline := time.Now().Add(timeout)
	for {
		pods, err := cs.CoreV1().Pods(ref.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			return apiError(ctx, "list", "pods", ref.Namespace, "", err)
		}
		waiting := 0
		withAgent := map[string]bool{}
		for i := range pods.Items {
			p := &pods.Items[i]
			agent := false
			for _, c := range p.Spec.Containers {
				agent = agent || c.Name == agentspec.Container
			}
			if p.DeletionTimestamp != nil {
				// A terminating pod counts only while the Service still sends it traffic,
				// which endpointsAre sees; a pod stuck terminating after its containers
				// stopped (a node that cannot tear down its sandbox) must not block.
				continue
			}
			if !agent || !podReady(p) {
				waiting++
			} else {
				withAgent[p.Name] = true
			}
		}
		if waiting == 0 && len(withAgent) > 0 {
			settled, err := endpointsAre(ctx, cs, ref.Namespace, service, withAgent)
			if err != nil {
				return err
			}
			if settled {
				return nil
			}
		}
		if time.Now().After(deadline) {
			if waiting == 0 && len(withAgent) > 0 {
				return fmt.Errorf("%s: its pods run the agent, but after %s Service %q still sends traffic to other pods (old ones still terminating?): kubectl -n %s get endpointslices,pods", ref.describe(), timeout, service, ref.Namespace)
			}
			return fmt.Errorf("%s: %d of %d pods still without a ready agent after %s", ref.describe(), waiting, waiting+len(withAgent), timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// endpointsAre says whether the Service's endpoints that can receive traffic are exactly
// pods, all ready.
func endpointsAre(ctx context.Context, cs kubernetes.Interface, namespace, service string, pods map[string]bool) (bool, error) {
	if service == "" {
		return true, nil
	}
	slices, err := cs.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + service})
	if err != nil {
		return false, apiError(ctx, "list", "endpointslices", namespace, "", err)
	}
	seen := 0
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if isTrue(e.Conditions.Terminating) && !isTrue(e.Conditions.Serving) {
				continue // kube-proxy sends it nothing
			}
			if e.TargetRef == nil || !pods[e.TargetRef.Name] {
				return false, nil
			}
			if e.Conditions.Ready == nil || !*e.Conditions.Ready {
				return false, nil
			}
			seen++
		}
	}
	return seen >= len(pods), nil
}

func isTrue(b *bool) bool { return b != nil && *b }
