package server

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/cluster/manager"
)

// /stats carries the agent verifier's counts beside the flows': the e2e flood reads them.
func TestStatsCountTokenReviews(t *testing.T) {
	v := manager.NewTokenVerifier(fake.NewClientset(), agentspec.Audience)
	if _, err := v.Verify(context.Background(), "garbage"); err == nil {
		t.Fatal("garbage verified")
	}
	mux := healthHandler(manager.New(manager.Config{}), manager.NewRegistry(v, nil, nil))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/stats", nil))
	if got := rec.Body.String(); !strings.Contains(got, "open=0 ") || !strings.Contains(got, " reviews=0 refused_unreviewed=1 cache_hits=0 ") {
		t.Fatalf("/stats = %q", got)
	}
}
