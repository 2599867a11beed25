//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote/laptop/portforward"
	"github.com/tpdev/tp/remote/laptop/session"
	"github.com/tpdev/tp/tests/cluster"
	"github.com/tpdev/tp/tests/kit"
	"github.com/tpdev/tp/tests/workload"
)

// TestResilience breaks what a laptop's tunnel depends on (the manager's pod, the
// port-forward, the network path, the intercepted pod) while a session holds an intercept
// and a prober opens a new flow every 100 ms, and checks that tp heals by itself, says what
// state it is in, and never closes its proxy port. Then it loads the tunnel.
func TestResilience(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-resilience")
	w := deployWorkload(t, cs, ns, "web-app")
	data := deployWorkload(t, cs, ns, "data") // the load's target: no intercept, no agent
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")
	l.MustTP(t, time.Minute, "connect", "--namespace", ns, "--dns-listen", "127.0.0.1:1053")

	local := laptopServer(t, "laptop")
	l.MustTP(t, 3*time.Minute, "intercept", "web-app", "--namespace", ns, "--port", local+":80")
	intercepted := func(within time.Duration, what string) time.Duration {
		t.Helper()
		start := time.Now()
		waitFor(t, within, what+": Service traffic reaching the laptop", func() error {
			if got := hostGet(w.ClusterIP, "/probe"); !strings.HasPrefix(got, "laptop /probe") {
				return fmt.Errorf("GET answers %q", got)
			}
			return nil
		})
		return time.Since(start)
	}
	intercepted(30*time.Second, "before the faults")

	p := startProber(t, l, "web-app:"+strconv.Itoa(TCPEchoPort))
	defer p.stop()

	// recovers applies fault and measures how long until new flows work again: the first
	// probe that began after the session reconnected and succeeded. It checks that tp status
	// told the drop, the reconnection and the last error, and that the proxy port stayed open.
	recovers := func(t *testing.T, limit time.Duration, fault func(t *testing.T)) time.Duration {
		t.Helper()
		before := sessionStatus(t, l)
		start := time.Now()
		fault(t)
		var took time.Duration
		var st session.Status
		waitFor(t, limit+30*time.Second, "new flows after the fault", func() error {
			st = sessionStatus(t, l)
			var lost, back time.Time
			for _, tr := range st.History {
				switch {
				case tr.State == session.Reconnecting && !tr.At.Before(start):
					lost = tr.At
				case tr.State == session.Connected && !lost.IsZero():
					back = tr.At
				}
			}
			if lost.IsZero() || back.IsZero() || st.Reconnects <= before.Reconnects {
				return fmt.Errorf("the session has not reconnected yet (state %s, last error %q)", st.State, st.LastError)
			}
			at, ok := p.firstSuccessFrom(back)
			if !ok {
				return fmt.Errorf("no flow begun after the reconnection at %s succeeded yet", back.Format(time.StampMilli))
			}
			took = at.Sub(start)
			return nil
		})
		var seen []string
		for _, tr := range st.History {
			if !tr.At.Before(start) {
				seen = append(seen, fmt.Sprintf("%s at +%s", tr.State, tr.At.Sub(start).Round(10*time.Millisecond)))
			}
		}
		t.Logf("new flows work %s after the fault; tp status history: %v; last error: %s", took.Round(10*time.Millisecond), seen, st.LastError)
		if took > limit {
			t.Errorf("new flows worked again only %s after the fault, want within %s", took.Round(10*time.Millisecond), limit)
		}
		if st.State != session.Connected {
			t.Errorf("tp status says %s after the recovery", st.State)
		}
		if st.LastError == "" || st.LastErrorAt.Before(start) {
			t.Errorf("tp status does not tell the last error: %+v", st)
		}
		if n := p.refusals.Load(); n > 0 {
			t.Errorf("the proxy port refused %d connections during the fault; it must stay open", n)
		}
		// The flow lanes come back too (until they do, flows share lane 0). After a black hole
		// they have been seen to take 30-50 s (an open question, see the daemon log lines
		// printed then); the bound is loose until that is understood.
		lanes := time.Since(start) - took + lanesReady(t, l)
		if lanes > 15*time.Second {
			log, _ := os.ReadFile(filepath.Join(l.Home, ".tp", "sessions", "default", "daemon.log"))
			lines := strings.Split(strings.TrimSpace(string(log)), "\n")
			t.Logf("the flow lanes were back only %s after the first new flow worked; the daemon's last lines:\n%s",
				lanes.Round(100*time.Millisecond), strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
		if lanes > 60*time.Second {
			t.Errorf("the flow lanes were back only %s after the first new flow worked", lanes.Round(100*time.Millisecond))
		}
		return took
	}

	t.Run("ManagerPodDeleted", func(t *testing.T) {
		took := recovers(t, 10*time.Second, func(t *testing.T) {
			// A crash, not a stop: a manager told to stop hands its clients over first
			// (TestManagerRollout), so the process is killed before its pod is deleted.
			pod := managerPod(t, cs)
			if pid := kit.ManagerProcess(); pid == 0 {
				t.Fatal("no manager process on this node")
			} else if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if err := cs.CoreV1().Pods(deploy.DefaultNamespace).Delete(context.Background(), pod, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("figure: manager pod deleted -> new flows in %s", took.Round(100*time.Millisecond))
		took = intercepted(20*time.Second, "after the manager's restart")
		t.Logf("figure: the held intercept was re-asserted %s after flows worked again", took.Round(100*time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("the held intercept took %s to reach the laptop again after flows worked, want within 5s", took.Round(100*time.Millisecond))
		}
	})

	t.Run("PortForwardCut", func(t *testing.T) {
		open := socksDial(t, l, "web-app:"+strconv.Itoa(TCPEchoPort))
		defer open.Close()
		roundTrip := func(msg string) error {
			_ = open.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := open.Write([]byte(msg)); err != nil {
				return err
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(open, got); err != nil {
				return err
			}
			if string(got) != msg {
				return fmt.Errorf("echo %q", got)
			}
			return nil
		}
		if err := roundTrip("before the cut"); err != nil {
			t.Fatal(err)
		}
		took := recovers(t, 10*time.Second, func(t *testing.T) {
			// Reset every connection from the laptop to the API server, the port-forward's
			// included, as a dropped link or a restarted API server would.
			if out, err := exec.Command("nsenter", "--net="+l.Net.Netns, "ss", "-K", "dst", cluster.NodeIP).CombinedOutput(); err != nil && !strings.Contains(string(out), "ESTAB") {
				t.Fatalf("ss -K: %v %s", err, out)
			}
			// The flow that was open at the cut fails fast rather than hanging.
			start := time.Now()
			err := roundTrip("after the cut")
			if err == nil {
				t.Errorf("a flow open at the cut still echoes: it cannot have crossed the cut")
			} else if took := time.Since(start); took > 15*time.Second {
				t.Errorf("a flow open at the cut failed only after %s (%v)", took, err)
			} else {
				t.Logf("the flow open at the cut failed in %s: %v", took.Round(time.Millisecond), err)
			}
		})
		t.Logf("figure: port-forward cut -> new flows in %s", took.Round(100*time.Millisecond))
		intercepted(20*time.Second, "after the cut")
	})

	t.Run("KubeletRestarted", func(t *testing.T) {
		// The cut on the cluster's side: the kubelet that carries the port-forward streams
		// goes away (the API server's stream to it ends) and comes back.
		c, err := cluster.New(cluster.Config{Repo: filepath.Join(filepath.Dir(kit.KubeconfigPath()), "..")})
		if err != nil {
			t.Fatal(err)
		}
		took := recovers(t, 15*time.Second, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := c.Restart(ctx, "kubelet"); err != nil {
				t.Fatalf("restarting kubelet: %v", err)
			}
		})
		t.Logf("figure: kubelet restarted -> new flows in %s", took.Round(100*time.Millisecond))
		intercepted(30*time.Second, "after the kubelet's restart")
	})

	t.Run("BlackHoledTunnel", func(t *testing.T) {
		rule := []string{"OUTPUT", "-d", cluster.NodeIP, "-j", "DROP"}
		ipt := func(op string) error {
			return exec.Command("nsenter", append([]string{"--net=" + l.Net.Netns, "iptables", op}, rule...)...).Run()
		}
		defer ipt("-D")
		var detected time.Duration
		dig := func(args ...string) string {
			r := l.Run(15*time.Second, nil, "dig", append([]string{"@127.0.0.1", "-p", "1053", "+time=3", "+tries=1"}, args...)...)
			return r.Stdout
		}
		// The name asked once, with the tunnel up (the fault before this one may still be
		// settling).
		var before string
		waitFor(t, 30*time.Second, "web-app to resolve before the black hole", func() error {
			if before = strings.TrimSpace(dig("+short", "web-app")); before == "" {
				return fmt.Errorf("no answer yet")
			}
			return nil
		})
		took := recovers(t, 40*time.Second, func(t *testing.T) {
			if err := ipt("-I"); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			waitFor(t, 45*time.Second, "the session to notice the black hole", func() error {
				if st := sessionStatus(t, l); st.State == session.Connected {
					return fmt.Errorf("still %s", st.State)
				}
				return nil
			})
			detected = time.Since(start)
			// While it reconnects, a name asked before still resolves (its last answer); a
			// new one fails saying why.
			if got := strings.TrimSpace(dig("+short", "web-app")); got != before {
				t.Errorf("web-app while reconnecting: %q, want its last answer %q", got, before)
			}
			if out := dig("never-asked-before"); !strings.Contains(out, "SERVFAIL") || !strings.Contains(out, "tunnel to the cluster is down") {
				t.Errorf("a new name while reconnecting:\n%s\nwant SERVFAIL saying the tunnel is down", out)
			}
			if err := ipt("-D"); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("figure: black hole detected in %s; new flows %s after it began", detected.Round(100*time.Millisecond), took.Round(100*time.Millisecond))
		if detected > 30*time.Second {
			t.Errorf("a black-holed tunnel was noticed only after %s, want within 30s", detected)
		}
		intercepted(30*time.Second, "after the black hole")
	})

	t.Run("AgentPodRestarted", func(t *testing.T) {
		pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=web-app"})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("pods of web-app: %v", err)
		}
		start := time.Now()
		for _, pod := range pods.Items {
			if err := cs.CoreV1().Pods(ns).Delete(context.Background(), pod.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 90*time.Second, "a new pod of web-app with the agent, alone behind the Service", func() error {
			eps, err := cs.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=web-app"})
			if err != nil {
				return err
			}
			for _, s := range eps.Items {
				for _, e := range s.Endpoints {
					for _, old := range pods.Items {
						if e.TargetRef != nil && e.TargetRef.Name == old.Name {
							return fmt.Errorf("old pod %s still an endpoint", old.Name)
						}
					}
					if e.Conditions.Ready != nil && *e.Conditions.Ready {
						return nil
					}
				}
			}
			return fmt.Errorf("no ready endpoint")
		})
		intercepted(30*time.Second, "on the new pod")
		t.Logf("figure: intercept resumed on a new pod %s after the old one was deleted", time.Since(start).Round(100*time.Millisecond))
	})

	p.stop()
	fails, total := p.counts()
	t.Logf("prober: %d of %d flows failed across all faults", fails, total)

	pid := status(t, l, "default").PID
	t.Run("ThousandConnections", func(t *testing.T) {
		lanesReady(t, l)
		base := daemonUsage(t, l, pid)
		const n, size = 1000, 32 << 10
		conns := make([]net.Conn, n)
		var wg sync.WaitGroup
		var failed atomic.Int64
		var firstErr atomic.Value
		fail := func(err error) {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err)
		}
		start := time.Now()
		for i := range n {
			wg.Go(func() {
				c, err := socksDialErr(l, "data:"+strconv.Itoa(TCPEchoPort))
				if err != nil {
					fail(fmt.Errorf("connection %d: %w", i, err))
					return
				}
				conns[i] = c
			})
		}
		wg.Wait()
		opened := time.Since(start)
		for i, c := range conns {
			if c == nil {
				continue
			}
			wg.Go(func() {
				_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
				msg := make([]byte, size)
				_, _ = rand.Read(msg)
				go func() { _, _ = c.Write(msg) }()
				got := make([]byte, size)
				if _, err := io.ReadFull(c, got); err != nil {
					fail(fmt.Errorf("connection %d: %w", i, err))
				} else if !bytes.Equal(got, msg) {
					fail(fmt.Errorf("connection %d: echo differs", i))
				}
			})
		}
		wg.Wait()
		peak := daemonUsage(t, l, pid)
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		t.Logf("figure: %d connections open at once in %s, %d KiB echoed on each; %d failed; daemon at peak: %s", n, opened.Round(time.Millisecond), size>>10, failed.Load(), peak)
		if failed.Load() > 0 {
			t.Errorf("%d of %d connections failed, first: %v", failed.Load(), n, firstErr.Load())
		}
		settles(t, l, pid, base)
	})

	t.Run("FiveGigabytesOnOneConnection", func(t *testing.T) {
		lanesReady(t, l)
		base := daemonUsage(t, l, pid)
		const n = 5_000_000_000
		px, _ := url.Parse("http://127.0.0.1:1080")
		c := l.HTTPClient(px, 20*time.Minute)
		want := make(chan []byte, 1)
		go func() {
			h := sha256.New()
			_, _ = io.CopyN(h, workload.Pattern(), n)
			want <- h.Sum(nil)
		}()
		var peakRSS atomic.Int64
		done := make(chan struct{})
		go func() {
			for {
				if rss := procKiB(pid, "VmRSS"); rss > peakRSS.Load() {
					peakRSS.Store(rss)
				}
				select {
				case <-done:
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
		if dir := os.Getenv("TP_E2E_PROFILE_DIR"); dir != "" {
			// A heap profile of the daemon mid-stream, to see what holds memory.
			go func() {
				time.Sleep(15 * time.Second)
				sock := filepath.Join(l.Home, ".tp", "sessions", "default", "control.sock")
				out, err := exec.Command("curl", "-sS", "--unix-socket", sock, "-o", filepath.Join(dir, "heap.pb.gz"), "http://tp/debug/pprof/heap").CombinedOutput()
				t.Logf("heap profile: %v %s", err, out)
			}()
		}
		start := time.Now()
		resp, err := c.Get(fmt.Sprintf("http://data/bytes?n=%d", n))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		copied, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		close(done)
		if err != nil || copied != n {
			t.Fatalf("5 GB download: %d bytes: %v", copied, err)
		}
		if !bytes.Equal(h.Sum(nil), <-want) {
			t.Fatal("5 GB download: digest differs from the pattern's")
		}
		peak := peakRSS.Load()
		t.Logf("figure: 5 GB through one connection in %s (%.0f MB/s), digest matches; daemon peak RSS during it %d MiB (base %d MiB)",
			took.Round(time.Second), float64(n)/took.Seconds()/1e6, peak>>10, base.rssKiB>>10)
		if peak > 256<<10 {
			t.Errorf("the daemon's resident memory peaked at %d MiB while streaming; want it bounded under 256 MiB", peak>>10)
		}
		settles(t, l, pid, base)
	})

	t.Run("NoHeadOfLineBlocking", func(t *testing.T) {
		lanesReady(t, l)
		// The baseline: a port-forward of the laptop's own to the same echo server, sharing
		// nothing with tp's tunnel but the laptop's link and the machine.
		fw, err := portforward.New(restConfig(t, laptopDial), portforward.Auto)
		if err != nil {
			t.Fatal(err)
		}
		defer fw.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		raw, err := fw.DialPod(ctx, ns, data.Pod, TCPEchoPort)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		echo := "data:" + strconv.Itoa(TCPEchoPort)
		c := socksDial(t, l, echo)
		defer c.Close()

		// A laptop's link is slower than this machine: the interactive flow and four bulk
		// downloads (started together, more than the lanes a session starts with) share a
		// 400 Mbit/s link that queues each connection apart, as fq_codel does. The downloads
		// fill the link, the CPUs keep room, and what could still delay the interactive flow
		// behind the bulk bytes is tp's own multiplexing.
		t.Run("SaturatedLink", func(t *testing.T) {
			ports, undo, err := cluster.ShapeLaptopLink(linkMbit)
			if err != nil {
				t.Fatal(err)
			}
			defer undo()
			t.Logf("the laptop's link: %d Mbit/s, a queue for each of its %d connections to the API server", linkMbit, len(ports))
			// This machine is shared and noisy: a neighbour's burst slows tp and the raw
			// port-forward alike. So tp's slowdown is held to 3x, or to 1.5x the raw
			// port-forward's slowdown in the same moment when the machine itself slowed
			// more, and the figure is taken up to three times; head-of-line blocking in tp
			// (OneLaneBlocks: 10x and more) fails every attempt.
			var problems []string
			for attempt := 1; attempt <= 3; attempt++ {
				m := underLoad(t, l, "127.0.0.1:1080", 4, 100, c, raw)
				t.Logf("figure: on a saturated %d Mbit/s link, an interactive round trip through tp takes %s idle and %s beside four bulk downloads (%.1fx); "+
					"a raw port-forward beside it: %s idle, %s (%.1fx); the downloads moved %.0f MB/s (attempt %d)",
					linkMbit, m.idle[0], m.busy[0], m.ratio(0), m.idle[1], m.busy[1], m.ratio(1), m.mbps, attempt)
				problems = problems[:0]
				if m.mbps < 0.6*linkMbit/8 {
					problems = append(problems, fmt.Sprintf("the downloads moved %.0f MB/s: they did not fill the %d Mbit/s link", m.mbps, linkMbit))
				}
				if allowed := max(3, 1.5*m.ratio(1)); m.ratio(0) > allowed {
					problems = append(problems, fmt.Sprintf("interactive latency through tp beside bulk downloads is %s, %.1fx its idle %s, want at most %.1fx (3x, or 1.5x the raw port-forward's %.1fx): flows wait behind each other in the tunnel",
						m.busy[0], m.ratio(0), m.idle[0], allowed, m.ratio(1)))
				}
				if len(problems) == 0 {
					break
				}
			}
			for _, p := range problems {
				t.Error(p)
			}
			if st := sessionStatus(t, l); len(st.Lanes) < 1+5 {
				t.Errorf("tp status shows lanes %+v: five flows at once need five flow lanes", st.Lanes)
			}
		})

		// The control: the same load on a session whose flows share one connection to the
		// manager must show the blocking that lanes remove, or the load never reached the
		// tunnel and the test above proved nothing.
		t.Run("OneLaneBlocks", func(t *testing.T) {
			l.MustTP(t, time.Minute, "connect", "--namespace", ns, "--name", "onelane", "--listen", "127.0.0.1:1081", "--lanes", "1")
			defer l.MustTP(t, 30*time.Second, "quit", "--name", "onelane")
			one, err := socksDialVia(l, "127.0.0.1:1081", echo)
			if err != nil {
				t.Fatal(err)
			}
			defer one.Close()
			_, undo, err := cluster.ShapeLaptopLink(linkMbit)
			if err != nil {
				t.Fatal(err)
			}
			defer undo()
			m := underLoad(t, l, "127.0.0.1:1081", 2, 10, one)
			t.Logf("figure: with one lane the same round trip takes %s idle and %s beside the downloads (%.0fx)", m.idle[0], m.busy[0], m.ratio(0))
			if m.busy[0] <= 3*m.idle[0] {
				t.Errorf("with every flow on one connection the interactive round trip took %s beside the downloads (idle %s): the load does not reach the tunnel, so SaturatedLink proves nothing", m.busy[0], m.idle[0])
			}
		})

		// Unshaped, the downloads run as fast as this two-CPU machine moves bytes through the
		// API server, kubelet and runtime, and every process waits for a CPU: the raw
		// port-forward beside them slows 8-25x too. tp is held to a multiple of what the
		// machine allows an interactive flow then, not to its idle latency.
		t.Run("SaturatedMachine", func(t *testing.T) {
			m := underLoad(t, l, "127.0.0.1:1080", 2, 100, c, raw)
			t.Logf("figure: with the CPUs saturated, an interactive round trip through tp takes %s idle and %s beside two bulk downloads (%.1fx); "+
				"a raw port-forward beside it: %s idle, %s (%.1fx); the downloads moved %.0f MB/s",
				m.idle[0], m.busy[0], m.ratio(0), m.idle[1], m.busy[1], m.ratio(1), m.mbps)
			if m.mbps < 100 {
				t.Errorf("the downloads moved %.0f MB/s: they did not load the machine", m.mbps)
			}
			if allowed := 12 * max(m.idle[0], m.busy[1]); m.busy[0] > allowed {
				t.Errorf("interactive latency through tp under bulk load is %s, want at most %s (12x the larger of tp idle, %s, and a separate port-forward under the same load, %s)", m.busy[0], allowed, m.idle[0], m.busy[1])
			}
		})
	})
}

// prober opens a new SOCKS flow to an echo server every 100 ms and records each outcome,
// and dials the proxy port itself to notice if it ever closes.
type prober struct {
	mu       sync.Mutex
	results  []probeResult
	refusals atomic.Int64
	quit     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

type probeResult struct {
	began, at time.Time
	err       error
}

func startProber(t *testing.T, l *kit.Laptop, target string) *prober {
	p := &prober{quit: make(chan struct{})}
	p.wg.Go(func() {
		for {
			select {
			case <-p.quit:
				return
			case <-time.After(100 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if c, err := l.Dial(ctx, "tcp", "127.0.0.1:1080"); err != nil {
				p.refusals.Add(1)
				t.Logf("prober: the proxy port refused a connection: %v", err)
			} else {
				c.Close()
			}
			cancel()
		}
	})
	p.wg.Go(func() {
		for {
			select {
			case <-p.quit:
				return
			case <-time.After(100 * time.Millisecond):
			}
			began := time.Now()
			err := probeOnce(l, target)
			p.mu.Lock()
			p.results = append(p.results, probeResult{began, time.Now(), err})
			p.mu.Unlock()
		}
	})
	return p
}

func probeOnce(l *kit.Laptop, target string) error {
	c, err := socksDialErr(l, target)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return fmt.Errorf("echo %q", buf)
	}
	return nil
}

func (p *prober) stop() {
	p.once.Do(func() { close(p.quit) })
	p.wg.Wait()
}

func (p *prober) snapshot() []probeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.results)
}

// firstSuccessFrom finds the first probe that began at or after from and succeeded.
func (p *prober) firstSuccessFrom(from time.Time) (time.Time, bool) {
	for _, r := range p.snapshot() {
		if r.err == nil && !r.began.Before(from) {
			return r.at, true
		}
	}
	return time.Time{}, false
}

func (p *prober) counts() (fails, total int) {
	for _, r := range p.snapshot() {
		if r.err != nil {
			fails++
		}
		total++
	}
	return fails, total
}

func trySessionStatus(l *kit.Laptop) (session.Status, error) {
	var st session.Status
	r := l.TPRun(10*time.Second, "status", "--json", "--name", "default")
	if r.Err != nil {
		return st, r.Err
	}
	var out struct {
		Sessions []struct {
			Session json.RawMessage `json:"session"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil || len(out.Sessions) != 1 {
		return st, fmt.Errorf("tp status --json: %v %q", err, r.Stdout)
	}
	err := json.Unmarshal(out.Sessions[0].Session, &st)
	return st, err
}

func sessionStatus(t *testing.T, l *kit.Laptop) session.Status {
	t.Helper()
	st, err := trySessionStatus(l)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// managerPod is a ready manager pod that is not stopping.
func managerPod(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	pods := managerPods(t, cs)
	if len(pods) == 0 {
		t.Fatal("no ready manager pod")
	}
	return pods[0]
}

// hostGet is a GET from the node (as another pod would, through kube-proxy).
func hostGet(ip, path string) string {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Get("http://" + ip + path)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// lanesReady waits until every connection of the session to the manager is up, so that
// a count of goroutines before a load compares with one after it.
func lanesReady(t *testing.T, l *kit.Laptop) time.Duration {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("every lane ready after %s", time.Since(start).Round(10*time.Millisecond)) }()
	waitFor(t, 90*time.Second, "every lane of the session ready", func() error {
		st := sessionStatus(t, l)
		for i, ln := range st.Lanes {
			if ln.State != "ready" {
				return fmt.Errorf("lane %d is %s (all: %+v)", i, ln.State, st.Lanes)
			}
		}
		if len(st.Lanes) < 2 {
			return fmt.Errorf("lanes %+v", st.Lanes)
		}
		return nil
	})
	return time.Since(start)
}

// usage is what the tp daemon holds: goroutines (from tp status), descriptors and memory.
type usage struct {
	goroutines, fds int
	rssKiB          int64
}

func (u usage) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, %d MiB resident", u.goroutines, u.fds, u.rssKiB>>10)
}

func daemonUsage(t *testing.T, l *kit.Laptop, pid int) usage {
	t.Helper()
	fds, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		t.Fatalf("descriptors of the tp daemon: %v", err)
	}
	return usage{goroutines: status(t, l, "default").Goroutines, fds: len(fds), rssKiB: procKiB(pid, "VmRSS")}
}

// settles checks that, once a load ended, the daemon goes back to about base: no leaked
// goroutines or descriptors.
func settles(t *testing.T, l *kit.Laptop, pid int, base usage) {
	t.Helper()
	var now usage
	// The lanes a load opened close 30 s after their last flow (session.laneIdle), checked
	// every 7.5 s; what they hold must go with them.
	deadline := time.Now().Add(60 * time.Second)
	for {
		now = daemonUsage(t, l, pid)
		if now.goroutines <= base.goroutines+10 && now.fds <= base.fds+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after the load the daemon holds %s, before it held %s: a leak", now, base)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("daemon before the load: %s; after: %s", base, now)
}

// procKiB reads a "Name:   N kB" line of /proc/pid/status.
func procKiB(pid int, name string) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// linkMbit is the laptop's link in the head-of-line tests: a good office or home link, and
// well below what this machine moves through a port-forward (so the link, not the CPUs,
// is what saturates).
const linkMbit = 400

// loadResult is what underLoad measured: the median round trip on each conn idle and beside
// the bulk downloads, and the downloads' rate.
type loadResult struct {
	idle, busy []time.Duration
	mbps       float64
}

func (m loadResult) ratio(i int) float64 { return float64(m.busy[i]) / float64(m.idle[i]) }

// underLoad measures n round trips on each echo conn, then starts bulk downloads (all at
// once) through the HTTP proxy at proxy and measures n more once they run.
func underLoad(t *testing.T, l *kit.Laptop, proxy string, downloads, n int, conns ...net.Conn) loadResult {
	t.Helper()
	m := loadResult{idle: medianRoundTrips(t, n, conns...)}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var moved atomic.Int64
	px, _ := url.Parse("http://" + proxy)
	bulk := l.HTTPClient(px, 0)
	defer bulk.CloseIdleConnections()
	for range downloads {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://data/bytes?n=100000000000", nil)
			resp, err := bulk.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			_, _ = io.Copy(counter{&moved}, resp.Body)
		})
	}
	time.Sleep(2 * time.Second) // past the downloads' start and slow start
	before, began := moved.Load(), time.Now()
	m.busy = medianRoundTrips(t, n, conns...)
	m.mbps = float64(moved.Load()-before) / time.Since(began).Seconds() / 1e6
	stop()
	wg.Wait()
	return m
}

// counter counts the bytes written to it.
type counter struct{ n *atomic.Int64 }

func (c counter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

// medianRoundTrips sends n small messages one after another on each echo conn, the conns
// taking turns, and returns each one's median round trip.
func medianRoundTrips(t *testing.T, n int, conns ...net.Conn) []time.Duration {
	t.Helper()
	msg := []byte("0123456789abcdef")
	buf := make([]byte, len(msg))
	rtts := make([][]time.Duration, len(conns))
	for range n {
		for i, c := range conns {
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			start := time.Now()
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatal(err)
			}
			rtts[i] = append(rtts[i], time.Since(start))
		}
		time.Sleep(5 * time.Millisecond)
	}
	medians := make([]time.Duration, len(conns))
	for i, d := range rtts {
		slices.Sort(d)
		medians[i] = d[len(d)/2]
	}
	return medians
}
