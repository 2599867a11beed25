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
		{"web-app", 1}: {resp: &tunnelpb.ResolveResponse{Response: wire(0, 1)}, expires: now.Add(-time.Minute)},
		{"gone", 0}:    {resp: &tunnelpb.ResolveResponse{}, expires: now.Add(-time.Minute)},
		{"gone", 1}:    {resp: &tunnelpb.ResolveResponse{Response: wire(3, 0)}, expires: now.Add(-time.Minute)},
	}}
	ctx := context.Background()
	addrs, err := s.LookupHost(ctx, "Web-App")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("10.96.0.7") {
		t.Errorf("a name asked a minute ago, while reconnecting: %v %v, want its last address", addrs, err)
	}
	if got, err := s.Query(ctx, "web-app", 1); err != nil || string(got) != string(wire(0, 1)) {
		t.Errorf("a DNS question asked a minute ago: %q %v", got, err)
	}
	// A stale "no such name" is never given: the shim would ask upstream about it.
	if _, err := s.Query(ctx, "gone", 1); !errors.Is(err, remote.ErrTunnelDown) {
		t.Errorf("a stale NXDOMAIN while reconnecting: %v, want the tunnel down", err)
	}
	for _, name := range []string{"db", "old", "gone"} {
		if _, err := s.LookupHost(ctx, name); !errors.Is(err, remote.ErrTunnelDown) {
			t.Errorf("%s while reconnecting: %v, want the tunnel down", name, err)
		}
	}
	s.state = Closed
	if _, err := s.LookupHost(ctx, "web-app"); err == nil {
		t.Error("a closed session gave a stale answer")
	}
}

// wire is a DNS response header of rcode with ancount answers (the records themselves do
// not matter here).
func wire(rcode byte, ancount byte) []byte {
	return []byte{0, 1, 0x81, 0x80 | rcode, 0, 1, 0, ancount, 0, 0, 0, 0}
}
