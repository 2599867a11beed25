package manager

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tpdev/tp/remote/agentspec"
	"google.golang.org/grpc/peer"
	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// jwt makes a token shaped like a pod's projected service-account token, with claims
// changed by change; its signature is random (only the API server could tell).
func jwt(change func(header, claims map[string]any)) string {
	header := map[string]any{"alg": "RS256", "kid": "k1"}
	now := time.Now().Unix()
	claims := map[string]any{
		"aud": []string{agentspec.Audience}, "exp": now + 3600, "iat": now, "nbf": now,
		"iss": "https://kubernetes.default.svc.cluster.local",
		"sub": "system:serviceaccount:default:web",
		"kubernetes.io": map[string]any{
			"namespace":      "default",
			"pod":            map[string]any{"name": webAgent.Pod, "uid": webAgent.UID},
			"serviceaccount": map[string]any{"name": "web", "uid": "5e1f0b8e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"},
		},
	}
	if change != nil {
		change(header, claims)
	}
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	sig := make([]byte, 256)
	_, _ = rand.Read(sig)
	enc := base64.RawURLEncoding.EncodeToString
	return enc(h) + "." + enc(c) + "." + enc(sig)
}

// agentJWT is a well-formed agent token of webAgent's pod.
var agentJWT = jwt(nil)

// review is what the API server says about a token and the objects it names: the
// TokenReview's status, then the pod (any name asked for) and its owners, which exist
// with the UIDs the references name unless a test says otherwise.
type review struct {
	status     authnv1.TokenReviewStatus
	podUID     string
	containers []string
	owner      *metav1.OwnerReference // the pod's
	rsOwner    *metav1.OwnerReference // the ReplicaSet's
	podHash    string                 // the pod's pod-template-hash
	missing    string                 // a resource that answers NotFound
	failing    string                 // a resource whose reads fail with a server error
}

var webLabels = map[string]string{"app": "web"}

func selector() *metav1.LabelSelector { return &metav1.LabelSelector{MatchLabels: webLabels} }

// apiServer answers as r says, and counts the reviews it makes.
func apiServer(r review, reviews *atomic.Int64) *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews.Add(1)
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
		tr.Status = r.status
		return true, tr, nil
	})
	get := func(resource string, obj func(name, ns string) runtime.Object) {
		cs.PrependReactor("get", resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
			g := a.(k8stesting.GetAction)
			switch resource {
			case r.missing:
				return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: resource}, g.GetName())
			case r.failing:
				return true, nil, apierrors.NewInternalError(errors.New("etcd is away"))
			}
			return true, obj(g.GetName(), g.GetNamespace()), nil
		})
	}
	get("pods", func(name, ns string) runtime.Object {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(r.podUID),
			Labels: map[string]string{"app": "web", podTemplateHash: r.podHash}}}
		for _, c := range r.containers {
			pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: c})
		}
		if r.owner != nil {
			pod.OwnerReferences = []metav1.OwnerReference{*r.owner}
		}
		return pod
	})
	get("replicasets", func(name, ns string) runtime.Object {
		rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: uidOf("ReplicaSet"),
			Labels: map[string]string{"app": "web", podTemplateHash: "7d4b9c"}}, Spec: appsv1.ReplicaSetSpec{Selector: selector()}}
		if r.rsOwner != nil {
			rs.OwnerReferences = []metav1.OwnerReference{*r.rsOwner}
		}
		return rs
	})
	get("deployments", func(name, ns string) runtime.Object {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: uidOf("Deployment")}, Spec: appsv1.DeploymentSpec{Selector: selector()}}
	})
	get("statefulsets", func(name, ns string) runtime.Object {
		return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: uidOf("StatefulSet")}, Spec: appsv1.StatefulSetSpec{Selector: selector()}}
	})
	return cs
}

// uidOf is the UID the fake API server gives every object of kind.
func uidOf(kind string) types.UID { return types.UID(strings.ToLower(kind) + "-uid") }

func controller(kind, name string) *metav1.OwnerReference {
	yes := true
	return &metav1.OwnerReference{Kind: kind, Name: name, UID: uidOf(kind), Controller: &yes}
}

// agentReview is the review of a tp agent's token in a Deployment's pod.
func agentReview() review {
	return review{
		status: authnv1.TokenReviewStatus{
			Authenticated: true,
			Audiences:     []string{agentspec.Audience},
			User: authnv1.UserInfo{Username: "system:serviceaccount:default:web", Extra: map[string]authnv1.ExtraValue{
				"authentication.kubernetes.io/pod-name": {webAgent.Pod},
				"authentication.kubernetes.io/pod-uid":  {webAgent.UID},
			}},
		},
		podUID:     webAgent.UID,
		containers: []string{"web", agentspec.Container},
		owner:      controller("ReplicaSet", "web-7d4b9c"),
		rsOwner:    controller("Deployment", "web"),
		podHash:    "7d4b9c",
	}
}

func TestTokenVerifierNamesTheAgentsWorkload(t *testing.T) {
	var reviews atomic.Int64
	v := NewTokenVerifier(apiServer(agentReview(), &reviews), agentspec.Audience)
	for range 3 {
		id, err := v.Verify(context.Background(), agentJWT)
		if err != nil || id != webAgent {
			t.Fatalf("Verify = %+v, %v; want %+v", id, err, webAgent)
		}
	}
	if n := reviews.Load(); n != 1 {
		t.Fatalf("%d reviews for one token: a verified token is kept", n)
	}
	if s := v.Stats(); s.Reviews != 1 || s.GoodHits != 2 {
		t.Fatalf("stats %v, want 1 review and 2 hits", s)
	}
	if _, ok := v.good.m[keyOf(agentJWT)]; !ok || len(v.good.m) != 1 {
		t.Fatal("the verified token is not kept by its hash")
	}
}

func TestTokenVerifierRefusesWhatIsNoAgentsToken(t *testing.T) {
	for name, change := range map[string]func(*review){
		"not authenticated":          func(r *review) { r.status.Authenticated = false; r.status.Error = "invalid bearer token" },
		"audience-unaware review":    func(r *review) { r.status.Audiences = nil },
		"another audience":           func(r *review) { r.status.Audiences = []string{"https://kubernetes.default.svc"} },
		"a user":                     func(r *review) { r.status.User.Username = "alice" },
		"no service account name":    func(r *review) { r.status.User.Username = "system:serviceaccount:default" },
		"bad namespace":              func(r *review) { r.status.User.Username = "system:serviceaccount:Default:web" },
		"not bound to a pod":         func(r *review) { delete(r.status.User.Extra, "authentication.kubernetes.io/pod-name") },
		"no pod uid":                 func(r *review) { delete(r.status.User.Extra, "authentication.kubernetes.io/pod-uid") },
		"bad pod name":               func(r *review) { r.status.User.Extra["authentication.kubernetes.io/pod-name"] = []string{"../secrets"} },
		"pod gone":                   func(r *review) { r.missing = "pods" },
		"pod replaced":               func(r *review) { r.podUID = "another" },
		"no agent container":         func(r *review) { r.containers = []string{"web"} },
		"no owner":                   func(r *review) { r.owner = nil },
		"owned by a DaemonSet":       func(r *review) { r.owner = controller("DaemonSet", "web") },
		"owner with a bad name":      func(r *review) { r.owner = controller("StatefulSet", "Web/0") },
		"deployment with a bad name": func(r *review) { r.rsOwner = controller("Deployment", "") },
		"owned by a Deployment":      func(r *review) { r.owner = controller("Deployment", "web") },
		"replicaset missing":         func(r *review) { r.missing = "replicasets" },
		"deployment missing":         func(r *review) { r.missing = "deployments" },
		"another replicaset's uid":   func(r *review) { r.owner.UID = "stale" },
		"another deployment's uid":   func(r *review) { r.rsOwner.UID = "stale" },
		"not that replicaset's pod":  func(r *review) { r.podHash = "5f6a7b" },
	} {
		r := agentReview()
		change(&r)
		var reviews atomic.Int64
		v := NewTokenVerifier(apiServer(r, &reviews), agentspec.Audience)
		for range 3 {
			if id, err := v.Verify(context.Background(), agentJWT); err == nil || !isRefusal(err) {
				t.Errorf("%s: Verify = %+v, %v; want a refusal", name, id, err)
			}
		}
		if n := reviews.Load(); n != 1 {
			t.Errorf("%s: %d reviews of one refused token; a refusal is kept", name, n)
		}
	}
}

// An API server that cannot answer says nothing about the token: the next call reviews
// it again, and a real agent is not locked out for a minute.
func TestTokenVerifierForgetsWhatTheAPIServerCouldNotAnswer(t *testing.T) {
	for _, resource := range []string{"pods", "replicasets", "deployments"} {
		r := agentReview()
		r.failing = resource
		var reviews atomic.Int64
		v := NewTokenVerifier(apiServer(r, &reviews), agentspec.Audience)
		for range 2 {
			if _, err := v.Verify(context.Background(), agentJWT); err == nil || isRefusal(err) {
				t.Errorf("%s failing: Verify = %v, want an error that is no refusal", resource, err)
			}
		}
		if n := reviews.Load(); n != 2 {
			t.Errorf("%s failing: %d reviews, want 2: a failed read is not a verdict", resource, n)
		}
	}
}

func TestTokenVerifierRefusesMalformedTokensWithoutAReview(t *testing.T) {
	cases := map[string]string{
		"not a JWT":               "forged",
		"two parts":               "eyJhbGciOiJSUzI1NiJ9.e30",
		"four parts":              agentJWT + ".x",
		"padded":                  strings.Replace(agentJWT, ".", "=.", 1),
		"not base64url":           "eyJhbGciOiJSUzI1NiJ9.e3+/.c2ln",
		"empty signature":         agentJWT[:strings.LastIndex(agentJWT, ".")+1],
		"header not JSON":         "bm90IGpzb24." + strings.SplitN(agentJWT, ".", 2)[1],
		"unsigned":                jwt(func(h, _ map[string]any) { h["alg"] = "none" }),
		"HMAC":                    jwt(func(h, _ map[string]any) { h["alg"] = "HS256" }),
		"no alg":                  jwt(func(h, _ map[string]any) { delete(h, "alg") }),
		"another audience":        jwt(func(_, c map[string]any) { c["aud"] = []string{"https://kubernetes.default.svc"} }),
		"audience a number":       jwt(func(_, c map[string]any) { c["aud"] = 7 }),
		"no audience":             jwt(func(_, c map[string]any) { delete(c, "aud") }),
		"expired":                 jwt(func(_, c map[string]any) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }),
		"no expiry":               jwt(func(_, c map[string]any) { delete(c, "exp") }),
		"expiry a string":         jwt(func(_, c map[string]any) { c["exp"] = "tomorrow" }),
		"not yet valid":           jwt(func(_, c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() }),
		"issuer a number":         jwt(func(_, c map[string]any) { c["iss"] = 1 }),
		"not bound to a pod":      jwt(func(_, c map[string]any) { delete(c, "kubernetes.io") }),
		"no pod":                  jwt(func(_, c map[string]any) { delete(c["kubernetes.io"].(map[string]any), "pod") }),
		"no service account":      jwt(func(_, c map[string]any) { delete(c["kubernetes.io"].(map[string]any), "serviceaccount") }),
		"bad namespace":           jwt(func(_, c map[string]any) { c["kubernetes.io"].(map[string]any)["namespace"] = "../kube-system" }),
		"pod without uid":         jwt(func(_, c map[string]any) { c["kubernetes.io"].(map[string]any)["pod"] = map[string]any{"name": "x"} }),
		"claims a JSON array":     "eyJhbGciOiJSUzI1NiJ9.W10.c2ln",
		"kubernetes.io a string":  jwt(func(_, c map[string]any) { c["kubernetes.io"] = "default" }),
		"oversized":               "eyJhbGciOiJSUzI1NiJ9." + strings.Repeat("e", maxTokenLen) + ".c2ln",
		"an API server's token":   jwt(func(_, c map[string]any) { c["aud"] = "https://kubernetes.default.svc.cluster.local" }),
		"claims of another shape": jwt(func(_, c map[string]any) { c["kubernetes.io"] = map[string]any{"namespace": []int{1}} }),
	}
	var reviews atomic.Int64
	v := NewTokenVerifier(apiServer(agentReview(), &reviews), agentspec.Audience)
	for name, token := range cases {
		if id, err := v.Verify(context.Background(), token); err == nil {
			t.Errorf("%s: Verify = %+v, want a refusal", name, id)
		} else if msg := err.Error(); msg != strings.ToLower(msg[:1])+msg[1:] {
			t.Errorf("%s: error %q", name, msg)
		}
	}
	if n := reviews.Load(); n != 0 {
		t.Errorf("%d reviews for malformed tokens, want none", n)
	}
	if s := v.Stats(); s.RefusedUnreviewed != int64(len(cases)) {
		t.Errorf("stats %v: want %d refused without a review", s, len(cases))
	}
	// The filter passes what an API server would: the audience among others, as a string,
	// an ECDSA key, no issuer, no nbf, an expiry within the API server's leeway.
	for name, token := range map[string]string{
		"audiences":         jwt(func(_, c map[string]any) { c["aud"] = []string{"https://kubernetes.default.svc", agentspec.Audience} }),
		"audience string":   jwt(func(_, c map[string]any) { c["aud"] = agentspec.Audience }),
		"ES256":             jwt(func(h, _ map[string]any) { h["alg"] = "ES256" }),
		"no issuer":         jwt(func(_, c map[string]any) { delete(c, "iss") }),
		"no nbf":            jwt(func(_, c map[string]any) { delete(c, "nbf") }),
		"just expired":      jwt(func(_, c map[string]any) { c["exp"] = time.Now().Add(-10 * time.Second).Unix() }),
		"fractional expiry": jwt(func(_, c map[string]any) { c["exp"] = float64(time.Now().Unix()) + 3600.5 }),
	} {
		if _, err := v.Verify(context.Background(), token); err != nil {
			t.Errorf("%s: Verify = %v, want the agent", name, err)
		}
	}
}

func fromPeer(ip string) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}})
}

// A pod that makes up a new well-formed token per call gets a few reviews; another pod's
// agent is reviewed meanwhile; a repeated bogus token costs one review.
func TestTokenVerifierBoundsWhatOneSourceCosts(t *testing.T) {
	r := agentReview()
	r.status = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
	var reviews atomic.Int64
	cs := apiServer(r, &reviews)
	v := NewTokenVerifier(cs, agentspec.Audience)
	flood := fromPeer("10.244.0.66")
	var limited int
	for range 200 {
		_, err := v.Verify(flood, jwt(nil))
		if errors.Is(err, ErrVerifierBusy) {
			limited++
		} else if !isRefusal(err) {
			t.Fatalf("a forged token: %v", err)
		}
	}
	repeated := jwt(nil)
	for range 50 {
		_, _ = v.Verify(fromPeer("10.244.0.67"), repeated)
	}
	if n := reviews.Load(); n > sourceBurst+2 {
		t.Errorf("%d reviews for 200 forged tokens from one pod and 50 of one token, want at most %d", n, sourceBurst+2)
	}
	if limited < 190 {
		t.Errorf("only %d of 200 forged tokens from one pod were turned away unreviewed", limited)
	}
	if s := v.Stats(); s.BadHits != 49 || s.Limited != int64(limited) {
		t.Errorf("stats %v: want 49 bad hits, %d limited", s, limited)
	}
	// The agent, from its own address, is reviewed at once.
	good := NewTokenVerifier(apiServer(agentReview(), &reviews), agentspec.Audience)
	good.sources, good.bad = v.sources, v.bad
	if _, err := good.Verify(fromPeer("10.244.0.7"), agentJWT); err != nil {
		t.Fatalf("a real agent beside the flood: %v", err)
	}
	// An agent's good review gives its source's token back.
	for range 2 * sourceBurst {
		if _, err := good.Verify(fromPeer("10.244.0.8"), jwt(nil)); err != nil {
			t.Fatalf("agents behind one address: %v", err)
		}
	}
}

// Calls with one token share its review; callers that find every review slot taken give
// up after slotWait, or with their context, instead of queueing.
func TestTokenVerifierReviewsOneTokenOnceAndQueuesNobody(t *testing.T) {
	release := make(chan struct{})
	var reviews atomic.Int64
	cs := apiServer(agentReview(), &reviews)
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		<-release
		return false, nil, nil
	})
	v := NewTokenVerifier(cs, agentspec.Audience)
	v.slotWait = 100 * time.Millisecond
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			_, err := v.Verify(fromPeer("10.0.0."+string(rune('1'+i%4))), agentJWT)
			errs <- err
		})
	}
	// Four distinct tokens hold the four slots; a fifth finds none.
	for i := range maxReviews {
		go func() { _, _ = v.Verify(fromPeer("10.1.0.1"+string(rune('0'+i))), jwt(nil)) }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(v.slots) < maxReviews && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	_, err := v.Verify(fromPeer("10.2.0.1"), jwt(nil))
	if !errors.Is(err, ErrVerifierBusy) || time.Since(start) > time.Second {
		t.Errorf("with every slot taken: %v after %s, want busy after %s", err, time.Since(start), v.slotWait)
	}
	ctx, cancel := context.WithTimeout(fromPeer("10.2.0.2"), 20*time.Millisecond) // sooner than slotWait
	defer cancel()
	if _, err := v.Verify(ctx, jwt(nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a caller whose context ends while waiting: %v", err)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, ErrVerifierBusy) {
			t.Errorf("a call sharing the agent's review: %v", err)
		}
	}
	if s := v.Stats(); s.Busy < 1 {
		t.Errorf("stats %v: no busy count", s)
	}
}

func TestVerdictsForgetTheOldestWhenFull(t *testing.T) {
	c := newVerdicts(3)
	now := time.Now()
	for i := range 5 {
		c.put(keyOf(string(rune('a'+i))), verdict{expires: now.Add(time.Minute)})
	}
	if len(c.m) != 3 {
		t.Fatalf("%d entries in a cache of 3", len(c.m))
	}
	for i, want := range []bool{false, false, true, true, true} {
		if _, ok := c.get(keyOf(string(rune('a'+i))), now); ok != want {
			t.Errorf("entry %d kept %v, want %v", i, ok, want)
		}
	}
	if _, ok := c.get(keyOf("e"), now.Add(time.Minute)); ok {
		t.Error("an expired verdict was answered")
	}
}

// FuzzTokenReview varies everything the API server says about a token: the review's
// verdict, audiences, user name and pod binding, then the pod's uid, containers and
// owners. An identity the verifier accepts must be the pod the review names, of a
// workload tp intercepts, with valid names, reached through owners that exist; and it is
// kept, so the next call costs no review. A refusal is kept too.
func FuzzTokenReview(f *testing.F) {
	ok := agentReview()
	f.Add(true, agentspec.Audience, ok.status.User.Username, webAgent.Pod, webAgent.UID, true, "web,tp-agent", "ReplicaSet", "web-7d4b9c", "Deployment", "web")
	f.Add(true, agentspec.Audience, ok.status.User.Username, webAgent.Pod, webAgent.UID, true, "tp-agent", "StatefulSet", "db", "", "")
	f.Add(true, agentspec.Audience, ok.status.User.Username, webAgent.Pod, webAgent.UID, true, "tp-agent", "ReplicaSet", "rs", "Rollout", "web")
	f.Add(true, agentspec.Audience, ok.status.User.Username, webAgent.Pod, webAgent.UID, true, "tp-agent", "Deployment", "web", "", "")
	f.Add(true, "", ok.status.User.Username, webAgent.Pod, webAgent.UID, true, "tp-agent", "StatefulSet", "db", "", "")
	f.Add(true, agentspec.Audience+",https://kubernetes.default.svc", "system:serviceaccount:default:web:extra", webAgent.Pod, webAgent.UID, true, "tp-agent", "StatefulSet", "db", "", "")
	f.Add(true, agentspec.Audience, "system:serviceaccount::web", "", "", true, "tp-agent", "Job", "j", "", "")
	f.Add(false, agentspec.Audience, ok.status.User.Username, webAgent.Pod, webAgent.UID, false, "", "", "", "", "")
	f.Fuzz(func(t *testing.T, authenticated bool, audiences, username, podName, podUID string, sameUID bool, containers, ownerKind, ownerName, rsOwnerKind, rsOwnerName string) {
		r := review{podHash: "7d4b9c", status: authnv1.TokenReviewStatus{
			Authenticated: authenticated,
			Audiences:     strings.Split(audiences, ","),
			User: authnv1.UserInfo{Username: username, Extra: map[string]authnv1.ExtraValue{
				"authentication.kubernetes.io/pod-name": {podName},
				"authentication.kubernetes.io/pod-uid":  {podUID},
			}},
		}}
		if r.podUID = "another"; sameUID {
			r.podUID = podUID
		}
		if containers != "" {
			r.containers = strings.Split(containers, ",")
		}
		if ownerKind != "" {
			r.owner = controller(ownerKind, ownerName)
		}
		if rsOwnerKind != "" {
			r.rsOwner = controller(rsOwnerKind, rsOwnerName)
		}
		var reviews atomic.Int64
		v := NewTokenVerifier(apiServer(r, &reviews), agentspec.Audience)
		id, err := v.Verify(context.Background(), agentJWT)
		if err != nil {
			if id != (AgentIdentity{}) || err.Error() == "" || !isRefusal(err) {
				t.Fatalf("Verify refused with %+v, %q", id, err)
			}
			if _, err := v.Verify(context.Background(), agentJWT); err == nil || reviews.Load() != 1 {
				t.Fatalf("a refused token was not kept: %v after %d reviews", err, reviews.Load())
			}
			return
		}
		switch {
		case !authenticated || !slices.Contains(r.status.Audiences, agentspec.Audience):
			t.Fatalf("Verify accepted a token the review did not pass for %s: %+v", agentspec.Audience, r.status)
		case !strings.HasPrefix(username, "system:serviceaccount:"+id.Namespace+":") || len(validation.IsDNS1123Subdomain(strings.TrimPrefix(username, "system:serviceaccount:"+id.Namespace+":"))) > 0:
			t.Fatalf("Verify accepted %+v for user %q", id, username)
		case len(validation.IsDNS1123Label(id.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(id.Pod)) > 0 || len(validation.IsDNS1123Subdomain(id.Workload)) > 0:
			t.Fatalf("Verify accepted invalid names: %+v", id)
		case id.Pod != podName || id.UID != podUID || !sameUID || podUID == "":
			t.Fatalf("Verify accepted %+v for pod %q %q (same uid %v)", id, podName, podUID, sameUID)
		case !slices.Contains(r.containers, agentspec.Container):
			t.Fatalf("Verify accepted a pod without the agent: %v", r.containers)
		case !workloadKind(id.Kind) || ownerKind == "Deployment":
			t.Fatalf("Verify accepted a pod of a %s (its controller reference names a %s)", id.Kind, ownerKind)
		}
		want := AgentIdentity{Namespace: id.Namespace, Pod: podName, UID: podUID, Kind: ownerKind, Workload: ownerName}
		if ownerKind == "ReplicaSet" && rsOwnerKind == "Deployment" {
			want.Kind, want.Workload = rsOwnerKind, rsOwnerName
		}
		if id != want {
			t.Fatalf("Verify = %+v, want %+v", id, want)
		}
		if again, err := v.Verify(context.Background(), agentJWT); err != nil || again != id || reviews.Load() != 1 {
			t.Fatalf("the verified token was not kept: %+v %v after %d reviews", again, err, reviews.Load())
		}
	})
}
