package remote

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// DialError classifies a failed dial from the cluster (the manager's, or an agent's from its
// pod) for the client, naming what was dialed: what answered "refused" is told apart from
// what could not be reached and what did not answer.
func DialError(what string, err error) error {
	var opErr *net.OpError
	msg := err.Error()
	if errors.As(err, &opErr) && opErr.Err != nil {
		msg = opErr.Err.Error()
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return &Error{Kind: Refused, Msg: fmt.Sprintf("connection refused by %s: nothing listens on that port, or a network policy rejects it", what)}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return &Error{Kind: Unreachable, Msg: fmt.Sprintf("%s is unreachable from the cluster: %s", what, msg)}
	case KindOf(err) == Timeout:
		return &Error{Kind: Timeout, Msg: fmt.Sprintf("%s did not answer in time", what)}
	}
	return &Error{Kind: Failed, Msg: fmt.Sprintf("dial %s: %s", what, msg)}
}
