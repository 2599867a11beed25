package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/intercept/agent"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run the traffic agent (the sidecar tp intercept adds to a workload's pods)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "manager", EnvVars: []string{"TP_MANAGER"}, Usage: "the manager's agent API, host:port"},
			&cli.StringFlag{Name: "ports", EnvVars: []string{"TP_AGENT_PORTS"}, Usage: "name:listen:app, comma separated"},
			&cli.StringFlag{Name: "pod", EnvVars: []string{"POD_NAME"}, Usage: "this pod's name"},
			&cli.StringFlag{Name: "namespace", EnvVars: []string{"POD_NAMESPACE"}, Usage: "this pod's namespace"},
			&cli.StringFlag{Name: "token-file", Value: "/var/run/secrets/tp/token", Usage: "the projected service-account token"},
		},
		Action: func(c *cli.Context) error {
			ports, err := agent.ParsePorts(c.String("ports"))
			if err != nil {
				return err
			}
			if c.String("manager") == "" || c.String("pod") == "" || c.String("namespace") == "" {
				return fmt.Errorf("agent: --manager, --pod and --namespace (or TP_MANAGER, POD_NAME, POD_NAMESPACE) are required")
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			return agent.Run(c.Context, agent.Config{
				Pod: c.String("pod"), Namespace: c.String("namespace"), Manager: c.String("manager"),
				TokenFile: c.String("token-file"), Ports: ports, Version: buildinfo.Version, Log: log,
			})
		},
	}
}
