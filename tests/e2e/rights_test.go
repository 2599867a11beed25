//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	coordv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/laptop/portforward"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
	"github.com/tpdev/tp/tests/kit"
)

// TestRoleSets gives two developers exactly the rights README lists (deploy's
// client-roles.yaml, bound as README says): with "connect" one can connect and proxy but not
// intercept; with "intercept" too, the other can intercept. Neither is a cluster admin. The
// manager decides, not the CLI: requests that skip the CLI (on the daemon's control socket,
// or straight to the manager's API through a port-forward) are refused by the manager with
// the missing right named, also in a namespace annotated tp.dev/intercept=deny.
func TestRoleSets(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-rights")
	w := deployWorkload(t, cs, ns, "web-app")
	admin := kit.NewLaptop(t)
	admin.MustTP(t, 3*time.Minute, "install")
	kit.ApplyClientRoles(t, cs)
	local := laptopServer(t, "laptop")
	ctx := context.Background()
	podsAnswer := func(what string) {
		t.Helper()
		waitFor(t, 10*time.Second, what, func() error {
			if got := hostGet(w.ClusterIP, "/back"); !strings.HasPrefix(got, "pod=") {
				return fmt.Errorf("GET answers %q", got)
			}
			return nil
		})
	}

	// With the intercept rights: the intercept works (and puts the agent in the workload),
	// and its grant names the ServiceAccount the API server knows, for tp list and kubectl.
	dev := developer(t, cs, ns, "dev-intercept", "tp-connect", "tp-intercept")
	devUser := "system:serviceaccount:" + ns + ":dev-intercept"
	dev.MustTP(t, 3*time.Minute, "intercept", "web-app", "--namespace", ns, "--port", local+":80")
	waitFor(t, 30*time.Second, "intercepted with the intercept rights", func() error {
		if got := hostGet(w.ClusterIP, "/dev"); got != "laptop /dev\n" {
			return fmt.Errorf("GET answers %q", got)
		}
		return nil
	})
	if r := dev.MustTP(t, 30*time.Second, "list", "--namespace", ns); !strings.Contains(r.Stdout, "web-app-http") || !strings.Contains(r.Stdout, devUser) {
		t.Errorf("tp list does not name the holder %s:\n%s%s", devUser, r.Stdout, r.Stderr)
	}
	lease, err := cs.CoordinationV1().Leases(ns).Get(ctx, grant.LeaseName("web-app-http"), metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != devUser {
		t.Fatalf("the intercept's grant: %v %+v", err, lease)
	}
	// A grant that names someone else than its writer is refused by the API server.
	devCS := kubernetes.NewForConfigOrDie(developerConfig(t, dev, nil))
	alice := "alice"
	forged := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "tp-forged", Labels: map[string]string{grant.Label: grant.Version}},
		Spec: coordv1.LeaseSpec{HolderIdentity: &alice}}
	if _, err := devCS.CoordinationV1().Leases(ns).Create(ctx, forged, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "must name the user who writes it") {
		t.Errorf("a grant naming another holder: %v, want the admission policy's refusal", err)
	}
	// The agent record that tp intercept wrote may be written only by who may update the
	// workload: Lease rights alone (which grants need) change no workload's pods.
	leaseRole := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "tp-e2e-leases-only"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "create", "update", "delete"}}}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, leaseRole, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoles().Delete(context.Background(), leaseRole.Name, metav1.DeleteOptions{})
	})
	leasesOnly := kubernetes.NewForConfigOrDie(developerConfig(t, developer(t, cs, ns, "dev-leases", "tp-e2e-leases-only"), nil))
	recordName := intercept.RecordName(intercept.Ref{Namespace: ns, Kind: intercept.Deployment, Name: "web-app"})
	record, err := leasesOnly.CoordinationV1().Leases(ns).Get(ctx, recordName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the agent record of web-app: %v", err)
	}
	record.Annotations[intercept.RecordAnnotation] = "{}"
	if _, err := leasesOnly.CoordinationV1().Leases(ns).Update(ctx, record, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "may update deployments/web-app") {
		t.Errorf("an agent record updated with Lease rights only: %v, want the admission policy's refusal", err)
	}
	if err := leasesOnly.CoordinationV1().Leases(ns).Delete(ctx, recordName, metav1.DeleteOptions{}); err == nil || !strings.Contains(err.Error(), "may update deployments/web-app") {
		t.Errorf("an agent record deleted with Lease rights only: %v, want the admission policy's refusal", err)
	}
	other := record.DeepCopy()
	other.ObjectMeta = metav1.ObjectMeta{Name: "tp-agent.statefulsets.db", Labels: record.Labels, Annotations: record.Annotations}
	if _, err := leasesOnly.CoordinationV1().Leases(ns).Create(ctx, other, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "may update statefulsets/db") {
		t.Errorf("an agent record created with Lease rights only: %v, want the admission policy's refusal", err)
	}
	dev.MustTP(t, 30*time.Second, "leave", "web-app-http")
	podsAnswer("the pods answer again")
	if _, err := cs.CoordinationV1().Leases(ns).Get(ctx, grant.LeaseName("web-app-http"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the grant stayed after tp leave: %v", err)
	}
	dev.MustTP(t, 30*time.Second, "quit") // the laptops share one network namespace, and port 1080

	// With the connect rights only.
	connectOnly := developer(t, cs, ns, "dev-connect", "tp-connect")
	r := connectOnly.MustTP(t, time.Minute, "connect", "--namespace", ns)
	t.Logf("connect with the connect rights: %s", strings.TrimSpace(r.Stderr))
	r = connectOnly.Curl(20*time.Second, "-x", "http://127.0.0.1:1080", "http://web-app/rights")
	// The pods are new ones since the intercept brought the agent in.
	if !strings.HasPrefix(r.Stdout, "pod=web-app-") || !strings.HasSuffix(r.Stdout, " path=/rights\n") {
		t.Errorf("proxy with the connect rights: %q %s, want a pod's answer", r.Stdout, r.Stderr)
	}
	before, err := cs.AppsV1().Deployments(ns).Get(ctx, "web-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r = connectOnly.TPRun(time.Minute, "intercept", "web-app", "--namespace", ns, "--port", local+":80")
	if r.Err == nil || !strings.Contains(r.Stderr, "deployments") {
		t.Errorf("intercept with the connect rights only: %v\n%s\nwant a refusal naming what is missing", r.Err, r.Stderr)
	}
	t.Logf("intercept with the connect rights only: %s", strings.TrimSpace(r.Stderr))
	// tp run --as: tp-intercept's rights give the workload's files, a fresh token of its
	// ServiceAccount among them; with the connect rights only, tp says which right is missing.
	asScript := `test -s "$TP_ROOT/var/run/secrets/kubernetes.io/serviceaccount/token" && echo has-token`
	if r := dev.TPRun(2*time.Minute, "run", "--namespace", ns, "--vif=off", "--as", "web-app", "--", "sh", "-c", asScript); r.Err != nil || !strings.Contains(r.Stdout, "has-token") {
		t.Errorf("tp run --as with the intercept rights: %v\n%s\n%s", r.Err, r.Stdout, r.Stderr)
	}
	r = connectOnly.TPRun(time.Minute, "run", "--namespace", ns, "--vif=off", "--as", "web-app", "--", "true")
	if r.Err == nil || r.Code != 2 || !strings.Contains(r.Stderr, "no permission to") || !strings.Contains(r.Stderr, "--clusterrole=tp-intercept") {
		t.Errorf("tp run --as with the connect rights only: %v\n%s\nwant a refusal naming the missing right", r.Err, r.Stderr)
	}
	t.Logf("tp run --as with the connect rights only: %s", strings.TrimSpace(r.Stderr))
	// The workload has the agent already: a request on the daemon's control socket skips
	// every check of the CLI and reaches the manager, which refuses it.
	spec := fmt.Sprintf(`{"name":"web-app-http","namespace":%q,"kind":"Deployment","workload":"web-app","port":"http","local":"127.0.0.1:%s"}`, ns, local)
	raw := func(l *kit.Laptop) string {
		sock := filepath.Join(l.Home, ".tp", "sessions", "default", "control.sock")
		r := l.Run(time.Minute, nil, "curl", "-sS", "--max-time", "50", "--unix-socket", sock, "-X", "POST", "-d", spec, "http://tp/intercepts")
		return r.Stdout + r.Stderr
	}
	if got := raw(connectOnly); !strings.Contains(got, "tp's manager refused") || !strings.Contains(got, "leases.coordination.k8s.io") {
		t.Errorf("an intercept on the control socket with the connect rights only: %s\nwant the manager's refusal naming the missing right", got)
	}
	// Straight to the manager's API, as a tp without any check of its own would: without a
	// grant, and with one guessed.
	cfg := developerConfig(t, connectOnly, laptopDial)
	for name, req := range map[string]*tunnelpb.InterceptRequest{
		"NoGrant":      {Name: "web-app-http", Namespace: ns, Kind: "Deployment", Workload: "web-app", Port: "http"},
		"GuessedGrant": {Name: "web-app-http", Namespace: ns, Kind: "Deployment", Workload: "web-app", Port: "http", Grant: grant.LeaseName("web-app-http"), Secret: "guess"},
	} {
		res := rawIntercept(t, cfg, req)
		if res.GetError() == "" || !strings.Contains(res.GetError(), "not authorized") || !strings.Contains(res.GetError(), "leases.coordination.k8s.io") {
			t.Errorf("%s: the manager answered %+v, want a refusal naming the missing right", name, res)
		}
	}
	for i := 0; i < 10; i++ {
		if got := hostGet(w.ClusterIP, "/refused"); !strings.HasPrefix(got, "pod=") {
			t.Fatalf("after refused intercepts GET answers %q: a request reached the laptop", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	after, _ := cs.AppsV1().Deployments(ns).Get(ctx, "web-app", metav1.GetOptions{})
	if after.Generation != before.Generation {
		t.Errorf("a refused intercept changed the Deployment (generation %d -> %d)", before.Generation, after.Generation)
	}
	connectOnly.MustTP(t, 30*time.Second, "quit")

	// With the connect rights and Kubernetes' own read-only "view" role in the namespace, tp
	// intercept itself gets past every read the CLI makes, and the manager refuses it.
	viewer := developer(t, cs, ns, "dev-view", "tp-connect", "view")
	r = viewer.TPRun(time.Minute, "intercept", "web-app", "--namespace", ns, "--port", local+":80")
	if r.Err == nil || !strings.Contains(r.Stderr, "tp's manager refused") || !strings.Contains(r.Stderr, "leases.coordination.k8s.io") {
		t.Errorf("tp intercept with the connect and view rights: %v\n%s\nwant the manager's refusal naming the missing right", r.Err, r.Stderr)
	}
	t.Logf("tp intercept with the connect and view rights: %s", strings.TrimSpace(r.Stderr))
	if got := hostGet(w.ClusterIP, "/viewer"); !strings.HasPrefix(got, "pod=") {
		t.Errorf("after a refused intercept GET answers %q: a request reached the laptop", got)
	}
	viewer.MustTP(t, 30*time.Second, "quit")

	// A namespace that denies intercepts: the manager refuses them, even to a developer with
	// the rights whose request skips the CLI's check.
	nsObj, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nsObj.Annotations == nil {
		nsObj.Annotations = map[string]string{}
	}
	nsObj.Annotations[grant.DenyAnnotation] = "deny"
	if _, err := cs.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	dev.MustTP(t, time.Minute, "connect", "--namespace", ns)
	if got := raw(dev); !strings.Contains(got, "tp's manager refused") || !strings.Contains(got, grant.DenyAnnotation+"=deny") {
		t.Errorf("an intercept in a denying namespace, on the control socket: %s\nwant the manager's refusal", got)
	}
	podsAnswer("the pods answer in a denying namespace")
}

// developerConfig is the REST config of a developer laptop's kubeconfig (its
// ServiceAccount token), dialing with dial.
func developerConfig(t *testing.T, l *kit.Laptop, dial func(ctx context.Context, network, address string) (net.Conn, error)) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", l.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dial = dial
	return cfg
}

// rawIntercept asks the manager's client API for an intercept through a port-forward made
// with cfg, as any program with the connect rights can, and returns its answer.
func rawIntercept(t *testing.T, cfg *rest.Config, req *tunnelpb.InterceptRequest) *tunnelpb.InterceptResult {
	t.Helper()
	fw, err := portforward.New(cfg, portforward.Auto)
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	pod := managerPod(t, clientset(t))
	cc, err := grpc.NewClient("passthrough:///manager", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(tunnel.Codec())),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return fw.DialPod(ctx, deploy.DefaultNamespace, pod, deploy.ClientPort)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := tunnelpb.NewInterceptsClient(cc).Session(ctx)
	if err != nil {
		t.Fatalf("intercept session: %v", err)
	}
	if err := st.Send(&tunnelpb.InterceptClientMsg{Kind: &tunnelpb.InterceptClientMsg_Create{Create: req}}); err != nil {
		t.Fatalf("intercept request: %v", err)
	}
	m, err := st.Recv()
	if err != nil {
		t.Fatalf("intercept answer: %v", err)
	}
	return m.GetResult()
}

// TestProxyCredentials: a proxy that listens beyond loopback asks every client for the
// credentials it was started with, over SOCKS5 and HTTP; without them tp refuses to start.
func TestProxyCredentials(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-creds")
	w := deployWorkload(t, cs, ns, "web-app")
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")

	r := l.TPRun(time.Minute, "connect", "--namespace", ns, "--listen", "0.0.0.0:1081")
	if r.Err == nil || !strings.Contains(r.Stderr, "reachable from other machines") || !strings.Contains(r.Stderr, "TP_PROXY_CREDENTIALS") {
		t.Fatalf("connect on 0.0.0.0 without credentials: %v %s", r.Err, r.Stderr)
	}
	const secret = "correct-horse"
	r = l.Run(time.Minute, []string{"TP_PROXY_CREDENTIALS=alice:" + secret}, l.TP, "connect", "--namespace", ns, "--listen", "0.0.0.0:1081")
	if r.Err != nil {
		t.Fatalf("connect with credentials: %v %s", r.Err, r.Stderr)
	}
	if strings.Contains(r.Stdout+r.Stderr, secret) {
		t.Errorf("tp connect printed the password:\n%s\n%s", r.Stdout, r.Stderr)
	}
	// Another machine: the host, through the laptop's address.
	proxy := net.JoinHostPort(l.Net.IP, "1081")
	want := fmt.Sprintf("pod=%s path=/c\n", w.Pod)
	curl := func(args ...string) (string, error) {
		out, err := execOut("curl", append([]string{"-sS", "--max-time", "20", "-w", "\n%{http_code}"}, args...)...)
		return out, err
	}
	for _, c := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"HTTPWithout", []string{"-x", "http://" + proxy, "http://web-app/c"}, false},
		{"HTTPWrongPassword", []string{"-x", "http://alice:wrong@" + proxy, "http://web-app/c"}, false},
		{"HTTPRight", []string{"-x", "http://alice:" + secret + "@" + proxy, "http://web-app/c"}, true},
		{"SOCKSWithout", []string{"-x", "socks5h://" + proxy, "http://web-app/c"}, false},
		{"SOCKSWrongUser", []string{"-x", "socks5h://bob:" + secret + "@" + proxy, "http://web-app/c"}, false},
		{"SOCKSRight", []string{"-x", "socks5h://alice:" + secret + "@" + proxy, "http://web-app/c"}, true},
	} {
		out, err := curl(c.args...)
		got := strings.HasPrefix(out, want) && strings.HasSuffix(out, "200")
		if got != c.ok {
			t.Errorf("%s: curl %v: %q %v, want success %v", c.name, c.args, out, err, c.ok)
		}
		if !c.ok && c.name == "HTTPWithout" && !strings.HasSuffix(out, "407") {
			t.Errorf("%s: %q, want 407 Proxy Authentication Required", c.name, out)
		}
	}
	// A machine that keeps guessing is turned away for a while, right password or not.
	for i := range 6 {
		if out, _ := curl("-x", fmt.Sprintf("http://alice:guess%d@%s", i, proxy), "http://web-app/c"); !strings.HasSuffix(out, "407") {
			t.Fatalf("wrong password %d: %q, want 407", i, out)
		}
	}
	out, _ := curl("-x", "http://alice:"+secret+"@"+proxy, "http://web-app/c")
	if !strings.HasSuffix(out, "429") || !strings.Contains(out, "too many wrong proxy passwords") {
		t.Errorf("the right password after 6 wrong ones: %q, want 429 saying why", out)
	}
	if out, _ := curl("-x", "socks5h://alice:"+secret+"@"+proxy, "http://web-app/c"); strings.HasPrefix(out, want) {
		t.Errorf("over SOCKS5 the guessing machine got in at once: %q", out)
	}
	time.Sleep(1100 * time.Millisecond) // the first lockout
	if out, _ := curl("-x", "http://alice:"+secret+"@"+proxy, "http://web-app/c"); !strings.HasPrefix(out, want) {
		t.Errorf("the right password after the lockout: %q", out)
	}

	// tp run through this connection: wrong credentials are said once, and nothing runs.
	marker := filepath.Join(l.Home, "ran")
	r = l.Run(time.Minute, []string{"TP_PROXY_CREDENTIALS=alice:wrong"}, l.TP, "run", "--namespace", ns, "--vif=off", "--", "touch", marker)
	if _, err := os.Stat(marker); r.Code != 2 || !strings.Contains(r.Stderr, "refused the proxy credentials from $TP_PROXY_CREDENTIALS") || err == nil {
		t.Errorf("tp run with wrong proxy credentials: exit %d, ran: %v, said %q; want exit 2 saying so, and no command run", r.Code, err == nil, r.Stderr)
	}
	r = l.Run(time.Minute, []string{"TP_PROXY_CREDENTIALS=alice:" + secret}, l.TP, "run", "--namespace", ns, "--vif=off", "--", "curl", "-sS", "--max-time", "20", "http://web-app/c")
	if r.Err != nil || r.Stdout != want {
		t.Errorf("tp run with the right proxy credentials: %v %q %s", r.Err, r.Stdout, r.Stderr)
	}
	l.MustTP(t, 30*time.Second, "quit", "--all")
}

// developer is a laptop whose kubeconfig holds only a ServiceAccount token, bound as README
// says: tp-connect in tp's namespace, tp-intercept in ns.
func developer(t *testing.T, cs kubernetes.Interface, ns, name string, roles ...string) *kit.Laptop {
	t.Helper()
	token := kit.DeveloperToken(t, cs, ns, name, roles...)
	l := kit.NewLaptop(t)
	cfg, err := clientcmd.LoadFromFile(l.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctxName := cfg.CurrentContext
	cfg.AuthInfos = map[string]*clientcmdapi.AuthInfo{name: {Token: token}}
	cfg.Contexts[ctxName].AuthInfo = name
	if err := clientcmd.WriteToFile(*cfg, l.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(l.Kubeconfig, kit.LaptopUID, kit.LaptopUID); err != nil {
		t.Fatal(err)
	}
	return l
}

func execOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}
