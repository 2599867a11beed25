package cluster

import (
	"context"
	"errors"
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

// DialContext dials from the laptop n, as LaptopDialContext does from the first.
func (n LaptopNet) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return DialInNetns(ctx, n.Netns, network, address)
}

// DialInNetns dials address from the network namespace at nsPath.
func DialInNetns(ctx context.Context, nsPath, network, address string) (net.Conn, error) {
	return DialInNetnsAs(ctx, nsPath, -1, network, address)
}

// DialInNetnsAs is DialInNetns with a socket that belongs to uid (-1: the test process's
// user), as if that user had dialed: on Linux tp serves only clients whose socket is its
// own user's. A socket belongs to its creator's filesystem uid, which is changed for the
// dial on its thread alone (setfsuid), so the test process keeps its rights.
func DialInNetnsAs(ctx context.Context, nsPath string, uid int, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := inNetnsAs(nsPath, uid, func() (err error) {
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
func inNetns(nsPath string, f func() error) error { return inNetnsAs(nsPath, -1, f) }

// inNetnsAs is inNetns with the thread's filesystem uid set to uid (-1: unchanged) while f
// runs. A thread whose uid cannot be put back stays locked and dies with its goroutine.
func inNetnsAs(nsPath string, uid int, f func() error) error {
	if uid >= 0 {
		inner := f
		f = func() error {
			prev, err := unix.SetfsuidRetUid(uid)
			if err != nil {
				return fmt.Errorf("setfsuid %d: %w", uid, err)
			}
			err = inner()
			_, _ = unix.SetfsuidRetUid(prev)
			// setfsuid reports the uid in force before the call, so a second call says
			// whether the first put it back.
			if now, _ := unix.SetfsuidRetUid(prev); now != prev {
				runtime.LockOSThread() // one lock more than inNetns undoes: the thread dies
				return errors.Join(err, fmt.Errorf("setfsuid: cannot restore uid %d (now %d)", prev, now))
			}
			return err
		}
	}
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
