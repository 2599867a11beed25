package intercept

import (
	"encoding/json"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tpdev/tp/remote/agentspec"
)

func TestAdmitPodMakesTheTemplatesChange(t *testing.T) {
	d := deployment("web", appTemplate("web"))
	pod := &corev1.Pod{ObjectMeta: *d.Spec.Template.ObjectMeta.DeepCopy(), Spec: *d.Spec.Template.Spec.DeepCopy()}
	targets := []Target{{Service: "web", ServicePort: 80, TargetPortName: "http", AppPort: 8080, AgentPort: agentspec.FirstPort + 1}}
	rec := Record{Agent: testAgent, Targets: targets}

	patch, err := AdmitPod(pod, rec)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := json.Marshal(pod)
	after, err := applyPatch(before, patch)
	if err != nil {
		t.Fatalf("apply %s: %v", patch, err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(after, &got); err != nil {
		t.Fatal(err)
	}
	want, err := inject(&d.Spec.Template, testAgent, targets)
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got.Spec, want.Spec) || !equality.Semantic.DeepEqual(got.Annotations, want.Annotations) {
		t.Fatalf("admitted pod differs from the injected template:\n got %s\nwant %s", toYAML(got.Spec), toYAML(want.Spec))
	}
	if p, err := AdmitPod(&got, rec); err != nil || p != nil {
		t.Fatalf("a pod that has the agent got patch %s, %v; want none", p, err)
	}
}

// TestAdmitPodRefusesAForeignAgent: a pod with a tp-agent container that is not the agent
// of the record (someone else's, or an older configuration's) is not patched.
func TestAdmitPodRefusesAForeignAgent(t *testing.T) {
	targets := []Target{{Service: "web", ServicePort: 80, TargetPortName: "http", AppPort: 8080, AgentPort: agentspec.FirstPort + 1}}
	rec := Record{Agent: testAgent, Targets: targets}
	tmpl := appTemplate("web")
	foreign := &corev1.Pod{ObjectMeta: *tmpl.ObjectMeta.DeepCopy(), Spec: *tmpl.Spec.DeepCopy()}
	foreign.Spec.Containers = append(foreign.Spec.Containers, corev1.Container{Name: agentspec.Container, Image: "x"})
	if p, err := AdmitPod(foreign, rec); err == nil || p != nil || !strings.Contains(err.Error(), "another configuration") {
		t.Errorf("foreign tp-agent container: patch %s, %v; want an error", p, err)
	}

	older := admit(t, &tmpl, rec)
	newer := rec
	newer.Agent.Image = "registry.example.com/tp/tp:v2"
	if p, err := AdmitPod(older, newer); err == nil || p != nil {
		t.Errorf("agent of another configuration: patch %s, %v; want an error", p, err)
	}
	if p, err := AdmitPod(older, rec); err != nil || p != nil {
		t.Errorf("agent of this configuration: patch %s, %v; want none", p, err)
	}
}

// TestAdmitPodRenamesASidecarsPort: a restartable init container (a sidecar) that serves
// the target's port has it renamed as the app's containers do; a pod without annotations
// gets them.
func TestAdmitPodRenamesASidecarsPort(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{
				{Name: "setup", Image: "example.com/setup:1", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 7000, Protocol: corev1.ProtocolTCP}}},
				{Name: "proxy", Image: "example.com/proxy:1", RestartPolicy: &always,
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}},
			},
			Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}},
		},
	}
	tmpl := &corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec}
	rec := Record{Agent: testAgent, Targets: []Target{{Service: "web", ServicePort: 80, TargetPortName: "http", AppPort: 8080, AgentPort: agentspec.FirstPort + 1}}}
	got := admit(t, tmpl, rec)
	if n := got.Spec.InitContainers[1].Ports[0].Name; n != "tp-http" {
		t.Errorf("sidecar port named %q, want tp-http", n)
	}
	if n := got.Spec.InitContainers[0].Ports[0].Name; n != "http" {
		t.Errorf("a plain init container's port renamed to %q", n)
	}
	if got.Annotations[AgentHashAnnotation] != hashOf(t, rec) {
		t.Errorf("annotations %v", got.Annotations)
	}
	container(t, &got.Spec, agentspec.Container)
}

func applyPatch(doc, patch []byte) ([]byte, error) {
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, err
	}
	return p.Apply(doc)
}
