//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/deploy/pki"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
	"github.com/tpdev/tp/tests/kit"
)

// TestIntercept brings a workload's Service traffic, as it arrives in the cluster (here:
// from the node, through kube-proxy), to a server on the laptop, and back to the pods after
// tp leave, the client's death, or the end of the intercept's command.
func TestIntercept(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-intercept")
	w := deployWorkload(t, cs, ns, "web-app") // Service targetPort "http" (named)
	num := deployWorkload(t, cs, ns, "numeric")
	numericTargetPort(t, cs, ns, "numeric")
	originals := map[string]corev1.PodTemplateSpec{}
	for _, name := range []string{"web-app", "numeric"} {
		d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		originals[name] = d.Spec.Template
	}
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")

	// The laptop's server.
	local := laptopServer(t, "laptop")

	get := func(svc kit.Workload, path string) string { return hostGet(svc.ClusterIP, path) }
	eventually := func(t *testing.T, within time.Duration, what string, svc kit.Workload, path, want string) time.Duration {
		t.Helper()
		return answersWithin(t, within, what, svc.ClusterIP, path, want)
	}
	podUIDs := func(app string) []string {
		pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			t.Fatal(err)
		}
		var uids []string
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				uids = append(uids, string(p.UID))
			}
		}
		return uids
	}

	t.Run("DryRunChangesNothing", func(t *testing.T) {
		r := l.MustTP(t, time.Minute, "intercept", "web-app", "--namespace", ns, "--port", local+":80", "--dry-run")
		if !strings.Contains(r.Stdout, "+ ") || !strings.Contains(r.Stdout, agentspec.Container) {
			t.Errorf("dry run printed no change adding the agent:\n%s", r.Stdout)
		}
		d, _ := cs.AppsV1().Deployments(ns).Get(context.Background(), "web-app", metav1.GetOptions{})
		if !reflect.DeepEqual(d.Spec.Template, originals["web-app"]) {
			t.Error("--dry-run changed the workload")
		}
	})

	t.Run("NamedTargetPort", func(t *testing.T) {
		l.MustTP(t, 3*time.Minute, "intercept", "web-app", "--namespace", ns, "--port", local+":80")
		// tp intercept returns once the manager's probe went through the Service to the
		// agents: kube-proxy may lag the rollout (on a loaded node its rules trail the
		// EndpointSlices by seconds), and the first request after it returns must not fail.
		for i := range 10 {
			if got := get(w, "/first"); !strings.HasPrefix(got, "laptop /first") {
				t.Fatalf("GET %d of 10 right after tp intercept returned answers %q", i+1, got)
			}
		}
		// The agent verifies the manager by tp's CA bundle, as tp install keeps it.
		bundle, err := deploy.AgentCA(context.Background(), restConfig(t, nil), deploy.DefaultNamespace)
		if err != nil {
			t.Fatal(err)
		}
		// The agent is added to the pods at admission; the template keeps none.
		agents := 0
		for _, p := range livePods(t, cs, ns, "web-app") {
			for _, c := range p.Spec.Containers {
				if c.Name != agentspec.Container {
					continue
				}
				agents++
				for _, e := range c.Env {
					if e.Name == agentspec.CAEnv && e.Value != string(bundle) {
						t.Errorf("the agent's %s is not tp's CA bundle:\n%s", e.Name, e.Value)
					}
					if e.Name == agentspec.ManagerEnv && e.Value != fmt.Sprintf("tp-manager.%s.svc:%d", deploy.DefaultNamespace, deploy.ClusterPort) {
						t.Errorf("the agent dials %s", e.Value)
					}
				}
			}
		}
		if agents == 0 {
			t.Error("no pod of web-app runs the agent")
		}
		gitopsTemplateClean(t, cs, ns, "web-app", true)
		r := l.MustTP(t, 30*time.Second, "list", "--namespace", ns)
		if !strings.Contains(r.Stdout, "web-app-http") || !strings.Contains(r.Stdout, "1 ready") {
			t.Errorf("tp list:\n%s", r.Stdout)
		}
		before := podUIDs("web-app")
		l.MustTP(t, 30*time.Second, "leave", "web-app-http")
		took := eventually(t, 5*time.Second, "left", w, "/after-leave", "pod=")
		t.Logf("the pods answer again %s after tp leave", took)
		// A second cycle restarts no pod: the agent stays and only switches.
		l.MustTP(t, time.Minute, "intercept", "web-app", "--namespace", ns, "--port", local+":80")
		took = eventually(t, 2*time.Second, "intercepted again", w, "/second", "laptop /second")
		t.Logf("a second intercept took %s, without a rollout", took)
		l.MustTP(t, 30*time.Second, "leave", "web-app-http")
		eventually(t, 5*time.Second, "left again", w, "/x", "pod=")
		if after := podUIDs("web-app"); !reflect.DeepEqual(before, after) {
			t.Errorf("pods changed over an intercept/leave cycle: %v -> %v", before, after)
		}
		assertHealthy(t, cs, ns, "web-app")
	})

	t.Run("NumericTargetPort", func(t *testing.T) {
		l.MustTP(t, 3*time.Minute, "intercept", "numeric", "--namespace", ns, "--port", local)
		eventually(t, 30*time.Second, "intercepted", num, "/numeric", "laptop /numeric")
		l.MustTP(t, 30*time.Second, "leave", "numeric-"+numericPortName(t, cs, ns, "numeric"))
		eventually(t, 5*time.Second, "left", num, "/x", "pod=")
	})

	t.Run("SecondClientIsTurnedAway", func(t *testing.T) {
		l.MustTP(t, time.Minute, "intercept", "web-app", "--namespace", ns, "--port", local+":80")
		l2 := kit.NewLaptop(t)
		r := l2.TPRun(time.Minute, "intercept", "web-app", "--namespace", ns, "--port", local+":80", "--", "true")
		if r.Err == nil || !strings.Contains(r.Stderr, "already intercepted by") {
			t.Errorf("a second client's intercept of the same port: %v %s", r.Err, r.Stderr)
		}
		l.MustTP(t, 30*time.Second, "leave", "web-app-http")
	})

	t.Run("ClientKilled", func(t *testing.T) {
		l.MustTP(t, time.Minute, "intercept", "web-app", "--namespace", ns, "--port", local+":80")
		eventually(t, 10*time.Second, "intercepted", w, "/before-kill", "laptop /before-kill")
		pid := status(t, l, "default").PID
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		took := eventually(t, 15*time.Second, "after kill -9 of the client", w, "/after-kill", "pod=")
		t.Logf("the pods answered again %s after kill -9 of the client", took)
	})

	t.Run("CommandGetsTheRemoteEnvironment", func(t *testing.T) {
		during := make(chan time.Duration, 1)
		go func() {
			start := time.Now()
			for time.Since(start) < 60*time.Second {
				if strings.HasPrefix(get(w, "/during-cmd"), "laptop /during-cmd") {
					during <- time.Since(start)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
			during <- -1
		}()
		r := l.TPRun(3*time.Minute, "intercept", "web-app", "--namespace", ns, "--port", local+":80", "--",
			"sh", "-c", `echo POD_NAME=$POD_NAME; echo "NS=$(cat "$TP_ROOT/var/run/secrets/kubernetes.io/serviceaccount/namespace")"; sleep 5; exit 7`)
		if r.Code != 7 || !strings.Contains(r.Stdout, "POD_NAME=web-app-") || !strings.Contains(r.Stdout, "NS="+ns+"\n") {
			t.Fatalf("tp intercept -- CMD: exit %d (%v)\n%s\n%s", r.Code, r.Err, r.Stdout, r.Stderr)
		}
		if d := <-during; d < 0 {
			t.Error("requests never reached the laptop while the command ran")
		}
		// The command ended, so did the intercept.
		eventually(t, 5*time.Second, "after the command", w, "/after-cmd", "pod=")
	})

	for _, vif := range []string{"--vif=on", "--vif=off"} {
		t.Run("TpRunIntercept/"+vif, func(t *testing.T) {
			netcheck := l.Copy(t, netcheckPath(t))
			during := make(chan string, 1)
			go func() {
				start := time.Now()
				got := ""
				for time.Since(start) < 60*time.Second {
					if got = get(w, "/in-run"); strings.HasPrefix(got, "served /in-run") {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
				during <- got
			}()
			r := l.TPRun(3*time.Minute, "run", "--namespace", ns, vif, "--intercept", "web-app", "--port", "18081:80", "--",
				netcheck, "serve", "18081", "6")
			if r.Err != nil || !strings.Contains(r.Stdout, "POD_NAME=web-app-") {
				t.Fatalf("tp run --intercept: %v\n%s\n%s", r.Err, r.Stdout, r.Stderr)
			}
			if got := <-during; !strings.HasPrefix(got, "served /in-run") {
				t.Errorf("requests to the Service never reached the command tp run ran: last answer %q", got)
			}
			eventually(t, 5*time.Second, "after tp run", w, "/after-run", "pod=")
		})
	}

	t.Run("ForgedAgentsCannotRegister", func(t *testing.T) {
		mgr, mgrTLS := managerAddr(t, cs), managerTLS(t, deploy.DefaultNamespace)
		bare := bareAgentPod(t, cs, ns)                 // has a tp-agent container but no owning workload
		plain := someWorkloadPod(t, cs, ns, "no-agent") // owned by a workload, but no agent in it
		for name, c := range map[string]struct {
			token string
			pod   *corev1.Pod
		}{
			"no token":              {"", bare},
			"wrong audience":        {podToken(t, cs, ns, bare, "https://kubernetes.default.svc"), bare},
			"pod no workload owns":  {podToken(t, cs, ns, bare, agentspec.Audience), bare},
			"not a token":           {"eyJhbGciOiJSUzI1NiJ9.e30.c2ln", bare},
			"pod without the agent": {podToken(t, cs, ns, plain, agentspec.Audience), plain},
			"another pod's token":   {podToken(t, cs, ns, plain, agentspec.Audience), bare},
		} {
			err := agentWatch(mgr, mgrTLS, c.token, ns, c.pod.Name)
			if code := grpcstatus.Code(err); code != codes.Unauthenticated && code != codes.PermissionDenied {
				t.Errorf("%s: Watch answered %v, want it refused", name, err)
			}
		}
	})

	t.Run("UninstallRestoresEveryWorkload", func(t *testing.T) {
		l.TPRun(30*time.Second, "quit", "--all")
		l.MustTP(t, 3*time.Minute, "uninstall")
		for name, orig := range originals {
			d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.Spec.Template, orig) {
				t.Errorf("%s: the pod template after uninstall differs from the original:\n%v\nwant\n%v", name, d.Spec.Template, orig)
			}
			for k := range d.Annotations {
				if strings.Contains(k, "tp.dev") {
					t.Errorf("%s keeps annotation %s", name, k)
				}
			}
			for k := range d.Labels {
				if strings.Contains(k, "tp.dev") {
					t.Errorf("%s keeps label %s", name, k)
				}
			}
		}
		svc, _ := cs.CoreV1().Services(ns).Get(context.Background(), "numeric", metav1.GetOptions{})
		if svc.Spec.Ports[0].TargetPort != intstr.FromInt32(kit.HTTPPort) {
			t.Errorf("the numeric Service's targetPort after uninstall: %v", svc.Spec.Ports[0].TargetPort)
		}
		eventually(t, 60*time.Second, "after uninstall", w, "/end", "pod=")
	})
}

// answersWithin waits until a GET of path from the node (hostGet) answers with want,
// within; it returns how long that took.
func answersWithin(t *testing.T, within time.Duration, what, ip, path, want string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := hostGet(ip, path)
		if strings.HasPrefix(got, want) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			kit.PrintClusterLogs(t)
			t.Fatalf("%s: after %s GET %s still answers %q, want %q", what, within, path, got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// numericTargetPort makes the workload's Service target its HTTP port by number.
func numericTargetPort(t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	svc, err := cs.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Ports = svc.Spec.Ports[:1] // http only
	svc.Spec.Ports[0].TargetPort = intstr.FromInt32(kit.HTTPPort)
	if _, err := cs.CoreV1().Services(ns).Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// numericPortName is the port name tp gave the numeric target (the intercept is named after it).
func numericPortName(t *testing.T, cs kubernetes.Interface, ns, service string) string {
	t.Helper()
	svc, err := cs.CoreV1().Services(ns).Get(context.Background(), service, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc.Spec.Ports[0].TargetPort.String()
}

func assertHealthy(t *testing.T, cs kubernetes.Interface, ns, app string) {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue // a pod of the template before the agent, on its way out
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.RestartCount > 0 || !c.Ready {
				t.Errorf("pod %s container %s: ready %v, restarts %d (probes must keep passing)", p.Name, c.Name, c.Ready, c.RestartCount)
			}
		}
	}
}

func managerAddr(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	svc, err := cs.CoreV1().Services(deploy.DefaultNamespace).Get(context.Background(), deploy.ManagerName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(deploy.ClusterPort))
}

// managerTLS is an agent's TLS configuration for the manager installed in ns: tp's CA
// bundle as tp intercept reads it, and the Service's name.
func managerTLS(t *testing.T, ns string) *tls.Config {
	t.Helper()
	bundle, err := deploy.AgentCA(context.Background(), restConfig(t, nil), ns)
	if err != nil {
		t.Fatalf("tp's CA bundle: %v", err)
	}
	roots, err := pki.Pool(bundle)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: roots, ServerName: deploy.ManagerServerNames(ns)[0], MinVersion: tls.VersionTLS13}
}

// agentWatch calls the manager's agent API at addr as an agent would, over TLS with
// config, with token.
func agentWatch(addr string, config *tls.Config, token, ns, pod string) error {
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(config)))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	stream, err := tunnelpb.NewAgentsClient(cc).Watch(ctx, &tunnelpb.AgentHello{Pod: pod, Namespace: ns})
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	if err == nil {
		return errors.New("registered")
	}
	return err
}

// bareAgentPod runs a pod with a container named like tp's agent, owned by nothing.
func bareAgentPod(t *testing.T, cs kubernetes.Interface, ns string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "forged-agent", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: agentspec.Container, Image: kit.WorkloadImage, ImagePullPolicy: corev1.PullNever, Args: []string{"-http=:8080"},
		}}},
	}
	created, err := cs.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return created
}

// someWorkloadPod returns a pod of a workload (an owner) that has no agent.
func someWorkloadPod(t *testing.T, cs kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	deployWorkload(t, cs, ns, name)
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("pods of %s: %v", name, err)
	}
	return &pods.Items[0]
}

// podToken mints a service-account token bound to pod, for audience.
func podToken(t *testing.T, cs kubernetes.Interface, ns string, pod *corev1.Pod, audience string) string {
	t.Helper()
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{
			Audiences:      []string{audience},
			BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func netcheckPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("TP_E2E_NETCHECK")
	if p == "" {
		t.Fatal("TP_E2E_NETCHECK is not set: run the e2e tests with make e2e")
	}
	return p
}
