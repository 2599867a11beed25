package intercept

import (
	"encoding/json"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

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

func applyPatch(doc, patch []byte) ([]byte, error) {
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, err
	}
	return p.Apply(doc)
}
