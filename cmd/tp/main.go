// Command tp attaches a developer's machine to a Kubernetes cluster's network without root.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "tp:", err)
		os.Exit(exitCode(err))
	}
}
