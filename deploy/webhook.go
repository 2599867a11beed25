package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tpdev/tp/remote/managerspec"
)

// webhookWait bounds how long install waits for the API server to reach the pod webhook
// once the manager is ready (kube-proxy programs a new Service within seconds).
const webhookWait = 30 * time.Second

// waitWebhook waits until the API server reaches the manager's pod webhook, and says so
// when it does not: the webhook's failurePolicy is Ignore, so a pod created before that
// is admitted without tp, and the first intercept after an install would roll out pods
// without the agent. A server-side dry run of a pod create runs the admission chain and
// stores nothing; the manager admits its probe pod with an annotation the answer shows.
func (in *installer) waitWebhook(ctx context.Context, opts Options) {
	ns := "default"
	if len(opts.ManagedNamespaces) > 0 {
		managed := slices.DeleteFunc(slices.Clone(opts.ManagedNamespaces), func(n string) bool { return n == opts.Namespace })
		if len(managed) == 0 {
			return // the webhook admits pods of managed namespaces but tp's own: of none
		}
		ns = managed[0]
	}
	probe := webhookProbe(opts.Image)
	deadline := time.Now().Add(in.webhookWait)
	var last string
	inRow := 0
	for {
		got, err := in.cs.CoreV1().Pods(ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		var answered []string
		earlier := false
		if err == nil {
			answered, earlier = managerspec.WebhookProbeAnswerers(got.Annotations)
		}
		switch {
		case err == nil && (len(answered) > 0 || earlier):
			who, current := in.answeredByCurrent(ctx, opts.Namespace, answered)
			if current {
				if inRow++; inRow == webhookAnswers {
					return
				}
				continue // at once: kube-proxy picks among the endpoints at random
			}
			last = fmt.Sprintf("the webhook was answered by %s, not by a manager pod of the revision just installed", who)
		case err == nil:
			last = "the manager did not answer the API server's admission review"
		case apierrors.IsNotFound(err) || apierrors.IsForbidden(err):
			in.logf("  cannot check that the API server reaches tp's pod webhook (a dry-run pod in namespace %s: %v)", ns, err)
			return
		default:
			last = err.Error()
		}
		inRow = 0
		if time.Now().After(deadline) || ctx.Err() != nil {
			in.logf("warning: the API server does not reach tp's pod webhook (Service %s/%s port %d) after %s: %s. "+
				"Intercepted workloads' pods start without the agent until it does (tp list says so). "+
				"Where the control plane reaches nodes on a few ports only (e.g. GKE private clusters), allow it port %d",
				opts.Namespace, ManagerName, ClusterPort, in.webhookWait, last, ClusterPort)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(in.poll):
		}
	}
}

// webhookAnswers is how many answers in a row from the revision just installed show that
// the API server reaches it: while kube-proxy still has the pod it replaced among the
// Service's endpoints, some answers come from that one (or none, once it is gone).
const webhookAnswers = 5

// answeredByCurrent tells who answered the probe (the manager pods that annotated it, of
// any install) and whether one is a pod of this install's current revision.
func (in *installer) answeredByCurrent(ctx context.Context, namespace string, answered []string) (string, bool) {
	if len(answered) == 0 {
		return "a manager of an earlier tp", false
	}
	who := "pods " + strings.Join(answered, ", ")
	obs, err := in.observe(ctx, namespace)
	if err != nil {
		return who, false
	}
	for _, p := range obs.pods {
		if slices.Contains(answered, managerspec.WebhookProbeAnswerKey(p.Name)[len(managerspec.WebhookProbeAnswerPrefix):]) {
			return "pod " + p.Name, true
		}
	}
	return who, false
}

// webhookProbe is the pod whose dry-run creation tells that the webhook answers: owned
// (in name only: it is never stored) by a ReplicaSet, as the webhook's matchConditions
// require.
func webhookProbe(image string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "tp-webhook-probe-",
			Labels:       map[string]string{managerspec.WebhookProbeLabel: "true"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "tp-webhook-probe",
				UID: types.UID("00000000-0000-0000-0000-000000000000"), Controller: new(true)}},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "probe", Image: image}}},
	}
}
