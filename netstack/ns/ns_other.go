//go:build !linux

package ns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
)

// ChildArg: see the Linux version; tp never starts the child elsewhere.
const ChildArg = "__tp-vif-child"

// Link: see the Linux version.
type Link struct {
	Name    string
	Addr    netip.Addr
	MTU     uint32
	Resolv  string
	HostDir string
	Mounts  []Mount
}

// Command: see the Linux version.
type Command struct {
	Cmd *exec.Cmd
	TUN *os.File
}

var errUnsupported = fmt.Errorf("the VIF needs Linux user and network namespaces, which %s does not have; use --vif=off", runtime.GOOS)

// Supported says why the VIF cannot run here.
func Supported() error { return errUnsupported }

// Start fails: the VIF is Linux only.
func Start(Link, []string, []string, *os.File, *os.File, *os.File) (*Command, error) {
	return nil, errUnsupported
}

// Release does nothing.
func (c *Command) Release() error { return errors.ErrUnsupported }

// ChildMain is never reached on this OS.
func ChildMain([]string) {
	fmt.Fprintln(os.Stderr, "tp:", errUnsupported)
	os.Exit(126)
}

// Placeable reports that no mount can be made: there is no namespace on this OS.
func Placeable(Mount) error { return errUnsupported }
