//go:build !windows

package control

import (
	"errors"
	"syscall"
)

// Alive says whether a process with this pid exists (EPERM: it does, but is not ours).
func Alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
