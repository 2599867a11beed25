// Package session is the laptop's end of the tunnel: one gRPC connection to the traffic
// manager, carried by an in-process port-forward to the manager pod's loopback, re-made on
// its own when it breaks (the manager pod is found again each time). It offers the
// remote.Dialer and remote.Resolver that the local front ends use.
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/portforward"
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
	Log              *slog.Logger
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
	cc        *grpc.ClientConn
	client    tunnelpb.ManagerClient
	icClient  tunnelpb.InterceptsClient
	icOnce    sync.Once
	ic        *intercepts
	localDial atomic.Pointer[func(ctx context.Context, addr string) (net.Conn, error)]
	ctx       context.Context
	cancel    context.CancelFunc

	info atomic.Pointer[tunnelpb.InfoResponse]

	mu         sync.Mutex
	state      State
	lastErr    string
	reconnects int
	pod        string

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

const (
	answerTTL      = 5 * time.Second
	answerCacheMax = 4096
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
	s := &Session{cfg: cfg, cs: cs, fw: fw, state: Connecting}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	// The first contact gives a clear error rather than a retry loop.
	first, err := s.findManager(ctx)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.cfg.Log.Debug("manager found", "pod", first)

	cc, err := grpc.NewClient("passthrough:///tp-manager", append(flowControl(),
		experimental.WithBufferPool(tunnel.BufferPool()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(tunnel.Codec())),
		grpc.WithTransportCredentials(insecure.NewCredentials()), // port-forward is the authenticated, encrypted channel
		grpc.WithContextDialer(s.dialManager),
		// Pings notice a port-forward that went silent (laptop sleep, dead kubelet stream).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 10 * time.Second,
		}),
		grpc.WithIdleTimeout(0), // stay connected: an idle tunnel must still notice it broke
	)...)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("session: %w", err)
	}
	s.cc = cc
	s.client = tunnelpb.NewManagerClient(cc)
	s.icClient = tunnelpb.NewInterceptsClient(cc)
	cc.Connect()
	if err := s.refreshInfo(ctx, true); err != nil {
		s.Close()
		return nil, err
	}
	// The manager answered, so the channel is up; watchState follows it from here.
	s.mu.Lock()
	s.state = Connected
	s.mu.Unlock()
	go s.watchState()
	go s.refreshLoop()
	return s, nil
}

// findManager returns the newest ready manager pod.
func (s *Session) findManager(ctx context.Context) (string, error) {
	ns := s.cfg.ManagerNamespace
	pods, err := s.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: s.cfg.ManagerSelector})
	if err != nil {
		return "", fmt.Errorf("finding tp's traffic manager in namespace %q: %w", ns, err)
	}
	var ready []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
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
	sort.Slice(ready, func(i, j int) bool { return ready[i].CreationTimestamp.After(ready[j].CreationTimestamp.Time) })
	return ready[0].Name, nil
}

// dialManager is gRPC's dialer: a port-forward stream to the manager's client port on
// whichever manager pod is ready now.
func (s *Session) dialManager(ctx context.Context, _ string) (net.Conn, error) {
	pod, err := s.findManager(ctx)
	if err == nil {
		s.mu.Lock()
		s.pod = pod
		s.mu.Unlock()
		var conn net.Conn
		conn, err = s.fw.DialPod(ctx, s.cfg.ManagerNamespace, pod, uint16(s.cfg.ManagerPort))
		if err == nil {
			return conn, nil
		}
	}
	s.mu.Lock()
	s.lastErr = err.Error()
	s.mu.Unlock()
	s.cfg.Log.Warn("cannot reach the traffic manager", "err", err)
	return nil, err
}

func (s *Session) refreshInfo(ctx context.Context, first bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	info, err := s.client.Info(ctx, &tunnelpb.InfoRequest{ClientVersion: s.cfg.Version}, grpc.WaitForReady(first))
	if err != nil {
		s.mu.Lock()
		last := s.lastErr
		s.mu.Unlock()
		if last != "" {
			return &remote.Error{Kind: remote.TunnelDown, Msg: "cannot reach tp's traffic manager: " + last, Err: err}
		}
		return &remote.Error{Kind: remote.TunnelDown, Msg: "tp's traffic manager does not answer", Err: err}
	}
	s.info.Store(info)
	return nil
}

func (s *Session) refreshLoop() {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			_ = s.refreshInfo(s.ctx, false)
		}
	}
}

// watchState follows the gRPC connection's state: a drop shows as reconnecting until gRPC
// has a new connection (to a new pod, if the old one went).
func (s *Session) watchState() {
	st := s.cc.GetState()
	for {
		s.mu.Lock()
		switch st {
		case connectivity.Ready:
			s.state = Connected
			s.lastErr = ""
		case connectivity.Shutdown:
			s.state = Closed
		default:
			if s.state == Connected {
				s.reconnects++
				s.state = Reconnecting
			}
		}
		s.mu.Unlock()
		// gRPC leaves a broken channel idle until the next RPC; a session reconnects at once,
		// so that it is up again before the next flow asks (and says so in tp status).
		if st == connectivity.Idle {
			s.cc.Connect()
		}
		if st == connectivity.Shutdown || !s.cc.WaitForStateChange(s.ctx, st) {
			return
		}
		prev := st
		st = s.cc.GetState()
		if prev != connectivity.Ready && st == connectivity.Ready {
			go func() { _ = s.refreshInfo(s.ctx, false) }()
		}
	}
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
	stream, err := s.client.Tunnel(sctx)
	if err != nil {
		end()
		s.failed.Add(1)
		if status.Code(err) == codes.Unavailable {
			return nil, s.downError()
		}
		return nil, fmt.Errorf("tunnel to %s: %w", address, err)
	}
	d := &tunnelpb.Dial{Network: network, Address: address, Namespace: s.cfg.Namespace}
	if remote.EarlyData(ctx) {
		c, err := tunnel.OpenEarly(stream, end, d)
		if err != nil {
			s.failed.Add(1)
			return nil, err
		}
		s.open.Add(1)
		return &counted{Conn: c, s: s}, nil
	}
	// Dial results arrive on the stream; a dial context that ends first must end it.
	stop := context.AfterFunc(ctx, end)
	c, err := tunnel.Open(ctx, stream, end, d)
	if !stop() && err == nil {
		c.Close()
		err = &remote.Error{Kind: remote.Timeout, Msg: fmt.Sprintf("dial %s through the tunnel: %v", address, ctx.Err())}
	}
	if err != nil {
		s.failed.Add(1)
		if remote.KindOf(err) == remote.TunnelDown {
			return nil, s.downError()
		}
		return nil, err
	}
	s.open.Add(1)
	return &counted{Conn: c, s: s}, nil
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
	if st := s.State(); st != Connected {
		return nil, s.downError()
	}
	key := answerKey{strings.ToLower(name), qtype}
	now := time.Now()
	s.cacheMu.Lock()
	a, ok := s.answers[key]
	s.cacheMu.Unlock()
	if ok && now.Before(a.expires) {
		return a.resp, nil
	}
	resp, err := s.resolveRemote(ctx, name, qtype)
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
	resp, err := s.client.Resolve(ctx, &tunnelpb.ResolveRequest{Name: name, Namespace: s.cfg.Namespace, Qtype: uint32(qtype)})
	if err != nil {
		switch status.Code(err) {
		case codes.Unavailable:
			if s.State() != Connected {
				return nil, s.downError()
			}
			return nil, &remote.Error{Kind: remote.Failed, Msg: status.Convert(err).Message(), Err: err}
		case codes.DeadlineExceeded:
			return nil, &remote.Error{Kind: remote.Timeout, Msg: "resolving " + name + " timed out", Err: err}
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
	State          State    `json:"state"`
	ManagerVersion string   `json:"managerVersion"`
	ManagerPod     string   `json:"managerPod"`
	ClusterDomain  string   `json:"clusterDomain"`
	ServiceCIDRs   []string `json:"serviceCIDRs"`
	PodCIDRs       []string `json:"podCIDRs"`
	Reconnects     int      `json:"reconnects"`
	LastError      string   `json:"lastError,omitempty"`
	OpenFlows      int64    `json:"openFlows"`
	TotalFlows     int64    `json:"totalFlows"`
	FailedFlows    int64    `json:"failedFlows"`
	BytesIn        int64    `json:"bytesIn"`  // from the cluster
	BytesOut       int64    `json:"bytesOut"` // to the cluster
}

// Status reports the session's state and counters.
func (s *Session) Status() Status {
	info := s.info.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{
		State: s.state, ManagerVersion: info.GetVersion(), ManagerPod: s.pod, ClusterDomain: info.GetClusterDomain(),
		ServiceCIDRs: info.GetServiceCidrs(), PodCIDRs: info.GetPodCidrs(),
		Reconnects: s.reconnects, LastError: s.lastErr,
		OpenFlows: s.open.Load(), TotalFlows: s.total.Load(), FailedFlows: s.failed.Load(),
		BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(),
	}
}

// Close ends every flow and the connection to the manager.
func (s *Session) Close() error {
	s.cancel()
	var err error
	if s.cc != nil {
		err = s.cc.Close()
	}
	_ = s.fw.Close()
	s.mu.Lock()
	s.state = Closed
	s.mu.Unlock()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("session close: %w", err)
	}
	return nil
}

// counted counts a flow's bytes and keeps the open-flow count.
type counted struct {
	net.Conn
	s    *Session
	once sync.Once
}

func (c *counted) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.s.bytesIn.Add(int64(n))
	return n, err
}

func (c *counted) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.s.bytesOut.Add(int64(n))
	return n, err
}

func (c *counted) CloseWrite() error { return c.Conn.(*tunnel.Conn).CloseWrite() }

func (c *counted) Close() error {
	c.once.Do(func() { c.s.open.Add(-1) })
	return c.Conn.Close()
}

// flowControl sizes the tunnel's HTTP/2 windows. Measured (make bench): with gRPC's
// estimated windows a download stalled on flow control at about half of a raw
// port-forward's speed, because window updates queue behind the data in the API server's
// and kubelet's buffers; a 32 MiB stream window reaches it. Both sizes are set (setting one
// alone disables the estimator). This is what the laptop lets the manager send ahead; a
// local client that stops reading holds at most that much in tp's memory.
func flowControl() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(32 << 20), grpc.WithInitialConnWindowSize(128 << 20),
		grpc.WithWriteBufferSize(256 << 10), grpc.WithReadBufferSize(256 << 10),
	}
}
