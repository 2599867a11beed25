//go:build !windows

package control

import (
	"errors"
	"syscall"
)

// alive says whether a process with this pid exists (EPERM: it does, but is not ours).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
