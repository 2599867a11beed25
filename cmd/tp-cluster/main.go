// Command tp-cluster is tp's traffic manager (remote/cluster/server runs it), built static and
// shipped in tp's cluster image beside tp-agent, the traffic agent. It only turns its flags
// and environment (remote/managerspec) into the manager's configuration.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
)

func main() {
	app := &cli.App{
		Name:            "tp-cluster",
		Usage:           "tp's cluster side",
		HideVersion:     true,
		HideHelpCommand: true,
		Commands: []*cli.Command{
			managerCommand(),
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					_, err := fmt.Fprintf(c.App.Writer, "tp-cluster %s (%s %s/%s)\n",
						buildinfo.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
					return err
				},
			},
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "tp-cluster:", err)
		os.Exit(1)
	}
}
