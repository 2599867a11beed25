//go:build bench

// Package bench measures tp against its baselines in one run on the local cluster (make
// bench): the same HTTP workload fetched directly by ClusterIP from the node (the machine's
// ceiling), through a raw client-go port-forward with a local listener as kubectl makes it
// (the transport tp rides on), and through tp's proxy from the laptop. It prints ratios,
// not absolute times: these machines are noisy, the ratios less so.
package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientpf "k8s.io/client-go/tools/portforward"

	"github.com/tpdev/tp/remote/laptop/portforward"
	"github.com/tpdev/tp/tests/cluster"
	"github.com/tpdev/tp/tests/kit"
	"github.com/tpdev/tp/tests/workload"
)

const (
	bulkBytes = 200 << 20
	bulkRuns  = 5   // per path, interleaved across paths so that load drifts hit all alike
	smallRuns = 300 // per path, in interleaved rounds of 50
)

// path is one way to reach the workload: an HTTP client and the base URL it uses, or (the
// VIF) a program run inside tp run that measures for itself.
type path struct {
	name   string
	client func(keepAlive bool) *http.Client
	base   string
	// Set for paths measured by a program of their own.
	bulk     func() (float64, error)
	requests func(n int) ([]time.Duration, error)
}

type result struct {
	name            string
	mbps            float64       // median of the bulk downloads
	p50, p90        time.Duration // GET /small, a new connection each
	bulkErr, reqErr error
}

// The VIF's two paths: attached to a running connection, or with its own in the same process.
const (
	vifAttached  = "tp run --vif=on, via the running connection"
	vifInProcess = "tp run --vif=on, own connection, in-process"
)

func TestBench(t *testing.T) {
	cs := kit.Clientset(t)
	ns := kit.Namespace(t, cs, "tp-bench")
	w := kit.DeployWorkload(t, cs, ns, "web-app")
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")
	l.MustTP(t, time.Minute, "connect", "--namespace", ns, "--transport", "websocket")
	l.MustTP(t, time.Minute, "connect", "--name", "spdy", "--namespace", ns, "--transport", "spdy", "--listen", "127.0.0.1:1081")

	direct := func(keep bool) *http.Client {
		return &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: !keep, DisableCompression: true}}
	}
	viaLaptop := func(proxy string) func(bool) *http.Client {
		return func(keep bool) *http.Client {
			px, _ := url.Parse(proxy)
			c := l.HTTPClient(px, 5*time.Minute)
			c.Transport.(*http.Transport).DisableKeepAlives = !keep
			return c
		}
	}
	paths := []path{{name: "direct to ClusterIP (from the node)", client: direct, base: "http://" + w.ClusterIP}}
	for _, tr := range []portforward.Transport{portforward.WebSocket, portforward.SPDY} {
		addr := rawForward(t, tr, ns, w.Pod)
		paths = append(paths, path{name: "raw client-go port-forward, " + string(tr), client: direct, base: "http://" + addr})
	}
	netcheck := l.Copy(t, os.Getenv("TP_E2E_NETCHECK"))
	// A VIF either attaches to the running connection (its flows reach that daemon's SOCKS5
	// port) or, where none runs for its namespace, opens its own and dials it in-process.
	inVIF := func(namespace string, args ...string) ([]string, error) {
		r := l.TPRun(5*time.Minute, append([]string{"run", "--namespace", namespace, "--vif=on", "--", netcheck}, args...)...)
		if r.Err != nil {
			return nil, fmt.Errorf("tp run netcheck %v: %v %s", args, r.Err, r.Stderr)
		}
		return strings.Fields(r.Stdout), nil
	}
	vifPath := func(name, namespace, host string) path {
		return path{name: name,
			bulk: func() (float64, error) {
				out, err := inVIF(namespace, "bulk", fmt.Sprintf("http://%s/bytes?n=%d", host, bulkBytes))
				if err != nil || len(out) != 1 {
					return 0, fmt.Errorf("vif bulk: %v %v", out, err)
				}
				return strconv.ParseFloat(out[0], 64)
			},
			requests: func(n int) ([]time.Duration, error) {
				out, err := inVIF(namespace, "requests", "http://"+host+"/small", strconv.Itoa(n))
				if err != nil {
					return nil, err
				}
				var lat []time.Duration
				for _, f := range out {
					us, _ := strconv.Atoi(f)
					lat = append(lat, time.Duration(us)*time.Microsecond)
				}
				return lat, nil
			}}
	}
	vif := vifPath(vifAttached, ns, "web-app")
	// No connection runs for "default": this tp run opens its own.
	vifOwn := vifPath(vifInProcess, "default", "web-app."+ns)
	paths = append(paths,
		path{name: "tp proxy (HTTP), websocket", client: viaLaptop("http://127.0.0.1:1080"), base: "http://web-app"},
		vif,
		vifOwn,
		path{name: "tp proxy (SOCKS5), websocket", client: viaLaptop("socks5://127.0.0.1:1080"), base: "http://" + w.ClusterIP},
		path{name: "tp proxy (HTTP), spdy", client: viaLaptop("http://127.0.0.1:1081"), base: "http://web-app"},
	)

	results := measure(paths)
	for _, r := range results {
		if r.bulkErr != nil || r.reqErr != nil {
			t.Errorf("%s: %v %v", r.name, r.bulkErr, r.reqErr)
		}
	}
	report(t, results)
}

// rawForward starts client-go's PortForwarder (what kubectl port-forward runs) on a local
// port, its API connection made from the laptop namespace, and returns the local address.
func rawForward(t *testing.T, tr portforward.Transport, ns, pod string) string {
	t.Helper()
	cfg := kit.RESTConfig(t, cluster.LaptopDialContext)
	dialer, err := portforward.Dialer(cfg, tr, ns, pod)
	if err != nil {
		t.Fatal(err)
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := clientpf.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", kit.HTTPPort)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = fw.ForwardPorts() }()
	t.Cleanup(func() { close(stop) })
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("raw port-forward not ready")
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		t.Fatalf("raw port-forward ports: %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0].Local)
}

// measure runs every path in rounds (a bulk download each, then a batch of small
// requests each) and keeps medians: the machine's load changes over a run, and rounds
// spread it over all paths alike.
func measure(paths []path) []result {
	rs := make([]result, len(paths))
	speeds := make([][]float64, len(paths))
	lat := make([][]time.Duration, len(paths))
	for i, p := range paths {
		rs[i].name = p.name
	}
	for round := range bulkRuns {
		for i, p := range paths {
			if rs[i].bulkErr != nil {
				continue
			}
			var mbps float64
			var err error
			if p.bulk != nil {
				mbps, err = p.bulk()
			} else {
				mbps, err = bulk(p.client(true), p.base)
			}
			if err != nil {
				rs[i].bulkErr = err
				continue
			}
			speeds[i] = append(speeds[i], mbps)
		}
		for i, p := range paths {
			if rs[i].reqErr != nil {
				continue
			}
			if p.requests != nil {
				l, err := p.requests(smallRuns / bulkRuns)
				if err != nil {
					rs[i].reqErr = err
				}
				lat[i] = append(lat[i], l...)
				continue
			}
			c := p.client(false)
			for j := range smallRuns / bulkRuns {
				start := time.Now()
				resp, err := c.Get(fmt.Sprintf("%s/small/%d/%d", p.base, round, j))
				if err != nil {
					rs[i].reqErr = err
					break
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat[i] = append(lat[i], time.Since(start))
			}
		}
	}
	for i := range rs {
		if len(speeds[i]) > 0 {
			slices.Sort(speeds[i])
			rs[i].mbps = speeds[i][len(speeds[i])/2]
		}
		if len(lat[i]) > 0 {
			slices.Sort(lat[i])
			rs[i].p50, rs[i].p90 = lat[i][len(lat[i])/2], lat[i][len(lat[i])*9/10]
		}
	}
	return rs
}

func bulk(c *http.Client, base string) (float64, error) {
	start := time.Now()
	resp, err := c.Get(fmt.Sprintf("%s/bytes?n=%d", base, bulkBytes))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 256<<10))
	if err != nil || n != bulkBytes {
		return 0, fmt.Errorf("bulk: %d of %d bytes: %v", n, bulkBytes, err)
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, nil
}

func report(t *testing.T, rs []result) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-44s %12s %12s %12s\n", "path", "bulk MB/s", "req p50", "req p90")
	for _, r := range rs {
		fmt.Fprintf(&b, "%-44s %12.0f %12s %12s\n", r.name, r.mbps, r.p50.Round(10*time.Microsecond), r.p90.Round(10*time.Microsecond))
	}
	byName := map[string]result{}
	for _, r := range rs {
		byName[r.name] = r
	}
	b.WriteString("\nratios (tp / raw port-forward over the same transport; bulk: higher is better, latency: lower is better)\n")
	for _, tr := range []string{"websocket", "spdy"} {
		raw := byName["raw client-go port-forward, "+tr]
		tp := byName["tp proxy (HTTP), "+tr]
		if raw.mbps == 0 || raw.p50 == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %-10s bulk %.2fx (target >= 0.9x)   request p50 %.2fx (target <= 1x)\n",
			tr, tp.mbps/raw.mbps, float64(tp.p50)/float64(raw.p50))
	}
	if px := byName["tp proxy (HTTP), websocket"]; px.mbps > 0 && px.p50 > 0 {
		for _, v := range []struct{ name, label, target string }{
			{vifInProcess, "vif (own connection, in-process)", "0.95x"},
			{vifAttached, "vif (attached to the running connection)", "0.8x"},
		} {
			r := byName[v.name]
			fmt.Fprintf(&b, "  %s: bulk %.2fx of tp's proxy (target >= %s)   request p50 %.2fx of tp's proxy\n",
				v.label, r.mbps/px.mbps, v.target, float64(r.p50)/float64(px.p50))
		}
	}
	d := byName["direct to ClusterIP (from the node)"]
	if d.mbps > 0 {
		fmt.Fprintf(&b, "  tp (HTTP, websocket) reaches %.0f%% of the node's direct bulk speed\n", 100*byName["tp proxy (HTTP), websocket"].mbps/d.mbps)
	}
	t.Log(b.String())
	if out := os.Getenv("TP_BENCH_OUT"); out != "" {
		_ = os.WriteFile(out, []byte(b.String()), 0o644)
	}
}

// TestBenchIntercept measures requests that reach a Service from inside the cluster (here:
// the node, through kube-proxy): to an app without tp's agent, through an idle agent (its
// pass-through cost), and intercepted to a server on the laptop; and the agent's memory.
func TestBenchIntercept(t *testing.T) {
	cs := kit.Clientset(t)
	ns := kit.Namespace(t, cs, "tp-bench-icpt")
	plain := kit.DeployWorkload(t, cs, ns, "plain")
	idle := kit.DeployWorkload(t, cs, ns, "idle")
	icpt := kit.DeployWorkload(t, cs, ns, "icpt")
	flt := kit.DeployWorkload(t, cs, ns, "flt")
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")

	// The laptop's server: the same workload handler, on the laptop's loopback.
	ln, err := l.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { _ = http.Serve(ln, workload.Handler("laptop")) }()
	local := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)

	// A cold intercept (the workload has no agent yet) against the floor it cannot beat: a
	// rollout of an identical workload (kubectl rollout restart), in the same run.
	rollout := rolloutTime(t, cs, ns, "plain")
	start := time.Now()
	l.MustTP(t, 3*time.Minute, "intercept", "idle", "--namespace", ns, "--port", local+":80")
	cold := time.Since(start)
	kit.WaitFor(t, 30*time.Second, "the laptop answers through the first intercept", func() error {
		if got := nodeGet("http://" + idle.ClusterIP + "/cold"); !strings.HasPrefix(got, "pod=laptop") {
			return fmt.Errorf("GET answers %q", got)
		}
		return nil
	})
	coldAnswer := time.Since(start)
	l.MustTP(t, time.Minute, "leave", "idle-http") // the agent stays, idle
	l.MustTP(t, 3*time.Minute, "intercept", "icpt", "--namespace", ns, "--port", local+":80")
	// A personal intercept: requests with x-dev: bench come to the laptop, the others go
	// through the agent's HTTP relay to the app.
	l.MustTP(t, 3*time.Minute, "intercept", "flt", "--namespace", ns, "--port", local+":80", "--http-header", "x-dev=bench")
	idleRSS := agentRSS(t, ns, "idle-")

	direct := func(keep bool) *http.Client {
		return &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: !keep, DisableCompression: true}}
	}
	matching := func(keep bool) *http.Client {
		return &http.Client{Transport: withHeader{"X-Dev", "bench", direct(keep).Transport}}
	}
	results := measure([]path{
		{name: "to the app (no agent)", client: direct, base: "http://" + plain.ClusterIP},
		{name: "through an idle agent", client: direct, base: "http://" + idle.ClusterIP},
		{name: "intercepted to the laptop", client: direct, base: "http://" + icpt.ClusterIP},
		{name: "beside a personal intercept, to the app", client: direct, base: "http://" + flt.ClusterIP},
		{name: "personal intercept, to the laptop", client: matching, base: "http://" + flt.ClusterIP},
	})
	for _, r := range results {
		if r.bulkErr != nil || r.reqErr != nil {
			t.Errorf("%s: %v %v", r.name, r.bulkErr, r.reqErr)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nrequests from inside the cluster to a Service\n%-44s %12s %12s %12s\n", "path", "bulk MB/s", "req p50", "req p90")
	for _, r := range results {
		fmt.Fprintf(&b, "%-44s %12.0f %12s %12s\n", r.name, r.mbps, r.p50.Round(10*time.Microsecond), r.p90.Round(10*time.Microsecond))
	}
	if base := results[0]; base.mbps > 0 {
		fmt.Fprintf(&b, "\nidle agent: bulk %.2fx of the app alone, request p50 +%s\n", results[1].mbps/base.mbps, (results[1].p50 - base.p50).Round(10*time.Microsecond))
		fmt.Fprintf(&b, "intercepted: bulk %.2fx of the app alone, request p50 %.1fx\n", results[2].mbps/base.mbps, float64(results[2].p50)/float64(base.p50))
		fmt.Fprintf(&b, "beside a personal intercept (HTTP relay, no match): bulk %.2fx of the app alone, request p50 +%s (target <= +0.5 ms)\n",
			results[3].mbps/base.mbps, (results[3].p50 - base.p50).Round(10*time.Microsecond))
		fmt.Fprintf(&b, "personal intercept, matching: request p50 %.2fx of the whole intercept's\n", float64(results[4].p50)/float64(results[2].p50))
	}
	fmt.Fprintf(&b, "cold intercept: tp intercept returned in %s, the laptop answered after %s; a rollout restart of the same workload took %s (%.2fx)\n",
		cold.Round(10*time.Millisecond), coldAnswer.Round(10*time.Millisecond), rollout.Round(10*time.Millisecond), float64(coldAnswer)/float64(rollout))
	busy := agentPeakRSS(t, ns, "icpt-")
	fmt.Fprintf(&b, "agent memory: idle RSS %.1f MiB (target <= 20 MiB); peak RSS of the intercepted one under this load %.1f MiB\n",
		float64(idleRSS)/(1<<20), float64(busy)/(1<<20))
	t.Log(b.String())
	if out := os.Getenv("TP_BENCH_OUT"); out != "" {
		f, err := os.OpenFile(out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, _ = f.WriteString(b.String())
			f.Close()
		}
	}
}

// rolloutTime restarts the workload's pods as kubectl rollout restart does and returns how
// long until only new pods, all ready, serve its Service.
func rolloutTime(t *testing.T, cs kubernetes.Interface, ns, name string) time.Duration {
	t.Helper()
	ctx := context.Background()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	start := time.Now()
	if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	kit.WaitFor(t, 2*time.Minute, "the rollout of "+name, func() error {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st, want := d.Status, *d.Spec.Replicas
		if st.ObservedGeneration < d.Generation || st.UpdatedReplicas != want || st.Replicas != want || st.ReadyReplicas != want {
			return fmt.Errorf("status %+v", st)
		}
		eps, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + name})
		if err != nil {
			return err
		}
		for _, s := range eps.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Serving != nil && *e.Conditions.Serving && e.Conditions.Terminating != nil && *e.Conditions.Terminating {
					return fmt.Errorf("old pod %v still serving", e.TargetRef)
				}
			}
		}
		return nil
	})
	return time.Since(start)
}

// agentProc finds, on this node, the agent process of a pod whose name starts with prefix.
func agentProc(t *testing.T, ns, prefix string) int {
	t.Helper()
	pid := kit.ProcWhere(func(cmd string, env []string) bool {
		return cmd == "/tp-agent\x00" && slices.Contains(env, "POD_NAMESPACE="+ns) &&
			slices.ContainsFunc(env, func(v string) bool { return strings.HasPrefix(v, "POD_NAME="+prefix) })
	})
	if pid == 0 {
		t.Fatalf("no agent process of %s/%s* on this node", ns, prefix)
	}
	return pid
}

func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func agentRSS(t *testing.T, ns, prefix string) int64 {
	return procStatus(t, agentProc(t, ns, prefix), "VmRSS")
}

func agentPeakRSS(t *testing.T, ns, prefix string) int64 {
	return procStatus(t, agentProc(t, ns, prefix), "VmHWM")
}

// nodeGet is a GET from the node, as cluster traffic arrives (through kube-proxy).
func nodeGet(url string) string {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// withHeader adds one header to every request.
type withHeader struct {
	name, value string
	next        http.RoundTripper
}

func (h withHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.name, h.value)
	return h.next.RoundTrip(r)
}
