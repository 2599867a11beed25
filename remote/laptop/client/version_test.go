package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote/laptop/output"
)

func TestSkew(t *testing.T) {
	for _, tt := range []struct {
		tp, manager, ns string
		skew, note      string // substrings; "" for none
	}{
		{"v0.5.0", "v0.5.0", "tp-system", "", ""},
		{"v0.5.0", "v0.5.3", "tp-system", "", ""}, // patches mix
		{"v0.5.2", "v0.5.0-rc.1", "tp-system", "", ""},
		{"v0.5.0", "v0.3.1", "tp-system", "the manager in tp-system is v0.3.1, this tp is v0.5.0: run tp install to upgrade it (or use tp v0.3.x)", ""},
		{"v1.0.0", "v0.9.4", "team", "run tp install -n team to upgrade it (or use tp v0.9.x)", ""},
		{"v0.5.0", "v0.6.0", "tp-system", "the manager in tp-system is v0.6.0, newer than this tp (v0.5.0): use tp v0.6.x (or run tp install to put this tp's back)", ""},
		{"v0.10.0", "v0.9.0", "tp-system", "to upgrade it", ""}, // numbers, not strings
		{"v2.1.0", "v10.1.0", "tp-system", "newer than this tp", ""},
		{"dev", "dev", "tp-system", "", ""},
		{"dev", "v0.5.0", "tp-system", "", "a development build cannot tell whether they work together; tp install installs this tp's own"},
		{"v0.5.0-3-gabc1234", "v0.5.0", "tp-system", "", "the manager in tp-system is v0.5.0, this tp is v0.5.0-3-gabc1234"},
		{"v0.5.0-dirty", "v0.5.0", "tp-system", "", "development build"},
		{"v0.5.0", "v0.3.1-2-gdeadbee", "tp-system", "", "development build"},
		{"v0.5.0", "", "tp-system", "", ""}, // a manager of unknown version: nothing to say
		{"", "v0.5.0", "tp-system", "", ""},
	} {
		skew, note := Skew(tt.tp, tt.manager, tt.ns)
		if tt.skew == "" && skew != "" || tt.skew != "" && !strings.Contains(skew, tt.skew) {
			t.Errorf("Skew(%q, %q): skew %q, want %q", tt.tp, tt.manager, skew, tt.skew)
		}
		if tt.note == "" && note != "" || tt.note != "" && !strings.Contains(note, tt.note) {
			t.Errorf("Skew(%q, %q): note %q, want %q", tt.tp, tt.manager, note, tt.note)
		}
	}
}

func TestImageTag(t *testing.T) {
	for in, want := range map[string]string{
		"registry.example.com/tp/tp:v0.3.1":              "v0.3.1",
		"localhost:5000/tp/tp:dev":                       "dev",
		"localhost:5000/tp/tp":                           "",
		"tp":                                             "",
		"tp/tp:v0.2@sha256:0123456789abcdef":             "v0.2",
		"registry.example.com/tp/tp@sha256:0123456789ab": "",
	} {
		if got := imageTag(in); got != want {
			t.Errorf("imageTag(%q) = %q, want %q", in, got, want)
		}
	}
}

// managerDeployment is tp install's Deployment of image in tp-system, ready or not.
func managerDeployment(image string, ready bool) *appsv1.Deployment {
	one := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: deploy.DefaultNamespace, Name: deploy.ManagerName, Generation: 2,
			Labels: map[string]string{deploy.ManagedByLabel: deploy.ManagedByValue}},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "sidecar", Image: "other:1"}, {Name: deploy.ManagerContainer, Image: image},
		}}}},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1},
	}
	if !ready {
		dep.Status = appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 2, UpdatedReplicas: 1, AvailableReplicas: 0}
	}
	return dep
}

func TestVersion(t *testing.T) {
	for _, tt := range []struct {
		name    string
		objs    []runtime.Object
		tp      string
		want    output.ManagerVersion
		text    string // the manager's line
		warning string // on stderr
	}{
		{name: "ready", objs: []runtime.Object{managerDeployment("r.example/tp/tp:v0.5.1", true)}, tp: "v0.5.0",
			want: output.ManagerVersion{Version: "v0.5.1", Image: "r.example/tp/tp:v0.5.1", Namespace: "tp-system", Ready: true},
			text: "manager: v0.5.1 in tp-system (image r.example/tp/tp:v0.5.1, ready)\n"},
		{name: "not ready", objs: []runtime.Object{managerDeployment("r.example/tp/tp:v0.5.0", false)}, tp: "v0.5.0",
			want: output.ManagerVersion{Version: "v0.5.0", Image: "r.example/tp/tp:v0.5.0", Namespace: "tp-system"},
			text: "manager: v0.5.0 in tp-system (image r.example/tp/tp:v0.5.0, not ready)\n"},
		{name: "skew", objs: []runtime.Object{managerDeployment("r.example/tp/tp:v0.3.1", true)}, tp: "v0.5.0",
			want: output.ManagerVersion{Version: "v0.3.1", Image: "r.example/tp/tp:v0.3.1", Namespace: "tp-system", Ready: true,
				Skew: "the manager in tp-system is v0.3.1, this tp is v0.5.0: run tp install to upgrade it (or use tp v0.3.x)"},
			text:    "manager: v0.3.1 in tp-system (image r.example/tp/tp:v0.3.1, ready)\n",
			warning: "tp: warning: the manager in tp-system is v0.3.1, this tp is v0.5.0: run tp install to upgrade it (or use tp v0.3.x)\n"},
		{name: "absent", tp: "v0.5.0",
			want: output.ManagerVersion{Namespace: "tp-system", Error: "tp is not installed in namespace tp-system (tp install installs it)"},
			text: "manager: unknown (tp is not installed in namespace tp-system (tp install installs it))\n"},
		{name: "not tp's", objs: []runtime.Object{func() runtime.Object { d := managerDeployment("x:1", true); d.Labels = nil; return d }()}, tp: "v0.5.0",
			want: output.ManagerVersion{Namespace: "tp-system", Error: "Deployment tp-manager in namespace tp-system is not tp's (no app.kubernetes.io/managed-by=tp label)"},
			text: "manager: unknown (Deployment tp-manager in namespace tp-system is not tp's (no app.kubernetes.io/managed-by=tp label))\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, f := range []string{"text", "json", "yaml"} {
				var out, msgs bytes.Buffer
				c := New(KubeFlags{Kubeconfig: kubeconfig(t, "ns")}, &out, &msgs)
				c.Version = tt.tp
				fakeCluster(c, tt.objs...)
				if err := c.ShowVersion(t.Context(), VersionConfig{Image: "r.example/tp/tp:" + tt.tp, Output: f}); err != nil {
					t.Fatalf("-o %s: %v", f, err)
				}
				if msgs.String() != tt.warning {
					t.Errorf("-o %s: stderr %q, want %q", f, msgs.String(), tt.warning)
				}
				if f == "text" {
					if !strings.HasPrefix(out.String(), "tp "+tt.tp+"\ncluster image: r.example/tp/tp:"+tt.tp+"\nbuilt with: go") || !strings.HasSuffix(out.String(), tt.text) {
						t.Errorf("tp version printed:\n%s\nwant it to end in %q", out.String(), tt.text)
					}
					continue
				}
				var got output.Version
				if f == "json" {
					err := json.Unmarshal(out.Bytes(), &got)
					if err != nil {
						t.Fatal(err)
					}
				} else if err := yaml.UnmarshalStrict(out.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
				if got.Header != output.NewHeader(output.KindVersion) || got.Client.Version != tt.tp || got.Client.Image != "r.example/tp/tp:"+tt.tp || got.Client.Go == "" || got.Client.OS == "" || got.Client.Arch == "" {
					t.Errorf("-o %s: %+v %+v", f, got.Header, got.Client)
				}
				if got.Manager != tt.want {
					t.Errorf("-o %s: manager\n %+v\nwant\n %+v", f, got.Manager, tt.want)
				}
			}
		})
	}
}

// A cluster that cannot be reached, or no kubeconfig at all, is no failure: the manager is
// unknown.
func TestVersionWithoutACluster(t *testing.T) {
	var out, msgs bytes.Buffer
	c := New(KubeFlags{Kubeconfig: kubeconfig(t, "ns")}, &out, &msgs)
	c.Version = "v0.5.0"
	cs := fake.NewClientset()
	cs.PrependReactor("get", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("dial tcp 192.0.2.1:6443: i/o timeout")
	})
	c.clientset = func(*rest.Config) (kubernetes.Interface, error) { return cs, nil }
	if err := c.ShowVersion(t.Context(), VersionConfig{Output: "json"}); err != nil {
		t.Fatal(err)
	}
	var got output.Version
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.Manager.Error != "cannot reach the cluster: dial tcp 192.0.2.1:6443: i/o timeout" || got.Manager.Namespace != "tp-system" {
		t.Errorf("tp version -o json: %v %s", err, out.String())
	}

	out.Reset()
	c = New(KubeFlags{Kubeconfig: filepath.Join(t.TempDir(), "none")}, &out, &msgs)
	c.Version = "v0.5.0"
	if err := c.ShowVersion(t.Context(), VersionConfig{ManagerNamespace: "team"}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[3], "manager: unknown (cannot reach the cluster: ") || msgs.Len() != 0 {
		t.Errorf("tp version without a kubeconfig:\n%s%s", out.String(), msgs.String())
	}

	if err := c.ShowVersion(t.Context(), VersionConfig{Output: "xml"}); err == nil || exitCode(err) != 2 || err.Error() != `-o "xml": want text, json or yaml` {
		t.Errorf("tp version -o xml: %v", err)
	}
}
