package manager

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	inj "github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// driftWorld is deployment shop/web intercepted on port http: its record, its pods with the
// agent, and Service web whose EndpointSlice routes port 80 to the agent's 9900.
type driftWorld struct {
	record  *coordv1.Lease
	deploy  *appsv1.Deployment
	pods    []*corev1.Pod
	service *corev1.Service
	slice   *discoveryv1.EndpointSlice
}

var driftTarget = inj.Target{Service: "web", ServicePort: 80, ServicePortName: "web", TargetPortName: "http", AppPort: 8080, AgentPort: 9900}

func driftRecord(t *testing.T, targets ...inj.Target) *coordv1.Lease {
	t.Helper()
	rec := testRecord(t, "http")
	rec.Targets = targets
	l := recordLease(t, inj.Ref{Namespace: "shop", Kind: inj.Deployment, Name: "web"}, rec)
	l.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour))
	return l
}

func driftPod(name string, agent bool) *corev1.Pod {
	yes := true
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", CreationTimestamp: metav1.Now(),
		Labels:          map[string]string{"app": "web", podTemplateHash: "abc"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-abc", UID: "rs-1", Controller: &yes}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "tp-http", ContainerPort: 8080}}}}}}
	if agent {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: agentspec.Container, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9900}}})
	}
	return p
}

func newDriftWorld(t *testing.T) *driftWorld {
	name, port, pod := "web", int32(9900), "Pod"
	ready := true
	return &driftWorld{
		record: driftRecord(t, driftTarget),
		deploy: &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "d-1"},
			Spec:   appsv1.DeploymentSpec{Replicas: new(int32(2)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
			Status: appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2}}, // rolled out
		pods: []*corev1.Pod{driftPod("web-abc-1", true), driftPod("web-abc-2", true)},
		service: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("http")}}}},
		slice: &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-x1", Namespace: "shop",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, TargetRef: &corev1.ObjectReference{Kind: pod, Name: "web-abc-1"}},
				{Addresses: []string{"10.0.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, TargetRef: &corev1.ObjectReference{Kind: pod, Name: "web-abc-2"}},
			}},
	}
}

func (w *driftWorld) objects() []runtime.Object {
	var objs []runtime.Object
	for _, o := range []runtime.Object{w.record, w.deploy, w.service, w.slice} {
		switch o := o.(type) {
		case *coordv1.Lease:
			if o != nil {
				objs = append(objs, o)
			}
		case *appsv1.Deployment:
			if o != nil {
				objs = append(objs, o)
			}
		case *corev1.Service:
			if o != nil {
				objs = append(objs, o)
			}
		case *discoveryv1.EndpointSlice:
			if o != nil {
				objs = append(objs, o)
			}
		}
	}
	for _, p := range w.pods {
		objs = append(objs, p)
	}
	return objs
}

var webKey = interceptKey{"shop", "deployment", "web", "http"}

func TestDriftProblems(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*driftWorld)
		want   []string // substrings of the problem; none: no problem
	}{
		{name: "all well", change: func(*driftWorld) {}},
		{name: "record deleted", change: func(w *driftWorld) { w.record = nil },
			want: []string{"the agent record of deployment/web is gone", "new pods will start without the agent", "run tp intercept again"}},
		{name: "record without the port", change: func(w *driftWorld) {
			other := driftTarget
			other.TargetPortName = "grpc"
			w.record = driftRecord(t, other)
		}, want: []string{"the agent record of deployment/web has no target for port http"}},
		{name: "pods without the agent, not admitted", change: func(w *driftWorld) {
			w.pods = append(w.pods, driftPod("web-abc-3", false), driftPod("web-abc-4", false))
		}, want: []string{"pods web-abc-3, web-abc-4 run without tp's agent: they were created while tp's manager could not admit them",
			"they get it when they are recreated (kubectl rollout restart deployment/web -n shop, or tp intercept again)"}},
		{name: "a pod the webhook skipped", change: func(w *driftWorld) {
			p := driftPod("web-abc-3", false)
			p.Annotations = map[string]string{inj.SkippedAnnotation: "the record names port http, which the pod does not have"}
			w.pods = append(w.pods, p)
		}, want: []string{"pod web-abc-3 runs without tp's agent: the record names port http, which the pod does not have"}},
		{name: "many pods without the agent", change: func(w *driftWorld) {
			w.pods = nil
			for _, n := range []string{"a", "b", "c", "d", "e"} {
				w.pods = append(w.pods, driftPod("web-abc-"+n, false))
			}
		}, want: []string{"pods web-abc-a, web-abc-b, web-abc-c and 2 more run without"}},
		{name: "pods older than the record", change: func(w *driftWorld) {
			p := driftPod("web-old-1", false)
			p.CreationTimestamp = metav1.NewTime(time.Now().Add(-2 * time.Hour))
			w.pods = append(w.pods, p)
		}, want: []string{"pod web-old-1 runs without tp's agent: it was created before tp's agent record and not replaced since", "it gets it when it is recreated"}},
		{name: "pods older than the record, while the rollout replaces them", change: func(w *driftWorld) {
			p := driftPod("web-old-1", false)
			p.CreationTimestamp = metav1.NewTime(time.Now().Add(-2 * time.Hour))
			w.pods = append(w.pods, p)
			w.deploy.Status = appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 2}
		}},
		{name: "new pods without the agent, while rolling out", change: func(w *driftWorld) {
			w.pods = append(w.pods, driftPod("web-new-1", false))
			w.deploy.Status = appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 2}
		}, want: []string{"pod web-new-1 runs without tp's agent"}},
		{name: "terminating and other workloads' pods do not count", change: func(w *driftWorld) {
			gone := driftPod("web-abc-9", false)
			now := metav1.Now()
			gone.DeletionTimestamp = &now
			gone.Finalizers = []string{"x"}
			other := driftPod("db-0", false)
			other.Labels = map[string]string{"app": "db"}
			w.pods = append(w.pods, gone, other)
		}},
		{name: "two containers share the port name", change: func(w *driftWorld) {
			w.pods[1].Spec.Containers = append(w.pods[1].Spec.Containers, corev1.Container{Name: "proxy", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 15001}}})
		}, want: []string{"pod web-abc-2 has two containers with the port name http (tp-agent:9900, proxy:15001): the Service may pick the app's"}},
		{name: "numeric targetPort reverted", change: func(w *driftWorld) {
			num := driftTarget
			num.Numeric = true
			w.record = driftRecord(t, num)
			w.service.Spec.Ports[0].TargetPort = intstr.FromInt32(8080)
		}, want: []string{"Service web port 80 targets 8080 again (changed back, e.g. by a GitOps tool): requests go to the app; run tp intercept again, and tell the GitOps tool to ignore spec.ports[].targetPort (README)"}},
		{name: "numeric targetPort in place", change: func(w *driftWorld) {
			num := driftTarget
			num.Numeric = true
			w.record = driftRecord(t, num)
		}},
		{name: "endpoints route to the app", change: func(w *driftWorld) {
			p := int32(8080)
			w.slice.Ports[0].Port = &p
		}, want: []string{"Service web port 80 routes to pod port 8080, not to tp's agent (9900)"}},
		{name: "endpoints of other pods are not ours", change: func(w *driftWorld) {
			p := int32(8080)
			w.slice.Ports[0].Port = &p
			for i := range w.slice.Endpoints {
				w.slice.Endpoints[i].TargetRef.Name = "elsewhere"
			}
		}},
		{name: "Service gone", change: func(w *driftWorld) { w.service, w.slice = nil, nil },
			want: []string{"Service web is gone"}},
		{name: "workload gone", change: func(w *driftWorld) { w.deploy = nil },
			want: []string{"deployment/web is gone"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newDriftWorld(t)
			tc.change(w)
			d := &driftRound{cs: fake.NewClientset(w.objects()...), workloads: map[interceptKey]*workloadState{}, services: map[string]*serviceState{}}
			got, err := d.problem(context.Background(), webKey)
			if err != nil {
				t.Fatalf("the check could not read the cluster: %v", err)
			}
			if len(tc.want) == 0 && got != "" {
				t.Errorf("problem %q; want none", got)
			}
			if len(tc.want) > 0 && got == "" {
				t.Errorf("no problem; want %q", tc.want)
			}
			for _, s := range tc.want {
				if !strings.Contains(got, s) {
					t.Errorf("problem %q; want it to say %q", got, s)
				}
			}
		})
	}
}

// The holder hears of a problem once, when it appears, and once more when it clears; List
// tells it too, and asking for the intercept again keeps it.
func TestDriftTellsTheHolderOfChanges(t *testing.T) {
	ctx := context.Background()
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	c := newClient(r)
	msg := create("web-http", "web", "alice", "ok")
	r.handleClient(ctx, c, msg)
	if res := result(t, c); res.GetError() != "" || res.GetProblem() != "" {
		t.Fatalf("create: %+v", res)
	}
	w := newDriftWorld(t)
	w.record = nil
	cs := fake.NewClientset(w.objects()...)
	r.checkDrift(ctx, cs)
	res := result(t, c)
	if !strings.Contains(res.GetProblem(), "agent record of deployment/web is gone") || res.GetName() != "web-http" || res.GetHolder() != "alice" || res.GetError() != "" || !res.GetReport() {
		t.Fatalf("after the record went: %+v", res)
	}
	r.checkDrift(ctx, cs)
	if len(c.out) != 0 {
		t.Errorf("an unchanged problem was sent again: %v", <-c.out)
	}
	// An API server that does not answer changes nothing: the last known problem stands.
	down := fake.NewClientset(newDriftWorld(t).objects()...)
	down.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd is away")
	})
	r.checkDrift(ctx, down)
	if len(c.out) != 0 || r.byKey[webKey][0].problem != res.GetProblem() {
		t.Errorf("an unreadable cluster changed the problem: %v", r.byKey[webKey][0].problem)
	}
	resp, err := r.ClientAPI().List(ctx, &tunnelpb.ListRequest{Grants: []*tunnelpb.GrantRef{{Namespace: "shop", Name: "alice", SecretSha256: grant.Hash("ok")}}})
	if err != nil || len(resp.GetIntercepts()) != 1 || resp.GetIntercepts()[0].GetProblem() != res.GetProblem() {
		t.Errorf("List: %v, %v", resp, err)
	}
	r.handleClient(ctx, c, msg) // the client asks again (a reconnection): the problem stays
	if again := result(t, c); again.GetProblem() != res.GetProblem() || again.GetReport() {
		t.Errorf("asked again: problem %q", again.GetProblem())
	}

	w = newDriftWorld(t)
	r.checkDrift(ctx, fake.NewClientset(w.objects()...))
	if res := result(t, c); res.GetProblem() != "" || res.GetName() != "web-http" || !res.GetReport() {
		t.Errorf("after the record came back: %+v", res)
	}
}
