package manager

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tpdev/tp/deploy/pki"
	inj "github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/managerspec"
)

func testRecord(t *testing.T, port string) inj.Record {
	t.Helper()
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return inj.Record{
		Agent: inj.AgentConfig{Image: "registry.example.com/tp/tp:v1", ManagerAddress: "tp-manager.tp-system:8082",
			TokenAudience: agentspec.Audience, CABundle: string(ca.CertPEM)},
		Targets: []inj.Target{{Service: "web", ServicePort: 80, TargetPortName: port, AppPort: 8080, AgentPort: agentspec.FirstPort}},
	}
}

func recordLease(t *testing.T, ref inj.Ref, rec inj.Record) *coordv1.Lease {
	t.Helper()
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: inj.RecordName(ref), Namespace: ref.Namespace,
		Labels:      map[string]string{inj.RecordLabel: inj.RecordVersion},
		Annotations: map[string]string{inj.RecordAnnotation: string(raw)}}}
}

// webPod is a pod of c's Deployment as its ReplicaSet creates it: no name or UID yet.
func webPod(c chain) *corev1.Pod {
	p := c.pod.DeepCopy()
	p.Name, p.UID, p.GenerateName = "", "", "web-7d4b9c-"
	p.Spec.Containers = []corev1.Container{{Name: "app", Image: "app:1",
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}}
	return p
}

// admitReview POSTs an admission review of creating pod and returns the pod as admitted and
// the response.
func admitReview(t *testing.T, a *Admission, pod *corev1.Pod) (*corev1.Pod, *admissionv1.AdmissionResponse) {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	in := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "req-1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Namespace: pod.Namespace, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}},
	}
	body, _ := json.Marshal(in)
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate-pods", bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("answer %s: %v", rec.Body, err)
	}
	if out.Response.UID != "req-1" || !out.Response.Allowed || out.APIVersion != "admission.k8s.io/v1" {
		t.Fatalf("answer must allow request req-1 as a v1 review: %+v", out)
	}
	admitted := pod.DeepCopy()
	if out.Response.Patch != nil {
		if out.Response.PatchType == nil || *out.Response.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch type %v", out.Response.PatchType)
		}
		p, err := jsonpatch.DecodePatch(out.Response.Patch)
		if err != nil {
			t.Fatalf("patch %s: %v", out.Response.Patch, err)
		}
		patched, err := p.Apply(raw)
		if err != nil {
			t.Fatalf("apply %s: %v", out.Response.Patch, err)
		}
		admitted = &corev1.Pod{}
		if err := json.Unmarshal(patched, admitted); err != nil {
			t.Fatal(err)
		}
	}
	return admitted, out.Response
}

func hasAgent(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		if c.Name == agentspec.Container {
			return true
		}
	}
	return false
}

func TestAdmissionAddsTheAgentToARecordedWorkloadsPods(t *testing.T) {
	c := newChain()
	ref := inj.Ref{Namespace: "default", Kind: inj.Deployment, Name: "web"}
	rec := testRecord(t, "http")
	a := &Admission{CS: fake.NewClientset(append(c.objects(), recordLease(t, ref, rec))...)}

	got, _ := admitReview(t, a, webPod(c))
	if !hasAgent(got) {
		t.Fatalf("pod admitted without the agent: %+v", got.Spec.Containers)
	}
	if got.Spec.Containers[0].Ports[0].Name == "http" {
		t.Errorf("the app's port kept the name the agent now carries")
	}
	hash, err := rec.Hash()
	if err != nil || got.Annotations[inj.AgentHashAnnotation] != hash {
		t.Errorf("agent hash %q, want %q (%v)", got.Annotations[inj.AgentHashAnnotation], hash, err)
	}

	// The same pod again (a reinvocation, or a template that has it already): no change.
	if again, resp := admitReview(t, a, got); resp.Patch != nil || !hasAgent(again) {
		t.Errorf("a pod that has the agent got patch %s", resp.Patch)
	}
}

func TestAdmissionLeavesOtherPodsAlone(t *testing.T) {
	c := newChain()
	ref := inj.Ref{Namespace: "default", Kind: inj.Deployment, Name: "web"}
	cases := map[string]struct {
		admission func(*Admission)
		pod       func(*corev1.Pod)
		noRecord  bool
	}{
		"no record":             {noRecord: true},
		"unmanaged namespace":   {admission: func(a *Admission) { a.Namespaces = []string{"other"} }},
		"no owner":              {pod: func(p *corev1.Pod) { p.OwnerReferences = nil }},
		"owned by a Job":        {pod: func(p *corev1.Pod) { p.OwnerReferences[0].APIVersion, p.OwnerReferences[0].Kind = "batch/v1", "Job" }},
		"ReplicaSet of another": {pod: func(p *corev1.Pod) { p.Labels[podTemplateHash] = "other" }},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			objs := c.objects()
			if !tc.noRecord {
				objs = append(objs, recordLease(t, ref, testRecord(t, "http")))
			}
			a := &Admission{CS: fake.NewClientset(objs...)}
			if tc.admission != nil {
				tc.admission(a)
			}
			pod := webPod(c)
			if tc.pod != nil {
				tc.pod(pod)
			}
			got, resp := admitReview(t, a, pod)
			if hasAgent(got) || resp.Patch != nil {
				t.Errorf("patch %s", resp.Patch)
			}
		})
	}
}

func TestAdmissionSaysWhyAPodGetsNoAgent(t *testing.T) {
	c := newChain()
	ref := inj.Ref{Namespace: "default", Kind: inj.Deployment, Name: "web"}
	// The record names a port the pods no longer have (the workload changed since).
	a := &Admission{CS: fake.NewClientset(append(c.objects(), recordLease(t, ref, testRecord(t, "grpc")))...)}
	for _, annotated := range []bool{false, true} {
		pod := webPod(c)
		if annotated {
			pod.Annotations = map[string]string{"team": "a"}
		}
		got, _ := admitReview(t, a, pod)
		if hasAgent(got) {
			t.Fatal("pod admitted with the agent for a port it does not have")
		}
		if why := got.Annotations[inj.SkippedAnnotation]; !strings.Contains(why, `"grpc"`) {
			t.Errorf("reason %q does not name the port", why)
		}
		if annotated && got.Annotations["team"] != "a" {
			t.Errorf("the pod's own annotations were lost: %v", got.Annotations)
		}
	}
}

func TestAdmissionRejectsWhatIsNotAReview(t *testing.T) {
	a := &Admission{CS: fake.NewClientset()}
	for _, body := range []string{"", "{}", "not json", `{"request": null}`} {
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate-pods", strings.NewReader(body)))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("body %q: status %d, want 400", body, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/mutate-pods", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d", rec.Code)
	}
}

func TestAdmissionAnswersInstallsProbe(t *testing.T) {
	c := newChain()
	pod := webPod(c)
	pod.Labels[managerspec.WebhookProbeLabel] = "true"
	got, _ := admitReview(t, &Admission{CS: fake.NewClientset(), Pod: "tp-manager-1"}, pod)
	if who, _ := managerspec.WebhookProbeAnswerers(got.Annotations); len(who) != 1 || who[0] != "tp-manager-1" || hasAgent(got) {
		t.Errorf("probe admitted as %v: want an answer naming the manager's pod", got.Annotations)
	}
}
