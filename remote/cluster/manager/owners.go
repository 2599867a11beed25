package manager

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// refusal is a definitive "not an agent": the API server answered and the answer refuses.
// Only refusals are remembered; an error of the API server itself (a timeout, a 500) says
// nothing about the token and must not lock a real agent out.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }

func refused(format string, args ...any) error { return &refusal{fmt.Sprintf(format, args...)} }

func isRefusal(err error) bool {
	var r *refusal
	return errors.As(err, &r)
}

// podTemplateHash is the label the Deployment controller puts on a ReplicaSet and its pods.
const podTemplateHash = appsv1.DefaultDeploymentUniqueLabelKey

// agentWorkload checks the owner chain of an agent's pod against the API server and
// returns the workload the pod belongs to. Owner references are written by whoever writes
// the pod, so each link must name an object that exists with the UID the reference
// carries, and whose selector takes the pod, as the controllers themselves require: a pod
// cannot claim a Deployment by naming it.
func agentWorkload(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod) (kind, name string, err error) {
	ns, podName := pod.Namespace, pod.Name
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return "", "", refused("pod %s/%s has no owning workload", ns, podName)
	}
	if !workloadKind(owner.Kind) || len(validation.IsDNS1123Subdomain(owner.Name)) > 0 {
		return "", "", refused("pod %s/%s is owned by %s %q, not by a workload tp intercepts", ns, podName, owner.Kind, owner.Name)
	}
	switch owner.Kind {
	case "Deployment":
		// The Deployment controller creates ReplicaSets, never pods: this reference was
		// written by hand.
		return "", "", refused("pod %s/%s names deployment %q as its controller; a Deployment's pods belong to its ReplicaSets", ns, podName, owner.Name)
	case "StatefulSet":
		sts, err := cs.AppsV1().StatefulSets(ns).Get(ctx, owner.Name, metav1.GetOptions{})
		if err != nil {
			return "", "", ownerErr(ns, podName, "statefulset", owner.Name, err)
		}
		if err := sameAndSelects(sts.ObjectMeta, owner, sts.Spec.Selector, pod, "statefulset"); err != nil {
			return "", "", err
		}
		return "StatefulSet", sts.Name, nil
	}
	rs, err := cs.AppsV1().ReplicaSets(ns).Get(ctx, owner.Name, metav1.GetOptions{})
	if err != nil {
		return "", "", ownerErr(ns, podName, "replicaset", owner.Name, err)
	}
	if err := sameAndSelects(rs.ObjectMeta, owner, rs.Spec.Selector, pod, "replicaset"); err != nil {
		return "", "", err
	}
	dref := metav1.GetControllerOf(rs)
	if dref == nil || dref.Kind != "Deployment" {
		return "ReplicaSet", rs.Name, nil // a bare ReplicaSet, or one of a controller tp does not know
	}
	if len(validation.IsDNS1123Subdomain(dref.Name)) > 0 {
		return "", "", refused("the owner of pod %s/%s: deployment %q is not a valid name", ns, podName, dref.Name)
	}
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, dref.Name, metav1.GetOptions{})
	if err != nil {
		return "", "", ownerErr(ns, podName, "deployment", dref.Name, err)
	}
	if err := sameAndSelects(d.ObjectMeta, dref, d.Spec.Selector, pod, "deployment"); err != nil {
		return "", "", err
	}
	if h := rs.Labels[podTemplateHash]; h == "" || pod.Labels[podTemplateHash] != h {
		return "", "", refused("pod %s/%s has %s %q, its replicaset %s has %q: not a pod that replicaset made",
			ns, podName, podTemplateHash, pod.Labels[podTemplateHash], rs.Name, h)
	}
	return "Deployment", d.Name, nil
}

// sameAndSelects checks that obj is the very object ref names (same UID: a deleted and
// recreated namesake is another workload) and that its selector takes the pod.
func sameAndSelects(obj metav1.ObjectMeta, ref *metav1.OwnerReference, sel *metav1.LabelSelector, pod *corev1.Pod, kind string) error {
	if ref.UID == "" || obj.UID != ref.UID {
		return refused("pod %s/%s: %s %s has uid %q, the owner reference names %q", pod.Namespace, pod.Name, kind, obj.Name, obj.UID, ref.UID)
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || sel == nil || s.Empty() || !s.Matches(labels.Set(pod.Labels)) {
		return refused("pod %s/%s: the selector of %s %s does not take the pod", pod.Namespace, pod.Name, kind, obj.Name)
	}
	return nil
}

// ownerErr is a missing owner (a refusal) or the API server's failure to say (not one).
func ownerErr(ns, pod, kind, name string, err error) error {
	if apierrors.IsNotFound(err) {
		return refused("the owner of pod %s/%s, %s %s, does not exist", ns, pod, kind, name)
	}
	return fmt.Errorf("the owner of pod %s/%s, %s %s: %w", ns, pod, kind, name, err)
}
