package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote"
)

func installCommand() *cli.Command {
	return &cli.Command{
		Name:  "install",
		Usage: "install or upgrade tp's traffic manager in the cluster",
		Description: `Applies the manager (namespace, service account, read-only RBAC, deployment, service)
with server-side apply and waits until it is ready. Running it again is harmless; with a
new --image it upgrades. Without --image it installs the image this tp was built with.
The first install makes a CA (Secret tp-ca-key) that signs the manager's certificate for its
agents (Secret tp-manager-tls; the bundle to trust in ConfigMap tp-ca); later ones keep it.

   tp install
   tp install --image registry.example.com/tp/tp:v0.2 --managed-namespaces team-a,team-b

The manager dials, for developers, only the cluster's service and pod ranges and the names
the cluster's DNS answers; --allow-cidr adds ranges (never link-local or loopback ones):

   tp install --allow-cidr 10.20.0.0/16,192.0.2.7/32`,
		Flags: append(kubeFlagsNoNamespace(),
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: deploy.DefaultNamespace, Usage: "namespace for the manager"},
			&cli.StringFlag{Name: "image", Value: buildinfo.Image, Usage: "the manager's image (tp's cluster image)"},
			&cli.StringSliceFlag{Name: "managed-namespaces", Usage: "limit what the manager sees to these namespaces (default: the whole cluster)"},
			&cli.StringSliceFlag{Name: "allow-cidr", Usage: "let the manager dial this range for developers too, beyond the cluster's service and pod ranges (repeatable or comma separated)"},
			&cli.DurationFlag{Name: "timeout", Value: deploy.DefaultTimeout, Usage: "how long to wait for the manager to be ready"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the manifest instead of applying it"},
			&cli.BoolFlag{Name: "rotate-ca", Usage: "replace the CA agents verify the manager by; agents injected before keep working until their workload's next tp intercept"},
		),
		Action: func(c *cli.Context) error {
			opts := deploy.Options{
				Namespace: c.String("namespace"), Image: c.String("image"),
				ManagedNamespaces: splitList(c.StringSlice("managed-namespaces")),
				AllowedCIDRs:      splitList(c.StringSlice("allow-cidr")),
				Timeout:           c.Duration("timeout"), Log: c.App.ErrWriter, RotateCA: c.Bool("rotate-ca"),
			}
			if c.Bool("dry-run") {
				out, err := deploy.Render(opts)
				if err != nil {
					return err
				}
				_, err = c.App.Writer.Write(out)
				return err
			}
			k, err := loadKube(c.String("kubeconfig"), c.String("context"), "")
			if err != nil {
				return remote.UsageError(err)
			}
			start := time.Now()
			inst, err := deploy.Install(c.Context, k.cfg, opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.ErrWriter, "tp: traffic manager %s ready in namespace %q of context %q (pod %s, %s)\n",
				inst.Image, inst.Namespace, k.context, inst.Pod, time.Since(start).Round(100*time.Millisecond))
			if len(inst.AllowedCIDRs) > 0 {
				fmt.Fprintf(c.App.ErrWriter, "tp: beyond the cluster's ranges and names, the manager may dial %s (--allow-cidr)\n", strings.Join(inst.AllowedCIDRs, ", "))
			}
			return nil
		},
	}
}

func uninstallCommand() *cli.Command {
	return &cli.Command{
		Name:  "uninstall",
		Usage: "remove everything tp made: the agents (workloads get their own pod templates back), then the manager",
		Flags: append(kubeFlagsNoNamespace(),
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: deploy.DefaultNamespace, Usage: "namespace of the manager"},
			&cli.DurationFlag{Name: "timeout", Value: deploy.DefaultTimeout, Usage: "how long to wait for it to be gone"},
		),
		Action: func(c *cli.Context) error {
			k, err := loadKube(c.String("kubeconfig"), c.String("context"), "")
			if err != nil {
				return remote.UsageError(err)
			}
			opts := deploy.Options{Namespace: c.String("namespace"), Timeout: c.Duration("timeout"), Log: c.App.ErrWriter}
			// The agents first: every workload gets its own pod template back.
			cs, err := kubernetes.NewForConfig(k.cfg)
			if err != nil {
				return err
			}
			refs, err := intercept.Injected(c.Context, cs, "")
			if err != nil {
				return err
			}
			for _, ref := range refs {
				if _, err := intercept.Restore(c.Context, cs, ref, false); err != nil {
					return err
				}
				fmt.Fprintf(c.App.ErrWriter, "tp: restored %s %s/%s (agent removed)\n", ref.Kind, ref.Namespace, ref.Name)
			}
			if err := deploy.Uninstall(c.Context, k.cfg, opts); err != nil {
				return err
			}
			fmt.Fprintf(c.App.ErrWriter, "tp: uninstalled from namespace %q of context %q\n", opts.Namespace, k.context)
			return nil
		},
	}
}

func kubeFlagsNoNamespace() []cli.Flag {
	var out []cli.Flag
	for _, f := range kubeFlags() {
		if f.Names()[0] != "namespace" {
			out = append(out, f)
		}
	}
	return out
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
