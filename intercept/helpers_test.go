package intercept

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tpdev/tp/deploy/pki"
	"github.com/tpdev/tp/remote"
)

const ns = "shop"

type fakeClient = fake.Clientset

var testAgent = AgentConfig{Image: "registry.example.com/tp/tp:v1", ManagerAddress: "tp-manager.tp-system:8082", TokenAudience: "tp-agent",
	CABundle: string(newCA("test").CertPEM)}

// newCA is a CA as tp install makes it.
func newCA(name string) *pki.CA {
	ca, err := pki.NewCA(name, time.Now())
	if err != nil {
		panic(err)
	}
	return ca
}

func namespaceObj(name string, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
}

// appTemplate is a pod template with an app container serving http (8080) and metrics
// (9090), probed by name, and a sidecar that is no concern of the intercept.
func appTemplate(app string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}, Annotations: map[string]string{"team": "a"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "example.com/app:1",
				Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
					{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP},
				},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}}},
				LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}}},
				StartupProbe:   &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/metrics", Port: intstr.FromString("metrics")}}},
				Lifecycle:      &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/drain", Port: intstr.FromString("http")}}},
			}, {
				Name:  "log-shipper",
				Image: "example.com/shipper:1",
				Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 9900, Protocol: corev1.ProtocolTCP}},
			}},
		},
	}
}

func deployment(name string, tmpl corev1.PodTemplateSpec) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name), Labels: map[string]string{"owner": "me"}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels},
			Template: tmpl,
		},
	}
}

func service(name string, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{"owner": "me"}},
		Spec:       corev1.ServiceSpec{Selector: selector, ClusterIP: "10.96.0.20", Ports: ports},
	}
}

func svcPort(name string, port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}
}

func newClient(objs ...runtime.Object) *fake.Clientset {
	return fake.NewClientset(append([]runtime.Object{namespaceObj(ns, nil)}, objs...)...)
}

// writes counts the requests that change objects.
func writes(cs *fake.Clientset) []string {
	var out []string
	for _, a := range cs.Actions() {
		switch a.GetVerb() {
		case "create", "update", "patch", "delete":
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return out
}

func wantKind(t *testing.T, err error, kind remote.Kind, wants ...string) {
	t.Helper()
	e, ok := errors.AsType[*remote.Error](err)
	if !ok {
		t.Fatalf("got %T %v, want a *remote.Error of kind %s", err, err, kind)
	}
	if e.Kind != kind {
		t.Errorf("kind %s, want %s: %v", e.Kind, kind, err)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q does not say %q", err.Error(), w)
		}
	}
}

func getDeployment(t *testing.T, cs *fake.Clientset, name string) *appsv1.Deployment {
	t.Helper()
	d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

func envOf(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return "<unset>"
}

func forbid(cs *fake.Clientset, verb, resource string) {
	cs.PrependReactor(verb, resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, forbiddenErr(verb, resource, a.GetNamespace())
	})
}

func forbiddenErr(verb, resource, namespace string) error {
	group := ""
	if resource == "deployments" || resource == "statefulsets" || resource == "replicasets" {
		group = "apps"
	}
	return apierrors.NewForbidden(schema.GroupResource{Group: group, Resource: resource}, "",
		fmt.Errorf(`User "dev" cannot %s resource %q in API group %q in the namespace %q`, verb, resource, group, namespace))
}

// record reads ref's agent record (the Lease Inject writes); it fails the test if there is none.
func record(t *testing.T, cs *fake.Clientset, ref Ref) Record {
	t.Helper()
	rec, err := GetRecord(context.Background(), cs, ref)
	if err != nil {
		t.Fatal(err)
	}
	if rec == nil {
		t.Fatalf("no agent record %s for %s", RecordName(ref), ref)
	}
	return *rec
}

func hasRecord(t *testing.T, cs *fake.Clientset, ref Ref) bool {
	t.Helper()
	_, err := cs.CoordinationV1().Leases(ref.Namespace).Get(context.Background(), RecordName(ref), metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func hashOf(t *testing.T, rec Record) string {
	t.Helper()
	h, err := rec.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// admit makes a pod from tmpl as the manager's webhook admits it with rec: the AdmitPod
// patch applied to the pod as its controller would create it.
func admit(t *testing.T, tmpl *corev1.PodTemplateSpec, rec Record) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: *tmpl.ObjectMeta.DeepCopy(), Spec: *tmpl.Spec.DeepCopy()}
	pod.Name, pod.Namespace = "admitted", ns
	patch, err := AdmitPod(pod, rec)
	if err != nil {
		t.Fatalf("admit: %v", err)
	}
	if patch == nil {
		t.Fatal("admit: no patch for a pod without the agent")
	}
	doc, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	doc, err = applyPatch(doc, patch)
	if err != nil {
		t.Fatalf("apply %s: %v", patch, err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(doc, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

// admitDeployment is a pod of Deployment name as it is admitted now: from its template,
// with its record.
func admitDeployment(t *testing.T, cs *fake.Clientset, name string) *corev1.Pod {
	t.Helper()
	return admit(t, &getDeployment(t, cs, name).Spec.Template, record(t, cs, Ref{Namespace: ns, Kind: Deployment, Name: name}))
}

// podOf is a live pod with labels and annotations (owned by owner when it has a UID).
func podOf(name string, labels, annotations map[string]string, owner *metav1.OwnerReference) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name), Labels: labels, Annotations: annotations}}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	return p
}

// replicaSetOf makes a ReplicaSet that d controls, as the Deployment controller does, and
// returns the owner reference of its pods.
func replicaSetOf(t *testing.T, cs *fake.Clientset, d *appsv1.Deployment) *metav1.OwnerReference {
	t.Helper()
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-6d4f", Namespace: ns, UID: types.UID("uid-" + d.Name + "-6d4f"), Labels: d.Spec.Template.Labels,
			OwnerReferences: []metav1.OwnerReference{{Kind: Deployment, Name: d.Name, UID: d.UID, Controller: new(true)}}},
		Spec: appsv1.ReplicaSetSpec{Selector: d.Spec.Selector, Template: d.Spec.Template},
	}
	if _, err := cs.AppsV1().ReplicaSets(ns).Create(context.Background(), rs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return &metav1.OwnerReference{Kind: ReplicaSet, Name: rs.Name, UID: rs.UID, Controller: new(true)}
}

func createPod(t *testing.T, cs *fake.Clientset, p *corev1.Pod) {
	t.Helper()
	if _, err := cs.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// withRestart is tmpl with tp's RestartAnnotation at value: what Inject leaves on a template.
func withRestart(tmpl corev1.PodTemplateSpec, value string) corev1.PodTemplateSpec {
	t := *tmpl.DeepCopy()
	metav1.SetMetaDataAnnotation(&t.ObjectMeta, RestartAnnotation, value)
	return t
}

// legacyDeployment is Deployment name injected for targets by a tp older than the agent
// records: the agent in its template, the original and the state in its annotations.
func legacyDeployment(t *testing.T, name string, orig corev1.PodTemplateSpec, targets []Target) *appsv1.Deployment {
	t.Helper()
	injected, err := inject(&orig, testAgent, targets)
	if err != nil {
		t.Fatal(err)
	}
	saved, err := templateJSON(&orig)
	if err != nil {
		t.Fatal(err)
	}
	state, err := json.Marshal(Record{Agent: testAgent, Targets: targets})
	if err != nil {
		t.Fatal(err)
	}
	d := deployment(name, *injected)
	d.Labels[InjectedLabel] = "true"
	d.Annotations = map[string]string{OriginalTemplateAnnotation: saved, StateAnnotation: string(state)}
	return d
}
