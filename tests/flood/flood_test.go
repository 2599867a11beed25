package flood

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/cluster/manager"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// The flood against the manager's real agent API and verifier, with an API server that
// refuses every token: everything is refused, and only a handful of tokens are reviewed.
func TestFloodIsRefusedCheaply(t *testing.T) {
	var reviews atomic.Int64
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews.Add(1)
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
		tr.Status = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
		return true, tr, nil
	})
	v := manager.NewTokenVerifier(cs, agentspec.Audience)
	srv := grpc.NewServer()
	tunnelpb.RegisterAgentsServer(srv, manager.NewRegistry(v, nil, nil).AgentAPI())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Agents(ctx, Config{Target: ln.Addr().String(), N: 400, Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v; verifier %v", res, v.Stats())
	if res.Sent != 400 || res.Registered != 0 || res.Codes["Refused"]+res.Codes["Busy"] != 400 {
		t.Errorf("flood result %+v", res)
	}
	if n := reviews.Load(); n > 12 {
		t.Errorf("%d reviews for a flood of 400 from one address", n)
	}
	if s := v.Stats(); s.RefusedUnreviewed < 200 || s.BadHits == 0 || s.Limited == 0 {
		t.Errorf("verifier stats %v", s)
	}
}
