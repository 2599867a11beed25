//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/tests/flood"
	"github.com/tpdev/tp/tests/kit"
)

// TestAgentFlood has a pod in the cluster register as a traffic agent 2,000 times in 10 s
// with tokens no agent has (garbage, JWTs with forged signatures, reused and distinct),
// and checks that meanwhile a new real agent registers, an intercept starts within 5 s,
// none of the flood registers, and the manager spends fewer than 50 TokenReviews on it.
func TestAgentFlood(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-agents")
	web := deployWorkload(t, cs, ns, "web-app")
	second := deployWorkload(t, cs, ns, "second")
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")
	local := laptopServer(t, "laptop")
	get := func(w kit.Workload, path string) string {
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
		resp, err := c.Get("http://" + w.ClusterIP + path)
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	eventually := func(t *testing.T, since time.Time, within time.Duration, what string, w kit.Workload, path, want string) time.Duration {
		t.Helper()
		for {
			got := get(w, path)
			if strings.HasPrefix(got, want) {
				return time.Since(since)
			}
			if time.Since(since) > within {
				t.Fatalf("%s: after %s GET %s still answers %q, want %q", what, within, path, got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Both workloads get their agents before the flood, so what is timed during it is the
	// manager, not a rollout.
	for _, w := range []kit.Workload{web, second} {
		l.MustTP(t, 3*time.Minute, "intercept", w.Name, "--namespace", ns, "--port", local+":80")
		eventually(t, time.Now(), 60*time.Second, "intercepted before the flood", w, "/warm", "laptop /warm")
		l.MustTP(t, 30*time.Second, "leave", w.Name+"-http")
		eventually(t, time.Now(), 10*time.Second, "left before the flood", w, "/back", "pod=")
	}

	managerPod := managerPodName(t, cs) // the one left after the install's rollout
	mgr := managerAddr(t, cs)
	restartsBefore := restartCount(t, cs, deploy.DefaultNamespace, managerPod)
	scheme, before := verifierStats(t, mgr)
	t.Logf("manager stats before the flood (%s): %s", scheme, before.line)

	webPodsBefore := podNames(t, cs, ns, "web-app")
	floodStart := startFlood(t, cs, ns, mgr, scheme == "https")

	// A new real agent during the flood: a second pod of web-app, with a token never seen.
	scaleDeployment(t, cs, ns, "web-app", 2)
	// An intercept during the flood.
	start := time.Now()
	l.MustTP(t, time.Minute, "intercept", second.Name, "--namespace", ns, "--port", local+":80")
	took := eventually(t, start, 5*time.Second, "intercepted during the flood", second, "/during-flood", "laptop /during-flood")
	t.Logf("during the flood, requests reached the laptop %s after tp intercept started", took.Round(time.Millisecond))

	var newPod string
	waitFor(t, 60*time.Second, "the new web-app pod", func() error {
		for p := range podNames(t, cs, ns, "web-app") {
			if !webPodsBefore[p] {
				newPod = p
				return nil
			}
		}
		return fmt.Errorf("no new pod yet")
	})
	var registered time.Time
	waitFor(t, 60*time.Second, "the new agent's registration in the manager's log", func() error {
		var err error
		registered, err = agentRegisteredAt(cs, managerPod, ns+"/"+newPod)
		return err
	})
	started := agentStartedAt(t, cs, ns, newPod)

	res := floodResult(t, cs, ns)
	floodEnd := floodStart.Add(time.Duration(res.ElapsedMS) * time.Millisecond)
	_, after := verifierStats(t, mgr)
	reviews := after.reviews - before.reviews
	t.Logf("flood: %d registrations in %d ms, answers %v, kinds %v, registered %d", res.Sent, res.ElapsedMS, res.Codes, res.Kinds, res.Registered)
	t.Logf("manager stats after the flood: %s (%d TokenReviews during it)", after.line, reviews)
	t.Logf("new agent %s: container started %s, registered %s (flood %s to %s)", newPod,
		started.Format(time.TimeOnly), registered.Format("15:04:05.000"), floodStart.Format("15:04:05.000"), floodEnd.Format("15:04:05.000"))

	if res.Sent != 2000 || res.ElapsedMS > 15000 {
		t.Errorf("the flood sent %d registrations in %d ms, want 2000 in about 10 s", res.Sent, res.ElapsedMS)
	}
	if res.Registered != 0 {
		t.Errorf("%d of the flood's registrations were taken for an agent's", res.Registered)
	}
	if answered := res.Codes["Refused"] + res.Codes["Busy"]; answered < res.Sent*95/100 || res.Codes["Refused"] < res.Sent*45/100 {
		t.Errorf("the manager refused only %d of %d forged registrations (answers %v, first error %q)", answered, res.Sent, res.Codes, res.FirstError)
	}
	if reviews >= 50 {
		t.Errorf("the manager made %d TokenReviews during the flood, want fewer than 50", reviews)
	}
	if !registered.Before(floodEnd) {
		t.Errorf("the new agent registered at %s, after the flood ended (%s): the test proved nothing about it", registered.Format("15:04:05.000"), floodEnd.Format("15:04:05.000"))
	}
	// The container's start is known to the second only.
	if d := registered.Sub(started); d > 6*time.Second {
		t.Errorf("the new agent registered %s after its container started, want within 5 s", d.Round(time.Millisecond))
	}
	if r := restartCount(t, cs, deploy.DefaultNamespace, managerPod); r != restartsBefore {
		t.Errorf("the manager restarted %d times during the flood", r-restartsBefore)
	}
	l.MustTP(t, 30*time.Second, "leave", second.Name+"-http")
}

// startFlood runs `workload flood-agents` in a pod and returns when it says it started.
func startFlood(t *testing.T, cs kubernetes.Interface, ns, target string, useTLS bool) time.Time {
	t.Helper()
	args := []string{"flood-agents", "-target", target, "-n", "2000", "-duration", "10s", "-namespace", ns}
	if useTLS {
		args = append(args, "-tls")
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-flood", Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: new(int64(1)),
			Containers: []corev1.Container{{
				Name: "flood", Image: kit.WorkloadImage, ImagePullPolicy: corev1.PullNever, Args: args,
			}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("the flood's pod: %v", err)
	}
	var started time.Time
	waitFor(t, 60*time.Second, "the flood to start", func() error {
		out, err := podLogs(cs, ns, "agent-flood")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "flood started") {
			return fmt.Errorf("no word from the flood yet: %q", out)
		}
		started = time.Now()
		return nil
	})
	return started
}

func floodResult(t *testing.T, cs kubernetes.Interface, ns string) flood.Result {
	t.Helper()
	var res flood.Result
	waitFor(t, 60*time.Second, "the flood's result", func() error {
		out, err := podLogs(cs, ns, "agent-flood")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "{") {
				return json.Unmarshal([]byte(line), &res)
			}
		}
		return fmt.Errorf("no result yet: %q", out)
	})
	return res
}

func podLogs(cs kubernetes.Interface, ns, pod string) (string, error) {
	b, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(context.Background())
	return string(b), err
}

type stats struct {
	line    string
	reviews int64
}

var reviewsStat = regexp.MustCompile(`\breviews=(\d+)`)

// verifierStats reads the manager's /stats on its cluster port, in cleartext or, if the
// port speaks TLS, over TLS; it returns which worked.
func verifierStats(t *testing.T, addr string) (string, stats) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the test reads counters, nothing secret
	var errs []string
	for _, scheme := range []string{"http", "https"} {
		resp, err := c.Get(scheme + "://" + addr + "/stats")
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := reviewsStat.FindSubmatch(b)
		if resp.StatusCode != http.StatusOK || m == nil {
			errs = append(errs, fmt.Sprintf("%s: %s %q", scheme, resp.Status, b))
			continue
		}
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		return scheme, stats{line: strings.TrimSpace(string(b)), reviews: n}
	}
	t.Fatalf("the manager's /stats on %s has no review count: %s", addr, strings.Join(errs, "; "))
	return "", stats{}
}

// managerPodName is the manager's one pod, once the pod it replaced (draining) is gone.
func managerPodName(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	kit.WaitManagerPods(t, cs, 1)
	pods, err := cs.CoreV1().Pods(deploy.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: deploy.ManagerLabelSelector})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("manager pods: %v %d", err, len(pods.Items))
	}
	return pods.Items[0].Name
}

func restartCount(t *testing.T, cs kubernetes.Interface, ns, pod string) int32 {
	t.Helper()
	p, err := cs.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var n int32
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

func podNames(t *testing.T, cs kubernetes.Interface, ns, app string) map[string]bool {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			names[p.Name] = true
		}
	}
	return names
}

func scaleDeployment(t *testing.T, cs kubernetes.Interface, ns, name string, replicas int32) {
	t.Helper()
	s, err := cs.AppsV1().Deployments(ns).GetScale(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Replicas = replicas
	if _, err := cs.AppsV1().Deployments(ns).UpdateScale(context.Background(), name, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// agentRegisteredAt is when the manager logged the agent of pod (ns/name) registered.
func agentRegisteredAt(cs kubernetes.Interface, managerPod, pod string) (time.Time, error) {
	out, err := podLogs(cs, deploy.DefaultNamespace, managerPod)
	if err != nil {
		return time.Time{}, err
	}
	sc := bufio.NewScanner(bytes.NewBufferString(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `msg="agent registered"`) || !strings.Contains(line, " pod="+pod+" ") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		return time.Parse(time.RFC3339Nano, ts)
	}
	return time.Time{}, fmt.Errorf("no \"agent registered\" for %s", pod)
}

// agentStartedAt is when the agent container of pod started.
func agentStartedAt(t *testing.T, cs kubernetes.Interface, ns, pod string) time.Time {
	t.Helper()
	var at time.Time
	waitFor(t, 30*time.Second, "the agent container of "+pod+" to start", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.Name == "tp-agent" && c.State.Running != nil {
				at = c.State.Running.StartedAt.Time
				return nil
			}
		}
		return fmt.Errorf("not running: %s", podStates([]corev1.Pod{*p}))
	})
	return at
}
