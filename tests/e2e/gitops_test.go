//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/tests/kit"
)

// TestGitOps holds intercepts while a GitOps controller's self-heal applies the
// workloads' manifests from git again, in each way such a controller does (client-side
// apply, server-side apply with forced ownership, replace) and with new revisions that
// roll the workload: the intercept keeps delivering with no user action, since tp's
// agent lives in no template a controller could revert. What tp must change in the
// cluster (a numeric targetPort) is reported when reverted, as are pods started while the
// manager was down. Uninstall leaves the workloads as git has them.
func TestGitOps(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-gitops")
	l := kit.NewLaptop(t)
	// What "before tp install" means: no tp in the cluster at all.
	l.TPRun(3*time.Minute, "uninstall")
	admissionBefore := admissionObjects(t, cs)

	dir := t.TempDir()
	manifest := func(rev string) string {
		path := filepath.Join(dir, "rev"+rev+".yaml")
		text := gitopsManifest(ns, "web", rev, false) + "---\n" + gitopsManifest(ns, "num", rev, true)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	rollout := func(t *testing.T, name string) {
		t.Helper()
		kubectl(t, "rollout", "status", "-n", ns, "deployment/"+name, "--timeout=120s")
	}
	kubectl(t, "apply", "-f", manifest("1"))
	rollout(t, "web")
	rollout(t, "num")
	svcIP := func(name string) string {
		s, err := cs.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s.Spec.ClusterIP
	}
	web, num := svcIP("web"), svcIP("num")
	eventually := func(t *testing.T, within time.Duration, ip, path, want string) time.Duration {
		t.Helper()
		return answersWithin(t, within, "", ip, path, want)
	}
	listSays := func(t *testing.T, within time.Duration, wants ...string) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			r := l.TPRun(30*time.Second, "list", "--namespace", ns)
			missing := ""
			for _, w := range wants {
				if !strings.Contains(r.Stdout, w) {
					missing = w
				}
			}
			if r.Err == nil && missing == "" {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("after %s tp list does not say %q:\n%s%s", within, missing, r.Stdout, r.Stderr)
			}
			time.Sleep(time.Second)
		}
	}

	l.MustTP(t, 3*time.Minute, "install")
	local := laptopServer(t, "laptop")
	l.MustTP(t, 3*time.Minute, "intercept", "web", "--namespace", ns, "--port", local+":80")
	eventually(t, 30*time.Second, web, "/first", "laptop /first")
	gitopsTemplateClean(t, cs, ns, "web", true)

	for _, step := range []struct {
		name string
		rev  string
		args []string
	}{
		{"ClientSideApply", "1", []string{"apply"}},
		{"ServerSideApply", "2", []string{"apply", "--server-side", "--force-conflicts", "--field-manager=gitops"}},
		{"Replace", "3", []string{"replace"}},
	} {
		t.Run(step.name, func(t *testing.T) {
			kubectl(t, append(step.args, "-f", manifest(step.rev))...)
			rollout(t, "web")
			took := eventually(t, 30*time.Second, web, "/"+step.name, "laptop /"+step.name)
			t.Logf("%s of revision %s: requests reach the laptop %s after the rollout", step.name, step.rev, took)
			gitopsTemplateClean(t, cs, ns, "web", true)
			for _, p := range livePods(t, cs, ns, "web") {
				if !podHasAgent(&p) {
					t.Errorf("pod %s runs without the agent", p.Name)
				}
			}
		})
	}

	t.Run("NumericTargetPortRevertIsReported", func(t *testing.T) {
		// Held by a command, which hears of the problem on its stderr.
		held := make(chan kit.Result, 1)
		go func() {
			held <- l.TPRun(2*time.Minute, "intercept", "num", "--namespace", ns, "--port", local+":80", "--", "sleep", "20")
		}()
		eventually(t, 60*time.Second, num, "/num", "laptop /num")
		// The self-heal puts the Service's targetPort back to the number git has.
		kubectl(t, "apply", "--server-side", "--force-conflicts", "--field-manager=gitops", "-f", manifest("3"))
		reverted := fmt.Sprintf("targets %d again", kit.HTTPPort)
		took := listSays(t, 10*time.Second, "num", reverted)
		t.Logf("tp list reported the reverted targetPort %s after the apply", took)
		r := <-held
		if r.Err != nil || !strings.Contains(r.Stderr, "tp: intercept num-") || !strings.Contains(r.Stderr, reverted) {
			t.Errorf("tp intercept -- CMD did not say the targetPort was reverted: %v\n%s", r.Err, r.Stderr)
		}
		// tp intercept again puts it back.
		l.MustTP(t, 3*time.Minute, "intercept", "num", "--namespace", ns, "--port", local+":80")
		eventually(t, 30*time.Second, num, "/num-again", "laptop /num-again")
	})

	t.Run("ManagerDownWhilePodsAreCreated", func(t *testing.T) {
		scaleManager(t, cs, 0)
		waitFor(t, 60*time.Second, "the manager's pods gone", func() error {
			pods, err := cs.CoreV1().Pods("tp-system").List(context.Background(), metav1.ListOptions{})
			if err != nil || len(pods.Items) > 0 {
				return fmt.Errorf("%d pods (%v)", len(pods.Items), err)
			}
			return nil
		})
		// A new revision rolls out while no manager can admit its pods: they still start.
		kubectl(t, "apply", "--server-side", "--force-conflicts", "--field-manager=gitops", "-f", manifest("4"))
		rollout(t, "web")
		var bare []string
		for _, p := range livePods(t, cs, ns, "web") {
			if !podHasAgent(&p) {
				bare = append(bare, p.Name)
			}
		}
		if len(bare) == 0 {
			t.Fatal("pods created while the manager was down got the agent: the test proves nothing")
		}
		scaleManager(t, cs, 1)
		took := listSays(t, 90*time.Second, append([]string{"without tp's agent"}, bare...)...)
		t.Logf("tp list named the pods without the agent %s after the manager was scaled up", took)
		// The next rollout gets the agent.
		kubectl(t, "apply", "--server-side", "--force-conflicts", "--field-manager=gitops", "-f", manifest("5"))
		rollout(t, "web")
		eventually(t, 30*time.Second, web, "/after-manager", "laptop /after-manager")
		for _, p := range livePods(t, cs, ns, "web") {
			if !podHasAgent(&p) {
				t.Errorf("pod %s of the next rollout runs without the agent", p.Name)
			}
		}
	})

	t.Run("UninstallLeavesWhatGitHas", func(t *testing.T) {
		l.TPRun(30*time.Second, "quit", "--all")
		l.MustTP(t, 3*time.Minute, "uninstall")
		for _, name := range []string{"web", "num"} {
			gitopsTemplateClean(t, cs, ns, name, false)
			rollout(t, name)
			for _, p := range livePods(t, cs, ns, name) {
				if podHasAgent(&p) {
					t.Errorf("pod %s of %s still runs the agent after uninstall", p.Name, name)
				}
			}
		}
		svc, err := cs.CoreV1().Services(ns).Get(context.Background(), "num", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if tp := svc.Spec.Ports[0].TargetPort; tp.IntValue() != kit.HTTPPort {
			t.Errorf("Service num targets %s after uninstall, git has %d", tp.String(), kit.HTTPPort)
		}
		leases, err := cs.CoordinationV1().Leases(ns).List(context.Background(), metav1.ListOptions{LabelSelector: intercept.RecordLabel})
		if err != nil || len(leases.Items) > 0 {
			t.Errorf("agent records left after uninstall: %d (%v)", len(leases.Items), err)
		}
		if after := admissionObjects(t, cs); !slices.Equal(after, admissionBefore) {
			t.Errorf("admission configuration after uninstall:\n%v\nbefore install:\n%v", after, admissionBefore)
		}
		eventually(t, 60*time.Second, web, "/end", "pod=")
	})
}

// gitopsManifest is a workload as its git repository has it: a Deployment of the test
// workload at revision rev (an environment variable, so each revision rolls it out) and
// its Service, whose targetPort names the port or, numeric, gives its number.
func gitopsManifest(ns, name, rev string, numeric bool) string {
	target := "http"
	if numeric {
		target = fmt.Sprint(kit.HTTPPort)
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  replicas: 1
  selector:
    matchLabels:
      app: %[1]s
  template:
    metadata:
      labels:
        app: %[1]s
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: workload
        image: %[3]s
        imagePullPolicy: Never
        args: ["-http=:%[4]d"]
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: REVISION
          value: "%[5]s"
        ports:
        - name: http
          containerPort: %[4]d
        readinessProbe:
          httpGet:
            path: /ready
            port: http
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  selector:
    app: %[1]s
  ports:
  - name: http
    port: 80
    targetPort: %[6]s
`, name, ns, kit.WorkloadImage, kit.HTTPPort, rev, target)
}

// kubectl runs the cluster's own kubectl as its admin: the GitOps controller of this test.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	bin := os.Getenv("TP_E2E_TPCLUSTER")
	if bin == "" {
		t.Fatal("TP_E2E_TPCLUSTER is not set: make e2e sets it to bin/tpcluster, whose kubectl acts as the GitOps controller")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"--repo", repo, "kubectl", "--"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// gitopsTemplateClean checks that the workload has nothing of tp's where git's manifest
// speaks: no agent container and no duplicated port name in the template, and (after
// uninstall, marked false) no tp.dev key at all.
func gitopsTemplateClean(t *testing.T, cs kubernetes.Interface, ns, name string, intercepting bool) {
	t.Helper()
	d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == agentspec.Container {
			t.Errorf("%s: the pod template has tp's agent container", name)
		}
		for _, p := range c.Ports {
			if p.Name != "" && seen[p.Name] {
				t.Errorf("%s: two ports of the template are named %q", name, p.Name)
			}
			seen[p.Name] = true
		}
	}
	if intercepting {
		return
	}
	for _, m := range []map[string]string{d.Annotations, d.Labels, d.Spec.Template.Annotations, d.Spec.Template.Labels} {
		for k := range m {
			if strings.Contains(k, "tp.dev/") {
				t.Errorf("%s keeps %s after uninstall", name, k)
			}
		}
	}
}

func livePods(t *testing.T, cs kubernetes.Interface, ns, app string) []corev1.Pod {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	var live []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			live = append(live, p)
		}
	}
	return live
}

func podHasAgent(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		if c.Name == agentspec.Container {
			return true
		}
	}
	return false
}

// admissionObjects names the cluster's admission configuration: webhooks, admission
// policies and their bindings.
func admissionObjects(t *testing.T, cs kubernetes.Interface) []string {
	t.Helper()
	ctx := context.Background()
	adm := cs.AdmissionregistrationV1()
	var names []string
	mw, err := adm.MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range mw.Items {
		names = append(names, "mutating/"+o.Name+"@"+o.ResourceVersion)
	}
	vw, err := adm.ValidatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range vw.Items {
		names = append(names, "validating/"+o.Name+"@"+o.ResourceVersion)
	}
	vp, err := adm.ValidatingAdmissionPolicies().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range vp.Items {
		names = append(names, "policy/"+o.Name+"@"+o.ResourceVersion)
	}
	vb, err := adm.ValidatingAdmissionPolicyBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range vb.Items {
		names = append(names, "binding/"+o.Name+"@"+o.ResourceVersion)
	}
	slices.Sort(names)
	return names
}
