//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote/cluster/manager"
	"github.com/tpdev/tp/tests/kit"
)

// TestManagerRollout restarts the manager (a rollout, as an upgrade or a GitOps sync makes
// one) while a developer holds an intercept, opens a new flow every 100 ms, and the
// intercepted Service takes a request every 50 ms from inside the cluster. The manager
// runs as two pods (tp install --replicas 2); each drains as it goes: its developers move
// to another pod and its agents hold the intercepted port for them meanwhile. Nothing may
// fail: no new flow, no intercepted request (none may reach the app instead of the laptop).
func TestManagerRollout(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-rollout")
	w := deployWorkload(t, cs, ns, "web-app")
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install", "--replicas", "2")
	t.Cleanup(func() { l.MustTP(t, 3*time.Minute, "install", "--replicas", "1") }) // as the other tests expect
	kit.WaitManagerPods(t, cs, 2)
	l.MustTP(t, time.Minute, "connect", "--namespace", ns)
	local := laptopServerOn(t, l, "laptop")
	l.MustTP(t, 3*time.Minute, "intercept", "web-app", "--namespace", ns, "--port", local+":80")
	waitFor(t, 60*time.Second, "Service traffic reaching the laptop", func() error {
		if got := hostGet(w.ClusterIP, "/probe"); !strings.HasPrefix(got, "laptop /probe") {
			return fmt.Errorf("GET answers %q", got)
		}
		return nil
	})
	// The agent serves whichever pod the laptop's session is on: it keeps a connection to
	// every manager pod.
	pods := managerPods(t, cs)
	waitFor(t, 30*time.Second, "the agent registered with every manager pod", func() error {
		for _, pod := range pods {
			if !strings.Contains(podLog(t, cs, pod), "agent registered") {
				return fmt.Errorf("manager pod %s has no agent", pod)
			}
		}
		return nil
	})
	// The intercept's claim tells the other manager pods that the port is taken.
	claimOn(t, cs, pods)
	before := sessionStatus(t, l)

	p := startProber(t, l, "web-app:"+strconv.Itoa(TCPEchoPort))
	h := startHammer(w.ClusterIP)
	start := time.Now()
	kit.RestartManager(t, cs)
	kit.WaitManagerPods(t, cs, 2)
	rolled := time.Since(start)
	time.Sleep(3 * time.Second) // and a little after
	p.stop()
	h.stop()

	fails, total := p.counts()
	t.Logf("figure: manager rollout (2 replicas) took %s: %d of %d new flows failed, %d of %d intercepted requests missed the laptop",
		rolled.Round(100*time.Millisecond), fails, total, len(h.misses), h.total)
	for _, r := range p.snapshot() {
		if r.err != nil {
			t.Errorf("a flow begun at +%s failed: %v", r.began.Sub(start).Round(time.Millisecond), r.err)
		}
	}
	for _, m := range h.misses {
		t.Errorf("an intercepted request at +%s missed the laptop: %s", m.at.Sub(start).Round(time.Millisecond), m.got)
	}
	if total < 20 || h.total < 40 {
		t.Errorf("too few flows (%d) or requests (%d) during the rollout to tell", total, h.total)
	}
	st := sessionStatus(t, l)
	if st.State != "connected" || st.Reconnects != before.Reconnects || st.Moves <= before.Moves {
		t.Errorf("tp status after the rollout: %s, %d reconnections (before %d), %d moves (before %d): a planned move is no loss, and is counted",
			st.State, st.Reconnects, before.Reconnects, st.Moves, before.Moves)
	}
	if !strings.Contains(l.DaemonLog(t), "manager pod is stopping; moving to another") {
		t.Errorf("the daemon's log does not tell the move")
	}
	// The claim moved with the intercept to a new pod; leaving removes it.
	claimOn(t, cs, managerPods(t, cs))
	l.MustTP(t, time.Minute, "leave", "web-app-http")
	waitFor(t, 15*time.Second, "the claim gone after tp leave", func() error {
		if n := len(claims(t, cs)); n != 0 {
			return fmt.Errorf("%d claims", n)
		}
		return nil
	})
}

func claims(t *testing.T, cs kubernetes.Interface) []coordinationv1.Lease {
	t.Helper()
	list, err := cs.CoordinationV1().Leases(deploy.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: manager.ClaimLabel})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// claimOn waits for the one claim to name one of pods.
func claimOn(t *testing.T, cs kubernetes.Interface, pods []string) {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("the intercept's claim on one of %v", pods), func() error {
		cl := claims(t, cs)
		if len(cl) != 1 {
			return fmt.Errorf("%d claims", len(cl))
		}
		for _, p := range pods {
			if strings.Contains(cl[0].Annotations["tp.dev/claim"], `"pod":"`+p+`"`) {
				return nil
			}
		}
		return fmt.Errorf("claim %v", cl[0].Annotations)
	})
}

type miss struct {
	at  time.Time
	got string
}

// hammer sends the intercepted Service a GET every 50 ms from the node, as another pod
// would, and keeps the answers that did not come from the laptop.
type hammer struct {
	quit   chan struct{}
	done   sync.WaitGroup
	total  int
	misses []miss
}

func startHammer(ip string) *hammer {
	h := &hammer{quit: make(chan struct{})}
	h.done.Go(func() {
		for {
			select {
			case <-h.quit:
				return
			case <-time.After(50 * time.Millisecond):
			}
			at := time.Now()
			got := hostGet(ip, "/probe")
			h.total++
			if !strings.HasPrefix(got, "laptop /probe") {
				h.misses = append(h.misses, miss{at, got})
			}
		}
	})
	return h
}

func (h *hammer) stop() {
	close(h.quit)
	h.done.Wait()
}

// managerPods are the ready manager pods that are not stopping.
func managerPods(t *testing.T, cs kubernetes.Interface) []string {
	t.Helper()
	pods, err := cs.CoreV1().Pods(deploy.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: deploy.ManagerLabelSelector})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && podIsReady(&p) {
			out = append(out, p.Name)
		}
	}
	return out
}

func podLog(t *testing.T, cs kubernetes.Interface, pod string) string {
	t.Helper()
	b, err := cs.CoreV1().Pods(deploy.DefaultNamespace).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("logs of %s: %v", pod, err)
	}
	return string(b)
}
