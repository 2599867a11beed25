// Package cliargs reorders tp's command line before urfave/cli reads it.
package cliargs

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Interspersed moves a command's flags ahead of its positional arguments, so that
// `tp intercept web-app --port 8080` parses like `tp intercept --port 8080 web-app`
// (urfave/cli stops reading flags at the first argument). Everything after "--" stays.
// Flags before the command (tp --context X status) stay where they are.
func Interspersed(app *cli.App, args []string) []string {
	at := commandAt(app, args)
	if at < 0 {
		return args
	}
	var cmd *cli.Command
	for _, c := range app.Commands {
		if c.HasName(args[at]) {
			cmd = c
		}
	}
	if cmd == nil || cmd.SkipFlagParsing || len(cmd.Subcommands) > 0 {
		return args // tp __complete: its words are the command line's, as typed; tp config view: its own
	}
	takesValue := valueFlags(cmd.Flags)
	var flags, positional []string
	rest := args[at+1:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			positional = append(positional, rest[i:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if !strings.Contains(name, "=") && takesValue[name] && i+1 < len(rest) {
			i++
			flags = append(flags, rest[i])
		}
	}
	out := append(append([]string{}, args[:at+1]...), flags...)
	return append(out, positional...)
}

// commandAt is the index of the command's name in args, past the app's own flags; -1 for
// none.
func commandAt(app *cli.App, args []string) int {
	takesValue := valueFlags(app.Flags)
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return -1
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			return i
		}
		if name := strings.TrimLeft(a, "-"); !strings.Contains(name, "=") && takesValue[name] {
			i++
		}
	}
	return -1
}

// valueFlags says which of the flags' names take a value.
func valueFlags(flags []cli.Flag) map[string]bool {
	takesValue := map[string]bool{}
	for _, f := range flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	return takesValue
}
