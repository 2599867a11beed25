package client

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/laptop/session"
)

// Where a command's cluster-bound connections leave from (tp run --egress).
const (
	EgressManager  = "manager"  // tp's manager's pod: the default
	EgressWorkload = "workload" // a pod of --as's (or --intercept's) workload, through its agent
)

// runEgress is the workload tp run's connections leave from (nil: the manager's pod), with
// tp's agent in it: --egress workload connects through the agent of --as's workload, and
// adds the agent when the workload has none, as tp intercept does (its pods restart).
func (c *Client) runEgress(ctx context.Context, k *Kube, cfg RunConfig) (*session.Egress, error) {
	if cfg.Egress != EgressWorkload { // checkRunFlags checked the value
		return nil, nil
	}
	name := cfg.As
	if name == "" {
		name = cfg.Intercept
	}
	ref, err := intercept.ParseRef(k.Namespace, name)
	if err != nil {
		return nil, remote.Errorf(remote.Usage, "--as: %w", err)
	}
	if cfg.Intercept == "" { // --intercept adds the agent anyway
		cs, err := c.kubeClient(k)
		if err != nil {
			return nil, err
		}
		if err := c.ensureAgent(ctx, k, cs, ref, cfg.ManagerNamespace, cfg.Timeout); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(c.Err, "tp: the command's connections to the cluster leave from the pods of %s\n", ref)
	return &session.Egress{Namespace: ref.Namespace, Kind: intercept.CanonicalKind(ref.Kind), Workload: ref.Name}, nil
}

// ensureAgent adds tp's agent to ref when its pods run none, for the workload's one Service
// port (the agent serves a port to be in the Service's path), and waits for the pods.
func (c *Client) ensureAgent(ctx context.Context, k *Kube, cs kubernetes.Interface, ref intercept.Ref, managerNS string, timeout time.Duration) error {
	pod, err := intercept.PodOf(ctx, cs, ref)
	if err != nil {
		return err
	}
	if hasAgent(pod) {
		return nil
	}
	target, err := intercept.Resolve(ctx, cs, ref, "")
	if err != nil {
		return fmt.Errorf("--egress workload leaves through tp's traffic agent, which %s does not run yet; adding it: %w (tp intercept %s --port ... adds it for the port you name)", ref, err, ref.Name)
	}
	agentCfg, err := agentConfig(ctx, k, managerNS)
	if err != nil {
		return err
	}
	plan, err := intercept.Inject(ctx, cs, ref, agentCfg, []intercept.Target{*target}, false)
	if err != nil {
		return err
	}
	for _, warn := range plan.Warnings {
		fmt.Fprintf(c.Err, "tp: note: %s\n", warn)
	}
	fmt.Fprintf(c.Err, "tp: added tp's traffic agent to %s (--egress workload leaves through it; it stays, as after tp intercept); waiting for its pods\n", ref)
	return intercept.WaitRolledOut(ctx, cs, ref, target.Service, timeout)
}

// hasAgent says whether pod runs tp's agent.
func hasAgent(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if c.Name == agentspec.Container {
			return true
		}
	}
	return false
}
