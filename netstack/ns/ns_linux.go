//go:build linux

// Package ns starts a command in a private user + network + mount namespace, made without
// root, whose only route leads into a TUN device that the caller serves (with package
// netstack): the command's traffic, all of it, reaches tp, and nothing of the host's
// network configuration changes. The command keeps its own uid and gid; inside, it sees
// only a loopback device, the TUN device and a resolv.conf of tp's making, plus the host
// folders and files the caller asks for at chosen paths (a workload's volumes at their
// mountPaths), shown by bind mounts in the namespace alone: the host's files stay as they are.
package ns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ChildArg is the first argument with which tp re-executes itself as the namespace's
// first process; tp's main hands such a process to ChildMain before anything else.
const ChildArg = "__tp-vif-child"

// Link is the namespace's view of the network.
type Link struct {
	Name    string     // the TUN device, e.g. tp0
	Addr    netip.Addr // the namespace's own address; every route goes to the TUN device
	MTU     uint32
	Resolv  string // resolv.conf content bind-mounted over /etc/resolv.conf
	HostDir string // a folder for the resolv.conf and mounts files (it must outlive the command)
	// Mounts show host paths inside the namespace, e.g. a volume written under HostDir at
	// its mountPath; a missing target is made in the namespace only.
	Mounts []Mount
}

// Command is a started command and the TUN device its namespace routes to.
type Command struct {
	Cmd *exec.Cmd
	TUN *os.File // serve it; the device goes away when it and the namespace are gone
	// release lets the command run: the caller serves TUN first, so that the command's
	// first packets find a stack.
	release *os.File
}

// Supported says whether this machine lets an unprivileged user make the namespace: user
// namespaces enabled and /dev/net/tun open to this user. The error says why not.
func Supported() error {
	if data, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(data)) == "0" {
		return errors.New("user namespaces are disabled (user.max_user_namespaces is 0)")
	}
	if data, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(data)) == "0" {
		return errors.New("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone is 0)")
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("/dev/net/tun is not usable by this user (%v)", errors.Unwrap(err))
	}
	f.Close()
	return nil
}

// Start runs args (args[0] looked up in PATH) with env and stdio in a new namespace on
// link. It returns once the namespace is ready; call Release after serving the TUN
// device, then wait on Cmd.
func Start(link Link, args, env []string, stdin, stdout, stderr *os.File) (*Command, error) {
	if len(args) == 0 {
		return nil, errors.New("vif: no command to run")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("vif: tp's own binary: %w", err)
	}
	resolv := filepath.Join(link.HostDir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte(link.Resolv), 0o644); err != nil {
		return nil, fmt.Errorf("vif: %w", err)
	}
	mounts := filepath.Join(link.HostDir, "mounts.json")
	if err := writeMounts(mounts, link.Mounts); err != nil {
		return nil, fmt.Errorf("vif: %w", err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("vif: socketpair: %w", err)
	}
	parent, child := os.NewFile(uintptr(fds[0]), "vif-parent"), os.NewFile(uintptr(fds[1]), "vif-child")
	defer child.Close()

	uid, gid := os.Getuid(), os.Getgid()
	cmd := exec.Command(exe, append([]string{ChildArg, link.Name, link.Addr.String(), fmt.Sprint(link.MTU), resolv, mounts, "--"}, args...)...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.ExtraFiles = []*os.File{child} // fd 3 in the child
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
		GidMappingsEnableSetgroups: false,
		// Only for setting up: the child drops them before it runs the command, which then
		// has no capability at all, as its uid is not root.
		AmbientCaps: []uintptr{unix.CAP_NET_ADMIN, unix.CAP_SYS_ADMIN},
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		parent.Close()
		return nil, fmt.Errorf("vif: starting the namespace: %w", err)
	}
	tun, err := receiveTUN(parent)
	if err != nil {
		parent.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	return &Command{Cmd: cmd, TUN: tun, release: parent}, nil
}

// Release lets the command start.
func (c *Command) Release() error {
	defer c.release.Close()
	if _, err := c.release.Write([]byte{1}); err != nil {
		return fmt.Errorf("vif: releasing the command: %w", err)
	}
	return nil
}

// receiveTUN reads the child's answer: the TUN device's descriptor, or its error text.
func receiveTUN(sock *os.File) (*os.File, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, 0)
	if err != nil {
		return nil, fmt.Errorf("vif: waiting for the namespace: %w", err)
	}
	if n == 0 && oobn == 0 {
		return nil, errors.New("vif: the namespace's setup ended without a word")
	}
	if oobn == 0 {
		return nil, fmt.Errorf("vif: %s", buf[:n])
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("vif: reading the TUN device's descriptor: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("vif: reading the TUN device's descriptor: %v", err)
	}
	return os.NewFile(uintptr(fds[0]), "tun"), nil
}

// ChildMain is the namespace's first process (tp re-executed with ChildArg): it sets the
// namespace up, hands the TUN device to its parent, waits for the go-ahead, drops every
// capability and becomes the command. It never returns.
func ChildMain(args []string) {
	// Capabilities are per thread: dropping them and exec'ing must happen on one.
	runtime.LockOSThread()
	sock := os.NewFile(3, "vif-child")
	fail := func(format string, a ...any) {
		msg := fmt.Sprintf(format, a...)
		_, _ = sock.Write([]byte(msg))
		fmt.Fprintln(os.Stderr, "tp: vif:", msg)
		os.Exit(126)
	}
	if len(args) < 7 || args[5] != "--" {
		fail("bad arguments to the namespace's setup")
	}
	name, resolv, mountsFile, cmdArgs := args[0], args[3], args[4], args[6:]
	addr, err := netip.ParseAddr(args[1])
	if err != nil || !addr.Is4() {
		fail("namespace address %q: want an IPv4 address", args[1])
	}
	var mtu uint32
	if _, err := fmt.Sscan(args[2], &mtu); err != nil {
		fail("mtu %q: %v", args[2], err)
	}

	if err := ifUp("lo"); err != nil {
		fail("loopback: %v", err)
	}
	tun, err := makeTUN(name, addr, mtu)
	if err != nil {
		fail("%v", err)
	}
	if err := mountResolv(resolv); err != nil {
		fail("resolv.conf: %v", err)
	}
	mounts, err := readMounts(mountsFile)
	if err != nil {
		fail("%v", err)
	}
	if err := applyMounts(mounts, filepath.Dir(mountsFile)); err != nil {
		fail("%v", err)
	}
	path, err := exec.LookPath(cmdArgs[0])
	if err != nil {
		fail("%v", err)
	}
	if err := unix.Sendmsg(int(sock.Fd()), []byte("tun"), unix.UnixRights(int(tun.Fd())), nil, 0); err != nil {
		fail("handing over the TUN device: %v", err)
	}
	tun.Close()
	// Wait for the parent to serve the device (a closed socket means it gave up).
	if n, _ := sock.Read(make([]byte, 1)); n != 1 {
		os.Exit(126)
	}
	sock.Close()
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "tp: vif: dropping capabilities:", err)
		os.Exit(126)
	}
	err = syscall.Exec(path, cmdArgs, os.Environ())
	fmt.Fprintf(os.Stderr, "tp: vif: running %s: %v\n", cmdArgs[0], err)
	os.Exit(127)
}

// makeTUN creates the TUN device, gives it the namespace's address, sets the MTU, brings it
// up and routes every IPv4 destination to it.
func makeTUN(name string, addr netip.Addr, mtu uint32) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("creating TUN device %s: %w", name, err)
	}
	ctl, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	defer unix.Close(ctl)
	set := func(what string, req uint, fill func(*unix.Ifreq) error) error {
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			err = fill(ifr)
		}
		if err == nil {
			err = unix.IoctlIfreq(ctl, req, ifr)
		}
		if err != nil {
			return fmt.Errorf("tun %s: setting the %s: %w", name, what, err)
		}
		return nil
	}
	a4 := addr.As4()
	steps := []error{
		set("address", unix.SIOCSIFADDR, func(r *unix.Ifreq) error { return r.SetInet4Addr(a4[:]) }),
		set("netmask", unix.SIOCSIFNETMASK, func(r *unix.Ifreq) error { return r.SetInet4Addr([]byte{255, 255, 255, 255}) }),
		set("mtu", unix.SIOCSIFMTU, func(r *unix.Ifreq) error { r.SetUint32(mtu); return nil }),
	}
	for _, err := range steps {
		if err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	if err := ifUp(name); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := defaultRoute(name); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// defaultRoute adds 0.0.0.0/0 dev NAME with one rtnetlink request (RTM_NEWROUTE), what
// `ip route add default dev NAME` sends.
func defaultRoute(name string) error {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	sock, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	defer unix.Close(sock)
	rt := unix.RtMsg{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT,
		Scope: unix.RT_SCOPE_LINK, Type: unix.RTN_UNICAST}
	attr := unix.RtAttr{Len: unix.SizeofRtAttr + 4, Type: unix.RTA_OIF}
	msgLen := unix.SizeofNlMsghdr + unix.SizeofRtMsg + int(attr.Len)
	hdr := unix.NlMsghdr{Len: uint32(msgLen), Type: unix.RTM_NEWROUTE,
		Flags: unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_EXCL, Seq: 1}
	buf := make([]byte, 0, msgLen)
	buf = append(buf, (*[unix.SizeofNlMsghdr]byte)(unsafe.Pointer(&hdr))[:]...)
	buf = append(buf, (*[unix.SizeofRtMsg]byte)(unsafe.Pointer(&rt))[:]...)
	buf = append(buf, (*[unix.SizeofRtAttr]byte)(unsafe.Pointer(&attr))[:]...)
	buf = binary.NativeEndian.AppendUint32(buf, uint32(ifc.Index))
	if err := unix.Sendto(sock, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	ack := make([]byte, 4096)
	n, _, err := unix.Recvfrom(sock, ack, 0)
	if err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(ack[:n])
	if err != nil || len(msgs) == 0 || msgs[0].Header.Type != unix.NLMSG_ERROR || len(msgs[0].Data) < 4 {
		return fmt.Errorf("default route: unexpected answer from the kernel")
	}
	if code := int32(binary.NativeEndian.Uint32(msgs[0].Data[:4])); code != 0 {
		return fmt.Errorf("default route: %w", syscall.Errno(-code))
	}
	return nil
}

func ifUp(name string) error {
	ctl, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ctl)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(ctl, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: reading flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(ctl, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: bringing it up: %w", name, err)
	}
	return nil
}

// mountResolv puts tp's resolv.conf over the system's, in this mount namespace only.
func mountResolv(src string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	target, err := filepath.EvalSymlinks("/etc/resolv.conf")
	if err != nil {
		return fmt.Errorf("finding /etc/resolv.conf: %w", err)
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting over %s: %w", target, err)
	}
	return nil
}
