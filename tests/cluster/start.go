package cluster

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/tpdev/tp/deploy"
)

//go:embed coredns.yaml
var corednsManifest string

// start brings up a cluster from nothing, component by component, each waited on before the
// next; a component that fails or exits is reported with the tail of its log.
func (c *Cluster) start(ctx context.Context, specs []daemon) error {
	c.logf("starting a new cluster (state in %s, logs in %s)", c.cfg.State, c.LogDir())
	for _, dir := range []string{c.cfg.State, c.state("containerd"), c.state("kubelet"), c.LogDir()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	if err := c.nodeNetworkUp(); err != nil {
		return err
	}
	if err := c.writePKI(); err != nil {
		return err
	}
	procs := map[string]*proc{}
	byName := map[string]daemon{}
	for _, d := range specs {
		byName[d.name] = d
	}
	run := func(name string, ready func(context.Context) error, timeout time.Duration) error {
		p, err := c.launch(byName[name])
		if err != nil {
			return err
		}
		procs[name] = p
		return c.await(ctx, name, p, ready, timeout)
	}
	if err := run(etcd, c.etcdReady, 30*time.Second); err != nil {
		return err
	}
	if err := run(apiserver, c.apiReady, 90*time.Second); err != nil {
		return err
	}
	for _, name := range []string{controllerManager, scheduler} {
		if _, err := c.launch(byName[name]); err != nil {
			return err
		}
	}
	if err := run(containerd, c.containerdReady, 30*time.Second); err != nil {
		return err
	}
	if err := c.Load(ctx, c.cfg.Images...); err != nil {
		return err
	}
	if err := c.Load(ctx, c.bins.corednsTar); err != nil {
		return err
	}
	if err := os.WriteFile(cniConf, []byte(cniConfig), 0o644); err != nil {
		return fmt.Errorf("cni config: %w", err)
	}
	if err := run(kubelet, c.nodeReady, 90*time.Second); err != nil {
		return err
	}
	if err := run(kubeProxy, proxyReady, 60*time.Second); err != nil {
		return err
	}
	if err := run(kubeRouter, routerReady, 60*time.Second); err != nil {
		return err
	}
	cfg, err := c.restConfig()
	if err != nil {
		return err
	}
	manifest := strings.NewReplacer("IMAGE", c.bins.corednsRef, "DNSIP", DNSIP).Replace(corednsManifest)
	if err := deploy.Apply(ctx, cfg, []byte(manifest), "tp-test-cluster"); err != nil {
		return fmt.Errorf("coredns: %w", err)
	}
	if err := c.await(ctx, "coredns", nil, dnsReady, 90*time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, c.podReport(ctx, "kube-system"))
	}
	// controller-manager and scheduler have no start signal of their own; a running CoreDNS
	// pod proves both did their work. Check they are still alive.
	for _, name := range []string{controllerManager, scheduler} {
		if _, alive := c.recorded(name); !alive {
			return fmt.Errorf("%s exited\n%s", name, tail(c.logPath(name), 30))
		}
	}
	return nil
}

// await polls ready until it succeeds, the process p exits, or timeout passes.
func (c *Cluster) await(ctx context.Context, name string, p *proc, ready func(context.Context) error, timeout time.Duration) error {
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var exited <-chan struct{}
	if p != nil {
		exited = p.exited
	}
	last := errors.New("not checked yet")
	for {
		check, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = ready(check)
		cancel()
		if last == nil {
			c.logf("%s ready (%s)", name, time.Since(start).Round(100*time.Millisecond))
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited during start (%v)\n%s", name, p.err, tail(c.logPath(name), 40))
		case <-deadline.C:
			return fmt.Errorf("%s not ready after %s: %v\n%s", name, timeout, last, tail(c.logPath(name), 40))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// healthy says whether the recorded cluster runs and serves: every daemon alive, API ready,
// node Ready, kube-proxy synced, DNS answering.
func (c *Cluster) healthy(ctx context.Context, specs []daemon) error {
	for _, d := range specs {
		if _, alive := c.recorded(d.name); !alive {
			return fmt.Errorf("%s is not running", d.name)
		}
	}
	for _, check := range []func(context.Context) error{c.apiReady, c.nodeReady, proxyReady, routerReady, dnsReady} {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := check(cctx)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) restConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.state("admin.kubeconfig"))
	if err != nil {
		return nil, fmt.Errorf("admin kubeconfig: %w", err)
	}
	cfg.Timeout = 10 * time.Second
	return cfg, nil
}

func (c *Cluster) clientset() (*kubernetes.Clientset, error) {
	cfg, err := c.restConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

func (c *Cluster) etcdReady(ctx context.Context) error {
	return httpOK(ctx, "http://"+etcdClient+"/health")
}

func (c *Cluster) apiReady(ctx context.Context) error {
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("api server /readyz: %w (%s)", err, strings.TrimSpace(string(body)))
	}
	return nil
}

func (c *Cluster) containerdReady(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "ctr", "--address", c.containerdSock(), "version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr version: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (c *Cluster) nodeReady(ctx context.Context) error {
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("node %s: %w", NodeName, err)
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			if cond.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("node %s not Ready: %s", NodeName, cond.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition yet", NodeName)
}

func proxyReady(ctx context.Context) error { return httpOK(ctx, "http://127.0.0.1:10256/healthz") }

// routerReady: kube-router's controllers have synced and its firewall runs.
func routerReady(ctx context.Context) error {
	return httpOK(ctx, "http://127.0.0.1:"+strconv.Itoa(routerHealthPort)+"/healthz")
}

// dnsReady asks the cluster's DNS Service, through kube-proxy, for the API server's name.
func dnsReady(ctx context.Context) error {
	m := new(dns.Msg)
	m.SetQuestion("kubernetes.default.svc."+Domain+".", dns.TypeA)
	cl := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := cl.ExchangeContext(ctx, m, net.JoinHostPort(DNSIP, "53"))
	if err != nil {
		return fmt.Errorf("cluster dns: %w", err)
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok && a.A.String() == "10.96.0.1" {
			return nil
		}
	}
	return fmt.Errorf("cluster dns: kubernetes.default.svc.%s: %s, answers %v", Domain, dns.RcodeToString[r.Rcode], r.Answer)
}

func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// Straight to the address: a proxy in the environment must not see cluster traffic.
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// podReport describes a namespace's pods and their recent events, for a failed wait.
func (c *Cluster) podReport(ctx context.Context, namespace string) string {
	cs, err := c.clientset()
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s: %s", p.Name, p.Status.Phase)
		for _, st := range p.Status.ContainerStatuses {
			if st.State.Waiting != nil {
				fmt.Fprintf(&b, " [%s waiting: %s %s]", st.Name, st.State.Waiting.Reason, st.State.Waiting.Message)
			}
		}
		b.WriteString("\n")
	}
	events, err := cs.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, e := range events.Items {
			if e.Type != corev1.EventTypeNormal {
				fmt.Fprintf(&b, "event %s %s: %s\n", e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
	}
	return b.String()
}

// writeKubeconfig writes the admin kubeconfig, with its certificates inlined, for this checkout.
func (c *Cluster) writeKubeconfig() error {
	cfg, err := clientcmd.LoadFromFile(c.state("admin.kubeconfig"))
	if err != nil {
		return fmt.Errorf("admin kubeconfig: %w", err)
	}
	if err := clientcmdapi.FlattenConfig(cfg); err != nil {
		return fmt.Errorf("admin kubeconfig: %w", err)
	}
	if err := os.MkdirAll(c.LogDir(), 0o755); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*cfg, c.KubeconfigPath())
}

// Restart stops one of the cluster's daemons by its recorded pid and starts it again, as a
// crash and a supervisor would (tests restart kubelet to cut the port-forward streams it
// carries). Its log goes on in the same file.
func (c *Cluster) Restart(ctx context.Context, name string) error {
	bins, err := c.build(ctx)
	if err != nil {
		return err
	}
	c.bins = bins
	ready := map[string]func(context.Context) error{
		kubelet: c.nodeReady, apiserver: c.apiReady, containerd: c.containerdReady, etcd: c.etcdReady,
	}[name]
	for _, d := range c.daemons() {
		if d.name != name {
			continue
		}
		c.stopRecorded(name, d.stop)
		p, err := c.launchLog(d, os.O_APPEND)
		if err != nil {
			return err
		}
		if ready == nil {
			return nil
		}
		return c.await(ctx, name, p, ready, 90*time.Second)
	}
	return fmt.Errorf("cluster: no daemon named %q", name)
}
