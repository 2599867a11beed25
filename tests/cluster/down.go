package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Down stops the cluster and removes everything it made on the machine: processes (by
// recorded pid), containers, network namespaces, links, routes, iptables chains, mounts,
// cgroups and files. It works on a healthy cluster, on one whose processes were all killed,
// and on none. It then checks that nothing is left and says what is, if anything.
func (c *Cluster) Down(ctx context.Context) error {
	// While kubelet runs, let it stop the pods: it runs CNI DEL and unmounts their volumes.
	if _, alive := c.recorded(kubelet); alive {
		if _, alive := c.recorded(apiserver); alive {
			c.drain(ctx)
		}
	}
	unhideNetns()
	c.laptopDown()
	c.tunRestore()
	specs := c.daemons()
	for i := len(specs) - 1; i >= 0; i-- {
		// Reverse start order: kube-apiserver goes before etcd, or it retries for a minute.
		c.stopRecorded(specs[i].name, specs[i].stop)
	}
	c.killShims()

	var errs []error
	for _, ns := range globNames("/run/netns/cni-*") {
		_ = syscall.Unmount(ns, syscall.MNT_DETACH)
		_ = os.Remove(ns)
	}
	for _, link := range []string{CNIBridge, NodeLink} { // deleting NodeLink drops its routes
		if linkExists(link) {
			if _, err := run("ip", "link", "del", link); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := iptablesCleanup(); err != nil {
		errs = append(errs, err)
	}
	if err := ipsetCleanup(); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(c.cfg.State); err != nil {
		errs = append(errs, err)
	}
	for _, cg := range globNames("/sys/fs/cgroup/*/kubepods") {
		removeCgroupTree(cg)
	}
	// State outside the state folder that kubelet, containerd and CNI write.
	leftovers := append([]string{cniConf, "/var/lib/cni/networks/" + cniNetwork, "/run/containerd/runc/k8s.io",
		"/var/lib/kubelet/device-plugins/kubelet.sock", c.cfg.State},
		globNames("/var/lib/cni/results/"+cniNetwork+"-*")...)
	leftovers = append(leftovers, globNames("/var/lib/cni/results/cni-loopback-*")...)
	leftovers = append(leftovers, globNames("/var/log/pods/*")...)
	leftovers = append(leftovers, globNames("/var/log/containers/*")...)
	for _, p := range leftovers {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.leftovers(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// drain deletes every workload and pod and waits for the pods to be gone.
func (c *Cluster) drain(ctx context.Context) {
	cs, err := c.clientset()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	all := metav1.ListOptions{}
	now := metav1.DeleteOptions{GracePeriodSeconds: new(int64(1)), PropagationPolicy: new(metav1.DeletePropagationBackground)}
	nss, err := cs.CoreV1().Namespaces().List(ctx, all)
	if err != nil {
		return
	}
	for _, ns := range nss.Items {
		n := ns.Name
		_ = cs.AppsV1().Deployments(n).DeleteCollection(ctx, now, all)
		_ = cs.AppsV1().DaemonSets(n).DeleteCollection(ctx, now, all)
		_ = cs.AppsV1().StatefulSets(n).DeleteCollection(ctx, now, all)
		_ = cs.AppsV1().ReplicaSets(n).DeleteCollection(ctx, now, all)
		_ = cs.BatchV1().Jobs(n).DeleteCollection(ctx, now, all)
		_ = cs.CoreV1().Pods(n).DeleteCollection(ctx, now, all)
	}
	for ctx.Err() == nil {
		pods, err := cs.CoreV1().Pods("").List(ctx, all)
		if err != nil || len(pods.Items) == 0 {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.logf("pods still there after 60 s; going on without kubelet's help")
}

// killShims ends the containerd shims of this cluster and the containers under them: they
// outlive containerd (re-parented to pid 1) and keep pods running with their mounts.
// A shim is ours when its -address is our containerd's socket.
func (c *Cluster) killShims() {
	sock := c.containerdSock()
	parents := processes()
	for pid := range parents {
		args := cmdline(pid)
		if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		ours := false
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == sock {
				ours = true
			}
		}
		if !ours {
			continue
		}
		kids := descendants(parents, pid)
		for i := len(kids) - 1; i >= 0; i-- {
			_ = syscall.Kill(kids[i], syscall.SIGKILL)
		}
		terminate(pid, 2*time.Second)
	}
}

// unhideNetns undoes what `ip netns add` does where /run/netns is no mount point: it
// bind-mounts /run/netns over itself, which hides the pod and laptop namespaces mounted
// there before (containerd then cannot remove them and pods hang in Terminating). Run by
// hand while the cluster is up, it must not leave a machine that cannot be cleaned.
func unhideNetns() {
	for range 10 {
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return
		}
		self := false
		for line := range strings.SplitSeq(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && f[4] == "/run/netns" && strings.HasSuffix(f[3], "/run/netns") {
				self = true
			}
		}
		if !self || syscall.Unmount("/run/netns", syscall.MNT_DETACH) != nil {
			return
		}
	}
}

// unmountUnder unmounts every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		// Mount points escape spaces and such as octal.
		mp := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mounts = append(mounts, mp)
		}
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	var errs []error
	for _, m := range mounts {
		if err := syscall.Unmount(m, 0); err != nil {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
			}
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree removes a cgroup folder and its children, deepest first; cgroup folders
// go with rmdir only, once their processes are gone.
func removeCgroupTree(root string) {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = syscall.Rmdir(dirs[i])
	}
}

func globNames(pattern string) []string {
	m, _ := filepath.Glob(pattern)
	return m
}

// leftovers reports what of the cluster is still on the machine.
func (c *Cluster) leftovers() error {
	var left []string
	for _, d := range c.daemons() {
		if pid, alive := c.recorded(d.name); alive {
			left = append(left, fmt.Sprintf("process %s (pid %d)", d.name, pid))
		}
	}
	links := []string{NodeLink, CNIBridge}
	namespaces := globNames("/run/netns/cni-*")
	for _, n := range Laptops {
		links = append(links, n.host) // the peer end goes with it, or with its namespace
		namespaces = append(namespaces, globNames(n.Netns)...)
	}
	for _, link := range links {
		if linkExists(link) {
			left = append(left, "link "+link)
		}
	}
	for _, ns := range namespaces {
		left = append(left, "network namespace "+ns)
	}
	for _, ch := range leftoverChains() {
		left = append(left, "iptables chain "+ch)
	}
	for _, set := range ourIPSets() {
		left = append(left, "ipset "+set)
	}
	if _, err := os.Stat(c.cfg.State); err == nil {
		left = append(left, "folder "+c.cfg.State)
	}
	for _, cg := range globNames("/sys/fs/cgroup/*/kubepods") {
		left = append(left, "cgroup "+cg)
	}
	if len(left) > 0 {
		return fmt.Errorf("left on the machine: %s", strings.Join(left, ", "))
	}
	return nil
}
