//go:build !linux

package server

import (
	"net"
	"time"
)

// setUserTimeout does nothing where gRPC sets no TCP_USER_TIMEOUT either.
func setUserTimeout(net.Conn, time.Duration) error { return nil }
