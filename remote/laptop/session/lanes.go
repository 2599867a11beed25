package session

import (
	"cmp"
	"context"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Flows travel on "lanes": gRPC connections to the manager, each over its own port-forward
// connection. Flows on one lane share its buffers in the API server, the kubelet and TCP,
// where a bulk flow's bytes queue ahead of everyone else's: an interactive flow beside a
// download on one lane was measured at 190-280x its idle round trip, on a lane of its own at
// 1.1-1.5x. So a new flow takes a lane of its own while there is one, and the session keeps
// one lane spare for the next flow, up to Config.FlowLanes (see pickLane); lanes that flows
// no longer need are closed again. Names, intercepts and state have a lane of their own
// (Session.ctl).
const (
	// DefaultFlowLanes is the default Config.FlowLanes: enough for a few downloads at once
	// beside interactive flows, and few connections for the API server to keep.
	DefaultFlowLanes = 8
	// startLanes flow lanes are opened with the session and kept for its life: one, the
	// spare the next flow takes (pickLane opens the next spare as it does). An idle session
	// so holds two connections to the manager, not four: each costs the manager, the API
	// server and the kubelet memory for as long as a developer stays connected (the scale
	// bench: about 65 KB of the manager's each).
	startLanes = 1
	// laneIdle is how long a lane beyond those has to be without flows to be closed.
	laneIdle = 30 * time.Second
	// heavyFlow is how many bytes make a flow bulk for choosing lanes.
	heavyFlow = 1 << 20
)

// lane is one gRPC connection to the manager, over its own port-forward connection.
type lane struct {
	id         int // the port-forward connection's number
	cc         *grpc.ClientConn
	client     tunnelpb.ManagerClient
	intercepts tunnelpb.InterceptsClient
	open       atomic.Int64 // flows on it now
	heavy      atomic.Int64 // of which bulk
	idleSince  atomic.Int64 // unix nanoseconds when its last flow ended
	made       int64        // unix nanoseconds when it was opened
	picked     atomic.Int64 // unix nanoseconds when a flow last took it
}

// release gives back a flow that pickLane counted on l.
func (l *lane) release() {
	if l.open.Add(-1) == 0 {
		l.idleSince.Store(time.Now().UnixNano())
	}
}

// openLanes opens the control lane and the first flow lanes.
func (s *Session) openLanes() error {
	s.laneMu.Lock()
	defer s.laneMu.Unlock()
	var err error
	if s.ctl, err = s.addLaneLocked(); err != nil {
		return err
	}
	for range min(startLanes, s.cfg.FlowLanes) {
		l, err := s.addLaneLocked()
		if err != nil {
			return err
		}
		s.flowLanes = append(s.flowLanes, l)
		go s.keepUp(l.cc)
	}
	return nil
}

// addLaneLocked makes the next lane and starts connecting it; it is not ready at once.
func (s *Session) addLaneLocked() (*lane, error) {
	id := s.nextLane
	cc, err := s.newCC(id)
	if err != nil {
		return nil, err
	}
	s.nextLane++
	l := &lane{id: id, cc: cc, client: tunnelpb.NewManagerClient(cc), intercepts: tunnelpb.NewInterceptsClient(cc), made: time.Now().UnixNano()}
	l.idleSince.Store(l.made)
	cc.Connect()
	return l, nil
}

// newLane makes lane i's gRPC connection, over port-forward connection i to the manager.
func (s *Session) newLane(i int) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///tp-manager", append(tunnel.DialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()), // port-forward is the authenticated, encrypted channel
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return s.dialManager(ctx, i) }),
	)...)
}

// keepUp reconnects a flow lane as soon as it breaks, as watchState does for the control
// lane, until the lane is closed.
func (s *Session) keepUp(cc *grpc.ClientConn) {
	for st := cc.GetState(); st != connectivity.Shutdown; st = cc.GetState() {
		if st == connectivity.Idle {
			cc.Connect()
		}
		if !cc.WaitForStateChange(s.ctx, st) {
			return
		}
	}
}

// pickLane chooses a new flow's lane and counts the flow on it: a ready flow lane with no
// flows while there is one, else the one with the fewest bulk flows, then the fewest flows,
// then the newest flows (flows started together share with each other before they share
// with an older flow, which is more likely interactive); the control lane when no flow lane
// is ready. The flow is counted from the choice, not from its dial's answer, so that flows
// dialled together spread over the lanes.
//
// The session keeps a lane spare: when a flow takes the last empty one, another is opened,
// up to Config.FlowLanes, but not while a lane is down (after a fault, the lanes there come
// back first). A flow that finds no empty lane opens one for itself and waits for it, up to
// laneWait, rather than share: downloads often start together. A dial that fails gives the
// lane back with release.
func (s *Session) pickLane(ctx context.Context) *lane {
	ctx, cancel := context.WithTimeout(ctx, laneWait)
	defer cancel()
	var mine *lane // the lane this flow opened and waits for
	for {
		s.laneMu.Lock()
		c := s.survey()
		canGrow := !c.down && len(s.flowLanes) < s.cfg.FlowLanes && s.ctx.Err() == nil
		if c.empty == 0 && ctx.Err() == nil && s.ctx.Err() == nil {
			if mine != nil && mine.cc.GetState() == connectivity.Ready {
				mine = nil // another flow took it: open another
			}
			if mine == nil && canGrow {
				mine = s.growLocked()
			}
			if wait := cmp.Or(mine, c.opening); wait != nil {
				s.laneMu.Unlock()
				waitReady(ctx, wait.cc)
				continue
			}
		}
		best := c.best
		if best != s.ctl && best.open.Load() == 0 {
			c.empty--
		}
		best.open.Add(1)
		best.picked.Store(time.Now().UnixNano())
		if c.empty == 0 && c.opening == nil && mine == nil && canGrow {
			s.growLocked() // the spare, for the next flow
		}
		s.laneMu.Unlock()
		return best
	}
}

// laneSurvey is what pickLane sees of the flow lanes.
type laneSurvey struct {
	best    *lane // the ready lane a new flow would take (the control lane if none)
	empty   int   // ready lanes with no flows
	opening *lane // a lane still connecting, opened under laneConnect ago
	down    bool  // a lane is neither ready nor newly opening
}

func (s *Session) survey() laneSurvey {
	c := laneSurvey{best: s.ctl}
	var bestScore, bestPicked int64 = math.MaxInt64, 0
	for _, l := range s.flowLanes {
		switch l.cc.GetState() {
		case connectivity.Ready:
		case connectivity.Idle, connectivity.Connecting:
			if time.Since(time.Unix(0, l.made)) < laneConnect {
				c.opening = l
			} else {
				c.down = true
			}
			continue
		default:
			c.down = true
			continue
		}
		open := l.open.Load()
		if open == 0 {
			c.empty++
		}
		score, picked := l.heavy.Load()<<32+open, l.picked.Load()
		if score < bestScore || score == bestScore && picked > bestPicked {
			c.best, bestScore, bestPicked = l, score, picked
		}
	}
	return c
}

// laneWait bounds how long a new flow waits for a lane of its own, and laneConnect how long
// a new lane may take to connect before it counts as down.
const (
	laneWait    = 500 * time.Millisecond
	laneConnect = 10 * time.Second
)

// growLocked opens one more flow lane; nil if it cannot.
func (s *Session) growLocked() *lane {
	l, err := s.addLaneLocked()
	if err != nil {
		s.cfg.Log.Warn("cannot open another lane to the manager", "err", err)
		return nil
	}
	s.flowLanes = append(s.flowLanes, l)
	go s.keepUp(l.cc)
	return l
}

// waitReady waits until cc is ready or ctx ends.
func waitReady(ctx context.Context, cc *grpc.ClientConn) {
	for st := cc.GetState(); st != connectivity.Ready && st != connectivity.Shutdown; st = cc.GetState() {
		if !cc.WaitForStateChange(ctx, st) {
			return
		}
	}
}

// shrinkLanes closes the lanes beyond the first startLanes (and a spare) that have had no
// flow for laneIdle, and their port-forward connections.
func (s *Session) shrinkLanes(now time.Time) {
	s.laneMu.Lock()
	// A session that had a flow within laneIdle keeps two empty lanes, if it has them: the
	// one its next flow takes, and the spare pickLane would otherwise open beside it. Flows
	// one after another take the same lane, and a spare closed between them would open
	// again with the next: a port-forward connection each time, for every active developer.
	active := false
	for _, l := range s.flowLanes {
		if now.Sub(time.Unix(0, l.picked.Load())) < laneIdle {
			active = true
			break
		}
	}
	var idle []*lane
	keep := s.flowLanes[:0:0]
	keptEmpty := 0
	for i, l := range s.flowLanes {
		ready := l.cc.GetState() == connectivity.Ready
		closable := i >= startLanes && l.open.Load() == 0 && now.Sub(time.Unix(0, l.idleSince.Load())) >= laneIdle
		if closable && (!active || keptEmpty >= 2 || !ready) {
			idle = append(idle, l)
			continue
		}
		if l.open.Load() == 0 && ready {
			keptEmpty++
		}
		keep = append(keep, l)
	}
	s.flowLanes = keep
	s.laneMu.Unlock()
	for _, l := range idle {
		_ = l.cc.Close()
		s.fw.CloseLane(l.id)
	}
}

// LaneStatus is one connection to the manager: its gRPC state and the flows on it.
type LaneStatus struct {
	State string `json:"state"`
	Flows int64  `json:"flows"`
	Bulk  int64  `json:"bulk"`
}

// laneStatus lists the control lane, then the flow lanes.
func (s *Session) laneStatus() []LaneStatus {
	s.laneMu.Lock()
	lanes := append([]*lane{s.ctl}, s.flowLanes...)
	s.laneMu.Unlock()
	out := make([]LaneStatus, 0, len(lanes))
	for _, l := range lanes {
		if l != nil {
			out = append(out, LaneStatus{State: strings.ToLower(l.cc.GetState().String()), Flows: l.open.Load(), Bulk: l.heavy.Load()})
		}
	}
	return out
}
