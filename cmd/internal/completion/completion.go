// Package completion wires tp's shell completion and its kubectl plugin naming into the
// CLI: the commands tp completion and tp __complete, and the names in help and messages.
// What to complete, and how to name tp, is remote/laptop/client's.
package completion

import (
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/client"
)

// NewClient makes the client for a command's context (cmd/tp's newClient).
type NewClient func(*cli.Context) *client.Client

// Command is tp completion: it prints the completion script for a shell.
func Command(newClient NewClient) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script (bash, zsh, fish or powershell)",
		ArgsUsage: "bash|zsh|fish|powershell",
		Description: `Completes commands, flags and their values: session names (--name), the intercepts of the
running sessions (tp leave), the namespace's workloads (tp intercept; asked of the cluster,
for 2 seconds at most), --shell, --vif, --context and --namespace.

   source <(tp completion bash)          # in ~/.bashrc
   source <(tp completion zsh)           # in ~/.zshrc, after compinit
   tp completion fish | source           # in ~/.config/fish/config.fish
   tp completion powershell | Out-String | Invoke-Expression   # in $PROFILE

As the kubectl plugin (kubectl-tp on PATH), kubectl tp completes through kubectl's own
completion (kubectl 1.26 and later) once a link kubectl_complete-tp to kubectl-tp is on PATH:

   ln -s "$(command -v kubectl-tp)" ~/.local/bin/kubectl_complete-tp`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return remote.Errorf(remote.Usage, "name the shell: tp completion bash, zsh, fish or powershell")
			}
			prog := "tp"
			if c.App.HelpName != prog {
				prog = client.KubectlPlugin
			}
			return newClient(c).CompletionScript(c.Args().First(), prog)
		},
	}
}

// Hidden is what the completion scripts call: tp __complete WORDS... prints the candidates
// for the last word (cobra's protocol, which kubectl's plugin completion speaks too).
func Hidden(newClient NewClient) *cli.Command {
	return &cli.Command{
		Name:            "__complete",
		Hidden:          true,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			return newClient(c).Complete(c.Context, Tree(c.App), c.Args().Slice())
		},
	}
}

// Tree describes the app's commands and flags for completion.
func Tree(app *cli.App) client.CompletionCommand {
	root := client.CompletionCommand{Flags: flags(app.Flags)}
	for _, cmd := range app.VisibleCommands() {
		root.Commands = append(root.Commands, client.CompletionCommand{Names: cmd.Names(), Flags: flags(cmd.Flags)})
	}
	return root
}

func flags(fs []cli.Flag) []client.CompletionFlag {
	out := []client.CompletionFlag{{Names: []string{"help", "h"}}}
	for _, f := range fs {
		_, isBool := f.(*cli.BoolFlag)
		out = append(out, client.CompletionFlag{Names: f.Names(), Value: !isBool})
	}
	return out
}

// Args is the command line to run: kubectl's plugin completion (kubectl 1.26 and later)
// runs kubectl_complete-tp WORDS... for kubectl tp WORDS<TAB>, which is kubectl-tp
// __complete WORDS... (a link named kubectl_complete-tp to kubectl-tp makes it so).
func Args(argv []string) []string {
	if len(argv) == 0 || client.ProgramName(argv[0]) != client.KubectlCompletion {
		return argv
	}
	return append([]string{client.KubectlPlugin, "__complete"}, argv[1:]...)
}

// NameAsCalled names tp in its help and messages as the user calls it: "kubectl tp" when
// run as the kubectl plugin kubectl-tp (client.ProgramName).
func NameAsCalled(app *cli.App, argv0 string) {
	name := client.ProgramName(argv0)
	if name == "tp" {
		return
	}
	app.HelpName = name
	app.Writer = client.RenamedWriter(name, writerOr(app.Writer, os.Stdout))
	app.ErrWriter = client.RenamedWriter(name, writerOr(app.ErrWriter, os.Stderr))
}

func writerOr(w, otherwise io.Writer) io.Writer {
	if w == nil {
		return otherwise
	}
	return w
}
