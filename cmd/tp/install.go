package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote/laptop/client"
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

   tp install --allow-cidr 10.20.0.0/16,192.0.2.7/32

--replicas runs several manager pods: each developer's session lives on one, agents
connect to all, and a pod that stops (a rollout, a node drain) hands its developers to the
others without a failed request:

   tp install --replicas 2

--dry-run prints the manifest instead: YAML documents (-o yaml, the default), or with
-o json one Kubernetes List (apiVersion v1, kind List) of the objects in the order tp
applies them; kubectl apply -f takes either.`,
		Flags: append(kubeFlagsNoNamespace(),
			managerNamespaceFlag("namespace for the manager"),
			&cli.StringFlag{Name: "image", Value: buildinfo.Image, Usage: "the manager's image (tp's cluster image)"},
			&cli.StringSliceFlag{Name: "managed-namespaces", Usage: "limit what the manager sees to these namespaces (default: the whole cluster)"},
			&cli.StringSliceFlag{Name: "allow-cidr", Usage: "let the manager dial this range for developers too, beyond the cluster's service and pod ranges (repeatable or comma separated)"},
			&cli.IntFlag{Name: "replicas", Usage: fmt.Sprintf("how many manager pods serve the team (1-%d; default: as many as now, 1 for a new install)", deploy.MaxReplicas)},
			&cli.DurationFlag{Name: "timeout", Value: deploy.DefaultTimeout, Usage: "how long to wait for the manager to be ready"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the manifest instead of applying it"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "with --dry-run: yaml (as text) or json (one Kubernetes List of the objects)"},
			&cli.BoolFlag{Name: "rotate-ca", Usage: "replace the CA agents verify the manager by; agents injected before keep working until their workload's next tp intercept"},
		),
		Action: func(c *cli.Context) error {
			return managerClient(c).Install(c.Context, client.InstallConfig{
				Options: deploy.Options{
					Namespace: managerNamespace(c), Image: c.String("image"),
					ManagedNamespaces: c.StringSlice("managed-namespaces"), AllowedCIDRs: c.StringSlice("allow-cidr"),
					Timeout: c.Duration("timeout"), RotateCA: c.Bool("rotate-ca"), Replicas: c.Int("replicas"),
				},
				DryRun: c.Bool("dry-run"), Output: c.String("output"),
			})
		},
	}
}

func uninstallCommand() *cli.Command {
	return &cli.Command{
		Name:  "uninstall",
		Usage: "remove everything tp made: the agents (workloads get their own pod templates back), then the manager",
		Flags: append(kubeFlagsNoNamespace(),
			managerNamespaceFlag("namespace of the manager"),
			&cli.DurationFlag{Name: "timeout", Value: deploy.DefaultTimeout, Usage: "how long to wait for it to be gone"},
		),
		Action: func(c *cli.Context) error {
			return managerClient(c).Uninstall(c.Context, managerNamespace(c), c.Duration("timeout"))
		},
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print tp's version and the cluster image it installs, and the cluster's manager",
		Description: `Prints this tp's version, the cluster image tp install deploys, and Go's version and
platform; then, when the cluster answers within 5 seconds, the manager tp install put in
it: its version (its image's tag), its image and whether it is ready. When this tp cannot
work with that manager it warns, naming the command that fixes it. An unreachable cluster
is no failure: the manager is then "unknown".

   tp version
   tp version -o json
   tp version --context staging --manager-namespace tp-team`,
		Flags: append(kubeFlagsNoNamespace(), outputFlag(),
			&cli.StringFlag{Name: "manager-namespace", Value: deploy.DefaultNamespace, Usage: "where tp install put the traffic manager"}),
		Action: func(c *cli.Context) error {
			cfg := client.VersionConfig{Image: buildinfo.Image, ManagerNamespace: c.String("manager-namespace"), Output: c.String("output")}
			return newClient(c).ShowVersion(c.Context, cfg)
		},
	}
}

// managerNamespaceFlag is install's and uninstall's --namespace: the manager's, not the
// developer's.
func managerNamespaceFlag(usage string) cli.Flag {
	return &cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: deploy.DefaultNamespace, Usage: usage}
}

// managerNamespace is --namespace given after the command, else before it, else tp's.
func managerNamespace(c *cli.Context) string {
	if ns := given(c, "namespace"); ns != "" {
		return ns
	}
	return deploy.DefaultNamespace
}

// managerClient is the client of install and uninstall, whose --namespace is not the
// cluster choice's.
func managerClient(c *cli.Context) *client.Client {
	cl := newClient(c)
	cl.Kube.Namespace = ""
	return cl
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
