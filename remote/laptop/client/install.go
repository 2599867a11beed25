package client

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/intercept"
)

// InstallConfig is tp install's configuration; the Client's namespace is not used (the
// manager's is Options.Namespace).
type InstallConfig struct {
	Options deploy.Options // Log is the Client's Err
	DryRun  bool           // print the manifest instead
}

// Install is tp install: the manager applied and ready (or, with DryRun, its manifest).
func (c *Client) Install(ctx context.Context, cfg InstallConfig) error {
	opts := cfg.Options
	opts.Log = c.Err
	opts.ManagedNamespaces, opts.AllowedCIDRs = splitList(opts.ManagedNamespaces), splitList(opts.AllowedCIDRs)
	if cfg.DryRun {
		out, err := deploy.Render(opts)
		if err != nil {
			return err
		}
		_, err = c.Out.Write(out)
		return err
	}
	k, err := c.cluster()
	if err != nil {
		return err
	}
	start := time.Now()
	inst, err := deploy.Install(ctx, k.REST, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Err, "tp: traffic manager %s ready in namespace %q of context %q (pod %s, %s)\n",
		inst.Image, inst.Namespace, k.Context, inst.Pod, time.Since(start).Round(100*time.Millisecond))
	if len(inst.AllowedCIDRs) > 0 {
		fmt.Fprintf(c.Err, "tp: beyond the cluster's ranges and names, the manager may dial %s (--allow-cidr)\n", strings.Join(inst.AllowedCIDRs, ", "))
	}
	return nil
}

// Uninstall is tp uninstall: every workload gets its own pod template back, then the
// manager in namespace goes.
func (c *Client) Uninstall(ctx context.Context, namespace string, timeout time.Duration) error {
	k, err := c.cluster()
	if err != nil {
		return err
	}
	opts := deploy.Options{Namespace: namespace, Timeout: timeout, Log: c.Err}
	cs, err := c.kubeClient(k)
	if err != nil {
		return err
	}
	if err := c.restoreAll(ctx, cs); err != nil {
		return err
	}
	if err := deploy.Uninstall(ctx, k.REST, opts); err != nil {
		return err
	}
	fmt.Fprintf(c.Err, "tp: uninstalled from namespace %q of context %q\n", opts.Namespace, k.Context)
	return nil
}

// restoreAll removes the agent from every workload that has it.
func (c *Client) restoreAll(ctx context.Context, cs kubernetes.Interface) error {
	refs, err := intercept.Injected(ctx, cs, "")
	if err != nil {
		return err
	}
	for _, ref := range refs {
		if _, err := intercept.Restore(ctx, cs, ref, false); err != nil {
			return err
		}
		fmt.Fprintf(c.Err, "tp: restored %s %s/%s (agent removed)\n", ref.Kind, ref.Namespace, ref.Name)
	}
	return nil
}

// splitList accepts both --flag a,b and --flag a --flag b.
func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}
