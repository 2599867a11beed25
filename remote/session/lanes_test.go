package session

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// readyLanes makes n lanes whose gRPC connections are ready, to an in-memory server.
func readyLanes(t *testing.T, n int) []*lane {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	var lanes []*lane
	for range n {
		cc, err := grpc.NewClient("passthrough:///lane", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		cc.Connect()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		for st := cc.GetState(); st != connectivity.Ready; st = cc.GetState() {
			if !cc.WaitForStateChange(ctx, st) {
				t.Fatalf("lane not ready: %s", st)
			}
		}
		cancel()
		lanes = append(lanes, &lane{cc: cc})
	}
	return lanes
}

// Flows dialled at the same moment spread over the flow lanes: each is counted on its lane
// when the lane is chosen.
func TestConcurrentFlowsSpreadOverLanes(t *testing.T) {
	s := &Session{lanes: readyLanes(t, 4)}
	var wg sync.WaitGroup
	for range 3 * 8 {
		wg.Go(func() { s.pickLane() })
	}
	wg.Wait()
	if n := s.lanes[0].open.Load(); n != 0 {
		t.Errorf("lane 0 (names and state) got %d flows while flow lanes were ready", n)
	}
	for i, l := range s.lanes[1:] {
		if n := l.open.Load(); n != 8 {
			t.Errorf("flow lane %d has %d of 24 flows, want 8", i+1, n)
		}
	}
}

// A new flow avoids lanes with bulk flows, however many light ones the others carry.
func TestNewFlowAvoidsBulkLanes(t *testing.T) {
	s := &Session{lanes: readyLanes(t, 4)}
	s.lanes[1].heavy.Store(1)
	s.lanes[1].open.Store(1)
	s.lanes[2].heavy.Store(1)
	s.lanes[2].open.Store(1)
	s.lanes[3].open.Store(20)
	if got := s.pickLane(); got != s.lanes[3] {
		t.Fatalf("picked a lane with a bulk flow over the one with light flows only")
	}
}

// With no flow lane ready, flows go on lane 0 rather than fail.
func TestNoReadyFlowLaneUsesLaneZero(t *testing.T) {
	lanes := readyLanes(t, 2)
	lanes[1].cc.Close()
	s := &Session{lanes: lanes}
	if got := s.pickLane(); got != lanes[0] {
		t.Fatal("a flow went to a closed lane")
	}
}
