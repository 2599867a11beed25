package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// run runs a command and returns its combined output, with the command in any error.
func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

// nodeNetworkUp gives the node its address and keeps every cluster address on the machine.
func (c *Cluster) nodeNetworkUp() error {
	// The kernel here has no dummy links; a bridge with no ports carries the node address.
	if !linkExists(NodeLink) {
		if _, err := run("ip", "link", "add", NodeLink, "type", "bridge"); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"ip", "addr", "replace", NodeIP + "/32", "dev", NodeLink},
		{"ip", "link", "set", NodeLink, "up"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	for _, s := range steps {
		if _, err := run(s[0], s[1:]...); err != nil {
			return fmt.Errorf("node network: %w", err)
		}
	}
	if err := localRoutes(); err != nil {
		return err
	}
	// Pods reach services on their own bridge only when bridged traffic passes iptables.
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		if _, err := run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"); err != nil {
			return fmt.Errorf("node network: %w", err)
		}
	}
	return nil
}

// LocalRoutes are kept on NodeLink so that no packet to them follows the default route off
// the machine. Unallocated service IPs and pod IPs outside the node's /24 would otherwise
// leave (live pods' /24 on the CNI bridge is more specific, and kube-proxy rewrites live
// service IPs before routing), and so would link-local addresses: the machine's default
// gateway answers 169.254.169.254 on some hosts, and tests dial it to prove tp refuses to.
var LocalRoutes = []string{ServiceCIDR, PodCIDR, LinkLocalCIDR}

// localRoutes puts LocalRoutes on NodeLink. It runs on every Up, a reused cluster's too, so a
// route added to the list later reaches clusters that were already up. Deleting NodeLink at
// Down drops them.
func localRoutes() error {
	for _, cidr := range LocalRoutes {
		if _, err := run("ip", "route", "replace", cidr, "dev", NodeLink); err != nil {
			return fmt.Errorf("node network: %w", err)
		}
	}
	return nil
}

// laptopUp makes every laptop namespace that is missing: a veth to the host, a route to the
// node address and no other. The host drops whatever a laptop would have it forward, so
// neither the cluster's addresses nor anything off the machine, nor another laptop, is
// reachable from it.
func (c *Cluster) laptopUp() error {
	if err := c.tunForEveryone(); err != nil {
		return err
	}
	for _, n := range Laptops {
		if err := n.up(); err != nil {
			return err
		}
	}
	return nil
}

// up makes n if it is missing, and otherwise leaves it (and what runs in it) as it is.
func (n LaptopNet) up() error {
	if _, err := os.Stat(n.Netns); err == nil && linkExists(n.host) {
		n.unshape() // a test that ended before its undo may have left it slow
		return n.dropRule()
	}
	n.down() // what a half-made one left; the other laptops, and what runs in them, stay
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return fmt.Errorf("laptop namespace %s: %w", n.Netns, err)
	}
	if err := os.WriteFile(n.Netns, nil, 0o644); err != nil {
		return fmt.Errorf("laptop namespace %s: %w", n.Netns, err)
	}
	// Not `ip netns add`: where /run/netns is no mount point yet, it bind-mounts /run/netns
	// over itself, hiding the pod namespaces CNI made there (pods then hang in Terminating).
	steps := [][]string{
		{"unshare", "--net=" + n.Netns, "true"},
		{"ip", "link", "add", n.host, "type", "veth", "peer", "name", n.peer},
		{"ip", "link", "set", n.peer, "netns", n.Netns},
		{"ip", "addr", "add", n.gw + "/30", "dev", n.host},
		{"ip", "link", "set", n.host, "up"},
		{"nsenter", "--net=" + n.Netns, "ip", "addr", "add", n.IP + "/30", "dev", n.peer},
		{"nsenter", "--net=" + n.Netns, "ip", "link", "set", n.peer, "up"},
		{"nsenter", "--net=" + n.Netns, "ip", "link", "set", "lo", "up"},
		{"nsenter", "--net=" + n.Netns, "ip", "route", "add", NodeIP + "/32", "via", n.gw},
	}
	for _, s := range steps {
		if _, err := run(s[0], s[1:]...); err != nil {
			return fmt.Errorf("laptop namespace %s: %w", n.Netns, err)
		}
	}
	return n.dropRule()
}

// dropRule makes sure the host forwards nothing from the laptop, ahead of kube-proxy's and
// anyone's FORWARD rules.
func (n LaptopNet) dropRule() error {
	if _, err := run("iptables", "-C", "FORWARD", "-i", n.host, "-j", "DROP"); err == nil {
		return nil
	}
	if _, err := run("iptables", "-I", "FORWARD", "1", "-i", n.host, "-j", "DROP"); err != nil {
		return fmt.Errorf("laptop namespace %s: %w", n.Netns, err)
	}
	return nil
}

// tunForEveryone opens /dev/net/tun to every user, as desktop distributions have it (this
// kind of machine has 0600): tp run's VIF makes its TUN device as an unprivileged user. The
// old mode is kept in the state folder and put back by Down.
func (c *Cluster) tunForEveryone() error {
	st, err := os.Stat(tunDevice)
	if err != nil {
		return nil // no TUN support at all: the VIF tests will say so
	}
	if st.Mode().Perm() == 0o666 {
		return nil
	}
	if err := os.MkdirAll(c.cfg.State, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(c.state("tun-mode"), []byte(fmt.Sprintf("%o", st.Mode().Perm())), 0o644); err != nil {
		return err
	}
	return os.Chmod(tunDevice, 0o666)
}

const tunDevice = "/dev/net/tun"

// tunRestore puts back the mode tunForEveryone changed.
func (c *Cluster) tunRestore() {
	data, err := os.ReadFile(c.state("tun-mode"))
	if err != nil {
		return
	}
	var mode uint32
	if _, err := fmt.Sscanf(string(data), "%o", &mode); err == nil {
		_ = os.Chmod(tunDevice, os.FileMode(mode))
	}
}

// laptopDown ends the processes in every laptop namespace and removes them.
func (c *Cluster) laptopDown() {
	for _, n := range Laptops {
		n.down()
	}
}

// down ends the processes in n and removes it; what is already gone is fine.
func (n LaptopNet) down() {
	if ino, err := nsInode(n.Netns); err == nil {
		for pid := range processes() {
			if pino, err := nsInode(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && pino == ino && pid != os.Getpid() {
				terminate(pid, 3*time.Second)
			}
		}
	}
	if linkExists(n.host) {
		_, _ = run("ip", "link", "del", n.host)
	}
	for {
		if _, err := run("iptables", "-D", "FORWARD", "-i", n.host, "-j", "DROP"); err != nil {
			break
		}
	}
	_, _ = run("umount", n.Netns)
	_ = os.Remove(n.Netns)
}

// iptablesCleanup removes every KUBE-* chain, the CNI portmap chains and the rules that jump
// to them, in iptables and ip6tables: kube-proxy --cleanup would leave kubelet's own chains
// (KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...) behind.
func iptablesCleanup() error {
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle"} {
			out, err := run(tool+"-save", "-t", table)
			if err != nil {
				continue // e.g. a table the kernel lacks
			}
			script := cleanupScript(table, out)
			if script == "" {
				continue
			}
			cmd := exec.Command(tool+"-restore", "--noflush")
			cmd.Stdin = strings.NewReader(script)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%s-restore (%s): %w: %s", tool, table, err, strings.TrimSpace(string(out)))
			}
		}
	}
	return nil
}

// ourIPSets lists the ipsets kube-router made (KUBE-SRC-*, KUBE-DST-*, kube-router-*, and
// their inet6: twins).
func ourIPSets() []string {
	out, err := run("ipset", "list", "-n")
	if err != nil {
		return nil
	}
	var sets []string
	for _, name := range strings.Fields(out) {
		base := strings.TrimPrefix(name, "inet6:")
		if strings.HasPrefix(base, "KUBE-") || strings.HasPrefix(base, "kube-router") {
			sets = append(sets, name)
		}
	}
	return sets
}

// ipsetCleanup destroys kube-router's ipsets, once no iptables rule refers to them.
func ipsetCleanup() error {
	var errs []error
	for _, set := range ourIPSets() {
		if _, err := run("ipset", "destroy", set); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func ourChain(chain string) bool {
	return strings.HasPrefix(chain, "KUBE-") || strings.HasPrefix(chain, "CNI-HOSTPORT-") || strings.HasPrefix(chain, "CNI-DN-")
}

// cleanupScript turns one table's iptables-save output into an iptables-restore --noflush
// script that deletes the jumps into our chains from other chains, then flushes and deletes
// our chains. Rules keep iptables-save's quoting, which iptables-restore reads back.
func cleanupScript(table, save string) string {
	var del, flush, drop strings.Builder
	for _, line := range strings.Split(save, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 1 && strings.HasPrefix(f[0], ":") && ourChain(f[0][1:]):
			fmt.Fprintf(&flush, "-F %s\n", f[0][1:])
			fmt.Fprintf(&drop, "-X %s\n", f[0][1:])
		case len(f) > 1 && f[0] == "-A" && !ourChain(f[1]) && jumpsToOurs(f):
			fmt.Fprintf(&del, "-D %s\n", strings.TrimPrefix(line, "-A "))
		}
	}
	if del.Len()+flush.Len() == 0 {
		return ""
	}
	return fmt.Sprintf("*%s\n%s%s%sCOMMIT\n", table, del.String(), flush.String(), drop.String())
}

func jumpsToOurs(f []string) bool {
	for i := 0; i+1 < len(f); i++ {
		if (f[i] == "-j" || f[i] == "-g") && ourChain(f[i+1]) {
			return true
		}
	}
	return false
}

// leftoverChains lists the KUBE-* chains still in iptables, for Down's final check.
func leftoverChains() []string {
	var left []string
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle"} {
			out, _ := run(tool+"-save", "-t", table)
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, ":") && ourChain(strings.Fields(line)[0][1:]) {
					left = append(left, tool+"/"+table+"/"+strings.Fields(line)[0][1:])
				}
			}
		}
	}
	return left
}

func nsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
