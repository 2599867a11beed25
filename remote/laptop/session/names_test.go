package session

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// While the tunnel reconnects, a name asked before resolves to its last answer for a
// while (serve-stale); one never asked, or asked too long ago, says the tunnel is down.
func TestStaleAnswersWhileReconnecting(t *testing.T) {
	now := time.Now()
	s := &Session{state: Reconnecting, cfg: Config{Namespace: "shop"}, answers: map[answerKey]answer{
		{"web-app", 0}: {resp: &tunnelpb.ResolveResponse{Fqdn: "web-app.shop.svc.cluster.local.", Addrs: []string{"10.96.0.7"}}, expires: now.Add(-time.Minute)},
		{"old", 0}:     {resp: &tunnelpb.ResolveResponse{Fqdn: "old.shop.svc.cluster.local.", Addrs: []string{"10.96.0.8"}}, expires: now.Add(-answerStale - time.Second)},
		{"web-app", 1}: {resp: &tunnelpb.ResolveResponse{Response: []byte("wire")}, expires: now.Add(-time.Minute)},
	}}
	ctx := context.Background()
	addrs, err := s.LookupHost(ctx, "Web-App")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("10.96.0.7") {
		t.Errorf("a name asked a minute ago, while reconnecting: %v %v, want its last address", addrs, err)
	}
	if wire, err := s.Query(ctx, "web-app", 1); err != nil || string(wire) != "wire" {
		t.Errorf("a DNS question asked a minute ago: %q %v", wire, err)
	}
	for _, name := range []string{"db", "old"} {
		if _, err := s.LookupHost(ctx, name); !errors.Is(err, remote.ErrTunnelDown) {
			t.Errorf("%s while reconnecting: %v, want the tunnel down", name, err)
		}
	}
}
