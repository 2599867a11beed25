package client

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tpdev/tp/remote/laptop/control"
)

func TestProxyEnvKeepsJavaOptions(t *testing.T) {
	env := envMap(proxyEnv([]string{"JAVA_TOOL_OPTIONS=-Xmx1g", "http_proxy=http://corp:3128"}, "127.0.0.1:1080", route{}))
	if env["http_proxy"] != "http://127.0.0.1:1080" {
		t.Errorf("http_proxy %q: tp's replaces any other", env["http_proxy"])
	}
	java := env["JAVA_TOOL_OPTIONS"]
	if !strings.HasPrefix(java, "-Xmx1g -Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=1080 ") || !strings.Contains(java, "-DsocksProxyHost=127.0.0.1 -DsocksProxyPort=1080") {
		t.Errorf("JAVA_TOOL_OPTIONS %q: want the user's options, then tp's", java)
	}
	if env["NO_PROXY"] != "localhost,127.0.0.1,::1" || env["no_proxy"] != env["NO_PROXY"] {
		t.Errorf("NO_PROXY %q", env["NO_PROXY"])
	}
	if env["NODE_USE_ENV_PROXY"] != "1" {
		t.Errorf("NODE_USE_ENV_PROXY %q: Node.js 24 reads the proxy variables only with it", env["NODE_USE_ENV_PROXY"])
	}
}

// The user's NO_PROXY survives in the command's environment (and the JVM's form of it),
// less what would send cluster destinations around tp.
func TestProxyEnvKeepsTheUsersNoProxy(t *testing.T) {
	r := route{domain: "cluster.local", ranges: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.244.0.0/16")}}
	env := envMap(proxyEnv([]string{"no_proxy=.corp, intranet,10.0.0.0/8,.svc,.cluster.local,10.96.0.10,192.168.0.0/16"}, "127.0.0.1:1080", r))
	if want := ".corp,intranet,192.168.0.0/16,localhost,127.0.0.1,::1"; env["NO_PROXY"] != want || env["no_proxy"] != want {
		t.Errorf("NO_PROXY %q, no_proxy %q; want %q", env["NO_PROXY"], env["no_proxy"], want)
	}
	if java := env["JAVA_TOOL_OPTIONS"]; !strings.Contains(java, "-Dhttp.nonProxyHosts=*.corp|intranet|localhost|127.0.0.1|[::1] ") {
		t.Errorf("JAVA_TOOL_OPTIONS %q", java)
	}
}

func TestRunRefusesBadInputBeforeTheCluster(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	c := New(KubeFlags{}, &bytes.Buffer{}, &bytes.Buffer{})
	for _, tt := range []struct {
		cfg  RunConfig
		want string
	}{
		{RunConfig{VIF: "auto"}, "name the command to run after --"},
		{RunConfig{Args: []string{"ls"}, VIF: "maybe"}, `--vif "maybe": want auto, on or off`},
		{RunConfig{Args: []string{"ls"}, VIF: "off", Transport: "tcp"}, "--transport: "},
		{RunConfig{Args: []string{"ls"}, VIF: "off", Transport: "auto"}, "kubeconfig"},
	} {
		if err := c.Run(t.Context(), tt.cfg); err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("tp run %+v: %v, want a user error with %q", tt.cfg, err, tt.want)
		}
	}
}

func TestChooseVIF(t *testing.T) {
	var msgs bytes.Buffer
	c := New(KubeFlags{}, &bytes.Buffer{}, &msgs)
	none := errors.New("no user namespaces")
	for _, tt := range []struct {
		vif         string
		unsupported error
		want        bool
		err, msg    string
	}{
		{"off", nil, false, "", ""},
		{"auto", nil, true, "", ""},
		{"on", nil, true, "", ""},
		{"auto", none, false, "", "tp: running without the VIF (proxy variables only): no user namespaces\n"},
		{"on", none, false, "--vif=on: no user namespaces", ""},
	} {
		msgs.Reset()
		got, err := c.chooseVIF(tt.vif, tt.unsupported)
		if got != tt.want || (err == nil) != (tt.err == "") || err != nil && (!strings.Contains(err.Error(), tt.err) || exitCode(err) != 2) || msgs.String() != tt.msg {
			t.Errorf("--vif=%s, unsupported %v: %v, %v, %q", tt.vif, tt.unsupported, got, err, msgs.String())
		}
	}
}

func TestVIFResolvConf(t *testing.T) {
	host := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(host, []byte("nameserver 10.0.0.1\nsearch corp.example lan\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := vifResolvConf(host)
	for _, want := range []string{"nameserver 198.18.0.1\n", "search corp.example lan\n", "options timeout:2 attempts:2\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "10.0.0.1") {
		t.Errorf("resolv.conf names the host's nameserver:\n%s", got)
	}
}

// kubeconfig writes a kubeconfig with one context, ctx, for namespace ns.
func kubeconfig(t *testing.T, ns string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config")
	cfg := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://api.example:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: ctx, context: {cluster: c, user: u, namespace: ` + ns + `}}]
current-context: ctx
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunUsesTheRunningConnection(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs sh")
	}
	shortHome(t)
	t.Setenv(CredentialsEnv, "")
	fakeDaemon(t, "default", control.Info{Name: "default", Context: "ctx", Cluster: "https://api.example:6443", Namespace: "ns",
		Listen: "0.0.0.0:1080", DNSListen: "127.0.0.1:1053"})
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var msgs bytes.Buffer
	c := New(KubeFlags{Kubeconfig: kubeconfig(t, "ns")}, &msgs, &msgs)
	c.Stdio = Stdio{Out: out, Err: out}
	err = c.Run(t.Context(), RunConfig{Args: []string{"sh", "-c", `echo "$ALL_PROXY"; exit 3`}, VIF: "off", Transport: "auto"})
	if ee, ok := errors.AsType[*ExitError](err); !ok || ee.Code != 3 {
		t.Errorf("tp run: %v, want the command's exit status 3", err)
	}
	got, _ := os.ReadFile(out.Name())
	// The daemon's wildcard listener is dialed on loopback.
	if strings.TrimSpace(string(got)) != "socks5h://127.0.0.1:1080" {
		t.Errorf("the command saw ALL_PROXY=%q, want the running connection's proxy (tp said %q)", got, msgs.String())
	}
	// An intercept needs a workload's port, before anything else happens.
	if err := c.Run(t.Context(), RunConfig{Args: []string{"true"}, VIF: "off", Port: "8080"}); err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "--port goes with --intercept") {
		t.Errorf("--port without --intercept: %v", err)
	}
}

// tp run --as gives the command the workload's container's environment, over this
// process's; its mistakes are the user's, named.
func TestRunAsTakesTheWorkloadsEnvironment(t *testing.T) {
	shortHome(t)
	c := New(KubeFlags{}, &bytes.Buffer{}, &bytes.Buffer{})
	labels := map[string]string{"app": "web"}
	ready := corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	fakeCluster(c,
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1", Labels: labels}, Status: ready,
			Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "app", Env: []corev1.EnvVar{{Name: "LOG_LEVEL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "web"}, Key: "level"}}}, {Name: "HOME", Value: "/app"}}},
				{Name: "side", Env: []corev1.EnvVar{{Name: "SIDE", Value: "1"}}},
			}}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}, Data: map[string]string{"level": "debug"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP}}}},
	)
	k := &Kube{Namespace: "ns"}
	_, env, err := c.runIntercept(t.Context(), k, RunConfig{As: "deploy/web", Container: "app"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		if _, dup := got[name]; dup {
			t.Errorf("%s twice in the environment", name)
		}
		got[name] = value
	}
	for name, want := range map[string]string{"LOG_LEVEL": "debug", "HOME": "/app", "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "PATH": os.Getenv("PATH")} {
		if got[name] != want {
			t.Errorf("%s=%q, want %q", name, got[name], want)
		}
	}
	if _, ok := got["SIDE"]; ok {
		t.Error("the other container's variable is in the environment")
	}

	for _, tt := range []struct {
		cfg  RunConfig
		want string
	}{
		{RunConfig{As: "deploy/web"}, `pod "web-1" has containers app, side: which one?`},
		{RunConfig{As: "deploy/web", Container: "db"}, `pod "web-1" has no container "db"`},
		{RunConfig{As: "deploy/nothing"}, "nothing"},
		{RunConfig{As: "cronjob/web"}, `--as: cannot intercept a "cronjob"`},
		{RunConfig{Container: "app"}, "--container goes with --as WORKLOAD or --intercept WORKLOAD"},
		{RunConfig{As: "web", Intercept: "deploy/api"}, "--as deployment/web -n ns and --intercept deployment/api -n ns name two workloads"},
		{RunConfig{Port: "8080"}, "--port goes with --intercept WORKLOAD"},
		{RunConfig{As: "deploy/web", Egress: "pods"}, `--egress "pods": want manager`},
		{RunConfig{Egress: EgressWorkload}, "add --as [KIND/]WORKLOAD"},
	} {
		err := checkRunFlags(k, tt.cfg)
		if err == nil {
			_, _, err = c.runIntercept(t.Context(), k, tt.cfg)
		}
		if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("tp run %+v: %v, want a user error with %q", tt.cfg, err, tt.want)
		}
	}
}
