package session

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tpdev/tp/remote/grant"
)

func grantSession(t *testing.T, user string, objs ...runtime.Object) *Session {
	t.Helper()
	cs := fake.NewClientset(objs...)
	cs.PrependReactor("create", "selfsubjectreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, &authnv1.SelfSubjectReview{Status: authnv1.SelfSubjectReviewStatus{UserInfo: authnv1.UserInfo{Username: user}}}, nil
	})
	return &Session{cs: cs}
}

func lease(t *testing.T, s *Session, name string) *coordv1.Lease {
	t.Helper()
	l, err := s.cs.CoordinationV1().Leases("shop").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("lease %s: %v", name, err)
	}
	return l
}

func TestWriteGrant(t *testing.T) {
	ctx := context.Background()
	spec := InterceptSpec{Name: "web-http", Namespace: "shop", Kind: "Deployment", Workload: "web", Port: "http"}
	never := func(string, string, string) bool { return false }
	always := func(string, string, string) bool { return true }

	s := grantSession(t, "alice")
	g, err := s.writeGrant(ctx, spec, "alice@laptop", "", never)
	if err != nil {
		t.Fatal(err)
	}
	l := lease(t, s, "tp-web-http")
	if g.lease != "tp-web-http" || g.holder != "alice" || *l.Spec.HolderIdentity != "alice" || l.Labels[grant.Label] != grant.Version {
		t.Fatalf("grant %+v, lease %+v", g, l)
	}
	if holder, err := grant.Check(grant.Lease{Labels: l.Labels, Annotations: l.Annotations, Holder: *l.Spec.HolderIdentity}, l.Name,
		grant.Request{Namespace: "shop", Kind: "Deployment", Workload: "web", Port: "http", Secret: g.secret}); err != nil || holder != "alice" {
		t.Errorf("the manager's check of the written grant: %q %v", holder, err)
	}

	// Another session's live grant of that name stays; ours gets another name.
	g2, err := s.writeGrant(ctx, spec, "alice@desktop", "", always)
	if err != nil || g2.lease == g.lease || !strings.HasPrefix(g2.lease, "tp-web-http-") {
		t.Fatalf("beside a live grant: %+v %v", g2, err)
	}
	if lease(t, s, "tp-web-http").Annotations[grant.SecretAnnotation] != grant.Hash(g.secret) {
		t.Error("a live grant was overwritten")
	}
	// Our own, or a dead one, is taken over.
	g3, err := s.writeGrant(ctx, spec, "alice@laptop", grant.Hash(g.secret), always)
	if err != nil || g3.lease != "tp-web-http" || lease(t, s, "tp-web-http").Annotations[grant.SecretAnnotation] != grant.Hash(g3.secret) {
		t.Fatalf("rewriting our own grant: %+v %v", g3, err)
	}

	// Removal takes only the grant that is still ours.
	if err := s.deleteGrant(ctx, "shop", g); err != nil {
		t.Fatal(err)
	}
	lease(t, s, "tp-web-http") // g3 wrote it since: it stays
	if err := s.deleteGrant(ctx, "shop", g3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cs.CoordinationV1().Leases("shop").Get(ctx, "tp-web-http", metav1.GetOptions{}); err == nil {
		t.Error("a grant stayed after its intercept ended")
	}

	refs, err := s.grantRefs(ctx, "shop")
	if err != nil || len(refs) != 1 || refs[0].GetName() != g2.lease || refs[0].GetSecretSha256() != grant.Hash(g2.secret) {
		t.Errorf("grantRefs: %v %v", refs, err)
	}
}

func TestWriteGrantLeavesOtherLeasesAlone(t *testing.T) {
	other := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "tp-web-http", Namespace: "shop"}} // someone's, not a grant
	s := grantSession(t, "alice", other)
	spec := InterceptSpec{Name: "web-http", Namespace: "shop", Kind: "Deployment", Workload: "web", Port: "http"}
	g, err := s.writeGrant(context.Background(), spec, "", "", func(string, string, string) bool { return false })
	if err != nil || g.lease == "tp-web-http" {
		t.Fatalf("beside a lease that is not a grant: %+v %v", g, err)
	}
	if l := lease(t, s, "tp-web-http"); l.Labels[grant.Label] != "" {
		t.Error("a lease that was no grant was taken over")
	}
}

func TestEgressGrant(t *testing.T) {
	ctx := context.Background()
	s := grantSession(t, "bob")
	s.cfg.Log = slog.New(slog.DiscardHandler)
	e := Egress{Namespace: "shop", Kind: "Deployment", Workload: "web"}
	if err := s.startEgress(ctx, e); err != nil {
		t.Fatal(err)
	}
	other := grantSession(t, "carol")
	other.cs = s.cs
	other.cfg.Log = s.cfg.Log
	if err := other.startEgress(ctx, e); err != nil {
		t.Fatalf("a second developer running as the same workload: %v", err)
	}
	if s.via.GetGrant() == other.via.GetGrant() {
		t.Fatalf("two runs share the egress grant %s", s.via.GetGrant())
	}
	l := lease(t, s, s.via.GetGrant())
	req := grant.Request{Namespace: "shop", Kind: "Deployment", Workload: "web", Secret: s.via.GetSecret(), Use: grant.UseEgress}
	if holder, err := grant.Check(grant.Lease{Labels: l.Labels, Annotations: l.Annotations, Holder: *l.Spec.HolderIdentity}, l.Name, req); err != nil || holder != "bob" {
		t.Fatalf("the manager's check of the egress grant: %q %v", holder, err)
	}
	intercept := req
	intercept.Use, intercept.Port = "", ""
	if _, err := grant.Check(grant.Lease{Labels: l.Labels, Annotations: l.Annotations, Holder: *l.Spec.HolderIdentity}, l.Name, intercept); err == nil {
		t.Error("an egress grant passed for an intercept")
	}
	s.stopEgress()
	if _, err := s.cs.CoordinationV1().Leases("shop").Get(ctx, l.Name, metav1.GetOptions{}); err == nil {
		t.Error("the egress grant stays after the session")
	}
	lease(t, other, other.via.GetGrant()) // the other run's stays
}
