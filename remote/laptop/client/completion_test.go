package client

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/session"
)

// testTree is a CLI like tp's, as cmd/tp describes it.
var testTree = CompletionCommand{
	Flags: []CompletionFlag{{Names: []string{"context"}, Value: true}, {Names: []string{"namespace", "n"}, Value: true}},
	Commands: []CompletionCommand{
		{Names: []string{"connect"}, Flags: []CompletionFlag{{Names: []string{"shell"}, Value: true}, {Names: []string{"name"}, Value: true}, {Names: []string{"foreground"}}}},
		{Names: []string{"completion"}},
		{Names: []string{"status"}, Flags: []CompletionFlag{{Names: []string{"name"}, Value: true}, {Names: []string{"json"}}}},
		{Names: []string{"quit"}, Flags: []CompletionFlag{{Names: []string{"name"}, Value: true}}},
		{Names: []string{"env"}, Flags: []CompletionFlag{{Names: []string{"name"}, Value: true}, {Names: []string{"shell"}, Value: true}}},
		{Names: []string{"run"}, Flags: []CompletionFlag{{Names: []string{"vif"}, Value: true}, {Names: []string{"namespace", "n"}, Value: true}}},
		{Names: []string{"leave"}},
		{Names: []string{"intercept"}, Flags: []CompletionFlag{{Names: []string{"port"}, Value: true}, {Names: []string{"namespace", "n"}, Value: true}, {Names: []string{"dry-run"}}}},
	},
}

func complete(t *testing.T, c *Client, words ...string) string {
	t.Helper()
	var out bytes.Buffer
	c.Out = &out
	if err := c.Complete(t.Context(), testTree, words); err != nil {
		t.Fatalf("complete %q: %v", words, err)
	}
	return strings.Join(strings.Split(strings.TrimSpace(out.String()), "\n"), " ")
}

func TestCompleteCommandsFlagsAndValues(t *testing.T) {
	shortHome(t)
	c := New(KubeFlags{}, nil, nil)
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"con"}, "connect :4"},
		{[]string{""}, "completion connect env intercept leave quit run status :4"},
		{[]string{"--"}, "--context --namespace :4"},
		{[]string{"connect", "--sh"}, "--shell :4"},
		{[]string{"connect", "--f"}, "--foreground :4"},
		{[]string{"connect", "--shell", ""}, "cmd fish json posix powershell :4"},
		{[]string{"env", "--shell", "p"}, "posix powershell :4"},
		{[]string{"env", "--shell=p"}, "--shell=posix --shell=powershell :4"},
		{[]string{"env", "--shell", "=", "p"}, "posix powershell :4"}, // bash splits at "="
		{[]string{"env", "--shell", "="}, "cmd fish json posix powershell :4"},
		{[]string{"run", "--vif", ""}, "auto off on :4"},
		{[]string{"--context", "x", "con"}, "connect :4"},
		{[]string{"-n", "x", "st"}, "status :4"},
		{[]string{"completion", ""}, "bash fish powershell zsh :4"},
		{[]string{"run", "--vif", "on", "--", ""}, ":0"},
		{[]string{"status", "--json", ""}, ":4"},
		{[]string{"intercept", "--port", ""}, ":0"},
	} {
		if got := complete(t, c, tc.words...); got != tc.want {
			t.Errorf("complete %q = %q, want %q", tc.words, got, tc.want)
		}
	}
}

func TestCompleteSessionsAndTheirIntercepts(t *testing.T) {
	shortHome(t)
	held, _ := json.Marshal(session.Status{Intercepts: []session.InterceptSpec{
		{Name: "web-app-8080", Workload: "web-app", Kind: "Deployment"},
		{Name: "api-8080", Group: "api", Workload: "api", Kind: "Deployment"},
		{Name: "api-9090", Group: "api", Workload: "api", Kind: "Deployment"},
	}})
	fakeDaemon(t, "default", control.Info{Name: "default", Session: held})
	fakeDaemon(t, "staging", control.Info{Name: "staging"})
	c := New(KubeFlags{}, nil, nil)
	for _, cmd := range []string{"status", "quit", "env"} {
		if got := complete(t, c, cmd, "--name", ""); got != "default staging :4" {
			t.Errorf("tp %s --name: %q", cmd, got)
		}
	}
	if got := complete(t, c, "status", "--name", "st"); got != "staging :4" {
		t.Errorf("tp status --name st: %q", got)
	}
	start := time.Now()
	if got := complete(t, c, "leave", ""); got != "api api-8080 api-9090 web-app-8080 :4" {
		t.Errorf("tp leave: %q", got)
	}
	if got := complete(t, c, "leave", "web"); got != "web-app-8080 :4" {
		t.Errorf("tp leave web: %q", got)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("completing tp leave took %v: it asks the control sockets only", d)
	}
}

func TestCompleteWorkloadsFromTheCluster(t *testing.T) {
	shortHome(t)
	c := New(KubeFlags{Kubeconfig: kubeconfig(t, "ns")}, nil, nil)
	fakeCluster(c,
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-app"}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "api"}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "db"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}},
	)
	if got := complete(t, c, "intercept", ""); got != "sts/db web-app :4" {
		t.Errorf("tp intercept: %q", got)
	}
	if got := complete(t, c, "intercept", "-n", "other", ""); got != "api :4" {
		t.Errorf("tp intercept -n other: %q", got)
	}
	if got := complete(t, c, "intercept", "-n", "o"); got != "other :4" {
		t.Errorf("tp intercept -n o: %q", got)
	}
	if got := complete(t, c, "--context", ""); got != "ctx :4" {
		t.Errorf("tp --context: %q", got)
	}
	if got := complete(t, c, "intercept", "web-app", ""); got != ":0" {
		t.Errorf("tp intercept web-app: %q", got)
	}

	// In a project, its tp.yaml's intercepts come first in what tp intercept takes; a broken
	// file leaves the workloads.
	project := t.TempDir()
	if err := os.Mkdir(filepath.Join(project, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	yaml := "intercepts:\n  web-dev:\n    workload: deploy/web-app\n  db-debug:\n    workload: sts/db\n"
	if err := os.WriteFile(filepath.Join(project, "tp.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Join(project, "sub"))
	if got := complete(t, c, "intercept", ""); got != "db-debug sts/db web-app web-dev :4" {
		t.Errorf("tp intercept in a project: %q", got)
	}
	if got := complete(t, c, "intercept", "web-"); got != "web-app web-dev :4" {
		t.Errorf("tp intercept web- in a project: %q", got)
	}
	if err := os.WriteFile(filepath.Join(project, "tp.yaml"), []byte("intercepts: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := complete(t, c, "intercept", ""); got != "sts/db web-app :4" {
		t.Errorf("tp intercept with a broken tp.yaml: %q", got)
	}

	// No cluster: nothing, quietly, in time.
	c = New(KubeFlags{Kubeconfig: kubeconfig(t, "ns")}, nil, nil)
	start := time.Now()
	if got := complete(t, c, "intercept", ""); got != ":4" {
		t.Errorf("tp intercept without a cluster: %q", got)
	}
	if d := time.Since(start); d > ClusterCompletionTimeout+time.Second {
		t.Errorf("completing without a cluster took %v", d)
	}
}

func TestCompletionScriptForUnknownShell(t *testing.T) {
	var out bytes.Buffer
	c := New(KubeFlags{}, &out, nil)
	err := c.CompletionScript("tcsh", "tp")
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "bash, zsh, fish, powershell") {
		t.Errorf("tp completion tcsh: %v", err)
	}
	for _, sh := range CompletionShells {
		out.Reset()
		if err := c.CompletionScript(sh, "kubectl-tp"); err != nil || !strings.Contains(out.String(), "kubectl-tp") || strings.Contains(out.String(), "__PROG__") {
			t.Errorf("tp completion %s: %v\n%s", sh, err, out.String())
		}
	}
}

func TestRenamedHints(t *testing.T) {
	for _, tc := range []struct{ argv0, name string }{
		{"tp", "tp"}, {"/usr/local/bin/tp", "tp"}, {"kubectl-tp", "kubectl tp"},
		{"/home/u/.krew/bin/kubectl-tp", "kubectl tp"}, {`C:\krew\bin\kubectl-tp.exe`, "kubectl tp"}, {"KUBECTL-TP.EXE", "kubectl tp"},
		{"/usr/local/bin/kubectl_complete-tp", KubectlCompletion}, {"kubectl-tpx", "tp"},
	} {
		if got := ProgramName(tc.argv0); got != tc.name {
			t.Errorf("ProgramName(%q) = %q, want %q", tc.argv0, got, tc.name)
		}
	}
	for in, want := range map[string]string{
		"tp: session is running: run tp quit first":             "tp: session is running: run kubectl tp quit first",
		"unknown flag --x; see tp connect --help":               "unknown flag --x; see kubectl tp connect --help",
		"run tp --help for the list":                            "run kubectl tp --help for the list",
		`name it (tp list shows them): "tp leave NAME"`:         `name it (kubectl tp list shows them): "kubectl tp leave NAME"`,
		"already kubectl tp status":                             "already kubectl tp status",
		"tp quit, then tp connect again":                        "kubectl tp quit, then kubectl tp connect again",
		"tp: ended intercept; /usr/bin/tp status; mytp status":  "tp: ended intercept; /usr/bin/tp status; mytp status",
		"the tp agent, tp's proxy, tp-cluster install, tp.exe ": "the tp agent, tp's proxy, tp-cluster install, tp.exe ",
	} {
		if got := Renamed("kubectl tp", in); got != want {
			t.Errorf("Renamed(%q)\n got %q\nwant %q", in, got, want)
		}
		if got := Renamed("tp", in); got != in {
			t.Errorf("Renamed for tp changed %q to %q", in, got)
		}
	}
	var out bytes.Buffer
	w := RenamedWriter("kubectl tp", &out)
	if n, err := w.Write([]byte("run tp quit\n")); n != 12 || err != nil || out.String() != "run kubectl tp quit\n" {
		t.Errorf("RenamedWriter wrote %q (%d, %v)", out.String(), n, err)
	}
}
