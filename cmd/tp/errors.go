package main

import (
	"errors"
	"fmt"
)

// usageError marks a failure the user can fix by changing what they typed or chose (a flag,
// a name, a port); main exits 2 for these and 1 for failures of the system or cluster.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func userError(err error) error { return usageError{err} }

func userErrorf(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitCode is 2 for the user's errors, 1 for the rest.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}
