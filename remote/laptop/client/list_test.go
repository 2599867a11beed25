package client

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/tpdev/tp/intercept"
	httproute "github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/output"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

func TestPrintIntercepts(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	all := []control.InterceptInfo{{Name: "web-http", Namespace: "ns", Kind: "Deployment", Workload: "web", Port: "http", Client: "laptop", Holder: "alice", Agents: 1, SinceUnix: since.Unix()}}
	refs := []intercept.Ref{{Namespace: "ns", Kind: "StatefulSet", Name: "db"}, {Namespace: "ns", Kind: "Deployment", Name: "web"}}
	var out bytes.Buffer
	if err := printIntercepts(&out, all, refs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "WORKLOAD") {
		t.Fatalf("tp list:\n%s", out.String())
	}
	if f := strings.Fields(lines[1]); strings.Join(f, " ") != "ns/web Deployment 1 ready web-http http all alice (laptop) "+since.Local().Format(time.RFC3339) {
		t.Errorf("the intercepted workload: %q", lines[1])
	}
	if f := strings.Fields(lines[2]); strings.Join(f, " ") != "ns/db StatefulSet yes - - - - -" {
		t.Errorf("the workload with the agent only: %q", lines[2])
	}

	// A problem goes on a line under its intercept, and the table stays aligned.
	all = append(all, control.InterceptInfo{Name: "api-grpc", Namespace: "ns", Kind: "Deployment", Workload: "api", Port: "grpc", Holder: "bob", SinceUnix: since.Unix(),
		HTTP: &httproute.Filter{Headers: []httproute.Match{{Name: "x-dev", Value: "bob"}}, ID: "bob-1a2b"}})
	all[0].Problem = "the agent record of deployment/web is gone: new pods will start without the agent; run tp intercept again"
	out.Reset()
	if err := printIntercepts(&out, all, refs); err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || lines[2] != "  problem: "+all[0].Problem {
		t.Fatalf("tp list with a problem:\n%s", out.String())
	}
	if !strings.Contains(lines[3], " x-dev=bob, or x-tp-intercept: bob-1a2b ") {
		t.Errorf("a filtered intercept's requests: %q", lines[3])
	}
	col := strings.Index(lines[0], "INTERCEPT")
	for _, i := range []int{1, 3, 4} {
		if len(lines[i]) < col || lines[i][col-2:col] != "  " || lines[i][col] == ' ' {
			t.Errorf("line %d is out of the INTERCEPT column (%d):\n%s", i, col, out.String())
		}
	}
}

// TestInterceptsKeepTheirJSON: the control socket's intercepts read as they did when they
// were the wire protocol's messages.
func TestInterceptsKeepTheirJSON(t *testing.T) {
	pb := &tunnelpb.InterceptInfo{Name: "n", Namespace: "ns", Kind: "Deployment", Workload: "w", Port: "http", Client: "c", SinceUnix: 7, Agents: 2, Holder: "h", Grant: "g"}
	want, _ := json.Marshal(pb)
	got, _ := json.Marshal(interceptsOf([]*tunnelpb.InterceptInfo{pb})[0])
	if string(got) != string(want) {
		t.Errorf("JSON %s, want %s", got, want)
	}
	if interceptsOf(nil) != nil {
		t.Error("no intercepts became an empty list: JSON null turned []")
	}
	// The manager records kinds as it was asked ("deployment"); tp list prints them as the
	// workloads beside them are printed, and as tp.list.json says.
	for in, want := range map[string]string{"deployment": "Deployment", "sts": "StatefulSet", "ReplicaSet": "ReplicaSet", "cronjob": "cronjob"} {
		if got := interceptsOf([]*tunnelpb.InterceptInfo{{Kind: in}})[0].Kind; got != want {
			t.Errorf("kind %q reads as %q, want %q", in, got, want)
		}
	}
}

// fakeCluster gives c a fake Kubernetes API holding objs.
func fakeCluster(c *Client, objs ...runtime.Object) {
	cs := fake.NewClientset(objs...)
	c.clientset = func(*rest.Config) (kubernetes.Interface, error) { return cs, nil }
}

func TestList(t *testing.T) {
	shortHome(t)
	// The agent's record (a Lease) marks an injected workload; an older tp labelled the
	// workload itself.
	recorded := func(ns string, ref intercept.Ref) *coordv1.Lease {
		return &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: intercept.RecordName(ref),
			Labels: map[string]string{intercept.RecordLabel: intercept.RecordVersion}}}
	}
	legacy := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "old", Labels: map[string]string{intercept.InjectedLabel: "true"}}}
	plain := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "plain"}}
	var out, msgs bytes.Buffer
	c := New(KubeFlags{Kubeconfig: kubeconfig(t, "ns")}, &out, &msgs)
	fakeCluster(c, recorded("ns", intercept.Ref{Kind: intercept.Deployment, Name: "web"}), recorded("ns", intercept.Ref{Kind: intercept.StatefulSet, Name: "db"}),
		recorded("other", intercept.Ref{Kind: intercept.Deployment, Name: "api"}), legacy, plain)

	if err := c.List(t.Context(), ListConfig{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ns/web Deployment", "ns/db StatefulSet", "ns/old Deployment"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("tp list in ns does not show %s:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "other/api") || strings.Contains(out.String(), "plain") {
		t.Errorf("tp list in ns:\n%s", out.String())
	}
	out.Reset()
	if err := c.List(t.Context(), ListConfig{AllNamespaces: true}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "ns/web Deployment") || !strings.Contains(out.String(), "other/api Deployment") {
		t.Errorf("tp list -A:\n%s", out.String())
	}
	if msgs.Len() != 0 {
		t.Errorf("without a daemon, tp list said %q", msgs.String())
	}

	out.Reset()
	c = New(KubeFlags{Kubeconfig: kubeconfig(t, "empty")}, &out, &msgs)
	fakeCluster(c, plain)
	if err := c.List(t.Context(), ListConfig{}); err != nil || out.String() != "tp: no workload has tp's agent, nothing is intercepted\n" {
		t.Errorf("tp list of a namespace without the agent: %v %q", err, out.String())
	}
}

func TestListJSON(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	all := []control.InterceptInfo{{Name: "web-http", Namespace: "ns", Kind: "Deployment", Workload: "web", Port: "http", Holder: "alice", Agents: 1, SinceUnix: since.Unix(),
		HTTP: &httproute.Filter{Headers: []httproute.Match{{Name: "x-dev", Value: "a"}}, ID: "alice-1a2b"}}}
	refs := []intercept.Ref{{Namespace: "ns", Kind: "StatefulSet", Name: "db"}, {Namespace: "ns", Kind: "Deployment", Name: "web"}}
	var out bytes.Buffer
	if err := output.Write(&out, output.JSON, listOutput(all, refs)); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := `{"intercepts":[{"agents":1,"holder":"alice","http":{"headers":[{"kind":"exact","name":"x-dev","value":"a"}],"id":"alice-1a2b"},"kind":"Deployment","name":"web-http","namespace":"ns","port":"http","since":"2026-01-02T03:04:05Z","wiretap":false,"workload":"web"}],"kind":"tp.list","version":1,"workloads":[{"intercepted":false,"kind":"StatefulSet","name":"db","namespace":"ns"},{"intercepted":true,"kind":"Deployment","name":"web","namespace":"ns"}]}`
	if b, _ := json.Marshal(got); string(b) != want {
		t.Errorf("tp list -o json:\n%s\nwant\n%s", b, want)
	}
	out.Reset()
	if err := output.Write(&out, output.YAML, listOutput(all, refs)); err != nil {
		t.Fatal(err)
	}
	var back output.List
	if err := yaml.UnmarshalStrict(out.Bytes(), &back); err != nil || back.Header != output.NewHeader(output.KindList) || len(back.Intercepts) != 1 ||
		back.Intercepts[0].Name != "web-http" || !back.Intercepts[0].Since.Equal(since) || back.Intercepts[0].HTTP.ID != "alice-1a2b" ||
		len(back.Workloads) != 2 || !back.Workloads[1].Intercepted || back.Workloads[0].Name != "db" {
		t.Errorf("tp list -o yaml: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := output.Write(&out, output.JSON, listOutput(nil, nil)); err != nil || !strings.Contains(out.String(), `"intercepts": []`) {
		t.Errorf("an empty list: %s %v (want [] rather than null)", out.String(), err)
	}
}
