//go:build !windows

package client

import "syscall"

// detached makes the daemon its own session leader, so closing the terminal that ran
// tp connect does not end the connection.
func detached() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }
