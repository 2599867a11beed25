// Package session is the laptop's end of the tunnel: gRPC connections ("lanes", lanes.go)
// to the traffic manager, each carried by an in-process port-forward to the manager pod's
// loopback, re-made on their own when they break (the manager pod is found again each time). It offers the
// remote.Dialer and remote.Resolver that the local front ends use.
package session

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/portforward"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Config says which cluster and namespaces a session serves.
type Config struct {
	REST             *rest.Config
	Namespace        string // the namespace whose search path short names use
	ManagerNamespace string // where tp install put the manager
	ManagerSelector  string // label selector of the manager's pods
	ManagerPort      int    // the manager's client API port, on its pod's loopback
	Transport        portforward.Transport
	Version          string // the client's, sent to the manager
	DialTimeout      time.Duration
	// FlowLanes is the most connections to the manager that carry flows, besides the one
	// for names, intercepts and state (0: DefaultFlowLanes).
	FlowLanes int
	// Egress, when set, makes the session's connections leave from that workload's pods.
	Egress *Egress
	Log    *slog.Logger
}

// State is what a session is doing.
type State string

const (
	Connecting   State = "connecting"
	Connected    State = "connected"
	Reconnecting State = "reconnecting"
	Closed       State = "closed"
)

// Session is a live tunnel to the cluster.
type Session struct {
	cfg       Config
	cs        kubernetes.Interface
	fw        *portforward.Forwarder
	ctl       *lane // names, intercepts and state
	newCC     func(id int) (*grpc.ClientConn, error)
	laneMu    sync.Mutex // guards flowLanes and nextLane; makes pickLane's choice and count one step
	flowLanes []*lane    // the lanes that carry flows; the first startLanes stay
	nextLane  int        // the next lane's id (its port-forward connection's number)
	icOnce    sync.Once
	ic        *intercepts
	localDial atomic.Pointer[func(ctx context.Context, addr string) (net.Conn, error)]
	ctx       context.Context
	cancel    context.CancelFunc

	info atomic.Pointer[tunnelpb.InfoResponse]
	// via names the workload the session's connections leave from, with the grant that
	// allows it (set once, before the first dial; nil: from the manager's pod).
	via         *tunnelpb.Via
	egressGrant heldGrant

	mu         sync.Mutex
	state      State
	since      time.Time // when state last changed
	lastErr    string    // the latest problem; kept after recovery, for tp status
	lastErrAt  time.Time
	reconnects int
	pod        string
	history    []Transition // the latest state changes, oldest first
	// movingUntil: the manager pod said it is stopping (Moving); until then a channel that
	// reconnects is the planned move to another pod, not a loss.
	movingUntil time.Time
	movingFrom  string // the pod that said it stops: not chosen again during the move
	moves       int
	moveNote    chan struct{} // noteMoving's word to awaitMoveNotice

	open, total, failed atomic.Int64
	bytesIn, bytesOut   atomic.Int64

	// Answers are kept for a few seconds: a program (or its resolver library) asks the same
	// question for every connection, and each asking costs a round trip to the cluster.
	cacheMu sync.Mutex
	answers map[answerKey]answer
}

type answerKey struct {
	name  string
	qtype uint16
}

type answer struct {
	resp    *tunnelpb.ResolveResponse
	expires time.Time
}

// positive says whether the answer names something: addresses, or a DNS answer of NOERROR
// with records. Only those are given stale: a stale "no such name" would send the name
// elsewhere (the DNS server asks upstream) or fail a dial for the wrong reason.
func (a answer) positive() bool {
	if len(a.resp.GetAddrs()) > 0 {
		return true
	}
	w := a.resp.GetResponse()
	return len(w) >= 12 && w[3]&0x0f == 0 && binary.BigEndian.Uint16(w[6:8]) > 0 // RCODE, ANCOUNT
}

const (
	answerTTL      = 5 * time.Second
	answerCacheMax = 4096
	// answerStale is how long past its expiry an answer may still be given while the
	// tunnel is down (serve-stale, RFC 8767): a program that looks up web-app again during
	// a reconnection gets its last address, not SERVFAIL, and its connection waits for the
	// tunnel rather than failing on the name.
	answerStale = 10 * time.Minute
)

// Connect opens a session and returns once the manager answered, or with an error that says
// why it could not (tp not installed, no rights, cluster unreachable, ...).
func Connect(ctx context.Context, cfg Config) (*Session, error) {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cs, err := kubernetes.NewForConfig(cfg.REST)
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	fw, err := portforward.New(cfg.REST, cfg.Transport)
	if err != nil {
		return nil, err
	}
	s := &Session{cfg: cfg, cs: cs, fw: fw, state: Connecting, since: time.Now(), moveNote: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	// The first contact gives a clear error rather than a retry loop.
	first, err := s.findManager(ctx)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.cfg.Log.Debug("manager found", "pod", first)
	if cfg.Egress != nil {
		if err := s.startEgress(ctx, *cfg.Egress); err != nil {
			s.Close()
			return nil, err
		}
	}

	if s.cfg.FlowLanes <= 0 {
		s.cfg.FlowLanes = DefaultFlowLanes
	}
	s.newCC = s.newLane
	if err := s.openLanes(); err != nil {
		s.Close()
		return nil, fmt.Errorf("session: %w", err)
	}
	if err := s.refreshInfo(ctx, true); err != nil {
		s.Close()
		return nil, err
	}
	// The manager answered, so the channel is up; watchState follows it from here.
	s.mu.Lock()
	s.setStateLocked(Connected)
	s.mu.Unlock()
	go s.watchState()
	go s.refreshLoop()
	return s, nil
}

// findManager returns the session's manager pod: the one it has while that is ready, else
// one of the ready ones at random.
func (s *Session) findManager(ctx context.Context) (string, error) {
	ns := s.cfg.ManagerNamespace
	pods, err := s.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: s.cfg.ManagerSelector})
	if err != nil {
		return "", fmt.Errorf("finding tp's traffic manager in namespace %q: %w", ns, err)
	}
	var ready []corev1.Pod
	s.mu.Lock()
	leaving := ""
	if s.movingLocked() {
		leaving = s.movingFrom
	}
	s.mu.Unlock()
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || p.Name == leaving {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = append(ready, p)
			}
		}
	}
	if len(ready) == 0 {
		if len(pods.Items) == 0 {
			deps, err := s.cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: s.cfg.ManagerSelector})
			if err == nil && len(deps.Items) > 0 {
				return "", &remote.Error{Kind: remote.TunnelDown, Msg: fmt.Sprintf("tp's traffic manager in namespace %q has no pod (restarting, or scaled to zero)", ns)}
			}
			return "", &remote.Error{Kind: remote.TunnelDown, Msg: fmt.Sprintf("tp's traffic manager is not installed in namespace %q: run tp install (or pass --manager-namespace)", ns)}
		}
		return "", &remote.Error{Kind: remote.TunnelDown, Msg: fmt.Sprintf("tp's traffic manager in namespace %q is not ready (%d pods, none ready): see tp install's output or kubectl -n %s get pods", ns, len(pods.Items), ns)}
	}
	// Sessions spread over the manager's replicas, and each stays with its pod while that
	// is ready: its lanes, intercept stream and announced connections must meet on one pod.
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range ready {
		if p.Name == s.pod {
			return p.Name, nil
		}
	}
	s.pod = ready[rand.IntN(len(ready))].Name
	return s.pod, nil
}

// dialManager is gRPC's dialer: a port-forward stream to the manager's client port on
// whichever manager pod is ready now.
func (s *Session) dialManager(ctx context.Context, lane int) (net.Conn, error) {
	pod, err := s.findManager(ctx)
	if err == nil {
		var conn net.Conn
		conn, err = s.fw.DialPodOn(ctx, lane, s.cfg.ManagerNamespace, pod, uint16(s.cfg.ManagerPort))
		if err == nil {
			return conn, nil
		}
	}
	s.mu.Lock()
	s.noteErrorLocked(err.Error())
	s.mu.Unlock()
	s.cfg.Log.Warn("cannot reach the traffic manager", "err", err)
	return nil, err
}

func (s *Session) refreshInfo(ctx context.Context, first bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	info, err := s.ctl.client.Info(ctx, &tunnelpb.InfoRequest{ClientVersion: s.cfg.Version}, grpc.WaitForReady(first))
	if err != nil {
		s.mu.Lock()
		last := s.lastErr
		s.mu.Unlock()
		if last != "" {
			return &remote.Error{Kind: remote.TunnelDown, Msg: "cannot reach tp's traffic manager: " + last}
		}
		return &remote.Error{Kind: remote.TunnelDown, Msg: "tp's traffic manager does not answer"}
	}
	s.info.Store(info)
	return nil
}

// refreshLoop asks the manager for the cluster's ranges now and then, and closes the lanes
// that flows no longer need.
func (s *Session) refreshLoop() {
	info, lanes := time.NewTicker(30*time.Second), time.NewTicker(laneIdle/4)
	defer info.Stop()
	defer lanes.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-info.C:
			_ = s.refreshInfo(s.ctx, false)
		case now := <-lanes.C:
			s.shrinkLanes(now)
		}
	}
}

// watchState follows the gRPC connection's state: a drop shows as reconnecting until gRPC
// has a new connection (to a new pod, if the old one went).
func (s *Session) watchState() {
	st := s.ctl.cc.GetState()
	for {
		if st != connectivity.Ready && st != connectivity.Shutdown {
			st = s.awaitMoveNotice(st)
		}
		s.mu.Lock()
		switch st {
		case connectivity.Ready:
			if !s.movingUntil.IsZero() && s.state == Connected {
				s.cfg.Log.Info("moved to another manager pod", "pod", s.pod)
			}
			s.movingUntil = time.Time{}
			if s.state != Connected {
				s.cfg.Log.Info("tunnel up again", "pod", s.pod, "after", time.Since(s.since).Round(time.Millisecond))
			}
			s.setStateLocked(Connected)
		case connectivity.Shutdown:
			s.setStateLocked(Closed)
		default:
			// During a planned move, new flows wait for the new pod rather than fail.
			if s.state == Connected && !s.movingLocked() {
				s.lostLocked()
			}
		}
		s.mu.Unlock()
		// gRPC leaves a broken channel idle until the next RPC; a session reconnects at once,
		// so that it is up again before the next flow asks (and says so in tp status).
		if st == connectivity.Idle {
			s.ctl.cc.Connect()
		}
		if st == connectivity.Shutdown || !s.waitChange(st) {
			return
		}
		prev := st
		st = s.ctl.cc.GetState()
		if prev != connectivity.Ready && st == connectivity.Ready {
			go func() { _ = s.refreshInfo(s.ctx, false) }()
		}
	}
}

// waitChange waits for the control lane's state to leave st; during a move, only until the
// move's time is up, so that a move that does not end reads as a loss. It is false once
// the session ends.
func (s *Session) waitChange(st connectivity.State) bool {
	s.mu.Lock()
	until := s.movingUntil
	if !until.IsZero() && !time.Now().Before(until) {
		s.movingUntil, until = time.Time{}, time.Time{} // the move's time is up: a loss now
	}
	s.mu.Unlock()
	if until.IsZero() {
		return s.ctl.cc.WaitForStateChange(s.ctx, st)
	}
	ctx, cancel := context.WithDeadline(s.ctx, until)
	defer cancel()
	s.ctl.cc.WaitForStateChange(ctx, st)
	return s.ctx.Err() == nil
}

// moveNotice is how long a channel that left Ready waits for the manager's Moving before
// it counts as lost: the word and the channel's going away race each other here.
const moveNotice = 300 * time.Millisecond

// awaitMoveNotice gives a connected session's channel that just left Ready moveNotice to
// tell a planned move (Moving) from a loss, or to be back; it returns the channel's state
// then. A session reconnecting or moving already does not wait.
//
// A loss is a loss even when the channel is back by then (a cut port-forward comes back in
// a tenth of a second): it is counted and shown in the history, reconnecting then connected.
func (s *Session) awaitMoveNotice(st connectivity.State) connectivity.State {
	s.mu.Lock()
	wait := s.state == Connected && !s.movingLocked()
	s.mu.Unlock()
	if !wait {
		return st
	}
	if st == connectivity.Idle {
		s.ctl.cc.Connect()
	}
	t := time.NewTimer(moveNotice)
	defer t.Stop()
	for moving := false; !moving; {
		select {
		case <-s.moveNote:
			// A word left from an earlier move that came before its channel broke says
			// nothing about this break.
			s.mu.Lock()
			moving = s.movingLocked()
			s.mu.Unlock()
			continue
		case <-t.C:
		case <-s.ctx.Done():
		}
		break
	}
	s.mu.Lock()
	if !s.movingLocked() && s.state == Connected {
		s.lostLocked()
	}
	s.mu.Unlock()
	return s.ctl.cc.GetState()
}

func (s *Session) movingLocked() bool { return time.Now().Before(s.movingUntil) }

// lostLocked records the loss of the control channel.
func (s *Session) lostLocked() {
	s.reconnects++
	// Until a dial says more, the loss itself is the problem to report.
	s.noteErrorLocked("lost the connection to manager pod " + s.pod)
	s.setStateLocked(Reconnecting)
	s.cfg.Log.Warn("tunnel lost; reconnecting", "pod", s.pod)
}

// moveWait bounds a move to another manager pod: past it, a channel that is not back is a
// lost one (tp status says reconnecting, and new flows fail saying why).
const moveWait = 15 * time.Second

// noteMoving takes the manager pod's word that it is stopping: the channel's coming
// reconnection is the move to another pod.
func (s *Session) noteMoving(pod string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.movingLocked() {
		return
	}
	s.movingUntil, s.movingFrom = time.Now().Add(moveWait), pod
	s.moves++
	select {
	case s.moveNote <- struct{}{}:
	default:
	}
	s.cfg.Log.Info("manager pod is stopping; moving to another", "pod", pod)
}

// DialContext opens a flow to address (host:port; host may be a cluster name) through the
// tunnel. network is tcp or udp.
func (s *Session) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		network = "tcp"
	case "udp", "udp4", "udp6":
		network = "udp"
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.DialTimeout)
		defer cancel()
	}
	s.total.Add(1)
	if st := s.State(); st != Connected {
		s.failed.Add(1)
		return nil, s.downError()
	}
	// The stream outlives this dial; its own context ends it when the conn is closed.
	sctx, end := context.WithCancel(s.ctx)
	ln := s.pickLane(ctx)
	stream, err := ln.client.Tunnel(sctx)
	if err != nil {
		end()
		ln.release()
		s.failed.Add(1)
		if status.Code(err) == codes.Unavailable {
			return nil, s.downError()
		}
		return nil, fmt.Errorf("tunnel to %s: %w", address, err)
	}
	d := &tunnelpb.Dial{Network: network, Address: address, Namespace: s.cfg.Namespace, Via: s.via}
	if remote.EarlyData(ctx) {
		c, err := tunnel.OpenEarly(stream, end, d)
		if err != nil {
			ln.release()
			s.failed.Add(1)
			return nil, err
		}
		return s.count(c, ln), nil
	}
	// Dial results arrive on the stream; a dial context that ends first must end it.
	stop := context.AfterFunc(ctx, end)
	c, err := tunnel.Open(ctx, stream, end, d)
	if !stop() && err == nil {
		c.Close()
		err = &remote.Error{Kind: remote.Timeout, Msg: fmt.Sprintf("dial %s through the tunnel: %v", address, ctx.Err())}
	}
	if err != nil {
		ln.release()
		s.failed.Add(1)
		if remote.KindOf(err) == remote.TunnelDown {
			return nil, s.downError()
		}
		return nil, err
	}
	return s.count(c, ln), nil
}

// count wraps a flow's conn; pickLane has counted it on its lane already.
func (s *Session) count(c net.Conn, l *lane) net.Conn {
	s.open.Add(1)
	f := &counted{s: s, lane: l}
	f.Counted = remote.Counted{Conn: c,
		OnRead:  func(p []byte, _ error) { s.bytesIn.Add(int64(len(p))); f.add(len(p)) },
		OnWrite: func(p []byte, _ error) { s.bytesOut.Add(int64(len(p))); f.add(len(p)) },
	}
	return f
}

// historyMax bounds Status.History: enough to show a flapping tunnel.
const historyMax = 16

// Transition is one change of a session's state, with the problem that caused it, if any.
type Transition struct {
	State State     `json:"state"`
	At    time.Time `json:"at"`
	Error string    `json:"error,omitempty"`
}

func (s *Session) setStateLocked(st State) {
	if s.state == st {
		return
	}
	s.state, s.since = st, time.Now()
	tr := Transition{State: st, At: s.since}
	if st != Connected && st != Closed {
		tr.Error = s.lastErr
	}
	if len(s.history) == historyMax {
		s.history = slices.Delete(s.history, 0, 1)
	}
	s.history = append(s.history, tr)
}

func (s *Session) noteErrorLocked(msg string) {
	s.lastErr, s.lastErrAt = msg, time.Now()
}

func (s *Session) downError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := "the tunnel to the cluster is down (" + string(s.state) + ")"
	if s.lastErr != "" {
		msg += ": " + s.lastErr
	}
	return &remote.Error{Kind: remote.TunnelDown, Msg: msg}
}

// LookupHost resolves a cluster name with the session namespace's search path.
func (s *Session) LookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	resp, err := s.resolve(ctx, host, 0)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	for _, a := range resp.GetAddrs() {
		if ip, err := netip.ParseAddr(a); err == nil {
			addrs = append(addrs, ip)
		}
	}
	if len(addrs) == 0 {
		return nil, remote.NoSuchHostError(host, s.cfg.Namespace)
	}
	return addrs, nil
}

// Query asks the cluster's DNS about a cluster name; see remote.Resolver.
func (s *Session) Query(ctx context.Context, name string, qtype uint16) ([]byte, error) {
	resp, err := s.resolve(ctx, name, qtype)
	if err != nil {
		return nil, err
	}
	return resp.GetResponse(), nil
}

func (s *Session) resolve(ctx context.Context, name string, qtype uint16) (*tunnelpb.ResolveResponse, error) {
	key := answerKey{strings.ToLower(name), qtype}
	now := time.Now()
	s.cacheMu.Lock()
	a, ok := s.answers[key]
	s.cacheMu.Unlock()
	if st := s.State(); st != Connected {
		if st == Reconnecting && ok && a.positive() && now.Before(a.expires.Add(answerStale)) {
			s.logger().Debug("the tunnel is down: a stale answer", "name", name, "qtype", qtype, "expired", now.Sub(a.expires).Round(time.Second))
			return a.resp, nil
		}
		return nil, s.downError()
	}
	if ok && now.Before(a.expires) {
		return a.resp, nil
	}
	resp, err := s.resolveRemote(ctx, name, qtype)
	if remote.KindOf(err) == remote.TunnelDown && ok && a.positive() && now.Before(a.expires.Add(answerStale)) {
		return a.resp, nil // the tunnel went down while asking
	}
	if err == nil {
		s.cacheMu.Lock()
		if s.answers == nil || len(s.answers) >= answerCacheMax {
			s.answers = map[answerKey]answer{}
		}
		s.answers[key] = answer{resp: resp, expires: now.Add(answerTTL)}
		s.cacheMu.Unlock()
	}
	return resp, err
}

func (s *Session) resolveRemote(ctx context.Context, name string, qtype uint16) (*tunnelpb.ResolveResponse, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	resp, err := s.ctl.client.Resolve(ctx, &tunnelpb.ResolveRequest{Name: name, Namespace: s.cfg.Namespace, Qtype: uint32(qtype)})
	if err != nil {
		switch status.Code(err) {
		case codes.Unavailable:
			if s.State() != Connected {
				return nil, s.downError()
			}
			return nil, &remote.Error{Kind: remote.Failed, Msg: status.Convert(err).Message()}
		case codes.DeadlineExceeded:
			return nil, &remote.Error{Kind: remote.Timeout, Msg: "resolving " + name + " timed out"}
		}
		return nil, fmt.Errorf("resolve %s: %w", name, err)
	}
	return resp, nil
}

// Routes returns the cluster's service and pod CIDRs.
func (s *Session) Routes() []netip.Prefix {
	info := s.info.Load()
	var out []netip.Prefix
	for _, c := range append(append([]string{}, info.GetServiceCidrs()...), info.GetPodCidrs()...) {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// State says whether the tunnel is up.
func (s *Session) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Status is a session's state and counters.
type Status struct {
	State          State     `json:"state"`
	ManagerVersion string    `json:"managerVersion"`
	ManagerPod     string    `json:"managerPod"`
	ClusterDomain  string    `json:"clusterDomain"`
	ServiceCIDRs   []string  `json:"serviceCIDRs"`
	PodCIDRs       []string  `json:"podCIDRs"`
	AllowedCIDRs   []string  `json:"allowedCIDRs,omitempty"` // what the admin let the manager dial beyond the cluster's ranges
	Since          time.Time `json:"since"`                  // when State began
	Reconnects     int       `json:"reconnects"`
	// Moves counts the planned moves to another manager pod (a pod that stopped and said
	// so): no loss, no reconnection.
	Moves       int          `json:"moves,omitempty"`
	LastError   string       `json:"lastError,omitempty"` // the latest problem, also after recovery
	LastErrorAt time.Time    `json:"lastErrorAt,omitzero"`
	History     []Transition `json:"history,omitempty"` // the latest state changes, oldest first
	Lanes       []LaneStatus `json:"lanes,omitempty"`   // lane 0 first: names, intercepts, state
	OpenFlows   int64        `json:"openFlows"`
	TotalFlows  int64        `json:"totalFlows"`
	FailedFlows int64        `json:"failedFlows"`
	BytesIn     int64        `json:"bytesIn"`  // from the cluster
	BytesOut    int64        `json:"bytesOut"` // to the cluster
	// Intercepts are those this session holds, each with the problem the manager last
	// reported for it.
	Intercepts []InterceptSpec `json:"intercepts,omitempty"`
}

// BeyondPolicy lists the prefixes of want (tp connect --also-proxy) that the manager's dial
// policy does not cover in full: not inside one of the cluster's service and pod ranges or
// a range the admin allowed (tp install --allow-cidr). The manager refuses dials there.
func (st Status) BeyondPolicy(want []netip.Prefix) []netip.Prefix {
	var covered []netip.Prefix
	for _, c := range slices.Concat(st.ServiceCIDRs, st.PodCIDRs, st.AllowedCIDRs) {
		if p, err := netip.ParsePrefix(c); err == nil {
			covered = append(covered, p.Masked())
		}
	}
	var out []netip.Prefix
	for _, w := range want {
		w = w.Masked()
		if !slices.ContainsFunc(covered, func(c netip.Prefix) bool { return c.Bits() <= w.Bits() && c.Contains(w.Addr()) }) {
			out = append(out, w)
		}
	}
	return out
}

// Status reports the session's state and counters.
func (s *Session) Status() Status {
	info := s.info.Load()
	held := s.Intercepts() // before s.mu: the intercepts' lock is never taken inside it
	if len(held) == 0 {
		held = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{
		State: s.state, Since: s.since, ManagerVersion: info.GetVersion(), ManagerPod: s.pod, ClusterDomain: info.GetClusterDomain(),
		ServiceCIDRs: info.GetServiceCidrs(), PodCIDRs: info.GetPodCidrs(), AllowedCIDRs: info.GetAllowedCidrs(),
		Reconnects: s.reconnects, Moves: s.moves, LastError: s.lastErr, LastErrorAt: s.lastErrAt,
		History: slices.Clone(s.history), Lanes: s.laneStatus(),
		OpenFlows: s.open.Load(), TotalFlows: s.total.Load(), FailedFlows: s.failed.Load(),
		BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(), Intercepts: held,
	}
}

// Close ends every flow and the connection to the manager.
func (s *Session) Close() error {
	// Grants go first, while the API is reachable and before the context ends.
	s.dropGrants()
	s.stopEgress()
	s.cancel()
	var err error
	if s.ctl != nil {
		err = s.ctl.cc.Close()
	}
	s.laneMu.Lock()
	flows := s.flowLanes
	s.flowLanes = nil
	s.laneMu.Unlock()
	for _, l := range flows {
		_ = l.cc.Close()
	}
	_ = s.fw.Close()
	s.mu.Lock()
	s.setStateLocked(Closed)
	s.mu.Unlock()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("session close: %w", err)
	}
	return nil
}

// counted counts a flow's bytes and keeps the open-flow count.
type counted struct {
	remote.Counted
	s     *Session
	lane  *lane
	moved atomic.Int64
	state atomic.Int32 // flowLight, flowBulk or flowClosed: keeps the lane's bulk count exact
	once  sync.Once
}

const (
	flowLight int32 = iota
	flowBulk
	flowClosed
)

// add marks the flow bulk on its lane once it has moved heavyFlow bytes.
func (c *counted) add(n int) {
	if c.moved.Add(int64(n)) >= heavyFlow && c.state.Load() == flowLight && c.state.CompareAndSwap(flowLight, flowBulk) {
		c.lane.heavy.Add(1)
	}
}

func (c *counted) Close() error {
	c.once.Do(func() {
		c.s.open.Add(-1)
		c.lane.release()
		if c.state.Swap(flowClosed) == flowBulk {
			c.lane.heavy.Add(-1)
		}
	})
	return c.Conn.Close()
}
