package main

import (
	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/remote/laptop/client"
)

func gatherLogsCommand() *cli.Command {
	return &cli.Command{
		Name: "gather-logs", Usage: "write tp's logs, this machine's and the cluster's, into one .tar.gz for a bug report (secrets redacted)",
		Description: `Gathers, each part best-effort (errors.txt in the archive says which failed, and why):
every session's daemon log (and its older ones), the status of those running, versions,
the manager's pod logs and events, and the traffic agents' logs and events of the workloads
the sessions intercept, from the cluster of the running sessions (else the kubeconfig's).
Passwords in URLs, Authorization headers, tokens and the values of TP_PROXY_CREDENTIALS and
TP_UPSTREAM_PROXY are replaced by xxxxx. A running daemon's profiles are on its control
socket: curl --unix-socket SOCKET http://tp/debug/pprof/heap (tp status names the folder).

   tp gather-logs
   tp gather-logs -o tp.tar.gz --name default`,
		Flags: append(kubeFlagsNoNamespace(), &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "the archive (default: tp-logs-YYYYMMDD-HHMMSS.tar.gz here)"},
			&cli.StringFlag{Name: "name", Usage: "only this session (default: every one)"}, &cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "the manager's namespace (default: the running sessions', else tp-system)"}),
		Action: func(c *cli.Context) error {
			return managerClient(c).GatherLogs(c.Context, client.GatherConfig{Output: c.String("output"), Name: c.String("name"), ManagerNamespace: c.String("namespace"), Image: buildinfo.Image, Args: c.Args().Slice()})
		},
	}
}
