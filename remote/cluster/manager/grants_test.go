package manager

import (
	"context"
	"errors"
	"fmt"
	k8stesting "k8s.io/client-go/testing"
	"strings"
	"sync"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

func grantLease(ns, name, holder, secret string) *coordv1.Lease {
	return &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{grant.Label: grant.Version},
			Annotations: map[string]string{grant.WorkloadAnnotation: "Deployment/web", grant.PortAnnotation: "http", grant.SecretAnnotation: grant.Hash(secret)}},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder},
	}
}

func egressLease(ns, name, holder, secret string) *coordv1.Lease {
	l := grantLease(ns, name, holder, secret)
	l.Annotations[grant.UseAnnotation], l.Annotations[grant.PortAnnotation] = grant.UseEgress, ""
	return l
}

func ns(name string, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
}

func TestLeaseAuthorizer(t *testing.T) {
	type request struct {
		lease string
		req   grant.Request
	}
	req := func(ns, lease, secret string) request {
		return request{lease, grant.Request{Namespace: ns, Kind: "Deployment", Workload: "web", Port: "http", Secret: secret}}
	}
	objs := []runtime.Object{
		ns("shop", nil), ns("prod", map[string]string{grant.DenyAnnotation: "deny"}),
		grantLease("shop", "tp-web-http", "alice", "s3cret"), grantLease("prod", "tp-web-http", "alice", "s3cret"),
		egressLease("shop", "tp-egress-web", "bob", "s3cret"),
	}
	a := &LeaseAuthorizer{CS: fake.NewClientset(objs...)}
	ctx := context.Background()
	good := req("shop", "tp-web-http", "s3cret")
	if holder, err := a.Authorize(ctx, good.lease, good.req); err != nil || holder != "alice" {
		t.Fatalf("a granted intercept: %q %v", holder, err)
	}
	egress := req("shop", "tp-egress-web", "s3cret")
	egress.req.Use, egress.req.Port = grant.UseEgress, ""
	if holder, err := a.Authorize(ctx, egress.lease, egress.req); err != nil || holder != "bob" {
		t.Fatalf("a granted egress: %q %v", holder, err)
	}
	interceptAsEgress := egress
	interceptAsEgress.lease = "tp-web-http"
	egressAsIntercept := req("shop", "tp-egress-web", "s3cret")
	for name, c := range map[string]struct {
		req  request
		want string
	}{
		"denied namespace":                {req("prod", "tp-web-http", "s3cret"), "tp.dev/intercept=deny"},
		"no grant":                        {req("shop", "", ""), "needs the tp-intercept rights there"},
		"no secret":                       {req("shop", "tp-web-http", ""), "needs the tp-intercept rights there"},
		"missing grant":                   {req("shop", "tp-other", "s3cret"), "no intercept grant shop/tp-other"},
		"wrong secret":                    {req("shop", "tp-web-http", "guess"), "secret does not match"},
		"no namespace":                    {req("gone", "tp-web-http", "s3cret"), `no namespace "gone"`},
		"bad namespace":                   {req("Not/A/Name", "tp-web-http", "s3cret"), "not a namespace name"},
		"bad grant name":                  {req("shop", "../x", "s3cret"), "not a grant's name"},
		"intercept grant used for egress": {interceptAsEgress, "is an intercept grant, not an egress grant"},
		"egress grant used to intercept":  {egressAsIntercept, "is an egress grant, not an intercept grant"},
	} {
		_, err := a.Authorize(ctx, c.req.lease, c.req.req)
		if !errors.Is(err, ErrNotAuthorized) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a refusal with %q", name, err, c.want)
		}
	}
}

// fakeAuth grants every request that carries the secret "ok", to the holder named by the
// request's grant.
type fakeAuth struct{}

func (fakeAuth) Authorize(_ context.Context, name string, req grant.Request) (string, error) {
	if req.Secret != "ok" {
		return "", fmt.Errorf("%w: no grant", ErrNotAuthorized)
	}
	return name, nil
}

func create(name, workload, holder, secret string) *tunnelpb.InterceptClientMsg {
	return &tunnelpb.InterceptClientMsg{Kind: &tunnelpb.InterceptClientMsg_Create{Create: &tunnelpb.InterceptRequest{
		Name: name, Namespace: "shop", Kind: "Deployment", Workload: workload, Port: "http", Grant: holder, Secret: secret, Client: "someone@laptop"}}}
}

func result(t *testing.T, c *clientSession) *tunnelpb.InterceptResult {
	t.Helper()
	select {
	case m := <-c.out:
		return m.GetResult()
	default:
		t.Fatal("no result")
		return nil
	}
}

func newClient(r *Registry) *clientSession {
	c := &clientSession{out: make(chan *tunnelpb.InterceptServerMsg, 64), done: make(chan struct{}), moved: make(chan struct{})}
	r.clients[c] = struct{}{}
	return c
}

func TestRegistryAuthorizes(t *testing.T) {
	ctx := context.Background()
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	c := newClient(r)
	r.handleClient(ctx, c, create("web-http", "web", "alice", "forged"))
	if res := result(t, c); !strings.Contains(res.GetError(), "not authorized") || len(r.byKey) != 0 {
		t.Fatalf("an intercept without a grant: %+v, %d held", res, len(r.byKey))
	}
	r.handleClient(ctx, c, create("web-http", "web", "alice", "ok"))
	if res := result(t, c); res.GetError() != "" || res.GetHolder() != "alice" {
		t.Fatalf("a granted intercept: %+v", res)
	}
	other := newClient(r)
	r.handleClient(ctx, other, create("mine", "web", "bob", "ok"))
	if res := result(t, other); !strings.Contains(res.GetError(), "already intercepted by alice (someone@laptop)") {
		t.Errorf("a second holder of the port: %+v", res)
	}

	// List tells only about grants named with the hash their Lease carries.
	list := func(refs ...*tunnelpb.GrantRef) []*tunnelpb.InterceptInfo {
		resp, err := r.ClientAPI().List(ctx, &tunnelpb.ListRequest{Namespace: "shop", Grants: refs})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetIntercepts()
	}
	if got := list(); len(got) != 0 {
		t.Errorf("List naming no grant: %v", got)
	}
	if got := list(&tunnelpb.GrantRef{Namespace: "shop", Name: "alice", SecretSha256: grant.Hash("guess")}); len(got) != 0 {
		t.Errorf("List with the wrong hash: %v", got)
	}
	got := list(&tunnelpb.GrantRef{Namespace: "shop", Name: "alice", SecretSha256: grant.Hash("ok")})
	if len(got) != 1 || got[0].GetHolder() != "alice" || got[0].GetGrant() != "alice" || got[0].GetName() != "web-http" {
		t.Errorf("List with the grant's hash: %v", got)
	}

	// A registry that cannot check grants makes no intercept.
	r2 := NewRegistry(oneAgent{}, nil, nil)
	c2 := newClient(r2)
	r2.handleClient(ctx, c2, create("web-http", "web", "alice", "ok"))
	if res := result(t, c2); res.GetError() == "" {
		t.Errorf("a registry without an Authorizer made an intercept")
	}
}

func TestRegistryCapsEachHolder(t *testing.T) {
	ctx := context.Background()
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	r.maxPerHolder = 2
	a, b := newClient(r), newClient(r)
	for i, w := range []string{"w1", "w2"} {
		r.handleClient(ctx, []*clientSession{a, b}[i], create(w, w, "alice", "ok"))
		if res := result(t, []*clientSession{a, b}[i]); res.GetError() != "" {
			t.Fatalf("intercept %d: %v", i, res.GetError())
		}
	}
	r.handleClient(ctx, a, create("w1", "w1", "alice", "ok")) // asked again: no new one
	if res := result(t, a); res.GetError() != "" {
		t.Errorf("asking again for a held intercept: %v", res.GetError())
	}
	r.handleClient(ctx, a, create("w3", "w3", "alice", "ok"))
	if res := result(t, a); !strings.Contains(res.GetError(), "alice holds 2 intercepts") {
		t.Errorf("a third intercept of one holder, over two sessions: %+v", res)
	}
	r.handleClient(ctx, a, create("w3", "w3", "bob", "ok"))
	if res := result(t, a); res.GetError() != "" {
		t.Errorf("another holder: %v", res.GetError())
	}
}

// A burst of intercepts in one namespace (every developer asserting theirs after a manager
// restart) shares the reads under way; a deny set later applies to the next intercept.
func TestNamespaceReadOncePerBurst(t *testing.T) {
	cs := fake.NewClientset(ns("shop", nil), grantLease("shop", "tp-web-http", "alice", "s3cret"))
	a := &LeaseAuthorizer{CS: cs}
	req := grant.Request{Namespace: "shop", Kind: "Deployment", Workload: "web", Port: "http", Secret: "s3cret"}
	gets := func() int {
		n := 0
		for _, act := range cs.Actions() {
			if act.GetVerb() == "get" && act.GetResource().Resource == "namespaces" {
				n++
			}
		}
		return n
	}
	// The API server is slow: every developer's re-assertion arrives before the first read ends.
	cs.PrependReactor("get", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
		time.Sleep(50 * time.Millisecond)
		return false, nil, nil
	})
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := a.Authorize(context.Background(), "tp-web-http", req); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := gets(); n > 2 {
		t.Fatalf("10 intercepts at once in one namespace read it %d times, want the reads shared", n)
	}
	if _, err := cs.CoreV1().Namespaces().Update(context.Background(), ns("shop", map[string]string{grant.DenyAnnotation: "deny"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authorize(context.Background(), "tp-web-http", req); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("right after the namespace was denied: %v, want a refusal", err)
	}
}
