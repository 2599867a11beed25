//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/deploy/pki"
	"github.com/tpdev/tp/remote"
)

// managerImageEnv names the manager image the success paths install; make e2e passes the
// image make images built. Without it those tests fail: they must run, not skip.
const managerImageEnv = "TP_E2E_MANAGER_IMAGE"

// missingImage is never loaded into the test cluster, and the cluster pulls nothing.
const missingImage = "localhost/tp/never-loaded:e2e"

func managerImage(t *testing.T) string {
	t.Helper()
	img := os.Getenv(managerImageEnv)
	if img == "" {
		t.Fatalf("%s is not set: set it to tp's cluster image loaded in the test cluster (make e2e passes the one make images built, e.g. localhost/tp/tp:VERSION)", managerImageEnv)
	}
	return img
}

// installNamespace is a fresh name for an install; whatever is installed there is
// uninstalled after the test.
func installNamespace(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	ns := "tp-e2e-install-" + hex.EncodeToString(b)
	cfg := restConfig(t, nil)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := deploy.Uninstall(ctx, cfg, deploy.Options{Namespace: ns}); err != nil && !errors.Is(err, remote.ErrNotInstalled) {
			t.Errorf("cleanup: uninstall from %s: %v", ns, err)
		}
	})
	return ns
}

// logWriter passes install's progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// wantError checks that err is a *remote.Error of kind kind whose text has every want.
func wantError(t *testing.T, err error, kind remote.Kind, wants ...string) *remote.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one of kind %s", kind)
	}
	var e *remote.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %T %v, want a *remote.Error of kind %s", err, err, kind)
	}
	t.Logf("error (%s): %v", e.Kind, err)
	if e.Kind != kind {
		t.Errorf("kind %s, want %s", e.Kind, kind)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q", w)
		}
	}
	return e
}

// TestInstallLifecycle: install, the same again (quick, no new pod), a roll by options and
// by image, an upgrade that crashes (the old manager keeps running), status, uninstall.
func TestInstallLifecycle(t *testing.T) {
	image := managerImage(t)
	cs := clientset(t)
	cfg := restConfig(t, nil)
	ns := installNamespace(t)
	ctx := context.Background()
	opts := deploy.Options{Namespace: ns, Image: image, Log: logWriter{t}}

	t.Run("TimeoutSaysWhatIsMissing", func(t *testing.T) {
		o := opts
		o.Timeout = 200 * time.Millisecond // no pod starts and passes a probe that fast
		_, err := deploy.Install(ctx, cfg, o)
		wantError(t, err, remote.Timeout, "not ready within 200ms", "pod tp-manager-", "kubectl -n "+ns+" describe pods")
	})

	start := time.Now()
	first, err := deploy.Install(ctx, cfg, opts)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	t.Logf("installed in %s: %+v", time.Since(start).Round(time.Millisecond), first)
	if !first.Ready || first.Pod == "" || first.Image != image || first.Namespace != ns {
		t.Fatalf("installed: %+v", first)
	}
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, first.Pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !podIsReady(pod) {
		t.Fatalf("pod %s not ready: %s", pod.Name, podStates([]corev1.Pod{*pod}))
	}
	// The laptop side finds the pod by the exported selector.
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: deploy.ManagerLabelSelector})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods by %s: %v, %v", deploy.ManagerLabelSelector, pods, err)
	}
	nsObj, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil || nsObj.Labels[deploy.ManagedByLabel] != deploy.ManagedByValue {
		t.Fatalf("namespace %s: %v, labels %v", ns, err, nsObj.Labels)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, deploy.RBACName(ns), metav1.GetOptions{}); err != nil {
		t.Fatalf("cluster role binding: %v", err)
	}
	svc, err := cs.CoreV1().Services(ns).Get(ctx, deploy.ManagerName, metav1.GetOptions{})
	if err != nil || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != deploy.ClusterPort {
		t.Fatalf("service: %v %+v", err, svc)
	}

	// The cluster port's certificates: a CA kept in a Secret nothing mounts, the server's
	// in the one the manager mounts, the CA bundle public.
	for _, name := range []string{deploy.CASecret, deploy.TLSSecret} {
		if sec, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); err != nil || sec.Labels[deploy.ManagedByLabel] != deploy.ManagedByValue {
			t.Fatalf("Secret %s: %v", name, err)
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == deploy.CASecret {
			t.Errorf("the manager's pod mounts the CA's key (Secret %s)", deploy.CASecret)
		}
	}
	bundle, err := deploy.AgentCA(ctx, cfg, ns)
	if err != nil {
		t.Fatalf("the CA bundle: %v", err)
	}
	if err := verifiedHandshake(pod.Status.PodIP, ns, bundle); err != nil {
		t.Fatalf("the manager does not serve a certificate of tp's CA: %v", err)
	}

	t.Run("AgainIsQuickAndKeepsThePod", func(t *testing.T) {
		start := time.Now()
		inst, err := deploy.Install(ctx, cfg, opts)
		if err != nil {
			t.Fatalf("second install: %v", err)
		}
		took := time.Since(start)
		t.Logf("second install took %s", took.Round(time.Millisecond))
		if inst.Pod != first.Pod {
			t.Errorf("second install replaced pod %s by %s: the same options must not roll", first.Pod, inst.Pod)
		}
		if took > 10*time.Second {
			t.Errorf("second install took %s; nothing changed, so it should take a moment", took)
		}
	})

	t.Run("OptionsRoll", func(t *testing.T) {
		before := readyStatus(t, cfg, ns)
		o := opts
		o.ManagedNamespaces = []string{ns}
		inst, err := deploy.Install(ctx, cfg, o)
		if err != nil {
			t.Fatalf("install with managed namespaces: %v", err)
		}
		if inst.Pod == before.Pod || len(inst.ManagedNamespaces) != 1 || inst.ManagedNamespaces[0] != ns {
			t.Fatalf("after changing options: %+v (pod before: %s)", inst, before.Pod)
		}
		if _, err := cs.RbacV1().Roles(ns).Get(ctx, deploy.RBACName(ns), metav1.GetOptions{}); err != nil {
			t.Fatalf("role in managed namespace: %v", err)
		}
		// Back to the whole cluster: the Role goes.
		if _, err := deploy.Install(ctx, cfg, opts); err != nil {
			t.Fatalf("install back without managed namespaces: %v", err)
		}
		if _, err := cs.RbacV1().Roles(ns).Get(ctx, deploy.RBACName(ns), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("role of a namespace no longer managed: got %v, want it gone", err)
		}
	})

	t.Run("ImageRolls", func(t *testing.T) {
		before := readyStatus(t, cfg, ns)
		// The same image by another name (its ID, as the runtime reports it): a new image
		// string for the Deployment, and one the cluster has.
		pod, err := cs.CoreV1().Pods(ns).Get(ctx, before.Pod, metav1.GetOptions{})
		if err != nil || len(pod.Status.ContainerStatuses) == 0 || pod.Status.ContainerStatuses[0].ImageID == "" {
			t.Fatalf("pod %s: %v, no image ID", before.Pod, err)
		}
		other := pod.Status.ContainerStatuses[0].ImageID
		o := opts
		o.Image = other
		inst, err := deploy.Install(ctx, cfg, o)
		if err != nil {
			t.Fatalf("install with image %s: %v", other, err)
		}
		if inst.Image != other || inst.Pod == before.Pod {
			t.Fatalf("after another image: %+v (pod before: %s)", inst, before.Pod)
		}
		// ...and back.
		if _, err := deploy.Install(ctx, cfg, opts); err != nil {
			t.Fatalf("install with image %s again: %v", image, err)
		}
	})

	t.Run("CrashingUpgradeKeepsTheOldManager", func(t *testing.T) {
		before := readyStatus(t, cfg, ns)
		o := opts
		o.Image = WorkloadImage // exits 2 when given the manager's arguments
		_, err := deploy.Install(ctx, cfg, o)
		wantError(t, err, remote.Crash, "exited with code 2", "| workload: give at least one of")
		st, err := deploy.Status(ctx, cfg, ns)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		t.Logf("status after a failed upgrade: %+v", st)
		if st.Ready || st.Problem == nil || remote.KindOf(st.Problem) != remote.Crash || st.ReadyReplicas < 1 {
			t.Errorf("status: want not ready (the new revision crashes), with a crash problem and the old pod still ready: %+v", st)
		}
		if p, err := cs.CoreV1().Pods(ns).Get(ctx, before.Pod, metav1.GetOptions{}); err != nil || !podIsReady(p) {
			t.Errorf("the old manager %s must keep running while the new one crashes: %v", before.Pod, err)
		}
		// Repair it.
		if _, err := deploy.Install(ctx, cfg, opts); err != nil {
			t.Fatalf("install the good image again: %v", err)
		}
	})

	// --rotate-ca: a new CA, the manager restarts with a certificate of it, and agents
	// injected before (trusting only the old CA) still verify it.
	t.Run("RotateCAKeepsOldAgentsVerifying", func(t *testing.T) {
		before := readyStatus(t, cfg, ns)
		old, err := deploy.AgentCA(ctx, cfg, ns)
		if err != nil {
			t.Fatal(err)
		}
		o := opts
		o.RotateCA = true
		start := time.Now()
		inst, err := deploy.Install(ctx, cfg, o)
		if err != nil {
			t.Fatalf("install --rotate-ca: %v", err)
		}
		t.Logf("rotated the CA in %s", time.Since(start).Round(time.Millisecond))
		if inst.Pod == before.Pod {
			t.Fatalf("the manager kept pod %s: it serves the old certificate", inst.Pod)
		}
		bundle, err := deploy.AgentCA(ctx, cfg, ns)
		if err != nil {
			t.Fatal(err)
		}
		certs, err := pki.ParseBundle(bundle)
		if err != nil || len(certs) != 2 {
			t.Fatalf("the bundle after a rotation: %d certificates, %v; want the new CA and the old", len(certs), err)
		}
		newCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw})
		if string(newCA) == string(old) {
			t.Fatal("the bundle's first CA is the old one")
		}
		pod, err := cs.CoreV1().Pods(ns).Get(ctx, inst.Pod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for what, roots := range map[string][]byte{"the old CA alone (an agent injected before)": old, "the new CA alone": newCA, "the bundle": bundle} {
			if err := verifiedHandshake(pod.Status.PodIP, ns, roots); err != nil {
				t.Errorf("trusting %s: %v", what, err)
			}
		}
		again, err := deploy.Install(ctx, cfg, opts)
		if err != nil || again.Pod != inst.Pod {
			t.Errorf("install after the rotation: %v; pod %s -> %s, want it kept", err, inst.Pod, again.Pod)
		}
	})

	t.Run("Status", func(t *testing.T) {
		st := readyStatus(t, cfg, ns)
		if st.Image != image || st.ReadyReplicas != 1 || len(st.ManagedNamespaces) != 0 {
			t.Fatalf("status: %+v", st)
		}
	})

	t.Run("Uninstall", func(t *testing.T) {
		if err := deploy.Uninstall(ctx, cfg, deploy.Options{Namespace: ns, Log: logWriter{t}}); err != nil {
			t.Fatalf("uninstall: %v", err)
		}
		if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("namespace after uninstall: %v", err)
		}
		if _, err := cs.RbacV1().ClusterRoles().Get(ctx, deploy.RBACName(ns), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("cluster role after uninstall: %v", err)
		}
		if _, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, deploy.RBACName(ns), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("cluster role binding after uninstall: %v", err)
		}
		_, err := deploy.Status(ctx, cfg, ns)
		wantError(t, err, remote.NotInstalled, fmt.Sprintf("tp is not installed in namespace %q", ns))
		err = deploy.Uninstall(ctx, cfg, deploy.Options{Namespace: ns})
		wantError(t, err, remote.NotInstalled, "nothing to remove")
		if !errors.Is(err, remote.ErrNotInstalled) {
			t.Error("errors.Is(err, ErrNotInstalled) is false")
		}
	})
}

// verifiedHandshake makes a TLS handshake with the manager's cluster port at podIP, as an
// agent trusting roots (PEM) does.
func verifiedHandshake(podIP, ns string, roots []byte) error {
	pool, err := pki.Pool(roots)
	if err != nil {
		return err
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort(podIP, strconv.Itoa(deploy.ClusterPort)),
		&tls.Config{RootCAs: pool, ServerName: deploy.ManagerServerNames(ns)[0], MinVersion: tls.VersionTLS13})
	if err != nil {
		return err
	}
	return c.Close()
}

// readyStatus is the install's status, which must be Ready.
func readyStatus(t *testing.T, cfg *rest.Config, ns string) *deploy.Installed {
	t.Helper()
	st, err := deploy.Status(context.Background(), cfg, ns)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if !st.Ready || st.Pod == "" || st.Problem != nil {
		t.Fatalf("status: want ready, got %+v", st)
	}
	return st
}

// TestInstallIntoANamespaceTpDidNotMake: tp installs into it, and uninstall leaves it, with
// what else it holds. A quota that forbids pods makes the cluster refuse the manager.
func TestInstallIntoANamespaceTpDidNotMake(t *testing.T) {
	cs := clientset(t)
	cfg := restConfig(t, nil)
	ctx := context.Background()
	ns := namespace(t, cs, "tp-e2e-install-own")
	if _, err := cs.CoreV1().ResourceQuotas(ns).Create(ctx, &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "no-pods"},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := deploy.Install(ctx, cfg, deploy.Options{Namespace: ns, Image: missingImage, Timeout: 2 * time.Minute, Log: logWriter{t}})
	wantError(t, err, remote.Cluster, "does not let Deployment "+ns+"/tp-manager create the manager's pod", "exceeded quota")
	if took := time.Since(start); took > time.Minute {
		t.Errorf("took %s to see the refusal; want it at once", took)
	}
	if err := deploy.Uninstall(ctx, cfg, deploy.Options{Namespace: ns, Log: logWriter{t}}); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		t.Fatalf("uninstall removed a namespace tp did not make: %v", err)
	}
	if _, err := cs.CoreV1().ResourceQuotas(ns).Get(ctx, "no-pods", metav1.GetOptions{}); err != nil {
		t.Fatalf("uninstall removed what tp did not make: %v", err)
	}
	if _, err := cs.AppsV1().Deployments(ns).Get(ctx, deploy.ManagerName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("manager Deployment after uninstall: %v", err)
	}
	for _, name := range []string{deploy.CASecret, deploy.TLSSecret} {
		if _, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("Secret %s after uninstall: %v", name, err)
		}
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, deploy.CAConfigMap, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ConfigMap %s after uninstall: %v", deploy.CAConfigMap, err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Get(ctx, deploy.RBACName(ns), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("cluster role after uninstall: %v", err)
	}
}

func TestInstallMissingImageFailsFast(t *testing.T) {
	_ = clientset(t)
	cfg := restConfig(t, nil)
	ns := installNamespace(t)
	start := time.Now()
	_, err := deploy.Install(context.Background(), cfg, deploy.Options{Namespace: ns, Image: missingImage, Timeout: 3 * time.Minute, Log: logWriter{t}})
	wantError(t, err, remote.Image, fmt.Sprintf("the manager image %q is not available", missingImage),
		"make cluster-load TAR=bin/images/tp.tar", "kind load image-archive", "--image")
	if took := time.Since(start); took > time.Minute {
		t.Errorf("took %s to see the missing image; want it at once, not at the timeout", took)
	}

	// Again, as after loading the image: the pod in back-off gets a fresh start instead of
	// its old verdict; the image is still missing, so the fresh pod fails fast too.
	var log strings.Builder
	start = time.Now()
	_, err = deploy.Install(context.Background(), cfg, deploy.Options{Namespace: ns, Image: missingImage, Timeout: 3 * time.Minute, Log: &log})
	t.Logf("second install:\n%s", log.String())
	wantError(t, err, remote.Image, fmt.Sprintf("the manager image %q is not available", missingImage))
	if !strings.Contains(log.String(), "from before this install; replacing it to try again") {
		t.Error("the failed pod of the first install was not replaced")
	}
	if took := time.Since(start); took > time.Minute {
		t.Errorf("second install took %s to see the missing image", took)
	}
}

func TestInstallCrashingManagerShowsItsLogs(t *testing.T) {
	_ = clientset(t)
	cfg := restConfig(t, nil)
	ns := installNamespace(t)
	start := time.Now()
	// The workload exits 2 when given the manager's arguments.
	_, err := deploy.Install(context.Background(), cfg, deploy.Options{Namespace: ns, Image: WorkloadImage, Timeout: 3 * time.Minute, Log: logWriter{t}})
	e := wantError(t, err, remote.Crash, `container "manager"`, "exited with code 2", "last log lines", "| workload: give at least one of -http")
	if took := time.Since(start); took > time.Minute {
		t.Errorf("took %s to see the crash; want it at once, not at the timeout", took)
	}
	if e.Kind.UserFault() {
		t.Error("a crashing manager is not the user's fault")
	}
}

func TestInstallWithoutRights(t *testing.T) {
	cs := clientset(t)
	admin := restConfig(t, nil)
	ctx := context.Background()
	home := namespace(t, cs, "tp-e2e-install-rbac")
	// An identity with no bindings at all.
	sa, err := cs.CoreV1().ServiceAccounts(home).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cs.CoreV1().ServiceAccounts(home).CreateToken(ctx, sa.Name, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: new(int64(600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	ns := installNamespace(t)
	opts := deploy.Options{Namespace: ns, Image: missingImage, Log: logWriter{t}}

	t.Run("NoBindings", func(t *testing.T) {
		_, err := deploy.Install(ctx, withToken(admin, tok.Status.Token), opts)
		wantError(t, err, remote.Access, "no permission to", fmt.Sprintf("system:serviceaccount:%s:nobody", home),
			"a cluster admin must install tp", "kubectl auth can-i")
		err = deploy.Uninstall(ctx, withToken(admin, tok.Status.Token), opts)
		wantError(t, err, remote.Access, "no permission to", "a cluster admin must uninstall tp")
	})
	t.Run("NamespaceAdminOnly", func(t *testing.T) {
		// Admin of one namespace, as many developers are: tp goes into that namespace, but
		// its cluster-wide read-only RBAC needs a cluster admin.
		target := namespace(t, cs, "tp-e2e-install-nsadmin")
		if _, err := cs.RbacV1().RoleBindings(target).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "nobody-admin"},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "admin"},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: home}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		user := withToken(admin, tok.Status.Token)
		o := opts
		o.Namespace = target
		// RBAC caches refresh at once in the API server, but the binding may take a moment.
		var err error
		for range 20 {
			_, err = deploy.Install(ctx, user, o)
			if err == nil || !strings.Contains(err.Error(), "get namespaces") {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		wantError(t, err, remote.Access, `no permission to patch clusterroles.rbac.authorization.k8s.io at the cluster scope (apply ClusterRole tp-manager-`+target+")",
			"a cluster admin must install tp", "kubectl auth can-i patch clusterroles.rbac.authorization.k8s.io")
		// Clean up as the cluster admin.
		if err := deploy.Uninstall(ctx, admin, deploy.Options{Namespace: target}); err != nil {
			t.Errorf("uninstall as admin: %v", err)
		}
	})
	t.Run("BadToken", func(t *testing.T) {
		_, err := deploy.Install(ctx, withToken(admin, "not-a-token"), opts)
		wantError(t, err, remote.Access, "rejected your credentials", "log in again")
	})
}

// withToken is admin's cluster (address, CA) with a bearer token as the only credential.
func withToken(admin *rest.Config, token string) *rest.Config {
	return &rest.Config{
		Host:            admin.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: admin.CAData, CAFile: admin.CAFile, ServerName: admin.ServerName},
	}
}

func TestInstallUnreachableAPI(t *testing.T) {
	ctx := context.Background()
	opts := deploy.Options{Namespace: "tp-e2e-install-unreachable", Image: missingImage}
	t.Run("ConnectionRefused", func(t *testing.T) {
		cfg := &rest.Config{Host: "https://127.0.0.1:1"}
		_, err := deploy.Install(ctx, cfg, opts)
		wantError(t, err, remote.Unreachable, "cannot reach the Kubernetes API at https://127.0.0.1:1", "connection refused",
			"check your kubeconfig and context (kubectl cluster-info)")
		err = deploy.Uninstall(ctx, cfg, opts)
		wantError(t, err, remote.Unreachable, "cannot reach the Kubernetes API at https://127.0.0.1:1")
		_, err = deploy.Status(ctx, cfg, opts.Namespace)
		wantError(t, err, remote.Unreachable, "cannot reach the Kubernetes API at https://127.0.0.1:1")
	})
	t.Run("UntrustedCertificate", func(t *testing.T) {
		admin := restConfig(t, nil)
		cfg := rest.CopyConfig(admin)
		cfg.CAData, cfg.CAFile = nil, ""
		_, err := deploy.Install(ctx, cfg, opts)
		wantError(t, err, remote.Unreachable, "cannot reach the Kubernetes API at "+admin.Host, "certificate", "kubectl cluster-info")
	})
}

func podIsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil
		}
	}
	return false
}
