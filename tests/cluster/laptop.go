package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// LaptopDialContext dials from the laptop namespace (LaptopNetns): the socket is made on a
// thread that has entered the namespace, so the connection lives there whatever goroutine
// uses it after. Put it in a rest.Config's Dial to run a client-go client "on the laptop".
func LaptopDialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return DialInNetns(ctx, LaptopNetns, network, address)
}

// DialInNetns dials address from the network namespace at nsPath.
func DialInNetns(ctx context.Context, nsPath, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := inNetns(nsPath, func() (err error) {
		conn, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return conn, err
}

// ListenInNetns listens on address (tcp) in the network namespace at nsPath.
func ListenInNetns(nsPath, address string) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(nsPath, func() (err error) {
		ln, err = net.Listen("tcp", address)
		return err
	})
	return ln, err
}

// inNetns runs f on a thread that has entered the network namespace at nsPath: sockets f
// makes live there, whatever goroutine uses them after.
func inNetns(nsPath string, f func() error) error {
	done := make(chan error, 1)
	go func() {
		// This goroutine alone runs on the thread while it is in the other namespace. If the
		// thread cannot go back, it stays locked and dies with the goroutine.
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netns: %w", err)
			return
		}
		defer home.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netns %s: %w", nsPath, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netns %s: %w", nsPath, err)
			return
		}
		err = f()
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}
