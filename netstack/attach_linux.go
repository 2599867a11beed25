//go:build linux

package netstack

import (
	"fmt"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
)

// Attach gives the stack its link: fd reads and writes one IP packet at a time, as a TUN
// device opened with IFF_TUN|IFF_NO_PI does (no packet-information prefix, no ethernet
// header, no virtio header). Its MTU must be Config.MTU. A stack takes one link, once.
//
// The stack works on a duplicate of fd, which Close closes: the caller keeps fd and may
// close it (or let its *os.File be collected) at any time without cutting the link, and no
// descriptor is ever closed twice. The duplicate shares fd's open file, which is left in
// non-blocking mode.
func (s *Stack) Attach(fd int) error {
	// Held throughout: fdbased.New starts goroutines that only an attached NIC can stop, so
	// no Close or other Attach may come between it and the NIC.
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.canAttachLocked(); err != nil {
		return err
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netstack: duplicate fd %d: %w", fd, err)
	}
	ep, err := fdbased.New(&fdbased.Options{
		FDs: []int{dup},
		MTU: s.cfg.MTU,
		// readv, not recvmmsg: a TUN gets readv anyway, and gVisor's recvmmsg reader spins
		// and never stops once a socket peer has closed (EOF reads no message).
		PacketDispatchMode: fdbased.Readv,
		ClosedFunc:         s.linkClosed,
	})
	if err != nil {
		unix.Close(dup)
		return fmt.Errorf("netstack: attach fd %d: %w", fd, err)
	}
	if err := s.attachLocked(ep, func() error { return unix.Close(dup) }); err != nil {
		unix.Close(dup)
		return err
	}
	return nil
}

// linkClosed runs when the link's reader stops: expected during Close, a warning otherwise
// (the namespace's end of the TUN went away, so no new flow can arrive).
func (s *Stack) linkClosed(err tcpip.Error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return
	}
	msg := "EOF"
	if err != nil {
		msg = err.String()
	}
	s.log.Warn("netstack: the link stopped reading packets", "err", msg)
}
