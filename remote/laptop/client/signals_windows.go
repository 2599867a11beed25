//go:build windows

package client

import (
	"os"
	"os/exec"
)

// forwardedSignals are passed on to a command tp runs.
var forwardedSignals = []os.Signal{os.Interrupt}

func exitSignal(*exec.ExitError) os.Signal { return nil }

func signalNumber(os.Signal) int { return 0 }
