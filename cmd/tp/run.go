package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote/laptop/client"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run one command attached to the cluster",
		ArgsUsage: "-- CMD [ARGS...]",
		Description: `Runs CMD with the cluster's names and addresses reachable, using the running connection for
the context and namespace, or one opened for the command's lifetime. Exit status, signals,
stdin, stdout and stderr are the command's own.

With the VIF (Linux; --vif=on, or auto where possible) the command runs in a private network
namespace made without root: all its traffic, whatever program it is, goes through tp; cluster
names resolve through tp's DNS server; everything else still reaches the internet and LAN from
this machine; this machine's loopback is at 198.18.0.1 inside. Without it (--vif=off), the
command gets the proxy variables (ALL_PROXY, HTTP(S)_PROXY, JAVA_TOOL_OPTIONS, ...).

A running connection whose proxy asks for credentials (tp connect with TP_PROXY_CREDENTIALS)
is used with the same credentials, from TP_PROXY_CREDENTIALS or --proxy-credentials-file:
they go into the command's proxy variables (not JAVA_TOOL_OPTIONS, which the JVM prints).
Without them, tp run opens a connection of its own, on loopback and without credentials.

   tp run -- ./myservice
   tp run --vif=off -- curl http://web-app/
   tp run --namespace other -- psql -h db
   tp run --as deploy/web-app -- ./web-app      # with web-app's environment

--as WORKLOAD gives the command the environment the workload's container has in the cluster
(ConfigMap and Secret values, downward API fields, service links, KUBERNETES_SERVICE_HOST),
over this shell's; tp intercept -- CMD and tp run --intercept do the same for the workload
they intercept. Its ConfigMap, Secret, downwardAPI and projected volumes (the service-account
token: a fresh one, requested for the workload's ServiceAccount) are written under a
temporary folder, $TP_ROOT, each at $TP_ROOT + its mountPath, kept current while the command
runs (updates show within seconds) and removed after it, for --intercept's workload too;
--mount=false leaves them out.

--egress workload makes the command's connections to the cluster leave from a pod of --as's
workload, through tp's traffic agent (added when the workload has none, as tp intercept
does), so network policies, meshes and allow-lists see that workload; a connection they
refuse is reported as refused. The default, --egress manager, leaves from tp's manager.

   tp run --as deploy/web-app --egress workload -- psql -h db   # as web-app's pods connect

A project's tp.yaml (here or in a folder above, up to the one holding .git) gives the flags
not given here their values: its namespace, and its run section (vif, manager-namespace,
transport, timeout, intercept, port, as, container, mount, egress). tp config view shows them.`,
		Flags: append(kubeFlags(),
			&cli.StringFlag{Name: "vif", Value: "auto", Usage: "auto, on or off: run the command in a private network namespace"},
			&cli.StringFlag{Name: "manager-namespace", Value: deploy.DefaultNamespace, Usage: "where tp install put the traffic manager"},
			&cli.StringFlag{Name: "transport", Value: "auto", Usage: "port-forward transport, for a connection opened for this command"},
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute, Usage: "how long to wait for a connection opened for this command (and an intercept's agents)"},
			&cli.StringFlag{Name: "intercept", Usage: "also intercept this workload for the command's lifetime (with --port); the command gets its app container's environment"},
			&cli.StringFlag{Name: "port", Usage: "with --intercept: LOCAL[:REMOTE], the command's port and the Service's port"},
			&cli.StringFlag{Name: "as", Usage: "[KIND/]WORKLOAD: run as its container does, with its environment (resolved from the cluster)"},
			&cli.StringFlag{Name: "container", Usage: "with --as or --intercept: the container (default: the pod's default container)"},
			&cli.BoolFlag{Name: "mount", Value: true, Usage: "with --as: write the container's ConfigMap, Secret, downwardAPI and projected volumes under $TP_ROOT"},
			&cli.StringFlag{Name: "egress", Value: client.EgressManager, Usage: "manager or workload: where the command's cluster connections leave from (workload: a pod of --as's workload)"},
			proxyCredentialsFlag("file holding USER:PASSWORD for a running connection whose proxy asks for them (default: $"+client.CredentialsEnv+")"),
			&cli.BoolFlag{Name: "debug", Usage: "log tp's own work to stderr"},
		),
		Action: func(c *cli.Context) error {
			cl := newClient(c)
			cl.Log = client.NewLog(c.App.ErrWriter, c.Bool("debug"), true)
			return cl.Run(c.Context, client.RunConfig{
				Args: c.Args().Slice(), VIF: c.String("vif"), ManagerNamespace: c.String("manager-namespace"),
				Transport: c.String("transport"), Timeout: c.Duration("timeout"),
				Intercept: c.String("intercept"), Port: c.String("port"), CredentialsFile: c.String(client.CredentialsFileFlag),
				As: c.String("as"), Container: c.String("container"), NoMount: !c.Bool("mount"),
				Egress: c.String("egress"),
			})
		},
	}
}
