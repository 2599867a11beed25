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
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// This goroutine alone runs on the thread while it is in the other namespace. If the
		// thread cannot go back, it stays locked and dies with the goroutine.
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netns: %w", err)}
			return
		}
		defer home.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netns %s: %w", nsPath, err)}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netns %s: %w", nsPath, err)}
			return
		}
		conn, err := (&net.Dialer{}).DialContext(ctx, network, address)
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{conn, err}
	}()
	r := <-done
	return r.conn, r.err
}
