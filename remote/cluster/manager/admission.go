package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	inj "github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote/managerspec"
)

// Admission answers the API server's pod admission reviews (the webhook tp install
// registers): a pod created for a workload that has an agent record gets the agent, as
// the record says (inj.AdmitPod). The agent thus lives in no template a GitOps tool
// could revert: a re-applied manifest rolls out pods that are admitted here again.
//
// It never refuses a pod. When it cannot add the agent (the record names a port the pod
// does not have, the API server does not answer), the pod is admitted as it is, with the
// reason in inj.SkippedAnnotation when there is a record, so that tp can tell the
// developer why the intercept does not deliver. The webhook's failurePolicy is Ignore for
// the same reason: a manager that is down must not stop a cluster from starting pods.
type Admission struct {
	CS kubernetes.Interface
	// Namespaces are the managed namespaces (none: all); the webhook's namespaceSelector
	// says the same, this is the second lock.
	Namespaces []string
	Log        *slog.Logger
	// Timeout bounds the API calls of one review; the API server waits 5 s at most.
	Timeout time.Duration
	// Pod is the manager's pod: its answer to tp install's probe names it.
	Pod string
}

// maxReview bounds a review's body: the API server's own limit on a request is 3 MiB, and
// the review carries the object once.
const maxReview = 4 << 20

func (a *Admission) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "admission reviews are POSTed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReview))
	if err != nil {
		http.Error(w, fmt.Sprintf("read the admission review: %v", err), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview v1 with a request", http.StatusBadRequest)
		return
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	if patch := a.admit(r.Context(), review.Request); patch != nil {
		resp.Patch = patch
		resp.PatchType = new(admissionv1.PatchTypeJSONPatch)
	}
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// admit is the JSON patch for the pod req creates, nil for none.
func (a *Admission) admit(ctx context.Context, req *admissionv1.AdmissionRequest) []byte {
	if req.Kind.Kind != "Pod" || req.Kind.Group != "" || req.Operation != admissionv1.Create || req.SubResource != "" {
		return nil
	}
	if len(a.Namespaces) > 0 && !slices.Contains(a.Namespaces, req.Namespace) {
		return nil
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		a.log().Warn("admission: undecodable pod", "namespace", req.Namespace, "err", err)
		return nil
	}
	pod.Namespace = req.Namespace
	if _, probe := pod.Labels[managerspec.WebhookProbeLabel]; probe {
		key := managerspec.WebhookProbeLabel
		if a.Pod != "" {
			key = managerspec.WebhookProbeAnswerKey(a.Pod)
		}
		return inj.AnnotatePatch(pod, key, managerspec.WebhookProbeAnswer)
	}
	if pod.Name == "" {
		pod.Name = pod.GenerateName // for messages: the name is given after admission
	}
	if a.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.Timeout)
		defer cancel()
	}
	ref, ok := recordCandidate(pod)
	if !ok {
		return nil
	}
	// One GET decides for the pods of every workload without a record: most of them.
	rec, err := inj.GetRecord(ctx, a.CS, ref)
	if err != nil {
		a.log().Warn("admission: cannot read the agent record; pod admitted without the agent", "pod", pod.Namespace+"/"+pod.Name, "record", inj.RecordName(ref), "err", err)
		return nil
	}
	if rec == nil {
		return nil
	}
	// A pod names its owners itself: follow the chain to the workload, as for an agent.
	kind, name, err := agentWorkload(ctx, a.CS, pod)
	if err != nil {
		return a.skip(pod, fmt.Sprintf("its owner could not be confirmed as %s: %v", ref, err))
	}
	if kind != ref.Kind || name != ref.Name {
		return nil // a ReplicaSet whose name only looks like its Deployment's
	}
	patch, err := inj.AdmitPod(pod, *rec)
	if err != nil {
		return a.skip(pod, err.Error())
	}
	if patch != nil {
		a.log().Info("admission: agent added", "pod", pod.Namespace+"/"+pod.Name, "workload", ref.String())
	}
	return patch
}

// skip admits pod without the agent, saying why on the pod.
func (a *Admission) skip(pod *corev1.Pod, why string) []byte {
	a.log().Warn("admission: pod admitted without the agent", "pod", pod.Namespace+"/"+pod.Name, "why", why)
	return inj.AnnotatePatch(pod, inj.SkippedAnnotation, why)
}

func (a *Admission) log() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

// recordCandidate is the workload whose record would apply to pod, by its controller's
// reference alone (confirmed against the API server only when there is a record): a
// StatefulSet's pod names it; a ReplicaSet's pod carries pod-template-hash when a
// Deployment made the ReplicaSet, whose name is then the Deployment's plus "-" + hash.
func recordCandidate(pod *corev1.Pod) (inj.Ref, bool) {
	owner := metav1.GetControllerOf(pod)
	if owner == nil || !strings.HasPrefix(owner.APIVersion, "apps/") {
		return inj.Ref{}, false
	}
	switch owner.Kind {
	case inj.StatefulSet:
		return inj.Ref{Namespace: pod.Namespace, Kind: inj.StatefulSet, Name: owner.Name}, true
	case inj.ReplicaSet:
		if h := pod.Labels[podTemplateHash]; h != "" {
			if d, ok := strings.CutSuffix(owner.Name, "-"+h); ok && d != "" {
				return inj.Ref{Namespace: pod.Namespace, Kind: inj.Deployment, Name: d}, true
			}
		}
		return inj.Ref{Namespace: pod.Namespace, Kind: inj.ReplicaSet, Name: owner.Name}, true
	}
	return inj.Ref{}, false
}
