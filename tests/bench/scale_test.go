//go:build bench

package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote/cluster/manager"
	"github.com/tpdev/tp/remote/laptop/portforward"
	"github.com/tpdev/tp/remote/laptop/session"
	"github.com/tpdev/tp/tests/cluster"
	"github.com/tpdev/tp/tests/kit"
)

// TestBenchScale: how many laptops one manager carries. N sessions (the laptop side of tp
// connect, in this process, each with its own port-forward connections from the laptop
// namespace and its default lanes) hold one personal intercept each of the same workload and
// keep opening new flows and asking names, as developers' programs do. For N = 10, 50, 100 it
// reports the manager's memory (idle and after the load) and CPU per session, the p50/p99 of
// a new flow (dial and a small GET) and of a lookup the manager answers (a name new each time,
// so no cache answers it), and failures; then, under the load of 100, the time until every
// intercept is held again after the manager's pod is deleted.
func TestBenchScale(t *testing.T) {
	cs := kit.Clientset(t)
	ns := kit.Namespace(t, cs, "tp-scale")
	kit.DeployWorkload(t, cs, ns, "web-app")
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")
	// The agent, once: every session then holds a filtered intercept of its port at once.
	l.MustTP(t, 3*time.Minute, "intercept", "web-app", "--port", "18080:80", "--http-header", "x-scale=setup", "--namespace", ns)
	l.MustTP(t, time.Minute, "leave", "web-app-http")
	// Each session is another developer (a ServiceAccount bound as README says): the manager
	// bounds the intercepts one Kubernetes user holds.
	kit.ApplyClientRoles(t, cs)
	admin := kit.RESTConfig(t, cluster.LaptopDialContext)
	developer := func(id int) *rest.Config {
		cfg := rest.AnonymousClientConfig(admin)
		cfg.BearerToken = kit.DeveloperToken(t, cs, ns, "dev-"+strconv.Itoa(id), "tp-connect", "tp-intercept")
		return cfg
	}

	mgr := managerProc(t)
	baseRSS := procStatus(t, mgr, "VmRSS")
	var sessions []*scaleSession
	t.Cleanup(func() {
		for _, s := range sessions {
			s.sess.Close()
		}
	})
	var rows []scaleRow
	for _, n := range []int{10, 50, 100} {
		opened := time.Now()
		var cfgs []*rest.Config
		for id := len(sessions); id < n; id++ {
			cfgs = append(cfgs, developer(id))
		}
		more, err := openSessions(cfgs, ns, len(sessions))
		sessions = append(sessions, more...)
		if err != nil {
			t.Fatalf("opening sessions %d to %d: %v", len(sessions), n, err)
		}
		t.Logf("%d sessions open, each holding an intercept (the last %d in %s)", n, len(more), time.Since(opened).Round(100*time.Millisecond))
		time.Sleep(5 * time.Second) // past the manager's first work for each
		idle := procStatus(t, mgr, "VmRSS")
		row := runLoad(t, sessions, mgr, 20*time.Second)
		row.n, row.idleRSS, row.baseRSS = n, idle, baseRSS
		rows = append(rows, row)
		t.Logf("N=%d: %+v", n, row)
	}

	// The manager's pod goes while 100 sessions work: every intercept is asserted again.
	stop, loadFails, loadFlows, firstFail := steadyLoad(sessions)
	pods, err := cs.CoreV1().Pods(deploy.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: deploy.ManagerLabelSelector})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("manager pods: %v", err)
	}
	deleted := time.Now()
	zero := int64(0)
	// A crash: killed before its pod is deleted (a stopping manager hands its clients over
	// first; the rolling restart below measures that).
	if err := syscall.Kill(mgr, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if err := cs.CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
	}
	// Held again: every session is connected to the new manager, and that manager lists
	// every intercept.
	var reasserted time.Duration
	for time.Since(deleted) < 3*time.Minute {
		time.Sleep(250 * time.Millisecond)
		if onNewManager(sessions, pods.Items[0].Name) && heldIntercepts(sessions[0], ns) == len(sessions) {
			reasserted = time.Since(deleted)
			break
		}
	}
	stop()
	if reasserted == 0 {
		t.Errorf("the %d intercepts were not all held again within 3 minutes of the manager pod's deletion", len(sessions))
	}
	deletedFails := loadFails.Load()

	// A rolling restart of two replicas under the same load: each pod drains as it goes,
	// its sessions move to another pod, and nothing fails.
	l.MustTP(t, 3*time.Minute, "install", "--replicas", "2")
	t.Cleanup(func() { l.MustTP(t, 3*time.Minute, "install", "--replicas", "1") })
	kit.WaitManagerPods(t, cs, 2)
	reconnects := make([]int, len(sessions))
	for i, s := range sessions {
		reconnects[i] = s.sess.Status().Reconnects
	}
	stop, loadFails, loadFlows, firstFail = steadyLoad(sessions)
	before := time.Now()
	kit.RestartManager(t, cs)
	rolled := kit.WaitManagerPods(t, cs, 2)
	time.Sleep(3 * time.Second)
	stop()
	roll := rollFigures{took: rolled.Sub(before), flows: loadFlows.Load(), fails: loadFails.Load(), first: firstFail.Load()}
	for i, s := range sessions {
		if st := s.sess.Status(); st.State != session.Connected {
			roll.lost++
		} else if st.Reconnects > reconnects[i] {
			roll.reconnected++
		}
	}
	roll.claims = claimsHeld(t, cs)
	reportScale(t, rows, reasserted, deletedFails, roll)
	if roll.fails > 0 || roll.claims != len(sessions) {
		t.Errorf("rolling restart: %d of %d flows failed (first: %v), %d of %d intercepts claimed afterwards", roll.fails, roll.flows, roll.first, roll.claims, len(sessions))
	}
}

// rollFigures are what a rolling restart of the manager cost the sessions.
type rollFigures struct {
	took                      time.Duration
	flows, fails              int64
	first                     any
	lost, reconnected, claims int
}

// steadyLoad has every session open a flow each second until stop is called, counting the
// flows and the failures.
func steadyLoad(sessions []*scaleSession) (stop func(), fails, flows *atomic.Int64, first *atomic.Value) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	fails, flows, first = new(atomic.Int64), new(atomic.Int64), new(atomic.Value)
	for _, s := range sessions {
		wg.Go(func() {
			for {
				select {
				case <-quit:
					return
				case <-time.After(time.Second):
				}
				flows.Add(1)
				if _, err := s.flow(); err != nil {
					fails.Add(1)
					first.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	return func() { close(quit); wg.Wait() }, fails, flows, first
}

// claimsHeld counts the intercept claims that name a manager pod that exists.
func claimsHeld(t *testing.T, cs kubernetes.Interface) int {
	t.Helper()
	pods, err := cs.CoreV1().Pods(deploy.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: deploy.ManagerLabelSelector})
	if err != nil {
		t.Fatal(err)
	}
	list, err := cs.CoordinationV1().Leases(deploy.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: manager.ClaimLabel})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range list.Items {
		for _, p := range pods.Items {
			if strings.Contains(l.Annotations["tp.dev/claim"], `"pod":"`+p.Name+`"`) {
				n++
			}
		}
	}
	return n
}

type scaleRow struct {
	n                         int
	baseRSS, idleRSS, loadRSS int64
	cpu                       time.Duration // the manager's CPU time during the load window
	window                    time.Duration
	flowP50, flowP99          time.Duration
	lookupP50, lookupP99      time.Duration
	flows, lookups, failures  int
	firstFailure              string
}

// scaleSession is one developer's laptop: a session holding a personal intercept.
type scaleSession struct {
	id     int
	sess   *session.Session
	client *http.Client
	asked  atomic.Int64
}

// openSessions opens a session for each of cfgs, numbered from first, ten at a time, each
// with its intercept held.
func openSessions(cfgs []*rest.Config, ns string, first int) ([]*scaleSession, error) {
	n := len(cfgs)
	out := make([]*scaleSession, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 10)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i], errs[i] = openSession(cfgs[i], ns, first+i)
		})
	}
	wg.Wait()
	var opened []*scaleSession
	for _, s := range out {
		if s != nil {
			opened = append(opened, s)
		}
	}
	for _, err := range errs {
		if err != nil {
			return opened, err
		}
	}
	return opened, nil
}

func openSession(cfg *rest.Config, ns string, id int) (*scaleSession, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sess, err := session.Connect(ctx, session.Config{
		REST: cfg, Namespace: ns, ManagerNamespace: deploy.DefaultNamespace, ManagerSelector: deploy.ManagerLabelSelector,
		ManagerPort: deploy.ClientPort, Transport: portforward.Auto, Version: "bench", Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, fmt.Errorf("session %d: %w", id, err)
	}
	header, err := route.ParseHeader("x-scale=" + strconv.Itoa(id))
	if err != nil {
		sess.Close()
		return nil, err
	}
	spec := session.InterceptSpec{Name: "scale-" + strconv.Itoa(id), Namespace: ns, Kind: "Deployment", Workload: "web-app", Port: "http",
		Local: "127.0.0.1:9", HTTP: &route.Filter{Headers: []route.Match{header}}}
	if _, err := sess.Intercept(ctx, spec); err != nil {
		sess.Close()
		return nil, fmt.Errorf("session %d: intercept: %w", id, err)
	}
	s := &scaleSession{id: id, sess: sess}
	s.client = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: sess.DialContext, DisableKeepAlives: true}}
	return s, nil
}

// flow opens a new flow to web-app and GETs a small page over it.
func (s *scaleSession) flow() (time.Duration, error) {
	start := time.Now()
	resp, err := s.client.Get("http://web-app/small")
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET /small: %s", resp.Status)
	}
	return time.Since(start), err
}

// lookup asks the manager about a name never asked before (NXDOMAIN from the cluster's DNS).
func (s *scaleSession) lookup() (time.Duration, error) {
	name := fmt.Sprintf("nosuch-%d-%d", s.id, s.asked.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := s.sess.Query(ctx, name, dns.TypeA)
	return time.Since(start), err
}

// runLoad has every session open a flow and ask a name about every 500 ms for window, and
// measures the manager meanwhile.
func runLoad(t *testing.T, sessions []*scaleSession, mgr int, window time.Duration) scaleRow {
	t.Helper()
	var mu sync.Mutex
	var row scaleRow
	var flows, lookups []time.Duration
	fail := func(err error) {
		mu.Lock()
		row.failures++
		if row.firstFailure == "" {
			row.firstFailure = err.Error()
		}
		mu.Unlock()
	}
	cpu0 := procCPU(t, mgr)
	start := time.Now()
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Go(func() {
			// Spread the sessions over the period, as independent laptops would be.
			time.Sleep(time.Duration(i) * 500 * time.Millisecond / time.Duration(len(sessions)))
			for time.Since(start) < window {
				if d, err := s.flow(); err != nil {
					fail(err)
				} else {
					mu.Lock()
					flows = append(flows, d)
					mu.Unlock()
				}
				if d, err := s.lookup(); err != nil {
					fail(err)
				} else {
					mu.Lock()
					lookups = append(lookups, d)
					mu.Unlock()
				}
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	row.window = time.Since(start)
	row.cpu = procCPU(t, mgr) - cpu0
	row.loadRSS = procStatus(t, mgr, "VmRSS")
	row.flows, row.lookups = len(flows), len(lookups)
	row.flowP50, row.flowP99 = percentile(flows, 50), percentile(flows, 99)
	row.lookupP50, row.lookupP99 = percentile(lookups, 50), percentile(lookups, 99)
	return row
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// heldIntercepts is how many intercepts the manager holds in ns (it tells a session about
// the grants that session may read: here, all).
func heldIntercepts(s *scaleSession, ns string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	its, err := s.sess.ListIntercepts(ctx, ns)
	if err != nil {
		return -1
	}
	return len(its)
}

// onNewManager says whether every session is connected, to another manager pod than old.
func onNewManager(sessions []*scaleSession, old string) bool {
	for _, s := range sessions {
		if st := s.sess.Status(); st.State != session.Connected || st.ManagerPod == old || st.ManagerPod == "" {
			return false
		}
	}
	return true
}

// managerProc finds the manager's process on this node.
func managerProc(t *testing.T) int {
	t.Helper()
	pid := kit.ManagerProcess()
	if pid == 0 {
		t.Fatal("no manager process on this node")
	}
	return pid
}

// procCPU is a process's user and system CPU time so far.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command (which may hold spaces) start past its closing parenthesis.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func reportScale(t *testing.T, rows []scaleRow, reasserted time.Duration, reassertFails int64, roll rollFigures) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nscale: N sessions on one manager, each with its lanes and a held personal intercept, a new flow and a new name every 500 ms each\n")
	fmt.Fprintf(&b, "%5s %12s %14s %14s %14s %16s %16s %10s\n", "N", "manager RSS", "RSS/session", "idle/session", "CPU/session", "new flow p50/p99", "lookup p50/p99", "failures")
	for _, r := range rows {
		perLoad := float64(r.loadRSS-r.baseRSS) / float64(r.n) / 1024
		perIdle := float64(r.idleRSS-r.baseRSS) / float64(r.n) / 1024
		cpu := float64(r.cpu) / float64(r.window) / float64(r.n) * 1000 // millicores
		fmt.Fprintf(&b, "%5d %10.1f MB %11.0f KB %11.0f KB %10.2f mCPU %7s/%-8s %7s/%-8s %4d of %d\n", r.n, float64(r.loadRSS)/(1<<20), perLoad, perIdle, cpu,
			r.flowP50.Round(100*time.Microsecond), r.flowP99.Round(100*time.Microsecond), r.lookupP50.Round(100*time.Microsecond), r.lookupP99.Round(100*time.Microsecond),
			r.failures, r.flows+r.lookups+r.failures)
		if r.firstFailure != "" {
			fmt.Fprintf(&b, "      first failure: %s\n", r.firstFailure)
		}
	}
	fmt.Fprintf(&b, "manager killed (pod deleted) under the load of %d sessions: every intercept held again after %s; %d flows failed meanwhile\n",
		rows[len(rows)-1].n, reasserted.Round(100*time.Millisecond), reassertFails)
	fmt.Fprintf(&b, "rolling restart of 2 manager replicas under that load: rolled out in %s; %d of %d new flows failed; sessions lost %d, reconnected %d (the rest moved); %d intercepts claimed on the new pods\n",
		roll.took.Round(100*time.Millisecond), roll.fails, roll.flows, roll.lost, roll.reconnected, roll.claims)
	t.Log(b.String())
	if out := os.Getenv("TP_BENCH_OUT"); out != "" {
		f, err := os.OpenFile(out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, _ = f.WriteString(b.String())
			f.Close()
		}
	}
}
