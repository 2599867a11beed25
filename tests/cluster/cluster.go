// Package cluster runs the project's real single-node Kubernetes test cluster on this machine:
// kube-apiserver, controller-manager, scheduler, kubelet and kube-proxy built from source,
// Debian's etcd, containerd, runc and CNI plugins, and a minimal CoreDNS. It also makes the
// "laptop" network namespaces that e2e tests run tp in, each of which reaches the API server
// and nothing else.
//
// Runtime state is machine-wide (one cluster per machine: it owns fixed addresses, links and
// iptables chains), so a fresh checkout finds and cleans what an older one left. Each
// checkout gets the admin kubeconfig and the component logs under its .cluster folder.
//
// Everything here needs root; tp itself never does.
package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The cluster's fixed addresses and names.
const (
	NodeName    = "tpnode"
	NodeIP      = "10.250.0.1" // on NodeLink; the API server's address
	APIPort     = 6443
	ServiceCIDR = "10.96.0.0/16"
	PodCIDR     = "10.244.0.0/16"
	// LinkLocalCIDR is routed to NodeLink like the cluster ranges: nothing sent to it leaves.
	LinkLocalCIDR = "169.254.0.0/16"
	NodePodCIDR   = "10.244.0.0/24" // the first /24 the controller-manager hands out
	DNSIP         = "10.96.0.10"
	Domain        = "cluster.local"

	NodeLink   = "tpnode0" // a bridge standing in for the node's interface (no dummy links here)
	CNIBridge  = "tpbr0"
	cniNetwork = "tp"
	cniConf    = "/etc/cni/net.d/10-tp.conflist"

	// The first laptop (Laptops[0]): a network namespace that reaches NodeIP only, through a
	// veth pair.
	LaptopNetns = "/run/netns/tplaptop"
	laptopHost  = "tplap0" // host end
	laptopPeer  = "tplap1" // laptop end
	laptopGW    = "10.251.0.1"
	LaptopIP    = "10.251.0.2"

	etcdClient = "127.0.0.1:12379" // not etcd's default ports, to stay out of a local etcd's way
	etcdPeer   = "127.0.0.1:12380"

	// PauseImage is the sandbox image containerd is told to use; it must be among the
	// images loaded at start.
	PauseImage = "localhost/tp/pause:test"
)

// LaptopNet is one laptop's network namespace, reached from the host through a veth pair on
// a /30 of its own.
type LaptopNet struct {
	Netns string // the namespace's path, for nsenter --net and setns
	IP    string // the laptop end's address: what the host reaches the laptop at
	host  string // the veth's host end
	peer  string // its laptop end; named apart from every other end, as both ends start on the host
	gw    string // the host end's address, the laptop's one route to NodeIP
}

// Laptops are the laptop namespaces Up makes, one per developer a test needs at once: two
// developers on one machine would share loopback, ports and tp's view of the network, which
// no two laptops do. The first is LaptopNetns, where kit.NewLaptop and LaptopDialContext run;
// each next one takes the next /30 of 10.251.0.0/24.
var Laptops = []LaptopNet{
	{Netns: LaptopNetns, IP: LaptopIP, host: laptopHost, peer: laptopPeer, gw: laptopGW},
	{Netns: "/run/netns/tplaptop2", IP: "10.251.0.6", host: "tplap2", peer: "tplap3", gw: "10.251.0.5"},
}

// Config says where the cluster keeps its things.
type Config struct {
	// Repo is the checkout: the build modules are read from Repo/tests/cluster/build, and
	// Repo/.cluster gets the kubeconfig and the logs.
	Repo string
	// State is the machine-wide runtime folder (certificates, etcd data, containerd and
	// kubelet roots, pid files). Default /var/lib/tp-cluster.
	State string
	// Cache keeps built binaries across checkouts, keyed by version. Default ~/.cache/tp.
	Cache string
	// Images are image tarballs loaded into the runtime at every start (PauseImage among them).
	Images []string
	// Log receives progress lines.
	Log io.Writer
}

// Cluster is a handle on the machine's test cluster.
type Cluster struct {
	cfg  Config
	bins binaries
}

// New checks cfg and fills in its defaults.
func New(cfg Config) (*Cluster, error) {
	if cfg.Repo == "" {
		return nil, errors.New("cluster: the checkout folder is not set")
	}
	repo, err := filepath.Abs(cfg.Repo)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	cfg.Repo = repo
	if cfg.State == "" {
		cfg.State = "/var/lib/tp-cluster"
	}
	if cfg.Cache == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("cluster: cache folder: %w", err)
		}
		cfg.Cache = filepath.Join(dir, "tp")
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	return &Cluster{cfg: cfg}, nil
}

// KubeconfigPath is where Up writes the admin kubeconfig: Repo/.cluster/kubeconfig.
func (c *Cluster) KubeconfigPath() string { return filepath.Join(c.cfg.Repo, ".cluster", "kubeconfig") }

// LogDir holds one log per component.
func (c *Cluster) LogDir() string { return filepath.Join(c.cfg.Repo, ".cluster", "logs") }

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.cfg.Log, "cluster: "+format+"\n", args...)
}

func (c *Cluster) state(elem ...string) string {
	return filepath.Join(append([]string{c.cfg.State}, elem...)...)
}

// Up makes sure a healthy cluster runs: it returns in seconds when one already does (same
// binaries and settings), and otherwise cleans whatever an earlier cluster left and starts
// a new one. It then loads the configured images and writes the kubeconfig.
func (c *Cluster) Up(ctx context.Context) error {
	start := time.Now()
	if err := preflight(); err != nil {
		return err
	}
	bins, err := c.build(ctx)
	if err != nil {
		return err
	}
	c.bins = bins
	specs := c.daemons()
	fp := fingerprint(specs)

	if old, _ := os.ReadFile(c.state("fingerprint")); string(old) == fp {
		if err := c.healthy(ctx, specs); err == nil {
			if err := c.finish(ctx); err != nil {
				return err
			}
			c.logf("already up and healthy (%s)", time.Since(start).Round(100*time.Millisecond))
			return nil
		} else {
			c.logf("an earlier cluster is here but not healthy (%v): cleaning it and starting anew", err)
		}
	} else if _, err := os.Stat(c.cfg.State); err == nil {
		c.logf("an earlier cluster with other settings is here: cleaning it and starting anew")
	}
	if err := c.Down(ctx); err != nil {
		return fmt.Errorf("cleaning the earlier cluster: %w", err)
	}
	if err := c.start(ctx, specs); err != nil {
		return err
	}
	if err := os.WriteFile(c.state("fingerprint"), []byte(fp), 0o644); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if err := c.finish(ctx); err != nil {
		return err
	}
	c.logf("up in %s; KUBECONFIG=%s", time.Since(start).Round(100*time.Millisecond), c.KubeconfigPath())
	return nil
}

// finish does what every Up ends with, on a new or a reused cluster.
func (c *Cluster) finish(ctx context.Context) error {
	if err := localRoutes(); err != nil {
		return err
	}
	if err := c.Load(ctx, c.cfg.Images...); err != nil {
		return err
	}
	if err := c.laptopUp(); err != nil {
		return err
	}
	return c.writeKubeconfig()
}

// fingerprint identifies a cluster's binaries and settings; a running cluster with another
// fingerprint is replaced.
func fingerprint(specs []daemon) string {
	h := sha256.New()
	h.Write([]byte(cniConfig))
	for _, d := range specs {
		fmt.Fprintf(h, "%s %s %q %q %q\n", d.name, d.path, d.args, d.env, d.files)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// KubectlPath is the path of the kubectl built with the cluster, for tests that need a
// real kubectl (tp as its plugin).
func (c *Cluster) KubectlPath(ctx context.Context) (string, error) {
	bins, err := c.build(ctx)
	if err != nil {
		return "", err
	}
	return bins.path("kubectl"), nil
}

// Kubectl runs the cluster's own kubectl (built with it) with the admin kubeconfig, its
// output going to this process's.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) error {
	bins, err := c.build(ctx)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bins.path("kubectl"), append([]string{"--kubeconfig", c.KubeconfigPath()}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}
