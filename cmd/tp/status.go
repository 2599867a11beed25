package main

import (
	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/remote/laptop/client"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the running connections: cluster, namespace, tunnel state, flows, bytes",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "only this session"},
			&cli.StringFlag{Name: "context", Usage: "only the sessions to this kubeconfig context"},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "only the sessions for this namespace"},
			outputFlag(),
			&cli.BoolFlag{Name: "json", Hidden: true, Usage: "-o json"},
		},
		Action: func(c *cli.Context) error {
			return newClient(c).Status(c.Context, client.StatusConfig{Name: c.String("name"), Output: c.String("output"), JSON: c.Bool("json")})
		},
	}
}

func quitCommand() *cli.Command {
	return &cli.Command{
		Name:  "quit",
		Usage: "end a connection (all of them with --all)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Value: "default", Usage: "the session to end"},
			&cli.BoolFlag{Name: "all", Usage: "end every running session"},
		},
		Action: func(c *cli.Context) error {
			return newClient(c).Quit(c.Context, client.QuitConfig{Name: c.String("name"), All: c.Bool("all")})
		},
	}
}

// outputFlag is -o of the commands that print a stable shape for programs too.
func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "text, json or yaml (a stable shape with \"version\" and \"kind\" fields)"}
}
