package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/grant"
)

const ns = "tp-system"

// fakeInstaller runs install logic on a fake clientset; applied records what was applied.
type fakeInstaller struct {
	*installer
	cs      *fake.Clientset
	applied []*unstructured.Unstructured
	log     bytes.Buffer
}

func newFake(t *testing.T, objs ...runtime.Object) *fakeInstaller {
	t.Helper()
	f := &fakeInstaller{cs: fake.NewClientset(objs...)}
	f.installer = &installer{
		cs:   f.cs,
		host: "https://k8s.test:6443",
		log:  &f.log,
		poll: 5 * time.Millisecond,
		apply: func(ctx context.Context, obj *unstructured.Unstructured) error {
			f.applied = append(f.applied, obj)
			return nil
		},
	}
	return f
}

func (f *fakeInstaller) appliedKinds() []string {
	var kinds []string
	for _, o := range f.applied {
		kinds = append(kinds, o.GetKind())
	}
	return kinds
}

// rollout is a manager Deployment at revision 2, its ReplicaSets (the old one of revision 1
// with a Ready pod) and one pod of revision 2 with the given container status.
type rollout struct {
	dep            *appsv1.Deployment
	oldRS, newRS   *appsv1.ReplicaSet
	oldPod, newPod *corev1.Pod
}

func newRollout(cs *corev1.ContainerStatus, conds ...corev1.PodCondition) rollout {
	labels := map[string]string{"app.kubernetes.io/name": ManagerName}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: ManagerName, Namespace: ns, UID: "dep", Generation: 2, Labels: labels,
			Annotations: map[string]string{revisionKey: "2"}},
		Spec: appsv1.DeploymentSpec{Replicas: new(int32(1)), Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: ManagerContainer, Image: testImage,
				Env: []corev1.EnvVar{{Name: ManagedNamespacesEnv, Value: "a,b"}, {Name: AllowedCIDRsEnv, Value: "10.250.0.1/32"}}}}}}},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 2, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1},
	}
	rs := func(name, rev string) *appsv1.ReplicaSet {
		return &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(name), Labels: labels,
			Annotations:     map[string]string{revisionKey: rev},
			OwnerReferences: []metav1.OwnerReference{{UID: "dep", Kind: "Deployment", Name: ManagerName}}}}
	}
	owned := func(p *corev1.Pod, rs *appsv1.ReplicaSet) *corev1.Pod {
		p.Namespace = ns
		p.UID = types.UID(p.Name)
		p.OwnerReferences = []metav1.OwnerReference{{UID: rs.UID, Kind: "ReplicaSet", Name: rs.Name}}
		return p
	}
	r := rollout{dep: dep, oldRS: rs("tp-manager-old", "1"), newRS: rs("tp-manager-new", "2")}
	r.oldPod = owned(managerPod("tp-manager-old-1", &corev1.ContainerStatus{Ready: true,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}, readyCond(true)), r.oldRS)
	r.newPod = owned(managerPod("tp-manager-new-1", cs, conds...), r.newRS)
	return r
}

func (r rollout) objects() []runtime.Object {
	return []runtime.Object{r.dep, r.oldRS, r.newRS, r.oldPod, r.newPod}
}

// done marks the rollout complete: the new pod Ready, the old one scaled away.
func (r rollout) done() rollout {
	r.newPod.Status.Conditions = []corev1.PodCondition{readyCond(true)}
	r.newPod.Status.ContainerStatuses[0].Ready = true
	r.dep.Status = appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1}
	return r
}

func running() *corev1.ContainerStatus {
	return &corev1.ContainerStatus{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}

func TestWaitReadyWhenTheRolloutIsDone(t *testing.T) {
	f := newFake(t, newRollout(running()).done().objects()...)
	inst, err := f.waitReady(context.Background(), Options{Namespace: ns, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !inst.Ready || inst.Pod != "tp-manager-new-1" || inst.Image != testImage || !slices.Equal(inst.ManagedNamespaces, []string{"a", "b"}) ||
		!slices.Equal(inst.AllowedCIDRs, []string{"10.250.0.1/32"}) {
		t.Fatalf("installed: %+v", inst)
	}
}

func TestWaitIgnoresTheOldRevisionsReadyPod(t *testing.T) {
	// The old manager is Ready, the new one is still starting: not done.
	f := newFake(t, newRollout(running(), readyCond(false)).objects()...)
	_, err := f.waitReady(context.Background(), Options{Namespace: ns, Timeout: 50 * time.Millisecond})
	wantKind(t, err, remote.Timeout, "not ready within 50ms: pod tp-manager-new-1 is running but not ready")
	if strings.Contains(err.Error(), "tp-manager-old-1") {
		t.Errorf("the old revision's pod is described: %v", err)
	}
}

func TestWaitWaitsForOldPodsToGo(t *testing.T) {
	r := newRollout(running()).done()
	r.dep.Status.Replicas = 2
	f := newFake(t, r.objects()...)
	_, err := f.waitReady(context.Background(), Options{Namespace: ns, Timeout: 20 * time.Millisecond})
	wantKind(t, err, remote.Timeout, "1 old manager pods are being replaced")
}

// startsLater hides the pods from the first look, as when the wait starts before the
// ReplicaSet makes its pod: the failure then belongs to this install.
func (f *fakeInstaller) startsLater() {
	first := true
	f.cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if first {
			first = false
			return true, &corev1.PodList{}, nil
		}
		return false, nil, nil
	})
}

func TestWaitFailsFastOnAMissingImage(t *testing.T) {
	f := newFake(t, newRollout(waiting("ErrImageNeverPull", `Container image "localhost/tp/tp:v1" is not present with pull policy of Never`)).objects()...)
	f.startsLater()
	start := time.Now()
	_, err := f.waitReady(context.Background(), Options{Namespace: ns, Timeout: time.Minute})
	wantKind(t, err, remote.Image, `the manager image "localhost/tp/tp:v1" is not available`, "ErrImageNeverPull", "is not present", "make cluster-load")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s: must not wait for the timeout", took)
	}
}

func TestWaitFailsFastOnACrashWithThePreviousLogs(t *testing.T) {
	r := newRollout(&corev1.ContainerStatus{
		RestartCount:         2,
		State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3, Reason: "Error"}},
	})
	f := newFake(t, r.objects()...)
	f.startsLater()
	var asked *corev1.PodLogOptions
	f.cs.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "log" {
			return false, nil, nil
		}
		asked = a.(k8stesting.GenericActionImpl).Value.(*corev1.PodLogOptions)
		return true, &runtime.Unknown{Raw: []byte("starting\nmanager: cannot list nodes: forbidden\n")}, nil
	})
	_, err := f.waitReady(context.Background(), Options{Namespace: ns, Timeout: time.Minute})
	wantKind(t, err, remote.Crash, "exited with code 3", "restarts: 2", "last log lines", "| starting\n", "| manager: cannot list nodes: forbidden")
	if asked == nil || !asked.Previous || asked.Container != ManagerContainer || asked.TailLines == nil || *asked.TailLines != logTail {
		t.Fatalf("log request %+v: want the previous instance's last %d lines", asked, logTail)
	}
}

func TestWaitGivesAFailedPodFromBeforeOneFreshStart(t *testing.T) {
	// The image was missing at the last install and has been loaded since; the kubelet
	// would retry only after its back-off.
	r := newRollout(waiting("ImagePullBackOff", "Back-off pulling image"))
	r.dep.Status = appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1}
	f := newFake(t, r.objects()...)
	replacement := func(cs *corev1.ContainerStatus, conds ...corev1.PodCondition) {
		f.cs.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
			p := newRollout(cs, conds...).newPod
			p.Name, p.UID = "tp-manager-new-2", "tp-manager-new-2"
			if err := f.cs.Tracker().Add(p); err != nil {
				t.Error(err)
			}
			return false, nil, nil
		})
	}
	replacement(&corev1.ContainerStatus{Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}, readyCond(true))
	inst, err := f.waitReady(context.Background(), Options{Namespace: ns, Timeout: time.Minute})
	if err != nil || inst.Pod != "tp-manager-new-2" {
		t.Fatalf("got %+v, %v; want the replacement pod ready", inst, err)
	}
	if !strings.Contains(f.log.String(), "pod tp-manager-new-1: ImagePullBackOff, from before this install; replacing it") {
		t.Errorf("log:\n%s", f.log.String())
	}

	// A replacement that fails too is the answer: no second fresh start.
	f = newFake(t, r.objects()...)
	replacement(waiting("ErrImagePull", "not found"))
	_, err = f.waitReady(context.Background(), Options{Namespace: ns, Timeout: time.Minute})
	wantKind(t, err, remote.Image, "ErrImagePull", "not found")
}

func TestWaitFailsFastWhenTheClusterRefusesThePod(t *testing.T) {
	r := newRollout(running())
	r.dep.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentReplicaFailure, Status: corev1.ConditionTrue,
		Reason: "FailedCreate", Message: `pods "tp-manager-x" is forbidden: violates PodSecurity "restricted:latest"`}}
	f := newFake(t, r.objects()...)
	_, err := f.waitReady(context.Background(), Options{Namespace: ns, Timeout: time.Minute})
	wantKind(t, err, remote.Cluster, "does not let Deployment tp-system/tp-manager create the manager's pod", "violates PodSecurity", "ask a cluster admin")
}

func TestWaitTimeoutShowsPodsAndWarnings(t *testing.T) {
	r := newRollout(nil, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
		Message: "0/3 nodes are available: 3 Insufficient cpu."})
	ev := func(name, obj, reason string) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Type: corev1.EventTypeWarning, Reason: reason,
			Message: reason + " message", InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: obj}, LastTimestamp: metav1.Now()}
	}
	objs := append(r.objects(), ev("e1", "tp-manager-new-1", "FailedScheduling"), ev("e2", "tp-manager-old-1", "Unrelated"))
	f := newFake(t, objs...)
	_, err := f.waitReady(context.Background(), Options{Namespace: ns, Timeout: 30 * time.Millisecond})
	e := wantKind(t, err, remote.Timeout,
		"the manager was not ready within 30ms: pod tp-manager-new-1 is not scheduled: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.",
		"pod tp-manager-new-1: Pending; PodScheduled=False (Unschedulable",
		"recent warning events:", "FailedScheduling pod/tp-manager-new-1: FailedScheduling message",
		"kubectl -n tp-system describe pods -l app.kubernetes.io/name=tp-manager", "--timeout")
	if strings.Contains(e.Detail, "Unrelated") {
		t.Errorf("events of other revisions' pods are shown:\n%s", e.Detail)
	}
	if e.Kind.UserFault() {
		t.Error("a timeout is not the user's fault")
	}
}

func TestWaitTimeoutWhenTheControllerDoesNotAct(t *testing.T) {
	r := newRollout(running()).done()
	r.dep.Status.ObservedGeneration = 1
	f := newFake(t, r.objects()...)
	_, err := f.waitReady(context.Background(), Options{Namespace: ns, Timeout: 10 * time.Millisecond})
	wantKind(t, err, remote.Timeout, "has not picked up generation 2", "is kube-controller-manager running?")
}

func TestWaitStopsWithTheContext(t *testing.T) {
	f := newFake(t, newRollout(running(), readyCond(false)).objects()...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := f.waitReady(ctx, Options{Namespace: ns, Timeout: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's error", err)
	}
}

func TestInstallAppliesTheManifestAndReportsProgress(t *testing.T) {
	f := newFake(t, newRollout(running()).done().objects()...)
	opts, err := Options{Image: testImage}.withDefaults(true)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := f.install(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	want := renderedKinds
	if !slices.Equal(f.appliedKinds(), want) || !inst.Ready {
		t.Fatalf("applied %v, want %v; installed %+v", f.appliedKinds(), want, inst)
	}
	for _, line := range []string{"installing tp's manager in namespace tp-system (image localhost/tp/tp:v1)", "manager ready: pod tp-manager-new-1"} {
		if !strings.Contains(f.log.String(), line) {
			t.Errorf("log does not say %q:\n%s", line, f.log.String())
		}
	}
}

func TestInstallLeavesAForeignNamespaceAlone(t *testing.T) {
	objs := append(newRollout(running()).done().objects(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	f := newFake(t, objs...)
	opts, _ := Options{Image: testImage}.withDefaults(true)
	if _, err := f.install(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(f.appliedKinds(), "Namespace") {
		t.Fatalf("applied %v: a namespace tp did not make must not be labelled as tp's", f.appliedKinds())
	}
	if !strings.Contains(f.log.String(), "is not tp's") {
		t.Errorf("log does not say the namespace is not tp's:\n%s", f.log.String())
	}
}

func TestInstallExplainsApplyFailures(t *testing.T) {
	opts, _ := Options{Image: testImage, ManagedNamespaces: []string{"nope"}}.withDefaults(true)

	f := newFake(t)
	f.apply = func(ctx context.Context, obj *unstructured.Unstructured) error {
		if obj.GetKind() == "Role" {
			return apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, obj.GetNamespace())
		}
		return nil
	}
	_, err := f.install(context.Background(), opts)
	wantKind(t, err, remote.Usage, `managed namespace "nope" does not exist`, "create it first")

	f = newFake(t)
	f.apply = func(ctx context.Context, obj *unstructured.Unstructured) error {
		if obj.GetKind() == "ClusterRole" {
			return apierrors.NewForbidden(schema.GroupResource{Group: "rbac.authorization.k8s.io", Resource: "clusterroles"}, obj.GetName(),
				errors.New(`User "dev" cannot patch resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope`))
		}
		return nil
	}
	_, err = f.install(context.Background(), opts)
	wantKind(t, err, remote.Access, "no permission to patch clusterroles.rbac.authorization.k8s.io at the cluster scope (apply ClusterRole tp-manager-tp-system)",
		"a cluster admin must install tp")

	f = newFake(t)
	f.reach = func(context.Context) error { return unreachable(f.host, errors.New("connection refused")) }
	_, err = f.install(context.Background(), opts)
	wantKind(t, err, remote.Unreachable, "cannot reach the Kubernetes API at https://k8s.test:6443: connection refused")
	if len(f.applied) > 0 {
		t.Error("applied objects though the API is unreachable")
	}
}

func rbacObjects(instance string, namespaces ...string) []runtime.Object {
	labels := map[string]string{ManagedByLabel: ManagedByValue, InstanceLabel: instance}
	var objs []runtime.Object
	for _, n := range namespaces {
		meta := metav1.ObjectMeta{Name: RBACName(instance), Namespace: n, Labels: labels}
		objs = append(objs, &rbacv1.Role{ObjectMeta: meta}, &rbacv1.RoleBinding{ObjectMeta: meta})
	}
	return objs
}

func TestInstallPrunesRolesOfNamespacesNoLongerManaged(t *testing.T) {
	objs := newRollout(running()).done().objects()
	objs = append(objs, rbacObjects(ns, "keep", "drop")...)
	objs = append(objs, rbacObjects("other-install", "drop")...)
	f := newFake(t, objs...)
	opts, _ := Options{Image: testImage, ManagedNamespaces: []string{"keep"}}.withDefaults(true)
	if _, err := f.install(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	roles, _ := f.cs.RbacV1().Roles("").List(ctx, metav1.ListOptions{})
	bindings, _ := f.cs.RbacV1().RoleBindings("").List(ctx, metav1.ListOptions{})
	var left []string
	for _, r := range roles.Items {
		left = append(left, "Role "+r.Namespace+"/"+r.Name)
	}
	for _, b := range bindings.Items {
		left = append(left, "RoleBinding "+b.Namespace+"/"+b.Name)
	}
	slices.Sort(left)
	want := []string{"Role drop/tp-manager-other-install", "Role keep/tp-manager-tp-system",
		"RoleBinding drop/tp-manager-other-install", "RoleBinding keep/tp-manager-tp-system"}
	if !slices.Equal(left, want) {
		t.Fatalf("left %v, want %v", left, want)
	}
}

func TestStatus(t *testing.T) {
	f := newFake(t, newRollout(running()).done().objects()...)
	st, err := f.status(context.Background(), ns)
	if err != nil || !st.Ready || st.Pod != "tp-manager-new-1" || st.Problem != nil || st.Image != testImage {
		t.Fatalf("status %+v, %v", st, err)
	}

	f = newFake(t, newRollout(waiting("ImagePullBackOff", "back-off pulling")).objects()...)
	st, err = f.status(context.Background(), ns)
	if err != nil || st.Ready || st.ReadyReplicas != 1 || remote.KindOf(st.Problem) != remote.Image {
		t.Fatalf("status %+v, %v: want not ready, the old pod counted, an image problem", st, err)
	}

	f = newFake(t, newRollout(running(), readyCond(false)).objects()...)
	st, err = f.status(context.Background(), ns)
	if err != nil || st.Ready || st.Problem == nil || !strings.Contains(st.Problem.Error(), "not ready: pod tp-manager-new-1 is running but not ready") {
		t.Fatalf("status %+v, %v", st, err)
	}
}

func TestNotInstalledNamesOtherInstalls(t *testing.T) {
	other := newRollout(running()).done()
	other.dep.Namespace = "tp-elsewhere"
	other.dep.Labels = map[string]string{"app.kubernetes.io/name": ManagerName, ManagedByLabel: ManagedByValue}
	f := newFake(t, other.dep)
	_, err := f.status(context.Background(), ns)
	wantKind(t, err, remote.NotInstalled, `tp is not installed in namespace "tp-system"`, "it is installed in namespace tp-elsewhere: pass --namespace tp-elsewhere")
	err = f.uninstall(context.Background(), Options{Namespace: ns, Timeout: time.Second})
	wantKind(t, err, remote.NotInstalled, `tp is not installed in namespace "tp-system"`, "--namespace tp-elsewhere")
	if !errors.Is(err, remote.ErrNotInstalled) {
		t.Error("not remote.ErrNotInstalled")
	}
}

func TestUninstallRemovesItAll(t *testing.T) {
	labels := map[string]string{ManagedByLabel: ManagedByValue, InstanceLabel: ns}
	meta := metav1.ObjectMeta{Name: RBACName(ns), Labels: labels}
	objs := append(newRollout(running()).done().objects(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}},
		&rbacv1.ClusterRole{ObjectMeta: meta}, &rbacv1.ClusterRoleBinding{ObjectMeta: meta},
		&admissionv1.ValidatingAdmissionPolicy{ObjectMeta: meta}, &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: meta},
		&coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "tp-web-http", Namespace: "shop", Labels: map[string]string{grant.Label: grant.Version}}},
		&coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "leader", Namespace: "shop"}})
	objs = append(objs, rbacObjects(ns, "a")...)
	objs = append(objs, rbacObjects("other-install", "a")...)
	f := newFake(t, objs...)
	if err := f.uninstall(context.Background(), Options{Namespace: ns, Timeout: time.Second, Log: &f.log}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := f.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace: %v", err)
	}
	if _, err := f.cs.RbacV1().ClusterRoles().Get(ctx, RBACName(ns), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("cluster role: %v", err)
	}
	if _, err := f.cs.RbacV1().ClusterRoleBindings().Get(ctx, RBACName(ns), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("cluster role binding: %v", err)
	}
	if _, err := f.cs.RbacV1().Roles("a").Get(ctx, RBACName(ns), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("role in a: %v", err)
	}
	if _, err := f.cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, RBACName(ns), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("grant admission policy: %v", err)
	}
	if _, err := f.cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, RBACName(ns), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("grant admission policy binding: %v", err)
	}
	if _, err := f.cs.CoordinationV1().Leases("shop").Get(ctx, "tp-web-http", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a left-over intercept grant: %v", err)
	}
	if _, err := f.cs.CoordinationV1().Leases("shop").Get(ctx, "leader", metav1.GetOptions{}); err != nil {
		t.Errorf("a lease that is no grant of tp's: %v", err)
	}
	if _, err := f.cs.RbacV1().Roles("a").Get(ctx, RBACName("other-install"), metav1.GetOptions{}); err != nil {
		t.Errorf("another install's role: %v", err)
	}
	if !strings.Contains(f.log.String(), "tp removed from namespace tp-system") {
		t.Errorf("log:\n%s", f.log.String())
	}
}

func TestUninstallFromAForeignNamespaceLeavesIt(t *testing.T) {
	ours := metav1.ObjectMeta{Name: ManagerName, Namespace: ns, Labels: map[string]string{ManagedByLabel: ManagedByValue}}
	f := newFake(t,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.ServiceAccount{ObjectMeta: ours},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: ManagerName, Namespace: ns}}, // someone else's, same name
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "theirs", Namespace: ns}},
	)
	if err := f.uninstall(context.Background(), Options{Namespace: ns, Timeout: time.Second, Log: &f.log}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := f.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		t.Errorf("namespace: %v", err)
	}
	if _, err := f.cs.CoreV1().ServiceAccounts(ns).Get(ctx, ManagerName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("tp's service account: %v", err)
	}
	if _, err := f.cs.CoreV1().Services(ns).Get(ctx, ManagerName, metav1.GetOptions{}); err != nil {
		t.Errorf("a service tp did not make: %v", err)
	}
	if _, err := f.cs.CoreV1().ConfigMaps(ns).Get(ctx, "theirs", metav1.GetOptions{}); err != nil {
		t.Errorf("a config map tp did not make: %v", err)
	}
}

func TestUninstallTimeoutSaysWhatRemains(t *testing.T) {
	labels := map[string]string{ManagedByLabel: ManagedByValue, InstanceLabel: ns}
	f := newFake(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}})
	// A namespace that stays Terminating, as one with a stuck finalizer does.
	f.cs.PrependReactor("delete", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, nil })
	f.cs.PrependReactor("get", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels, DeletionTimestamp: new(metav1.Now())},
			Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating, Conditions: []corev1.NamespaceCondition{{
				Type: corev1.NamespaceFinalizersRemaining, Status: corev1.ConditionTrue, Reason: "SomeFinalizersRemain",
				Message: "Some content in the namespace has finalizers remaining: example.com/stuck in 1 resource instances"}}}}, nil
	})
	err := f.uninstall(context.Background(), Options{Namespace: ns, Timeout: 20 * time.Millisecond})
	wantKind(t, err, remote.Timeout, "not gone within 20ms: namespace tp-system is Terminating; SomeFinalizersRemain", "example.com/stuck",
		"kubectl get namespace tp-system -o yaml")
}

// tp install without --replicas keeps the count the manager has (an admin's --replicas 3, or
// a scale); with it, sets it.
func TestInstallKeepsTheReplicasUnlessTold(t *testing.T) {
	for _, tc := range []struct{ now, asked, want int32 }{{3, 0, 3}, {3, 1, 1}, {1, 2, 2}} {
		r := newRollout(running()).done()
		r.dep.Spec.Replicas = new(tc.now)
		f := newFake(t, r.objects()...)
		opts, err := Options{Image: testImage, Replicas: int(tc.asked), Timeout: 50 * time.Millisecond}.withDefaults(true)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = f.install(context.Background(), opts) // the fake rollout never reaches the new count: only what was applied counts
		got := "none"
		for _, o := range f.applied {
			if o.GetKind() == "Deployment" {
				v, _, _ := unstructured.NestedFieldNoCopy(o.Object, "spec", "replicas")
				got = fmt.Sprint(v)
			}
		}
		if got != fmt.Sprint(tc.want) {
			t.Errorf("%d replicas now, --replicas %d: applied %s, want %d", tc.now, tc.asked, got, tc.want)
		}
	}
}
