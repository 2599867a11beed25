package manager

import (
	"context"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// review is what the API server says about a token and the objects it names: the
// TokenReview's status, then the pod (any name asked for) and its ReplicaSet.
type review struct {
	status     authnv1.TokenReviewStatus
	podUID     string
	containers []string
	owner      *metav1.OwnerReference // the pod's
	rsOwner    *metav1.OwnerReference // the ReplicaSet's
}

// apiServer answers as r says, and counts the reviews it makes.
func apiServer(r review, reviews *int) *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		*reviews++
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
		tr.Status = r.status
		return true, tr, nil
	})
	cs.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		get := a.(k8stesting.GetAction)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: get.GetName(), Namespace: get.GetNamespace(), UID: types.UID(r.podUID)}}
		for _, c := range r.containers {
			pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: c})
		}
		if r.owner != nil {
			pod.OwnerReferences = []metav1.OwnerReference{*r.owner}
		}
		return true, pod, nil
	})
	cs.PrependReactor("get", "replicasets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		get := a.(k8stesting.GetAction)
		rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: get.GetName(), Namespace: get.GetNamespace()}}
		if r.rsOwner != nil {
			rs.OwnerReferences = []metav1.OwnerReference{*r.rsOwner}
		}
		return true, rs, nil
	})
	return cs
}

func controller(kind, name string) *metav1.OwnerReference {
	yes := true
	return &metav1.OwnerReference{Kind: kind, Name: name, Controller: &yes}
}

// agentReview is the review of a tp agent's token in a Deployment's pod.
func agentReview() review {
	return review{
		status: authnv1.TokenReviewStatus{
			Authenticated: true,
			Audiences:     []string{AgentAudience},
			User: authnv1.UserInfo{Username: "system:serviceaccount:default:web", Extra: map[string]authnv1.ExtraValue{
				"authentication.kubernetes.io/pod-name": {webAgent.Pod},
				"authentication.kubernetes.io/pod-uid":  {webAgent.UID},
			}},
		},
		podUID:     webAgent.UID,
		containers: []string{"web", AgentContainer},
		owner:      controller("ReplicaSet", "web-7d4b9c"),
		rsOwner:    controller("Deployment", "web"),
	}
}

func TestTokenVerifierNamesTheAgentsWorkload(t *testing.T) {
	var reviews int
	v := NewTokenVerifier(apiServer(agentReview(), &reviews), AgentAudience)
	for range 2 {
		id, err := v.Verify(context.Background(), agentToken)
		if err != nil || id != webAgent {
			t.Fatalf("Verify = %+v, %v; want %+v", id, err, webAgent)
		}
	}
	if reviews != 1 {
		t.Fatalf("%d reviews for one token: a verified token is kept", reviews)
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
		"pod replaced":               func(r *review) { r.podUID = "another" },
		"no agent container":         func(r *review) { r.containers = []string{"web"} },
		"no owner":                   func(r *review) { r.owner = nil },
		"owned by a DaemonSet":       func(r *review) { r.owner = controller("DaemonSet", "web") },
		"owner with a bad name":      func(r *review) { r.owner = controller("StatefulSet", "Web/0") },
		"deployment with a bad name": func(r *review) { r.rsOwner = controller("Deployment", "") },
	} {
		r := agentReview()
		change(&r)
		var reviews int
		v := NewTokenVerifier(apiServer(r, &reviews), AgentAudience)
		if id, err := v.Verify(context.Background(), agentToken); err == nil {
			t.Errorf("%s: Verify = %+v, want a refusal", name, id)
		}
	}
}

// FuzzTokenReview varies everything the API server says about a token: the review's
// verdict, audiences, user name and pod binding, then the pod's uid, containers and
// owners. An identity the verifier accepts must be the pod the review names, of a
// workload tp intercepts, with valid names; and it is kept, so the next call costs no review.
func FuzzTokenReview(f *testing.F) {
	ok := agentReview()
	f.Add(true, AgentAudience, ok.status.User.Username, webAgent.Pod, webAgent.UID, true, "web,tp-agent", "ReplicaSet", "web-7d4b9c", "Deployment", "web")
	f.Add(true, AgentAudience, ok.status.User.Username, webAgent.Pod, webAgent.UID, true, "tp-agent", "StatefulSet", "db", "", "")
	f.Add(true, AgentAudience, ok.status.User.Username, webAgent.Pod, webAgent.UID, true, "tp-agent", "ReplicaSet", "rs", "Rollout", "web")
	f.Add(true, "", ok.status.User.Username, webAgent.Pod, webAgent.UID, true, "tp-agent", "StatefulSet", "db", "", "")
	f.Add(true, AgentAudience+",https://kubernetes.default.svc", "system:serviceaccount:default:web:extra", webAgent.Pod, webAgent.UID, true, "tp-agent", "StatefulSet", "db", "", "")
	f.Add(true, AgentAudience, "system:serviceaccount::web", "", "", true, "tp-agent", "Job", "j", "", "")
	f.Add(false, AgentAudience, ok.status.User.Username, webAgent.Pod, webAgent.UID, false, "", "", "", "", "")
	f.Fuzz(func(t *testing.T, authenticated bool, audiences, username, podName, podUID string, sameUID bool, containers, ownerKind, ownerName, rsOwnerKind, rsOwnerName string) {
		r := review{status: authnv1.TokenReviewStatus{
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
		var reviews int
		v := NewTokenVerifier(apiServer(r, &reviews), AgentAudience)
		id, err := v.Verify(context.Background(), agentToken)
		if err != nil {
			if id != (AgentIdentity{}) || err.Error() == "" {
				t.Fatalf("Verify refused with %+v, %q", id, err)
			}
			if _, err := v.Verify(context.Background(), agentToken); err == nil || reviews != 2 {
				t.Fatalf("a refused token was kept: %v after %d reviews", err, reviews)
			}
			return
		}
		switch {
		case !authenticated || !slices.Contains(r.status.Audiences, AgentAudience):
			t.Fatalf("Verify accepted a token the review did not pass for %s: %+v", AgentAudience, r.status)
		case !strings.HasPrefix(username, "system:serviceaccount:"+id.Namespace+":") || len(validation.IsDNS1123Subdomain(strings.TrimPrefix(username, "system:serviceaccount:"+id.Namespace+":"))) > 0:
			t.Fatalf("Verify accepted %+v for user %q", id, username)
		case len(validation.IsDNS1123Label(id.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(id.Pod)) > 0 || len(validation.IsDNS1123Subdomain(id.Workload)) > 0:
			t.Fatalf("Verify accepted invalid names: %+v", id)
		case id.Pod != podName || id.UID != podUID || !sameUID || podUID == "":
			t.Fatalf("Verify accepted %+v for pod %q %q (same uid %v)", id, podName, podUID, sameUID)
		case !slices.Contains(r.containers, AgentContainer):
			t.Fatalf("Verify accepted a pod without the agent: %v", r.containers)
		case !workloadKind(id.Kind):
			t.Fatalf("Verify accepted a pod of a %s", id.Kind)
		}
		want := AgentIdentity{Namespace: id.Namespace, Pod: podName, UID: podUID, Kind: ownerKind, Workload: ownerName}
		if ownerKind == "ReplicaSet" && rsOwnerKind == "Deployment" {
			want.Kind, want.Workload = rsOwnerKind, rsOwnerName
		}
		if id != want {
			t.Fatalf("Verify = %+v, want %+v", id, want)
		}
		if again, err := v.Verify(context.Background(), agentToken); err != nil || again != id || reviews != 1 {
			t.Fatalf("the verified token was not kept: %+v %v after %d reviews", again, err, reviews)
		}
	})
}
