//go:build !linux

package netstack

import (
	"errors"
	"fmt"
	"runtime"
)

// Attach is for Linux only: elsewhere there is no rootless way to give a program a network
// namespace of its own, so `tp run` must go without the VIF.
func (s *Stack) Attach(fd int) error {
	return unsupportedError{goos: runtime.GOOS}
}

// unsupportedError says what to do instead, and matches errors.ErrUnsupported.
type unsupportedError struct{ goos string }

func (e unsupportedError) Error() string {
	return fmt.Sprintf("the VIF is not supported on %s; use --vif=off", e.goos)
}

func (unsupportedError) Unwrap() error { return errors.ErrUnsupported }
