//go:build windows

package client

import "syscall"

// detached starts the daemon without a console and outside the terminal's process group,
// so closing the terminal that ran tp connect does not end the connection.
func detached() *syscall.SysProcAttr {
	const detachedProcess, newProcessGroup = 0x00000008, 0x00000200
	return &syscall.SysProcAttr{CreationFlags: detachedProcess | newProcessGroup, HideWindow: true}
}
