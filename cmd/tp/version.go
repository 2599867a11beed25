package main

import (
	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote/laptop/client"
)

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
		Flags: append(kubeFlagsNoNamespace(),
			&cli.StringFlag{Name: "manager-namespace", Value: deploy.DefaultNamespace, Usage: "where tp install put the traffic manager"},
			outputFlag(),
		),
		Action: func(c *cli.Context) error {
			return newClient(c).ShowVersion(c.Context, client.VersionConfig{
				Image: buildinfo.Image, ManagerNamespace: c.String("manager-namespace"), Output: c.String("output"),
			})
		},
	}
}
