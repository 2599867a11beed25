//go:build !windows

package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"
)

// dieBy ends tp by the signal that ended its command, so that tp's parent sees the same.
func dieBy(sig os.Signal) {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	signal.Reset(s)
	_ = syscall.Kill(os.Getpid(), s)
	time.Sleep(time.Second) // the signal arrives meanwhile
}
