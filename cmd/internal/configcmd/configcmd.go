// Package configcmd wires tp's configuration files into the CLI (beside cmd/tp, whose lines
// are counted): the Before hook that gives the flags the command line left unset the files'
// values, and tp config view. Reading and merging the files is remote/laptop/config's.
package configcmd

import (
	"context"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/config"
)

// daemonEnv marks tp connect's daemon (client.DaemonEnv): its command line is complete, and
// it reads no file.
const daemonEnv = "TP_DAEMON"

// Before is the hook of the command name that applies the files to its flags; nil for a
// command the files do not configure.
func Before(name string) cli.BeforeFunc {
	switch name {
	case "connect", "env", "run", "intercept":
	default:
		return nil
	}
	return func(c *cli.Context) error {
		if os.Getenv(daemonEnv) != "" {
			return nil
		}
		fs, err := load()
		if err != nil {
			return err
		}
		var ic *config.Intercept
		if name == "intercept" {
			if ic, err = fs.Intercept(c.Args().First(), given(c, "port")); err != nil {
				return err
			}
			if ic != nil {
				c.Context = context.WithValue(c.Context, workloadKey{}, ic.Workload())
			}
		}
		_, err = config.Apply(flags{c}, fs.Settings(name, ic))
		return err
	}
}

type workloadKey struct{}

// Workload is tp intercept's workload: the project's intercept's when its name (or nothing,
// for the only one) was given, else the argument.
func Workload(c *cli.Context) string {
	if w, ok := c.Context.Value(workloadKey{}).(string); ok {
		return w
	}
	return c.Args().First()
}

func load() (*config.Files, error) {
	dir, err := os.Getwd()
	if err != nil {
		return nil, remote.Errorf(remote.Failed, "the current folder: %w", err)
	}
	return config.Load(os.Getenv, dir)
}

// given says whether the command line set the flag, after the command or before it.
func given(c *cli.Context, name string) bool {
	for _, cc := range c.Lineage() {
		if cc.IsSet(name) {
			return true
		}
	}
	return false
}

// flags are a command's flags as config.Apply sets them.
type flags struct{ c *cli.Context }

func (f flags) IsSet(name string) bool       { return given(f.c, name) }
func (f flags) Set(name, value string) error { return f.c.Set(name, value) }

// Command is tp config.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "show the settings tp's configuration files give",
		Subcommands: []*cli.Command{{
			Name:      "view",
			Usage:     "print the merged settings and where each came from (flag, file:line or default)",
			ArgsUsage: " ",
			Description: `Merges the user file ($TP_CONFIG, else tp/config.yaml in the user's configuration folder:
$XDG_CONFIG_HOME or ~/.config, %AppData% on Windows) and the project file (tp.yaml, here or
in the nearest folder above, stopping at the folder holding .git). Flags win over the files,
the project file over the user file, the files over tp's defaults.

   tp config view
   tp config view -o json`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "yaml", Usage: "yaml or json"},
			},
			Action: view,
		}},
	}
}

func view(c *cli.Context) error {
	if c.NArg() > 0 {
		return remote.Errorf(remote.Usage, "tp config view takes no arguments, got %q", c.Args().Slice())
	}
	fs, err := load()
	if err != nil {
		return err
	}
	ns := ""
	for _, cc := range c.Lineage() {
		if ns == "" && cc.IsSet("namespace") {
			ns = cc.String("namespace")
		}
	}
	return fs.Render(c.App.Writer, fs.View(defaults(c.App), ns), c.String("output"))
}

// defaults are the flags' defaults of tp connect and tp run.
func defaults(app *cli.App) config.Defaults {
	out := config.Defaults{}
	for _, cmd := range app.Commands {
		if cmd.Name != "connect" && cmd.Name != "run" {
			continue
		}
		out[cmd.Name] = map[string]string{}
		for _, f := range cmd.Flags {
			if d, ok := f.(cli.DocGenerationFlag); ok {
				for _, n := range f.Names() {
					out[cmd.Name][n] = d.GetValue()
				}
			}
		}
	}
	return out
}
