// Package gatherlogs wires tp gather-logs into the CLI (beside cmd/tp, whose lines are
// counted); what it gathers, and how, is remote/laptop/client's.
package gatherlogs

import (
	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/remote/laptop/client"
)

// Command is tp gather-logs; newClient makes the client for a command's context (cmd/tp's
// newClient).
func Command(newClient func(*cli.Context) *client.Client) *cli.Command {
	return &cli.Command{
		Name:      "gather-logs",
		Usage:     "write tp's logs, this machine's and the cluster's, into one .tar.gz for a bug report (secrets redacted)",
		ArgsUsage: " ",
		Description: `Gathers, each part best-effort (errors.txt in the archive says which failed, and why):
every session's daemon log (and its older ones), the status of those running, versions,
the manager's pod logs and events, and the traffic agents' logs and events of the workloads
the sessions intercept, from the cluster of the running sessions (else the kubeconfig's).
Passwords in URLs, Authorization headers, tokens and the values of TP_PROXY_CREDENTIALS and
TP_UPSTREAM_PROXY are replaced by xxxxx.

   tp gather-logs
   tp gather-logs -o tp.tar.gz --name default`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "kubeconfig", Usage: "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)"},
			&cli.StringFlag{Name: "context", Usage: "kubeconfig context (default: the running sessions', else the current one)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "the archive (default: tp-logs-YYYYMMDD-HHMMSS.tar.gz here)"},
			&cli.StringFlag{Name: "name", Usage: "only this session (default: every one)"},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "the manager's namespace (default: the running sessions', else tp-system)"},
		},
		Action: func(c *cli.Context) error {
			cl := newClient(c)
			cl.Kube.Namespace = "" // --namespace is the manager's here
			return cl.GatherLogs(c.Context, client.GatherConfig{
				Output: c.String("output"), Name: c.String("name"), ManagerNamespace: c.String("namespace"),
				Image: buildinfo.Image, Args: c.Args().Slice(),
			})
		},
	}
}
