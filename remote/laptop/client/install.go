package client

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/output"
)

// InstallConfig is tp install's configuration; the Client's namespace is not used (the
// manager's is Options.Namespace).
type InstallConfig struct {
	Options deploy.Options // Log is the Client's Err
	DryRun  bool           // print the manifest instead
	// Output is the manifest's format with DryRun: text and yaml print YAML documents,
	// json one Kubernetes List of the objects (output.ManifestList).
	Output string
}

// Install is tp install: the manager applied and ready (or, with DryRun, its manifest).
func (c *Client) Install(ctx context.Context, cfg InstallConfig) error {
	opts := cfg.Options
	opts.Log = c.Err
	opts.ManagedNamespaces, opts.AllowedCIDRs = splitList(opts.ManagedNamespaces), splitList(opts.AllowedCIDRs)
	f, err := output.Parse(cfg.Output)
	if err != nil {
		return err
	}
	if f != output.Text && !cfg.DryRun {
		return remote.Errorf(remote.Usage, "-o %s: tp install prints the manifest only with --dry-run", f)
	}
	if cfg.DryRun {
		return writeManifest(c.Out, f, opts)
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

// writeManifest prints the manifest tp install applies with opts: as YAML documents, or
// for json as one Kubernetes List of them.
func writeManifest(w io.Writer, f output.Format, opts deploy.Options) error {
	manifest, err := deploy.Render(opts)
	if err != nil {
		return err
	}
	if f != output.JSON {
		_, err = w.Write(manifest)
		return err
	}
	objs, err := deploy.Objects(manifest)
	if err != nil {
		return err
	}
	list := output.ManifestList{APIVersion: "v1", Kind: "List", Items: []map[string]any{}}
	for _, o := range objs {
		list.Items = append(list.Items, o.Object)
	}
	return output.Write(w, f, list)
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
