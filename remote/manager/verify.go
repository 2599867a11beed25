package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// AgentAudience is the audience of the service-account tokens traffic agents present: a
// token minted for the API server (or for anything else) is no agent's.
const AgentAudience = "tp-agent"

// AgentContainer is the name of the agent's container in the pods tp injected; a token of
// a pod without it belongs to no agent.
const AgentContainer = "tp-agent"

// TokenVerifier checks agents' projected service-account tokens with a TokenReview for the
// agents' audience: the API server confirms the token and names the pod it is bound to.
// The pod must carry tp's agent container; its owner is the workload it may serve.
type TokenVerifier struct {
	cs       kubernetes.Interface
	audience string

	mu    sync.Mutex
	known map[string]verified // by token: agents call often, a review per call is waste
}

type verified struct {
	id      AgentIdentity
	expires time.Time
}

// NewTokenVerifier makes a TokenVerifier for tokens of the given audience.
func NewTokenVerifier(cs kubernetes.Interface, audience string) *TokenVerifier {
	return &TokenVerifier{cs: cs, audience: audience, known: map[string]verified{}}
}

const verifiedTTL = time.Minute

// Verify returns the identity of the pod the token is bound to.
func (v *TokenVerifier) Verify(ctx context.Context, token string) (AgentIdentity, error) {
	now := time.Now()
	v.mu.Lock()
	k, ok := v.known[token]
	v.mu.Unlock()
	if ok && now.Before(k.expires) {
		return k.id, nil
	}
	id, err := v.review(ctx, token)
	if err != nil {
		return AgentIdentity{}, err
	}
	v.mu.Lock()
	if len(v.known) > 10000 {
		v.known = map[string]verified{}
	}
	v.known[token] = verified{id: id, expires: now.Add(verifiedTTL)}
	v.mu.Unlock()
	return id, nil
}

func (v *TokenVerifier) review(ctx context.Context, token string) (AgentIdentity, error) {
	tr, err := v.cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{v.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return AgentIdentity{}, fmt.Errorf("token review: %w", err)
	}
	ns, podName, podUID, err := boundPod(tr.Status, v.audience)
	if err != nil {
		return AgentIdentity{}, err
	}
	pod, err := v.cs.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		return AgentIdentity{}, fmt.Errorf("the token's pod %s/%s: %w", ns, podName, err)
	}
	id, err := podAgent(ns, podName, podUID, pod)
	if err != nil || id.Kind != "ReplicaSet" {
		return id, err
	}
	rs, err := v.cs.AppsV1().ReplicaSets(ns).Get(ctx, id.Workload, metav1.GetOptions{})
	if err != nil {
		return AgentIdentity{}, fmt.Errorf("the owner of pod %s/%s: %w", ns, podName, err)
	}
	if d := metav1.GetControllerOf(rs); d != nil && d.Kind == "Deployment" {
		if len(validation.IsDNS1123Subdomain(d.Name)) > 0 {
			return AgentIdentity{}, fmt.Errorf("the owner of pod %s/%s: deployment %q is not a valid name", ns, podName, d.Name)
		}
		id.Kind, id.Workload = d.Kind, d.Name
	}
	return id, nil
}

// boundPod reads the pod a reviewed token is bound to. The review must say the token is
// for audience: an API server that ignores audiences (a webhook authenticator may) answers
// without any, and would otherwise pass a token minted for anything, the API server itself
// included.
func boundPod(st authnv1.TokenReviewStatus, audience string) (ns, pod, uid string, err error) {
	if !st.Authenticated {
		return "", "", "", fmt.Errorf("token rejected: %s", st.Error)
	}
	if !slices.Contains(st.Audiences, audience) {
		return "", "", "", fmt.Errorf("token review: the token is not for audience %s (the review names %q)", audience, st.Audiences)
	}
	sa, ok := strings.CutPrefix(st.User.Username, "system:serviceaccount:")
	ns, account, _ := strings.Cut(sa, ":")
	pod = first(st.User.Extra["authentication.kubernetes.io/pod-name"])
	uid = first(st.User.Extra["authentication.kubernetes.io/pod-uid"])
	if !ok || ns == "" || account == "" || pod == "" || uid == "" {
		return "", "", "", errors.New("the token is not bound to a pod")
	}
	if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(account)) > 0 || len(validation.IsDNS1123Subdomain(pod)) > 0 {
		return "", "", "", fmt.Errorf("the token names service account %q and pod %q, which are not valid names", sa, pod)
	}
	return ns, pod, uid, nil
}

// podAgent is the identity of the pod a token of uid is bound to: the pod must still be
// that one, carry tp's agent container, and be controlled by a workload tp intercepts.
// The ReplicaSet of a Deployment is left to the caller.
func podAgent(ns, name, uid string, pod *corev1.Pod) (AgentIdentity, error) {
	if string(pod.UID) != uid {
		return AgentIdentity{}, fmt.Errorf("the token's pod %s/%s is gone", ns, name)
	}
	if !slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == AgentContainer }) {
		return AgentIdentity{}, fmt.Errorf("pod %s/%s has no %s container", ns, name, AgentContainer)
	}
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return AgentIdentity{}, fmt.Errorf("pod %s/%s has no owning workload", ns, name)
	}
	if !workloadKind(owner.Kind) || len(validation.IsDNS1123Subdomain(owner.Name)) > 0 {
		return AgentIdentity{}, fmt.Errorf("pod %s/%s is owned by %s %q, not by a workload tp intercepts", ns, name, owner.Kind, owner.Name)
	}
	return AgentIdentity{Namespace: ns, Pod: name, UID: uid, Kind: owner.Kind, Workload: owner.Name}, nil
}

// workloadKind reports whether kind is a controller tp intercepts: a pod any other owns is
// no agent's.
func workloadKind(kind string) bool {
	switch kind {
	case "Deployment", "StatefulSet", "ReplicaSet":
		return true
	}
	return false
}

func first(v authnv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
