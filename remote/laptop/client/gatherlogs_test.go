package client

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/session"
)

const testJWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlLXNlY3JldA"

func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		in      string
		secrets []string // none may survive
		want    string   // the whole output, when given
	}{
		{in: "upstream=http://alice:hunter2@proxy.corp:8080 next=1", secrets: []string{"hunter2"}, want: "upstream=http://alice:xxxxx@proxy.corp:8080 next=1"},
		{in: `"https":"socks5h://bob:p%40ss:w0rd@10.0.0.1:1080"`, secrets: []string{"p%40ss", "w0rd"}},
		{in: "dial https://u:s3cr3t@h/p and http://host:8080/path", secrets: []string{"s3cr3t"}, want: "dial https://u:xxxxx@h/p and http://host:8080/path"},
		{in: "Proxy-Authorization: Basic YWxpY2U6aHVudGVyMg==", secrets: []string{"YWxpY2U6aHVudGVyMg"}, want: "Proxy-Authorization: Basic xxxxx"},
		{in: "authorization: Digest username=\"a\", response=\"deadbeef\"\nnext line", secrets: []string{"deadbeef"}, want: "authorization: Digest xxxxx\nnext line"},
		{in: `req headers="map[Authorization:[Bearer abc.def-ghi] Accept:[*/*]]"`, secrets: []string{"abc.def-ghi"}},
		{in: `{"Proxy-Authorization":["Basic c2VjcmV0"]}`, secrets: []string{"c2VjcmV0"}},
		{in: `msg="got \"Authorization: Basic c2VjcmV0\" header"`, secrets: []string{"c2VjcmV0"}},
		{in: `msg="sent \"Proxy-Authorization: Digest username=\\\"a\\\", response=\\\"d1g3st\\\"\"" next=1`, secrets: []string{"d1g3st"}},
		{in: `{"header":"Authorization: Digest username=\"a\", response=\"d1g3st\""}`, secrets: []string{"d1g3st"}},
		{in: `{"Authorization":"Digest username=\"a\", response=\"d1g3st\"","next":1}`, secrets: []string{"d1g3st"}},
		{in: "token: Bearer sk-live_0123456789abcdef", secrets: []string{"sk-live_0123456789abcdef"}},
		{in: "sa token " + testJWT + " end", secrets: []string{"eyJhbGci", "c2lnbmF0dXJl", "eyJzdWIi"}, want: "sa token xxxxx end"},
		{in: "TP_PROXY_CREDENTIALS=alice:pass word", secrets: []string{"alice", "pass", "word"}, want: "TP_PROXY_CREDENTIALS=xxxxx"},
		{in: `env TP_UPSTREAM_PROXY="http://proxy.corp:8080" level=INFO`, secrets: []string{"proxy.corp"}},
		{in: `{"TP_PROXY_CREDENTIALS": "carol:secret9"}`, secrets: []string{"secret9", "carol"}},
		{in: "tp_upstream_proxy: socks5://dave:letmein@p:1080", secrets: []string{"letmein"}},
		// What must stay: nothing secret in it.
		{in: "level=INFO msg=connected context=kind proxy=127.0.0.1:1080 authorization failed: forbidden", want: "level=INFO msg=connected context=kind proxy=127.0.0.1:1080 authorization failed: forbidden"},
		{in: "--proxy-credentials-file (default: $TP_PROXY_CREDENTIALS) needed", want: "--proxy-credentials-file (default: $TP_PROXY_CREDENTIALS) needed"},
	} {
		got := string(redact([]byte(tc.in)))
		for _, s := range tc.secrets {
			if strings.Contains(got, s) {
				t.Errorf("redact(%q) = %q: %q survived", tc.in, got, s)
			}
		}
		if tc.want != "" && got != tc.want {
			t.Errorf("redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestReadTail(t *testing.T) {
	var in bytes.Buffer
	for i := 0; i < 1000; i++ {
		in.WriteString("Authorization: Basic c2VjcmV0c2VjcmV0\n")
	}
	got, err := readTail(&in, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > 200 || !strings.HasPrefix(string(got), "[tp gather-logs: cut") {
		t.Fatalf("readTail kept %q", got)
	}
	// It starts at a line: no half header escapes the redactor.
	if r := string(redact(got)); strings.Contains(r, "c2Vj") {
		t.Errorf("a cut line kept a secret: %q", r)
	}
	got, _ = readTail(strings.NewReader("short\n"), 100)
	if string(got) != "short\n" {
		t.Errorf("readTail of a short log: %q", got)
	}
}

func TestGatherLogs(t *testing.T) {
	shortHome(t)
	const secret = "hunter2-planted"
	for name, logs := range map[string][]string{
		"default": {"level=INFO msg=connected upstream=http://alice:" + secret + "@proxy.corp:8080\n", "Proxy-Authorization: Basic " + secret + "\n", "TP_PROXY_CREDENTIALS=alice:" + secret + "\n"},
		"old":     {"level=INFO msg=an ended session " + testJWT + "\n"},
	} {
		path, _ := control.LogPath(name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		for i, l := range logs {
			if err := os.WriteFile(oldLog(path, i), []byte(l), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, _ := json.Marshal(session.Status{ManagerVersion: "v9", ManagerPod: "tp-manager-7d-abc", Intercepts: []session.InterceptSpec{
		{Name: "web-http", Namespace: "ns", Kind: "Deployment", Workload: "web", Port: "http"},
		{Name: "web-grpc", Namespace: "ns", Kind: "Deployment", Workload: "web", Port: "grpc"},
		{Name: "gone", Namespace: "ns", Kind: "StatefulSet", Workload: "gone", Port: "http"},
	}})
	fakeDaemon(t, "default", control.Info{Name: "default", Version: "v9", Context: "ctx", Cluster: "https://api.example:6443", Namespace: "ns",
		ManagerNamespace: deploy.DefaultNamespace, Listen: "127.0.0.1:1080", Session: st, LogPath: "/some/daemon.log",
		Upstream: &control.Upstream{All: "http://alice:" + secret + "@proxy.corp:8080"}})

	restarted := []corev1.ContainerStatus{{Name: deploy.ManagerContainer, Image: "example/tp:v9", RestartCount: 2}}
	mgrDeploy := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: deploy.DefaultNamespace, Name: deploy.ManagerName}, Status: appsv1.DeploymentStatus{Replicas: 1}}
	mgr := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: deploy.DefaultNamespace, Name: "tp-manager-7d-abc", Labels: map[string]string{"app.kubernetes.io/name": deploy.ManagerName}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: deploy.ManagerContainer}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: restarted}}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	web := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}, Spec: appsv1.DeploymentSpec{Selector: sel}}
	webPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-5f-xyz", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: agentspec.Container}}}}
	oldPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-5f-old", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: deploy.DefaultNamespace, Name: "e1"}, Type: "Warning", Reason: "BackOff",
		Message: "Back-off restarting failed container", InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "tp-manager-7d-abc"}, LastTimestamp: metav1.NewTime(time.Now())}
	other := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: deploy.DefaultNamespace, Name: "e2"}, Reason: "Unrelated", InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "someone-else"}}
	cs := fake.NewClientset(mgr, mgrDeploy, web, webPod, oldPod, ev, other)
	cs.PrependReactor("list", "events", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == "ns" {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "events"}, "", errors.New(`User "dev" cannot list resource "events" in namespace "ns"`))
		}
		return false, nil, nil
	})
	var out, msgs bytes.Buffer
	c := New(KubeFlags{Kubeconfig: kubeconfig(t, "ns")}, &out, &msgs)
	c.Version = "v9"
	c.clientset = func(*rest.Config) (kubernetes.Interface, error) { return cs, nil }

	archive := filepath.Join(t.TempDir(), "logs.tar.gz")
	if err := c.GatherLogs(t.Context(), GatherConfig{Output: archive, Image: "example/tp:v9"}); err != nil {
		t.Fatal(err)
	}
	if out.String() != archive+"\n" {
		t.Errorf("tp gather-logs printed %q, want the archive's path", out.String())
	}
	files := readArchive(t, archive)
	var names []string
	for name, data := range files {
		names = append(names, name)
		for _, s := range []string{secret, "eyJhbGci"} {
			if strings.Contains(name, s) || strings.Contains(data, s) {
				t.Errorf("%s holds the secret %q:\n%s", name, s, data)
			}
		}
	}
	slices.Sort(names)
	want := []string{
		"agents/ns/deployment-web/pods.txt",
		"agents/ns/deployment-web/web-5f-xyz/tp-agent.log",
		"errors.txt",
		"manager/tp-system/deployment-status.json",
		"manager/tp-system/events.txt",
		"manager/tp-system/pods.txt",
		"manager/tp-system/tp-manager-7d-abc/manager.log",
		"manager/tp-system/tp-manager-7d-abc/manager.previous.log",
		"sessions/default/daemon.log",
		"sessions/default/daemon.log.1",
		"sessions/default/daemon.log.2",
		"sessions/default/status.json",
		"sessions/old/daemon.log",
		"versions.txt",
	}
	if !slices.Equal(names, want) {
		t.Errorf("the archive holds\n%s\nwant\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	for _, part := range []string{`events in ns: events is forbidden: User "dev" cannot list resource "events"`, `statefulset ns/gone: statefulsets.apps "gone" not found`} {
		if !strings.Contains(files["errors.txt"], part) {
			t.Errorf("errors.txt does not say %q:\n%s", part, files["errors.txt"])
		}
	}
	if n := strings.Count(files["errors.txt"], "events in ns"); n != 1 {
		t.Errorf("errors.txt tells %d times that the events in ns could not be listed:\n%s", n, files["errors.txt"])
	}
	if !strings.Contains(msgs.String(), "errors.txt") {
		t.Errorf("tp gather-logs did not tell that parts failed: %q", msgs.String())
	}
	for name, part := range map[string]string{
		"manager/tp-system/tp-manager-7d-abc/manager.previous.log": "fake logs",
		"manager/tp-system/events.txt":                             "Warning BackOff Pod/tp-manager-7d-abc: Back-off restarting failed container",
		"manager/tp-system/pods.txt":                               "manager: example/tp:v9, ready false, restarts 2",
		"agents/ns/deployment-web/pods.txt":                        "web-5f-old: Running",
		"sessions/default/status.json":                             `"logPath": "/some/daemon.log"`,
		"sessions/default/daemon.log.1":                            "Proxy-Authorization: Basic xxxxx",
		"versions.txt":                                             "session default: daemon tp v9",
	} {
		if !strings.Contains(files[name], part) {
			t.Errorf("%s does not hold %q:\n%s", name, part, files[name])
		}
	}
	if strings.Contains(files["manager/tp-system/events.txt"], "Unrelated") {
		t.Errorf("the manager's events hold another object's:\n%s", files["manager/tp-system/events.txt"])
	}
	if !strings.Contains(files["agents/ns/deployment-web/pods.txt"], "no tp-agent container") {
		t.Errorf("a pod without the agent is not told of:\n%s", files["agents/ns/deployment-web/pods.txt"])
	}
}

// readArchive is the archive's files by name, under its one folder.
func readArchive(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	files := map[string]string{}
	top := ""
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		dir, name, _ := strings.Cut(hdr.Name, "/")
		if top == "" {
			top = dir
		}
		if dir != top || !strings.HasPrefix(top, "tp-logs-") {
			t.Errorf("%s is outside the archive's folder %s", hdr.Name, top)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(data)
	}
	return files
}
