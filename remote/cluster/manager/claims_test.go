package manager

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/managerspec"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// managerPod is a pod of the manager, as Claims sees it.
func managerPod(name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "tp-system", Labels: map[string]string{"app.kubernetes.io/name": managerspec.Name}}}
}

// onPod is a registry of manager pod pod, sharing its intercepts through cs.
func onPod(cs kubernetes.Interface, pod string) *Registry {
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	r.SetClaims(&Claims{CS: cs, Namespace: "tp-system", Pod: pod, Pods: &ManagerPods{CS: cs, Namespace: "tp-system", Selector: managerspec.Selector, Port: "8082"}})
	return r
}

// asking is intercepting with a grant of its own, as a real client has for each intercept
// (fakeAuth names the grant as its holder).
func asking(name, holder string, f *tunnelpb.HTTPFilter) *tunnelpb.InterceptClientMsg {
	m := intercepting(name, holder, holder+"@laptop", f)
	m.GetCreate().Grant = "tp-" + holder + "-" + name
	return m
}

func claimsOf(t *testing.T, cs kubernetes.Interface) map[string]claim {
	t.Helper()
	list, err := cs.CoordinationV1().Leases("tp-system").List(context.Background(), metav1.ListOptions{LabelSelector: ClaimLabel})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]claim{}
	for i := range list.Items {
		c, ok := readClaim(&list.Items[i])
		if !ok {
			t.Fatalf("unreadable claim %s", list.Items[i].Name)
		}
		out[c.Client+"/"+c.Name] = c
	}
	return out
}

func waitClaims(t *testing.T, cs kubernetes.Interface, want func(map[string]claim) bool) map[string]claim {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := claimsOf(t, cs)
		if want(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("claims %+v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestInterceptsOnTwoManagerPodsExcludeEachOther(t *testing.T) {
	cs := fake.NewClientset(managerPod("m-1"), managerPod("m-2"))
	r1, r2 := onPod(cs, "m-1"), onPod(cs, "m-2")
	alice, bob := newClient(r1), newClient(r2)

	mustIntercept(t, r1, alice, asking("all", "alice", nil))
	msg := mustRefuse(t, r2, bob, asking("all", "bob", nil))
	for _, want := range []string{"port http of Deployment", "already intercepted by tp-alice-all (alice@laptop) (since ", `as "all")`} {
		if !strings.Contains(msg, want) {
			t.Errorf("a global intercept on another pod beside alice's: %q; want it to say %q", msg, want)
		}
	}
	if msg := mustRefuse(t, r2, bob, asking("b", "bob", header("x-dev", "b"))); !strings.Contains(msg, "takes every connection") {
		t.Errorf("a filtered intercept on another pod beside a global one: %q", msg)
	}
	// The refused ones left no claim behind.
	if got := waitClaims(t, cs, func(m map[string]claim) bool { return len(m) == 1 }); got["alice@laptop/all"].Pod != "m-1" {
		t.Errorf("claims %+v", got)
	}

	leave(r1, alice, "all")
	waitClaims(t, cs, func(m map[string]claim) bool { return len(m) == 0 })
	mustIntercept(t, r2, bob, asking("b", "bob", header("x-dev", "b")))
	mustIntercept(t, r1, alice, asking("a", "alice", header("x-dev", "a")))
	// Filtered ones share the port across pods, but not an id.
	idOf := func(m *tunnelpb.InterceptClientMsg, id string) *tunnelpb.InterceptClientMsg {
		m.GetCreate().Http.Id = id
		return m
	}
	mustIntercept(t, r1, alice, idOf(asking("c", "alice", header("x-dev", "c")), "shared"))
	if msg := mustRefuse(t, r2, bob, idOf(asking("d", "bob", header("x-dev", "d")), "shared")); !strings.Contains(msg, `id "shared" is taken`) {
		t.Errorf("a taken id on another pod: %q", msg)
	}
}

func TestAClaimMovesWithItsClientAndDiesWithItsPod(t *testing.T) {
	cs := fake.NewClientset(managerPod("m-1"), managerPod("m-2"))
	r1, r2 := onPod(cs, "m-1"), onPod(cs, "m-2")
	alice := newClient(r1)
	mustIntercept(t, r1, alice, asking("all", "alice", nil))

	// m-1 drains: alice asserts her intercept on m-2, which takes the claim over; m-1
	// keeps (releases nothing of) it as her stream there ends.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond) // no stream sends its Moving here
	r1.Drain(ctx, "m-1", time.Second)
	cancel()
	moved := newClient(r2)
	mustIntercept(t, r2, moved, asking("all", "alice", nil))
	r1.mu.Lock()
	r1.dropClientLocked(alice, "its session ended")
	r1.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	if got := claimsOf(t, cs); len(got) != 1 || got["alice@laptop/all"].Pod != "m-2" {
		t.Fatalf("claims after the move %+v", got)
	}

	// m-2 dies without a word: its claims stop counting once its pod is gone, and the
	// sweep of a live pod removes them later (not at once: their clients move them).
	if err := cs.CoreV1().Pods("tp-system").Delete(context.Background(), "m-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r3 := onPod(cs, "m-3")
	bob := newClient(r3)
	mustIntercept(t, r3, bob, asking("all", "bob", nil))
	if got := claimsOf(t, cs); len(got) != 2 || got["bob@laptop/all"].Pod != "m-3" {
		t.Errorf("claims after m-2 died %+v", got)
	}
	r3.claims.moveGrace = time.Nanosecond // as if its client had had its time
	r3.sweepClaims(context.Background())
	if got := claimsOf(t, cs); len(got) != 1 || got["bob@laptop/all"].Pod != "m-3" {
		t.Errorf("claims after the sweep %+v", got)
	}
}

// A client whose stream broke asserts its intercept on a new stream before the manager saw
// the old one end: the grant's secret shows it is the same client, which takes it over.
func TestANewSessionWithTheSameGrantTakesTheInterceptOver(t *testing.T) {
	cs := fake.NewClientset(managerPod("m-1"))
	r := onPod(cs, "m-1")
	old, fresh, other := newClient(r), newClient(r), newClient(r)
	mustIntercept(t, r, old, asking("all", "alice", nil))
	mustIntercept(t, r, fresh, asking("all", "alice", nil))
	if r.findLocked(old, "all") != nil || r.findLocked(fresh, "all") == nil {
		t.Error("the new session did not take the intercept over")
	}
	forged := asking("all", "alice", nil)
	forged.GetCreate().Secret = "forged"
	if msg := mustRefuse(t, r, other, forged); !strings.Contains(msg, "no grant") {
		t.Errorf("another session without the secret: %q", msg)
	}
	// The claim outlives the old session's removal: the new one holds it.
	time.Sleep(50 * time.Millisecond)
	if got := claimsOf(t, cs); len(got) != 1 {
		t.Errorf("claims after the takeover %+v", got)
	}
}

// A claim this pod wrote and no longer backs (a Release that failed, a restarted container)
// is swept; one it backs is kept, and so is one taken since the last sweep.
func TestTheSweepRemovesThisPodsStaleClaims(t *testing.T) {
	cs := fake.NewClientset(managerPod("m-1"))
	r := onPod(cs, "m-1")
	alice, bob := newClient(r), newClient(r)
	mustIntercept(t, r, alice, asking("a", "alice", header("x-dev", "a")))
	mustIntercept(t, r, bob, asking("b", "bob", header("x-dev", "b")))
	// Bob's intercept is forgotten without its Release, as by a restart.
	key := interceptKey{webAgent.Namespace, "deployment", webAgent.Workload, "http"}
	r.mu.Lock()
	r.byKey[key] = slices.DeleteFunc(r.byKey[key], func(it *intercept) bool { return it.name == "b" })
	r.mu.Unlock()

	r.sweepClaims(context.Background())
	if got := claimsOf(t, cs); len(got) != 2 {
		t.Fatalf("claims taken just now were swept: %+v", got)
	}
	for _, l := range r.claims.locks {
		l.taken = time.Now().Add(-claimSweep)
	}
	r.sweepClaims(context.Background())
	if got := claimsOf(t, cs); len(got) != 1 || got["alice@laptop/a"].Pod != "m-1" {
		t.Errorf("claims after the sweep %+v", got)
	}
}

// What another pod serves, List tells too (a client on this pod must not take over a grant in
// use there, and tp list shows the team's intercepts); the same intercept name with another
// client's secret is refused while that client's pod lives.
func TestTheOtherPodsInterceptsAreListedAndTheirNamesKept(t *testing.T) {
	cs := fake.NewClientset(managerPod("m-1"), managerPod("m-2"))
	r1, r2 := onPod(cs, "m-1"), onPod(cs, "m-2")
	mustIntercept(t, r1, newClient(r1), asking("all", "alice", nil))
	m := asking("all", "alice", nil)
	req := m.GetCreate()
	resp, err := r2.ClientAPI().List(context.Background(), &tunnelpb.ListRequest{Grants: []*tunnelpb.GrantRef{{Namespace: req.Namespace, Name: req.Grant, SecretSha256: grant.Hash(req.Secret)}}})
	if err != nil || len(resp.GetIntercepts()) != 1 || resp.GetIntercepts()[0].GetName() != "all" || resp.GetIntercepts()[0].GetHolder() != "tp-alice-all" {
		t.Fatalf("List on the other pod: %v %v", resp, err)
	}
	// Bob's grant of the same name (he wrote the Lease over): the grant passes, the claim not.
	r2.auth = anyGrant{}
	other := newClient(r2)
	taken := asking("all", "alice", nil)
	taken.GetCreate().Secret = "bobs"
	if msg := mustRefuse(t, r2, other, taken); !strings.Contains(msg, "through another manager pod") {
		t.Errorf("another client's intercept of the same name on another pod: %q", msg)
	}
}

// anyGrant passes every grant, naming it as its holder.
type anyGrant struct{}

func (anyGrant) Authorize(_ context.Context, name string, _ grant.Request) (string, error) {
	return name, nil
}
