package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Load imports image tarballs into the cluster's container runtime, like `kind load
// image-archive`. A tarball already imported into this cluster (same content) is skipped.
// Pods must name loaded images with imagePullPolicy Never or IfNotPresent: nothing is ever
// pulled.
func (c *Cluster) Load(ctx context.Context, tarballs ...string) error {
	if len(tarballs) == 0 {
		return nil
	}
	if err := c.containerdReady(ctx); err != nil {
		return fmt.Errorf("load: the test cluster's container runtime does not answer (is the cluster up? make cluster-up): %w", err)
	}
	if err := os.MkdirAll(c.state("images"), 0o755); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	for _, tar := range tarballs {
		sum, err := fileSum(tar)
		if err != nil {
			return fmt.Errorf("load %s: %w", tar, err)
		}
		mark := c.state("images", sum)
		if _, err := os.Stat(mark); err == nil {
			continue
		}
		out, err := exec.CommandContext(ctx, "ctr", "--address", c.containerdSock(), "-n", "k8s.io",
			"images", "import", "--no-unpack=false", tar).CombinedOutput()
		if err != nil {
			return fmt.Errorf("load %s: ctr images import: %w: %s", tar, err, strings.TrimSpace(string(out)))
		}
		if err := os.WriteFile(mark, []byte(filepath.Base(tar)+"\n"), 0o644); err != nil {
			return fmt.Errorf("load: %w", err)
		}
		c.logf("loaded %s", tar)
	}
	return nil
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// preflight checks for root and for the Debian packages the cluster runs on.
func preflight() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the test cluster needs root (it adds links, routes and iptables rules); run it with sudo")
	}
	needs := []struct{ file, pkg string }{
		{"/usr/bin/etcd", "etcd-server"}, {"/usr/bin/containerd", "containerd"}, {"/usr/bin/ctr", "containerd"},
		{"/usr/sbin/runc", "runc"}, {"/usr/lib/cni/bridge", "containernetworking-plugins"},
		{"/usr/lib/cni/host-local", "containernetworking-plugins"}, {"/usr/lib/cni/portmap", "containernetworking-plugins"},
		{"iptables", "iptables"}, {"iptables-restore", "iptables"}, {"ip6tables-restore", "iptables"},
		{"conntrack", "conntrack"}, {"ip", "iproute2"}, {"unshare", "util-linux"}, {"nsenter", "util-linux"},
		{"sysctl", "procps"},
	}
	var missing, pkgs []string
	for _, n := range needs {
		if _, err := exec.LookPath(n.file); err != nil {
			missing = append(missing, n.file)
			if !slices.Contains(pkgs, n.pkg) {
				pkgs = append(pkgs, n.pkg)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the test cluster needs %s; install with: apt-get install %s",
			strings.Join(missing, ", "), strings.Join(pkgs, " "))
	}
	return nil
}
