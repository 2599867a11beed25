package manager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tpdev/tp/remote/agentspec"
	"google.golang.org/grpc/peer"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// TokenVerifier checks agents' projected service-account tokens with a TokenReview for the
// agents' audience: the API server confirms the token and names the pod it is bound to.
// The pod must carry tp's agent container; the workload that owns it, followed link by
// link (agentWorkload), is the workload it may serve.
//
// The cluster port is open to every pod, so a review must not be any pod's for the asking:
// a token that is not a JWT of a pod-bound token for the agents' audience is refused
// without one (the pre-check is only a filter; the review stays the authority), a token
// refused once is refused from memory for a minute, concurrent calls with one token share
// one review, each peer address gets a few reviews of unknown tokens and then one a
// second, and at most a few reviews run at once. A real agent's token, once reviewed, is
// answered from memory; so garbage never stands between agents and the API server.
type TokenVerifier struct {
	cs       kubernetes.Interface
	audience string

	// Limits; NewTokenVerifier sets them, tests may change them before the first Verify.
	goodTTL, badTTL time.Duration
	slotWait        time.Duration // how long a call waits for a review slot
	reviewTimeout   time.Duration // bounds a review and the reads that follow it

	slots chan struct{} // one per review in flight

	mu       sync.Mutex
	good     *verdicts // verified tokens: agents call often, a review per call is waste
	bad      *verdicts // refused tokens
	inflight map[tokenKey]*flight
	sources  *sourceLimits

	reviews, refusedUnreviewed, goodHits, badHits, limited, busy atomic.Int64
}

type flight struct {
	done chan struct{}
	v    verdict
}

// NewTokenVerifier makes a TokenVerifier for tokens of the given audience.
func NewTokenVerifier(cs kubernetes.Interface, audience string) *TokenVerifier {
	return &TokenVerifier{
		cs: cs, audience: audience,
		goodTTL: time.Minute, badTTL: time.Minute,
		slotWait: 2 * time.Second, reviewTimeout: 10 * time.Second,
		slots: make(chan struct{}, maxReviews),
		good:  newVerdicts(10000), bad: newVerdicts(10000),
		inflight: map[tokenKey]*flight{},
		sources:  newSourceLimits(sourceBurst, sourcePerSecond, 4096),
	}
}

const (
	// maxReviews bounds the reviews in flight. A review takes milliseconds, so a few
	// slots serve a rollout of many agents; one source's burst cannot take them all.
	maxReviews = 4
	// sourceBurst and sourcePerSecond bound the reviews of unknown tokens one peer
	// address gets: a new agent needs one per token (its token rotates hourly).
	sourceBurst     = 3
	sourcePerSecond = 1.0
)

// ErrVerifierBusy is a token that could not be reviewed now (too many reviews in flight or
// asked for by its source); it says nothing about the token, and the agent should retry.
var ErrVerifierBusy = errors.New("too many agent tokens to review; retry")

// VerifyStats counts what a TokenVerifier did with the tokens it was shown.
type VerifyStats struct {
	Reviews           int64 // TokenReviews sent to the API server
	RefusedUnreviewed int64 // refused without a review: malformed, wrong claims, or refused before
	GoodHits, BadHits int64 // answered from memory
	Limited, Busy     int64 // not reviewed: over its source's limit, or no review slot in time
}

func (s VerifyStats) String() string {
	return fmt.Sprintf("reviews=%d refused_unreviewed=%d cache_hits=%d good_hits=%d bad_hits=%d limited=%d busy=%d",
		s.Reviews, s.RefusedUnreviewed, s.GoodHits+s.BadHits, s.GoodHits, s.BadHits, s.Limited, s.Busy)
}

// Stats returns the verifier's counters.
func (v *TokenVerifier) Stats() VerifyStats {
	return VerifyStats{
		Reviews: v.reviews.Load(), RefusedUnreviewed: v.refusedUnreviewed.Load(),
		GoodHits: v.goodHits.Load(), BadHits: v.badHits.Load(), Limited: v.limited.Load(), Busy: v.busy.Load(),
	}
}

// Verify returns the identity of the pod the token is bound to.
func (v *TokenVerifier) Verify(ctx context.Context, token string) (AgentIdentity, error) {
	now := time.Now()
	k := keyOf(token)
	v.mu.Lock()
	if g, ok := v.good.get(k, now); ok {
		v.mu.Unlock()
		v.goodHits.Add(1)
		return g.id, nil
	}
	if b, ok := v.bad.get(k, now); ok {
		v.mu.Unlock()
		v.badHits.Add(1)
		v.refusedUnreviewed.Add(1)
		return AgentIdentity{}, b.err
	}
	v.mu.Unlock()
	claims, err := parseTokenClaims(token)
	if err == nil {
		err = checkClaims(claims, v.audience, now)
	}
	if err != nil {
		// Not remembered: parsing costs less than a lookup would save, and a flood of
		// distinct garbage must not push reviewed refusals out of the cache.
		v.refusedUnreviewed.Add(1)
		return AgentIdentity{}, fmt.Errorf("not an agent's token: %w", err)
	}
	src := peerHost(ctx)
	v.mu.Lock()
	if f := v.inflight[k]; f != nil {
		v.mu.Unlock()
		select {
		case <-f.done:
			return f.v.id, f.v.err
		case <-ctx.Done():
			return AgentIdentity{}, fmt.Errorf("token review: %w", ctx.Err())
		}
	}
	if !v.sources.take(src, now) {
		v.mu.Unlock()
		v.limited.Add(1)
		return AgentIdentity{}, fmt.Errorf("%s asks for more token reviews than %d then %g a second: %w", src, sourceBurst, sourcePerSecond, ErrVerifierBusy)
	}
	f := &flight{done: make(chan struct{})}
	v.inflight[k] = f
	v.mu.Unlock()

	id, err := v.reviewInSlot(ctx, token)
	f.v = verdict{id: id, err: err}
	v.mu.Lock()
	delete(v.inflight, k)
	switch {
	case err == nil:
		expires := now.Add(v.goodTTL)
		if claims.Expiry < float64(expires.Unix()) {
			expires = time.Unix(int64(claims.Expiry), 0) // the review vouched for the token, not beyond its life
		}
		v.good.put(k, verdict{id: id, expires: expires})
		v.sources.giveBack(src)
	case isRefusal(err):
		v.bad.put(k, verdict{err: err, expires: now.Add(v.badTTL)})
	}
	v.mu.Unlock()
	close(f.done)
	return id, err
}

// reviewInSlot reviews the token once a review slot is free; a caller that finds none
// within slotWait gives up rather than queue.
func (v *TokenVerifier) reviewInSlot(ctx context.Context, token string) (AgentIdentity, error) {
	wait := time.NewTimer(v.slotWait)
	defer wait.Stop()
	select {
	case v.slots <- struct{}{}:
	case <-wait.C:
		v.busy.Add(1)
		return AgentIdentity{}, fmt.Errorf("no token review slot within %s: %w", v.slotWait, ErrVerifierBusy)
	case <-ctx.Done():
		return AgentIdentity{}, fmt.Errorf("token review: %w", ctx.Err())
	}
	defer func() { <-v.slots }()
	ctx, cancel := context.WithTimeout(ctx, v.reviewTimeout)
	defer cancel()
	return v.review(ctx, token)
}

func (v *TokenVerifier) review(ctx context.Context, token string) (AgentIdentity, error) {
	v.reviews.Add(1)
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
	if apierrors.IsNotFound(err) {
		return AgentIdentity{}, refused("the token's pod %s/%s is gone", ns, podName)
	}
	if err != nil {
		return AgentIdentity{}, fmt.Errorf("the token's pod %s/%s: %w", ns, podName, err)
	}
	if err := podAgent(ns, podName, podUID, pod); err != nil {
		return AgentIdentity{}, err
	}
	pod.Namespace, pod.Name = ns, podName
	kind, workload, err := agentWorkload(ctx, v.cs, pod)
	if err != nil {
		return AgentIdentity{}, err
	}
	return AgentIdentity{Namespace: ns, Pod: podName, UID: podUID, Kind: kind, Workload: workload}, nil
}

// peerHost is the address a call came from, without its port: the unit of the per-source
// limit.
func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown peer"
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// boundPod reads the pod a reviewed token is bound to. The review must say the token is
// for audience: an API server that ignores audiences (a webhook authenticator may) answers
// without any, and would otherwise pass a token minted for anything, the API server itself
// included.
func boundPod(st authnv1.TokenReviewStatus, audience string) (ns, pod, uid string, err error) {
	if !st.Authenticated {
		return "", "", "", refused("token rejected: %s", st.Error)
	}
	if !slices.Contains(st.Audiences, audience) {
		return "", "", "", refused("token review: the token is not for audience %s (the review names %q)", audience, st.Audiences)
	}
	sa, ok := strings.CutPrefix(st.User.Username, "system:serviceaccount:")
	ns, account, _ := strings.Cut(sa, ":")
	pod = first(st.User.Extra["authentication.kubernetes.io/pod-name"])
	uid = first(st.User.Extra["authentication.kubernetes.io/pod-uid"])
	if !ok || ns == "" || account == "" || pod == "" || uid == "" {
		return "", "", "", refused("the token is not bound to a pod")
	}
	if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(account)) > 0 || len(validation.IsDNS1123Subdomain(pod)) > 0 {
		return "", "", "", refused("the token names service account %q and pod %q, which are not valid names", sa, pod)
	}
	return ns, pod, uid, nil
}

// podAgent checks the pod a token of uid is bound to: it must still be that one and carry
// tp's agent container. Its owners are agentWorkload's.
func podAgent(ns, name, uid string, pod *corev1.Pod) error {
	if string(pod.UID) != uid {
		return refused("the token's pod %s/%s is gone", ns, name)
	}
	if !slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == agentspec.Container }) {
		return refused("pod %s/%s has no %s container", ns, name, agentspec.Container)
	}
	return nil
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

// VerifierStats returns the counters of the registry's verifier, if it keeps any.
func (r *Registry) VerifierStats() (VerifyStats, bool) {
	s, ok := r.verify.(interface{ Stats() VerifyStats })
	if !ok {
		return VerifyStats{}, false
	}
	return s.Stats(), true
}
