//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/tests/kit"
)

// TestRunAs: tp run --as gives a local command the workload's container's environment and
// its ConfigMap, Secret, downwardAPI and projected files, the same bytes the pod sees at
// the same paths (under $TP_ROOT), kept current, and gone afterwards.
func TestRunAs(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "runas")
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web-config"},
		Data: map[string]string{"a": "alpha\n", "level": "debug"}}, metav1.CreateOptions{})
	must(err)
	_, err = cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-secret"},
		Data: map[string][]byte{"user": []byte("u$er\x00bin"), "pass": []byte("p")}}, metav1.CreateOptions{})
	must(err)
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web-sa"}}, metav1.CreateOptions{})
	must(err)

	w := deployWorkload(t, cs, ns, "web")
	dep, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	must(err)
	spec := &dep.Spec.Template.Spec
	spec.ServiceAccountName = "web-sa"
	mode600, mode640, expiry := int32(0o600), int32(0o640), int64(3600)
	spec.Volumes = []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}, DefaultMode: &mode640,
			Items: []corev1.KeyToPath{{Key: "a", Path: "conf/a.txt", Mode: &mode600}, {Key: "level", Path: "level"}}}}},
		{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "web-secret"}}},
		{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
		{Name: "vault", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "vault", ExpirationSeconds: &expiry, Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"},
				Items: []corev1.KeyToPath{{Key: "level", Path: "level"}}}}}}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	c := &spec.Containers[0]
	c.Env = append(c.Env, corev1.EnvVar{Name: "LOG_LEVEL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}, Key: "level"}}})
	c.VolumeMounts = []corev1.VolumeMount{
		{Name: "config", MountPath: "/etc/web"},
		{Name: "creds", MountPath: "/etc/creds/user", SubPath: "user", ReadOnly: true},
		{Name: "info", MountPath: "/etc/podinfo"},
		{Name: "vault", MountPath: "/var/run/secrets/vault"},
		{Name: "scratch", MountPath: "/scratch"},
	}
	_, err = cs.AppsV1().Deployments(ns).Update(ctx, dep, metav1.UpdateOptions{})
	must(err)
	podIP := readyPodWithVolumes(t, cs, ns, w.Name)

	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")
	tmp := filepath.Join(l.Home, "tmp")
	must(os.Mkdir(tmp, 0o700))
	must(os.Chown(tmp, kit.LaptopUID, kit.LaptopUID))
	env := []string{"TMPDIR=" + tmp}

	files := []string{"/etc/web/conf/a.txt", "/etc/web/level", "/etc/creds/user", "/etc/podinfo/labels", "/etc/podinfo/name",
		"/var/run/secrets/vault/level", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", "/var/run/secrets/kubernetes.io/serviceaccount/namespace"}
	// $1 is where the files are: under $TP_ROOT, or at their real paths ("real", in the VIF).
	script := `p=$TP_ROOT; [ "$1" = real ] && p=; shift
echo "ROOT=$TP_ROOT"; echo "LOG_LEVEL=$LOG_LEVEL"; echo "KSH=$KUBERNETES_SERVICE_HOST"
for f in "$@"; do printf '%s %s %s\n' "$f" "$(stat -L -c %a "$p$f")" "$(base64 -w0 "$p$f")"; done
printf 'token %s\n' "$(cat "$p/var/run/secrets/vault/token")"
printf 'satoken %s\n' "$(cat "$p/var/run/secrets/kubernetes.io/serviceaccount/token")"
[ -d "$TP_ROOT/scratch" ] && [ -w "$TP_ROOT/scratch" ] && echo scratch-writable
touch "$p/etc/web/written" 2>/dev/null && echo configmap-writable; true`
	for vif, where := range map[string]string{"--vif=off": "root", "--vif=on": "real"} {
		t.Run("SameFilesAsThePod/"+vif, func(t *testing.T) {
			r := l.Run(2*time.Minute, env, l.TP, append([]string{"run", "--namespace", ns, vif, "--as", "deploy/web", "--", "sh", "-c", script, "sh", where}, files...)...)
			if r.Err != nil {
				t.Fatalf("tp run --as: %v\n%s\n%s", r.Err, r.Stdout, r.Stderr)
			}
			t.Logf("tp run --as said:\n%s", r.Stderr)
			got := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
				k, v, _ := strings.Cut(line, " ")
				if name, val, ok := strings.Cut(line, "="); ok && !strings.Contains(name, " ") {
					k, v = name, val
				}
				got[k] = v
			}
			if got["LOG_LEVEL"] != "debug" || got["KSH"] == "" {
				t.Errorf("environment: LOG_LEVEL=%q KUBERNETES_SERVICE_HOST=%q", got["LOG_LEVEL"], got["KSH"])
			}
			for _, f := range files {
				want := podFile(t, podIP, f)
				mode, b64, _ := strings.Cut(got[f], " ")
				data, err := base64.StdEncoding.DecodeString(b64)
				if err != nil || string(data) != want {
					t.Errorf("%s: tp run --as reads %q, the pod %q", f, data, want)
				}
				if f == "/etc/web/conf/a.txt" && mode != "600" || f == "/etc/web/level" && mode != "640" {
					t.Errorf("%s: mode %s, the pod's items say otherwise", f, mode)
				}
			}
			reviewToken(t, cs, got["token"], "vault", "system:serviceaccount:"+ns+":web-sa")
			reviewToken(t, cs, got["satoken"], "", "system:serviceaccount:"+ns+":web-sa")
			if _, ok := got["scratch-writable"]; !ok {
				t.Error("the emptyDir is not a writable folder")
			}
			if _, ok := got["configmap-writable"]; ok && where == "real" {
				t.Error("the ConfigMap's folder is writable in the VIF; a pod's is read-only")
			}
			// A new folder right under / cannot be made in the namespace: tp says so.
			if where == "real" && !strings.Contains(r.Stderr, "in the VIF, /scratch is under $TP_ROOT only") {
				t.Errorf("tp run --as does not say that /scratch stays under $TP_ROOT in the VIF:\n%s", r.Stderr)
			}
			if !strings.Contains(r.Stderr, "/etc/podinfo (downwardAPI info)") {
				t.Errorf("tp run --as does not say what it did with each volume:\n%s", r.Stderr)
			}
			if _, err := os.Stat(got["ROOT"]); got["ROOT"] == "" || !os.IsNotExist(err) {
				t.Errorf("$TP_ROOT %q is still there after the command: %v", got["ROOT"], err)
			}
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("tp run --as left %v in the laptop user's temporary folder", left)
			}
		})
	}

	for _, tc := range []struct{ vif, where, value string }{{"--vif=off", "root", "gamma"}, {"--vif=on", "real", "delta"}} {
		t.Run("ConfigMapUpdateWithinSeconds/"+tc.vif, func(t *testing.T) {
			configMapUpdate(t, l, cs, env, ns, tc.vif, tc.where, tc.value)
		})
	}

	// In the VIF the files are at their real paths: a client with in-cluster configuration
	// (no kubeconfig) talks to the API server as the workload's ServiceAccount, with exactly
	// its rights.
	t.Run("InClusterClientInTheVIF", func(t *testing.T) {
		_, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "read-pods"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}}}, metav1.CreateOptions{})
		must(err)
		_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "web-sa-read-pods"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "read-pods"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "web-sa", Namespace: ns}}}, metav1.CreateOptions{})
		must(err)
		kubectl := laptopKubectl(t, l)
		script := `cat /var/run/secrets/vault/level; echo; env -u KUBECONFIG "$1" get pods -o name; env -u KUBECONFIG "$1" get secrets 2>&1; true`
		r := l.Run(2*time.Minute, env, l.TP, "run", "--namespace", ns, "--vif=on", "--as", "deploy/web", "--", "sh", "-c", script, "sh", kubectl)
		if r.Err != nil || !strings.HasPrefix(r.Stdout, "debug\n") || !strings.Contains(r.Stdout, "pod/web-") {
			t.Fatalf("kubectl with in-cluster config under tp run --as: %v\n%s\n%s", r.Err, r.Stdout, r.Stderr)
		}
		if !strings.Contains(r.Stdout, `User "system:serviceaccount:`+ns+`:web-sa" cannot list resource "secrets"`) {
			t.Errorf("kubectl get secrets as the workload: want the API server's refusal of web-sa:\n%s", r.Stdout)
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		for args, want := range map[string]string{
			"--as deploy/nothing":           `"nothing"`,
			"--as deploy/web --container x": `has no container "x"`,
			"--as cronjob/web":              `cannot intercept a "cronjob"`,
		} {
			r := l.TPRun(time.Minute, append(append([]string{"run", "--namespace", ns, "--vif=off"}, strings.Fields(args)...), "--", "true")...)
			if r.Code != 2 || !strings.Contains(r.Stderr, want) {
				t.Errorf("tp run %s: exit %d, want 2 and %q:\n%s", args, r.Code, want, r.Stderr)
			}
		}
	})
}

// configMapUpdate runs a command under tp run --as that waits for web-config's key "a" to
// read value in its file, updates the ConfigMap, and fails t unless the command saw it
// within 10 s.
func configMapUpdate(t *testing.T, l *kit.Laptop, cs kubernetes.Interface, env []string, ns, vif, where, value string) {
	ctx := context.Background()
	ready := filepath.Join(l.Home, "ready-"+value)
	done := make(chan kit.Result, 1)
	go func() {
		done <- l.Run(2*time.Minute, env, l.TP, "run", "--namespace", ns, vif, "--as", "deploy/web", "--", "sh", "-c",
			`p=$TP_ROOT; [ "$2" = real ] && p=; touch "$1"; i=0; while [ $i -lt 300 ]; do [ "$(cat "$p/etc/web/conf/a.txt")" = "$3" ] && echo updated && exit 0; sleep 0.1; i=$((i+1)); done; exit 3`,
			"sh", ready, where, value)
	}()
	waitFor(t, time.Minute, "the command under tp run --as", func() error { _, err := os.Stat(ready); return err })
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "web-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["a"] = value
	if _, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	updated := time.Now()
	r := <-done
	if r.Err != nil || !strings.Contains(r.Stdout, "updated") {
		t.Fatalf("the ConfigMap's update never reached the command's file: %v\n%s\n%s", r.Err, r.Stdout, r.Stderr)
	}
	if d := time.Since(updated); d > 10*time.Second {
		t.Errorf("the update took %s to reach the file, want within 10s", d)
	}
	t.Logf("a ConfigMap update reached the file within %s", time.Since(updated).Round(100*time.Millisecond))
}

// readyPodWithVolumes waits for a ready pod of the workload that mounts its volumes, and
// returns its IP.
func readyPodWithVolumes(t *testing.T, cs kubernetes.Interface, ns, name string) string {
	t.Helper()
	var ip string
	waitFor(t, 2*time.Minute, "a ready pod of "+name+" with its volumes", func() error {
		pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil || len(p.Spec.Containers[0].VolumeMounts) < 5 {
				continue
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ip = p.Status.PodIP
					if len(pods.Items) == 1 {
						return nil
					}
				}
			}
		}
		return fmt.Errorf("pods: %s", podStates(pods.Items))
	})
	return ip
}

// podFile is a file's bytes as the pod's container sees it (the test workload serves them;
// the node reaches the pod).
func podFile(t *testing.T, podIP, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + net.JoinHostPort(podIP, strconv.Itoa(HTTPPort)) + "/file?path=" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the pod's %s: %d %v %s", path, resp.StatusCode, err, b)
	}
	return string(b)
}

// reviewToken fails t unless the API server takes token for user (and audience, when set).
func reviewToken(t *testing.T, cs kubernetes.Interface, token, audience, user string) {
	t.Helper()
	tr := &authv1.TokenReview{Spec: authv1.TokenReviewSpec{Token: token}}
	if audience != "" {
		tr.Spec.Audiences = []string{audience}
	}
	got, err := cs.AuthenticationV1().TokenReviews().Create(context.Background(), tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Status.Authenticated || got.Status.User.Username != user {
		t.Errorf("token for %q (audience %q): authenticated %v as %q (%s)", user, audience, got.Status.Authenticated, got.Status.User.Username, got.Status.Error)
	}
}
