// Command tp attaches a developer's machine to a Kubernetes cluster's network without root.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/tpdev/tp/cmd/internal/cliargs"
	"github.com/tpdev/tp/cmd/internal/completion"
	"github.com/tpdev/tp/netstack/ns"
	"github.com/tpdev/tp/remote/laptop/client"
)

func main() {
	// tp run's namespace starts as tp itself, before any of the CLI.
	if len(os.Args) > 1 && os.Args[1] == ns.ChildArg {
		ns.ChildMain(os.Args[2:])
	}
	app, args := newApp(), completion.Args(os.Args)
	completion.NameAsCalled(app, args[0])
	if err := app.Run(cliargs.Interspersed(app, args)); err != nil {
		// A command tp ran ends tp the same way.
		if st, ok := errors.AsType[*client.ExitError](err); ok {
			if st.Signal != nil {
				dieBy(st.Signal)
			}
			os.Exit(st.Code)
		}
		fmt.Fprintln(app.ErrWriter, "tp:", err)
		os.Exit(exitCode(err))
	}
}
