package main

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
)

func newApp() *cli.App {
	return &cli.App{
		Name:            "tp",
		Usage:           "reach a Kubernetes cluster's network from this machine, without root",
		HideVersion:     true,
		HideHelpCommand: true,
		// Errors go back to main, which prints them; the library would exit on its own.
		ExitErrHandler: func(*cli.Context, error) {},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("unknown command %q; run tp --help for the list", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		Commands: []*cli.Command{
			installCommand(),
			uninstallCommand(),
			connectCommand(),
			runCommand(),
			interceptCommand(),
			leaveCommand(),
			listCommand(),
			statusCommand(),
			quitCommand(),
			{
				Name:  "version",
				Usage: "print tp's version and the cluster image it installs",
				Action: func(c *cli.Context) error {
					_, err := fmt.Fprintf(c.App.Writer, "tp %s\ncluster image: %s\nbuilt with: %s %s/%s\n",
						buildinfo.Version, buildinfo.Image, runtime.Version(), runtime.GOOS, runtime.GOARCH)
					return err
				},
			},
		},
	}
}
