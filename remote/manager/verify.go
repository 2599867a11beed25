package manager

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	if !tr.Status.Authenticated {
		return AgentIdentity{}, fmt.Errorf("token rejected: %s", tr.Status.Error)
	}
	podName := first(tr.Status.User.Extra["authentication.kubernetes.io/pod-name"])
	podUID := first(tr.Status.User.Extra["authentication.kubernetes.io/pod-uid"])
	sa, ok := strings.CutPrefix(tr.Status.User.Username, "system:serviceaccount:")
	ns, _, _ := strings.Cut(sa, ":")
	if !ok || ns == "" || podName == "" {
		return AgentIdentity{}, errors.New("the token is not bound to a pod")
	}
	pod, err := v.cs.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		return AgentIdentity{}, fmt.Errorf("the token's pod %s/%s: %w", ns, podName, err)
	}
	if string(pod.UID) != podUID {
		return AgentIdentity{}, fmt.Errorf("the token's pod %s/%s is gone", ns, podName)
	}
	agent := false
	for _, c := range pod.Spec.Containers {
		agent = agent || c.Name == AgentContainer
	}
	if !agent {
		return AgentIdentity{}, fmt.Errorf("pod %s/%s has no %s container", ns, podName, AgentContainer)
	}
	id := AgentIdentity{Namespace: ns, Pod: podName, UID: podUID}
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return AgentIdentity{}, fmt.Errorf("pod %s/%s has no owning workload", ns, podName)
	}
	id.Kind, id.Workload = owner.Kind, owner.Name
	if owner.Kind == "ReplicaSet" {
		rs, err := v.cs.AppsV1().ReplicaSets(ns).Get(ctx, owner.Name, metav1.GetOptions{})
		if err != nil {
			return AgentIdentity{}, fmt.Errorf("the owner of pod %s/%s: %w", ns, podName, err)
		}
		if d := metav1.GetControllerOf(rs); d != nil && d.Kind == "Deployment" {
			id.Kind, id.Workload = d.Kind, d.Name
		}
	}
	return id, nil
}

func first(v authnv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
