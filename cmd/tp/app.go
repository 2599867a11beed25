package main

import (
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/cmd/internal/completion"
	"github.com/tpdev/tp/cmd/internal/configcmd"
	"github.com/tpdev/tp/cmd/internal/gatherlogs"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/client"
)

func newApp() *cli.App {
	app := &cli.App{
		Name:            "tp",
		HelpName:        "tp", // not argv[0]'s: kubectl-tp's is "kubectl tp" (completion.NameAsCalled)
		Usage:           "reach a Kubernetes cluster's network from this machine, without root",
		HideVersion:     true,
		HideHelpCommand: true,
		// kubectl users type them before the command too: tp --context X status.
		Flags: kubeFlags(),
		// Errors go back to main, which prints them; the library would exit on its own.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   usageError("tp"),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return remote.Errorf(remote.Usage, "unknown command %q; run tp --help for the list", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		Commands: []*cli.Command{
			installCommand(),
			uninstallCommand(),
			connectCommand(),
			envCommand(),
			runCommand(),
			interceptCommand(),
			leaveCommand(),
			listCommand(),
			statusCommand(),
			quitCommand(),
			completion.Command(newClient),
			gatherlogs.Command(newClient), configcmd.Command(),
			versionCommand(),
			completion.Hidden(newClient),
		},
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError, cmd.Before = usageError("tp "+cmd.Name), configcmd.Before(cmd.Name)
	}
	return app
}

// usageError marks the CLI library's flag errors as the user's (exit status 2), pointing
// at the help of what they typed.
func usageError(what string) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		// The flag package names flags with one dash; tp's help shows two.
		msg := err.Error()
		if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
			msg = "unknown flag --" + strings.TrimPrefix(name, "-")
		}
		return remote.Errorf(remote.Usage, "%s; see %s --help", msg, what)
	}
}

// kubeFlags choose the cluster, as kubectl's do.
func kubeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "kubeconfig", Usage: "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)"},
		&cli.StringFlag{Name: "context", Usage: "kubeconfig context (default: the current one)"},
		&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "namespace for short names (default: the context's)"},
	}
}

// given is the value of a flag given after the command, else before it ("" for neither).
func given(c *cli.Context, name string) string {
	for _, cc := range c.Lineage() {
		if cc.IsSet(name) {
			return cc.String(name)
		}
	}
	return ""
}

// newClient is the client for the cluster the command line chooses.
func newClient(c *cli.Context) *client.Client {
	kf := client.KubeFlags{Kubeconfig: given(c, "kubeconfig"), Context: given(c, "context"), Namespace: given(c, "namespace")}
	cl := client.New(kf, c.App.Writer, c.App.ErrWriter)
	cl.Version = buildinfo.Version
	return cl
}
