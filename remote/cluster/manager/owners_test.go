package manager

import (
	"context"
	"errors"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// chain is a Deployment, its ReplicaSet and their pod, a StatefulSet and its pod, as the
// controllers make them.
type chain struct {
	d      *appsv1.Deployment
	rs     *appsv1.ReplicaSet
	pod    *corev1.Pod
	sts    *appsv1.StatefulSet
	stsPod *corev1.Pod
}

func newChain() chain {
	ref := func(kind, name, uid string) []metav1.OwnerReference {
		yes := true
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, UID: types.UID(uid), Controller: &yes}}
	}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	rsSel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web", podTemplateHash: "7d4b9c"}}
	return chain{
		d: &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "d-1"},
			Spec: appsv1.DeploymentSpec{Selector: sel}},
		rs: &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-7d4b9c", Namespace: "default", UID: "rs-1",
			Labels: map[string]string{"app": "web", podTemplateHash: "7d4b9c"}, OwnerReferences: ref("Deployment", "web", "d-1")},
			Spec: appsv1.ReplicaSetSpec{Selector: rsSel}},
		pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-7d4b9c-x2x9z", Namespace: "default", UID: "p-1",
			Labels: map[string]string{"app": "web", podTemplateHash: "7d4b9c"}, OwnerReferences: ref("ReplicaSet", "web-7d4b9c", "rs-1")}},
		sts: &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "default", UID: "s-1"},
			Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}},
		stsPod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "default", UID: "p-2",
			Labels: map[string]string{"app": "db"}, OwnerReferences: ref("StatefulSet", "db", "s-1")}},
	}
}

// objects are the workloads that exist (a test removes one by setting it nil).
func (c chain) objects() []runtime.Object {
	var objs []runtime.Object
	if c.d != nil {
		objs = append(objs, c.d)
	}
	if c.rs != nil {
		objs = append(objs, c.rs)
	}
	if c.sts != nil {
		objs = append(objs, c.sts)
	}
	return objs
}

func TestAgentWorkloadFollowsRealOwners(t *testing.T) {
	c := newChain()
	cs := fake.NewClientset(c.objects()...)
	for _, tc := range []struct {
		pod        *corev1.Pod
		kind, name string
	}{
		{pod: c.pod, kind: "Deployment", name: "web"},
		{pod: c.stsPod, kind: "StatefulSet", name: "db"},
	} {
		kind, name, err := agentWorkload(context.Background(), cs, tc.pod)
		if err != nil || kind != tc.kind || name != tc.name {
			t.Errorf("pod %s: %s %s, %v; want %s %s", tc.pod.Name, kind, name, err, tc.kind, tc.name)
		}
	}
	// A ReplicaSet no Deployment controls is the workload itself.
	c.rs.OwnerReferences = nil
	cs = fake.NewClientset(c.objects()...)
	if kind, name, err := agentWorkload(context.Background(), cs, c.pod); err != nil || kind != "ReplicaSet" || name != c.rs.Name {
		t.Errorf("a bare ReplicaSet's pod: %s %s, %v", kind, name, err)
	}
}

func TestAgentWorkloadRefusesOwnersThatAreNotReal(t *testing.T) {
	for name, change := range map[string]func(*chain) *corev1.Pod{
		"pod controlled by a Deployment directly": func(c *chain) *corev1.Pod {
			c.pod.OwnerReferences[0].Kind, c.pod.OwnerReferences[0].Name, c.pod.OwnerReferences[0].UID = "Deployment", "web", "d-1"
			return c.pod
		},
		"no controller":          func(c *chain) *corev1.Pod { c.pod.OwnerReferences = nil; return c.pod },
		"owned by a Job":         func(c *chain) *corev1.Pod { c.pod.OwnerReferences[0].Kind = "Job"; return c.pod },
		"replicaset missing":     func(c *chain) *corev1.Pod { c.rs = nil; return c.pod },
		"replicaset uid differs": func(c *chain) *corev1.Pod { c.rs.UID = "rs-2"; return c.pod },
		"reference without uid":  func(c *chain) *corev1.Pod { c.pod.OwnerReferences[0].UID = ""; return c.pod },
		"replicaset selects not": func(c *chain) *corev1.Pod { c.pod.Labels = map[string]string{podTemplateHash: "7d4b9c"}; return c.pod },
		"deployment missing":     func(c *chain) *corev1.Pod { c.d = nil; return c.pod },
		"deployment uid differs": func(c *chain) *corev1.Pod { c.d.UID = "d-2"; return c.pod },
		"deployment selects not": func(c *chain) *corev1.Pod {
			c.d.Spec.Selector.MatchLabels = map[string]string{"app": "api"}
			return c.pod
		},
		"deployment selects all": func(c *chain) *corev1.Pod { c.d.Spec.Selector = &metav1.LabelSelector{}; return c.pod },
		"pod-template-hash differs": func(c *chain) *corev1.Pod {
			c.rs.Labels[podTemplateHash], c.rs.Spec.Selector.MatchLabels[podTemplateHash] = "5f6a7b", "7d4b9c"
			return c.pod
		},
		"replicaset without pod-template-hash": func(c *chain) *corev1.Pod { delete(c.rs.Labels, podTemplateHash); return c.pod },
		"statefulset missing":                  func(c *chain) *corev1.Pod { c.sts = nil; return c.stsPod },
		"statefulset uid differs":              func(c *chain) *corev1.Pod { c.sts.UID = "s-2"; return c.stsPod },
		"statefulset selects not": func(c *chain) *corev1.Pod {
			c.stsPod.Labels = map[string]string{"app": "web"}
			return c.stsPod
		},
	} {
		c := newChain()
		pod := change(&c)
		cs := fake.NewClientset(c.objects()...)
		kind, workload, err := agentWorkload(context.Background(), cs, pod)
		if err == nil {
			t.Errorf("%s: accepted as %s %s", name, kind, workload)
			continue
		}
		if !isRefusal(err) {
			t.Errorf("%s: %v is no refusal", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}

func TestAgentWorkloadTellsAFailedReadFromARefusal(t *testing.T) {
	c := newChain()
	cs := fake.NewClientset(c.objects()...)
	cs.PrependReactor("get", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("the API server is restarting")
	})
	_, _, err := agentWorkload(context.Background(), cs, c.pod)
	if err == nil || isRefusal(err) || !apierrors.IsServiceUnavailable(errors.Unwrap(err)) {
		t.Fatalf("a failed read of the deployment: %v, want the API server's error, not a refusal", err)
	}
}
