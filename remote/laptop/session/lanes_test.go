package session

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/remote/laptop/portforward"
)

// laneSession is a session whose lanes are gRPC connections to an in-memory server: the
// control lane and the first flow lanes, at most most flow lanes.
func laneSession(t *testing.T, most int) *Session {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	// Loopback port 1: nothing dials it unless a lane's port-forward is closed, which
	// makes no connection.
	fw, err := portforward.New(&rest.Config{Host: "http://127.0.0.1:1"}, portforward.Auto)
	if err != nil {
		t.Fatal(err)
	}
	s := &Session{cfg: Config{FlowLanes: most, Log: slog.New(slog.DiscardHandler)}, fw: fw}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.newCC = func(int) (*grpc.ClientConn, error) {
		return grpc.NewClient("passthrough:///lane", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }))
	}
	if err := s.openLanes(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.lanesReady(t)
	return s
}

// withLanes opens flow lanes until there are n, and waits until all are ready.
func (s *Session) withLanes(t *testing.T, n int) *Session {
	t.Helper()
	s.laneMu.Lock()
	for len(s.flowLanes) < n {
		s.growLocked()
	}
	s.laneMu.Unlock()
	s.lanesReady(t)
	return s
}

// lanesReady waits until every lane is ready.
func (s *Session) lanesReady(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.laneMu.Lock()
	lanes := append([]*lane{s.ctl}, s.flowLanes...)
	s.laneMu.Unlock()
	for _, l := range lanes {
		for st := l.cc.GetState(); st != connectivity.Ready; st = l.cc.GetState() {
			if !l.cc.WaitForStateChange(ctx, st) {
				t.Fatalf("lane %d not ready: %s", l.id, st)
			}
		}
	}
}

func (s *Session) flowCounts() []int64 {
	s.laneMu.Lock()
	defer s.laneMu.Unlock()
	var n []int64
	for _, l := range s.flowLanes {
		n = append(n, l.open.Load())
	}
	return n
}

// Flows dialled at the same moment spread over the flow lanes: each is counted on its lane
// when the lane is chosen.
func TestConcurrentFlowsSpreadOverLanes(t *testing.T) {
	const lanes = 3
	s := laneSession(t, lanes).withLanes(t, lanes)
	var wg sync.WaitGroup
	for range lanes * 8 {
		wg.Go(func() { s.pickLane(context.Background()) })
	}
	wg.Wait()
	if n := s.ctl.open.Load(); n != 0 {
		t.Errorf("the control lane got %d flows while flow lanes were ready", n)
	}
	for i, n := range s.flowCounts() {
		if n != 8 {
			t.Errorf("flow lane %d has %d of %d flows, want 8", i, n, lanes*8)
		}
	}
}

// A new flow avoids lanes with bulk flows, however many light ones the others carry.
func TestNewFlowAvoidsBulkLanes(t *testing.T) {
	s := laneSession(t, 3).withLanes(t, 3)
	for _, l := range s.flowLanes[:2] {
		l.heavy.Store(1)
		l.open.Store(1)
	}
	s.flowLanes[2].open.Store(20)
	if got := s.pickLane(context.Background()); got != s.flowLanes[2] {
		t.Fatal("picked a lane with a bulk flow over the one with light flows only")
	}
}

// With no flow lane ready, flows go on the control lane rather than fail.
func TestNoReadyFlowLaneUsesTheControlLane(t *testing.T) {
	s := laneSession(t, startLanes)
	for _, l := range s.flowLanes {
		l.cc.Close()
	}
	if got := s.pickLane(context.Background()); got != s.ctl {
		t.Fatal("a flow went to a closed lane")
	}
}

// The session keeps a lane spare for the next flow, up to Config.FlowLanes, so that a
// flow beside downloads does not share their lane; lanes no flow needs any more close.
func TestLanesGrowWithFlowsAndShrinkWhenIdle(t *testing.T) {
	const most = startLanes + 2
	s := laneSession(t, most)
	var picked []*lane
	for i := range most + 3 {
		picked = append(picked, s.pickLane(context.Background()))
		s.lanesReady(t)
		if want := min(most, max(startLanes, i+2)); len(s.flowCounts()) != want {
			t.Fatalf("after %d flows: %d flow lanes, want %d (one spare, at most %d)", i+1, len(s.flowCounts()), want, most)
		}
	}
	seen := map[*lane]bool{}
	for _, l := range picked[:most] {
		seen[l] = true
	}
	if len(seen) != most {
		t.Fatalf("the first %d flows share lanes: %v", most, s.flowCounts())
	}
	for _, l := range picked {
		l.release()
	}
	s.shrinkLanes(time.Now())
	if n := len(s.flowCounts()); n != most {
		t.Fatalf("lanes closed at once when their flows ended: %d left", n)
	}
	s.shrinkLanes(time.Now().Add(laneIdle))
	if n := len(s.flowCounts()); n != startLanes {
		t.Fatalf("%d flow lanes after laneIdle without flows, want the first %d", n, startLanes)
	}
	for _, l := range picked[startLanes:most] {
		if st := l.cc.GetState(); st != connectivity.Shutdown {
			t.Fatalf("a dropped lane is still %s", st)
		}
	}
}

// Flows one after another take the same lane: the spare beside it stays while they come,
// rather than close between them and open again with the next; it goes once they stop.
func TestActiveSessionKeepsItsSpare(t *testing.T) {
	s := laneSession(t, 4)
	start := time.Now()
	first := s.pickLane(context.Background())
	s.lanesReady(t)
	first.release()
	for i := range 3 {
		if got := s.pickLane(context.Background()); got != first {
			t.Fatalf("flow %d after the first took another lane", i+2)
		}
		first.release()
	}
	if n := len(s.flowCounts()); n != startLanes+1 {
		t.Fatalf("%d flow lanes, want %d and the spare", n, startLanes+1)
	}
	// A flow a moment ago: the spare, idle for laneIdle, stays.
	first.picked.Store(start.Add(laneIdle).UnixNano())
	s.shrinkLanes(start.Add(laneIdle + time.Second))
	if n := len(s.flowCounts()); n != startLanes+1 {
		t.Fatalf("the spare of an active session closed: %d flow lanes", n)
	}
	// A long flow on the first lane: the flows after it take the next, and the spare
	// beside that stays too.
	first.open.Add(1)
	second := s.pickLane(context.Background())
	s.lanesReady(t)
	second.release()
	if n := len(s.flowCounts()); n != startLanes+2 {
		t.Fatalf("%d flow lanes beside a long flow, want %d", n, startLanes+2)
	}
	later := start.Add(2 * laneIdle)
	second.picked.Store(later.Add(-time.Second).UnixNano())
	s.shrinkLanes(later)
	if n := len(s.flowCounts()); n != startLanes+2 {
		t.Fatalf("the spare beside a long flow closed: %d flow lanes", n)
	}
	first.release()
	// No flow for laneIdle: only the first startLanes stay.
	s.shrinkLanes(later.Add(laneIdle))
	if n := len(s.flowCounts()); n != startLanes {
		t.Fatalf("%d flow lanes after laneIdle without flows, want %d", n, startLanes)
	}
}

// While a lane is down (after a fault) no new one is opened: the ones there come back.
func TestNoNewLaneWhileOneIsDown(t *testing.T) {
	s := laneSession(t, startLanes+3)
	s.flowLanes[0].cc.Close()
	for range startLanes + 1 {
		s.pickLane(context.Background())
	}
	if n := len(s.flowCounts()); n != startLanes {
		t.Fatalf("%d flow lanes while one was down, want %d", n, startLanes)
	}
}

// Flows started together each get a lane of their own while lanes open in time.
func TestABurstOfFlowsWaitsForNewLanes(t *testing.T) {
	const most = startLanes + 3
	s := laneSession(t, most)
	var wg sync.WaitGroup
	for range most {
		wg.Go(func() { s.pickLane(context.Background()) })
	}
	wg.Wait()
	counts := s.flowCounts()
	if len(counts) != most {
		t.Fatalf("%d flow lanes after a burst of %d flows, want %d", len(counts), most, most)
	}
	for i, n := range counts {
		if n != 1 {
			t.Fatalf("flow lane %d has %d flows (all: %v): flows started together share lanes", i, n, counts)
		}
	}
}
