// Package agent is tp's traffic agent, the sidecar tp adds to an intercepted workload's pods
// (run as cmd/tp-agent). It listens where the Service now sends traffic and, for each
// connection, either passes it to the app on the pod's loopback or, while a client holds an
// intercept of that port, hands it to the manager for that client. It never leaves traffic
// without a taker: a connection no client takes goes to the app, and an agent that loses
// the manager for a while stops intercepting.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tpdev/tp/deploy/pki"
	"github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Port is one port the agent serves: connections to Listen go to the app's App port, or to
// an intercepting client.
type Port struct {
	Name   string
	Listen int
	App    int
}

// ParsePorts reads TP_AGENT_PORTS: name:listen:app, comma separated. A name is the
// container port name a Service targets, so a valid port name; each name and each listen
// port appears once.
func ParsePorts(s string) ([]Port, error) {
	var out []Port
	names, listens := map[string]bool{}, map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		p, err := parsePort(part)
		if err != nil {
			return nil, err
		}
		if names[p.Name] {
			return nil, fmt.Errorf("agent port %q: another port is named %s", part, p.Name)
		}
		if listens[p.Listen] {
			return nil, fmt.Errorf("agent port %q: another port listens on %d", part, p.Listen)
		}
		names[p.Name], listens[p.Listen] = true, true
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("agent: no ports to serve")
	}
	return out, nil
}

func parsePort(part string) (Port, error) {
	f := strings.Split(part, ":")
	if len(f) != 3 {
		return Port{}, fmt.Errorf("agent port %q: want name:listen:app", part)
	}
	if !validPortName(f[0]) {
		return Port{}, fmt.Errorf("agent port %q: %q is not a port name (at most 15 lowercase letters, digits and inner single hyphens, a letter among them)", part, f[0])
	}
	l, err1 := strconv.Atoi(f[1])
	a, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil || l < 1 || l > 65535 || a < 1 || a > 65535 {
		return Port{}, fmt.Errorf("agent port %q: ports must be 1-65535", part)
	}
	return Port{Name: f[0], Listen: l, App: a}, nil
}

// validPortName reports whether name is a container port name (an IANA service name), as
// the API server checks them: the manager refuses an agent whose ports are named otherwise.
func validPortName(name string) bool {
	if name == "" || len(name) > 15 || name[0] == '-' || name[len(name)-1] == '-' || strings.Contains(name, "--") {
		return false
	}
	letter := false
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
	}
	return letter
}

// Hello is the registration an agent sends the manager.
func Hello(pod, namespace, version string, ports []Port) *tunnelpb.AgentHello {
	hello := &tunnelpb.AgentHello{Pod: pod, Namespace: namespace, Version: version}
	for _, p := range ports {
		hello.Ports = append(hello.Ports, &tunnelpb.AgentPort{Name: p.Name, Listen: int32(p.Listen), App: int32(p.App)})
	}
	return hello
}

// Config is what an agent needs to know.
type Config struct {
	Pod, Namespace string
	Manager        string // host:port of the manager's agent API
	// CA is the bundle (PEM) of the CAs the manager's certificate must chain to: tp
	// install's, as tp intercept put it in the agent's pod template.
	CA []byte
	// ServerName is the name the manager's certificate must carry; default Manager's host
	// (tp-manager.NAMESPACE.svc).
	ServerName string
	TokenFile  string // the projected service-account token, re-read for every call (it rotates)
	Ports      []Port
	Version    string
	// Stale is how long the agent keeps intercepting without hearing from the manager.
	Stale time.Duration
	// Pods lists the manager's pods (host:port of each); default: the addresses of the
	// manager's headless Service (agentspec.PodsAddress). None: Manager alone.
	Pods func(ctx context.Context) ([]string, error)
	Log  *slog.Logger
}

// Agent serves its ports until its context ends.
type Agent struct {
	cfg   Config
	creds credentials.TransportCredentials
	kick  chan struct{} // looks up the manager's pods now

	mu sync.Mutex
	// replicas are the manager pods, by address; view merges what they said.
	replicas map[string]*replica
	view     *view

	passed, handed, egressed atomic.Int64
	routed                   route.Stats
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Stale == 0 {
		cfg.Stale = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Pods == nil {
		cfg.Pods = lookupPods(cfg.Manager)
	}
	creds, err := transport(cfg)
	if err != nil {
		return err
	}
	a := &Agent{cfg: cfg, creds: creds, kick: make(chan struct{}, 1), replicas: map[string]*replica{}}
	a.rebuildLocked()
	var lns []net.Listener
	for _, p := range cfg.Ports {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p.Listen))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("agent: port %s: %w", p.Name, err)
		}
		lns = append(lns, ln)
	}
	for i, ln := range lns {
		go a.serve(ctx, ln, cfg.Ports[i])
	}
	go a.expire(ctx)
	discovered := make(chan struct{})
	go func() {
		defer close(discovered)
		a.discover(ctx)
	}()
	defer func() { <-discovered }()
	cfg.Log.Info("agent serving", "pod", cfg.Namespace+"/"+cfg.Pod, "ports", cfg.Ports, "manager", cfg.Manager)
	<-ctx.Done()
	for _, l := range lns {
		l.Close()
	}
	return nil
}

// transport is TLS to the manager, verified: its certificate must chain to cfg.CA and name
// the Service. There is no plaintext fallback: without a CA the agent does not start.
//
// The agent and the manager are verified on both ends: the agent checks the manager's
// certificate here, so its token and the intercepted requests go to the manager only,
// encrypted; the manager checks the agent's projected service-account token with the API
// server (TokenReview) and that it belongs to a pod of the intercepted workload. Client
// certificates would prove no more than that token, which the kubelet already issues,
// rotates and binds to the pod.
func transport(cfg Config) (credentials.TransportCredentials, error) {
	if len(cfg.CA) == 0 {
		return nil, errors.New("agent: no CA to verify the manager by (TP_AGENT_CA is empty): tp intercept the workload again to update its agent")
	}
	roots, err := pki.Pool(cfg.CA)
	if err != nil {
		return nil, fmt.Errorf("agent: the CA bundle to verify the manager by: %w", err)
	}
	name := cfg.ServerName
	if name == "" {
		host, _, err := net.SplitHostPort(cfg.Manager)
		if err != nil {
			return nil, fmt.Errorf("agent: manager address %q: %w", cfg.Manager, err)
		}
		name = host
	}
	return &saidCreds{TransportCredentials: credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS13}),
		log: cfg.Log, last: new(atomic.Pointer[string])}, nil
}

// saidCreds logs why a handshake with the manager fails (an untrusted certificate, a
// manager that does not speak TLS), once for each new reason: gRPC retries in silence,
// and an agent that cannot verify its manager must say so.
type saidCreds struct {
	credentials.TransportCredentials
	log  *slog.Logger
	last *atomic.Pointer[string]
}

func (c *saidCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, conn)
	why := ""
	if err != nil {
		why = err.Error()
	}
	if old := c.last.Swap(&why); err != nil && (old == nil || *old != why) {
		c.log.Warn("agent: TLS handshake with the manager failed", "manager", authority, "err", err)
	}
	return tc, info, err
}

func (c *saidCreds) Clone() credentials.TransportCredentials {
	return &saidCreds{TransportCredentials: c.TransportCredentials.Clone(), log: c.log, last: c.last}
}

// token adds the agent's current projected token to every call. gRPC sends it only over a
// secure transport: never in the clear, whatever else changes.
type token struct{ file string }

func (t token) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := os.ReadFile(t.file)
	if err != nil {
		return nil, fmt.Errorf("agent token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + strings.TrimSpace(string(tok))}, nil
}

func (token) RequireTransportSecurity() bool { return true }

// watch keeps the agent registered with manager pod r and its state current, until ctx
// ends.
func (a *Agent) watch(ctx context.Context, r *replica) {
	hello := Hello(a.cfg.Pod, a.cfg.Namespace, a.cfg.Version, a.cfg.Ports)
	delay := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := a.watchOnce(ctx, r, hello)
		if ctx.Err() != nil {
			return
		}
		a.mu.Lock()
		draining := r.draining
		if !draining {
			r.managers = nil // what it said holds while it speaks (and, draining, after)
		}
		r.connected = false
		a.rebuildLocked()
		a.mu.Unlock()
		if !draining {
			a.cfg.Log.Warn("agent: lost a manager pod", "manager", r.addr, "err", err)
		}
		// Its clients move to another pod (or come back to a new one): find it now, not at
		// the next lookup.
		select {
		case a.kick <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 3*time.Second)
	}
}

func (a *Agent) watchOnce(ctx context.Context, r *replica, hello *tunnelpb.AgentHello) error {
	stream, err := r.client.Watch(ctx, hello, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	for {
		st, err := stream.Recv()
		if err != nil {
			return err
		}
		now := map[string]bool{}
		for _, name := range st.GetIntercepted() {
			now[name] = true
		}
		routes := map[string]route.Table{}
		for _, pr := range st.GetRoutes() {
			t, err := route.TableFromProto(pr)
			if err != nil {
				// The manager checked every filter: a route this agent cannot read comes
				// from a newer manager. Its port's traffic stays with the app.
				a.cfg.Log.Warn("agent: a port's routes are unreadable; its traffic goes to the app", "err", err)
				continue
			}
			routes[pr.GetPort()] = t
		}
		taps, err := readTaps(st.GetTaps())
		if err != nil {
			a.cfg.Log.Warn("agent: wiretaps are unreadable; none is served", "err", err)
			taps = nil
		}
		a.take(r, st, now, routes, taps)
		for _, e := range st.GetEgress() {
			go a.egress(ctx, r.client, e)
		}
	}
}

// egressDialWait bounds the agent's dial of an egress connection (the manager waits a
// little longer for the answer): a destination that drops packets is reported in time.
const egressDialWait = 10 * time.Second

// egress opens a connection from the pod for a client (tp run --egress workload).
func (a *Agent) egress(ctx context.Context, client tunnelpb.AgentsClient, e *tunnelpb.EgressDial) {
	if err := Egress(ctx, client, a.cfg.Namespace+"/"+a.cfg.Pod, e, (&net.Dialer{}).DialContext); err != nil {
		a.cfg.Log.Warn("agent: an egress connection could not be handed to the manager", "address", e.GetAddress(), "err", err)
		return
	}
	a.egressed.Add(1)
}

// Egress opens the connection e asks for from this pod (pod names it in messages) and
// relays it over a Flow until either side ends. The manager chose the address and checked
// it against its dial policy; dialing it from the pod's network is what makes network
// policies and allow-lists see this workload. The Flow's Dial carries the egress id, and its
// next frame is the dial's result: a refusal reaches the client as one. The error is the
// hand-over's, not the dial's. dial is the pod's network.
func Egress(ctx context.Context, client tunnelpb.AgentsClient, pod string, e *tunnelpb.EgressDial, dial func(ctx context.Context, network, address string) (net.Conn, error)) error {
	if n := e.GetNetwork(); n != "tcp" && n != "udp" {
		return fmt.Errorf("egress of network %q: want tcp or udp", n)
	}
	dctx, cancel := context.WithTimeout(ctx, egressDialWait)
	target, err := dial(dctx, e.GetNetwork(), e.GetAddress())
	cancel()
	remoteAddr := ""
	if err != nil {
		err = remote.DialError(fmt.Sprintf("%s from pod %s", e.GetAddress(), pod), err)
	} else {
		remoteAddr = target.RemoteAddr().String()
		defer target.Close()
	}
	sctx, end := context.WithCancel(ctx)
	defer end()
	stream, serr := client.Flow(sctx)
	if serr == nil {
		serr = stream.Send(&tunnelpb.Frame{Kind: &tunnelpb.Frame_Dial{Dial: &tunnelpb.Dial{Network: e.GetNetwork(), Address: e.GetAddress(), Egress: e.GetId()}}})
	}
	if serr == nil {
		serr = tunnel.Answer(stream, err, remoteAddr)
	}
	if serr != nil {
		return serr
	}
	if err != nil {
		// Ending the call now could cancel it before the manager read the answer: the
		// manager ends it once it has.
		_ = stream.CloseSend()
		wait := time.AfterFunc(egressDialWait, end)
		defer wait.Stop()
		for {
			if _, err := stream.Recv(); err != nil {
				return nil
			}
		}
	}
	c := tunnel.NewConn(stream, end, e.GetNetwork() == "udp", tunnel.Addr{Net: e.GetNetwork(), Address: "manager"}, target.RemoteAddr())
	_, _, _ = remote.Splice(c, target)
	return nil
}

// expire stops intercepting when the manager has been silent too long: the intercepting
// client may be gone without the agent being told.
func (a *Agent) expire(ctx context.Context) {
	remote.Every(ctx, time.Second, func(time.Time) bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		changed := false
		for _, r := range a.replicas {
			if len(r.ports()) > 0 && time.Since(r.heard) > a.cfg.Stale {
				a.cfg.Log.Warn("agent: no word from a manager pod; passing its intercepts' traffic to the app", "manager", r.addr)
				r.clear()
				changed = true
			}
		}
		if changed {
			a.rebuildLocked()
		}
		return true
	})
}

// isIntercepted reports whether a global intercept holds port.
func (a *Agent) isIntercepted(port string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.view.intercepted[port] != nil
}

// portTaps are a port's wiretaps: those of every connection (their ids), and those of the
// requests a filter matches.
type portTaps struct {
	whole    []string
	filtered route.Table
}

func (a *Agent) tapsOf(port string) portTaps {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.view.taps[port]
}

// readTaps compiles the wiretaps the manager sent.
func readTaps(prs []*tunnelpb.PortRoutes) (map[string]portTaps, error) {
	out := map[string]portTaps{}
	for _, pr := range prs {
		var pt portTaps
		for _, rt := range pr.GetRoutes() {
			if rt.GetHttp() == nil {
				pt.whole = append(pt.whole, rt.GetId())
				continue
			}
			t, err := route.TableFromProto(&tunnelpb.PortRoutes{Port: pr.GetPort(), Routes: []*tunnelpb.Route{rt}})
			if err != nil {
				return nil, err
			}
			pt.filtered = append(pt.filtered, t...)
		}
		out[pr.GetPort()] = pt
	}
	return out, nil
}

// table is the port's routes now (none when no filtered intercept holds it).
func (a *Agent) table(port string) route.Table {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.view.routes[port]
}

func (a *Agent) serve(ctx context.Context, ln net.Listener, p Port) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go a.handle(ctx, c, p)
	}
}

func (a *Agent) handle(ctx context.Context, c net.Conn, p Port) {
	a.awaitMove(ctx, p.Name)
	taps := a.tapsOf(p.Name)
	if len(taps.whole) > 0 {
		// Copies of the caller's bytes, whoever answers them.
		var ts []*route.Tap
		for _, id := range taps.whole {
			ts = append(ts, route.OpenTap(ctx, func(ctx context.Context) (net.Conn, error) { return a.handOver(ctx, c, p, id) }, &a.routed))
		}
		c = &route.TapConn{Conn: c, Taps: ts}
	}
	if len(a.table(p.Name)) > 0 || len(taps.filtered) > 0 {
		a.relay(ctx, c, p)
		return
	}
	if a.isIntercepted(p.Name) {
		t, err := a.handOver(ctx, c, p, "")
		if err != nil && a.isHeld(p.Name) {
			// Its manager pod began to drain as the connection came: it waits for the pod
			// the intercept moves to, as the connections after it do.
			a.awaitMove(ctx, p.Name)
			if a.isIntercepted(p.Name) {
				t, err = a.handOver(ctx, c, p, "")
			}
		}
		if err == nil {
			a.handed.Add(1)
			_, _, _ = remote.Splice(c, t)
			return
		}
		a.cfg.Log.Info("agent: intercepted connection goes to the app", "port", p.Name, "why", err)
	}
	app, err := a.dialApp(ctx, p)
	if err != nil {
		a.cfg.Log.Warn("agent: the app does not answer", "port", p.App, "err", err)
		c.Close()
		return
	}
	a.passed.Add(1)
	_, _, _ = remote.Splice(c, app)
}

func (a *Agent) dialApp(ctx context.Context, p Port) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.App)))
}

// relay serves a connection to a port that filtered intercepts or filtered wiretaps hold:
// each request goes to the intercept whose filter matches it first, else to the port's
// whole intercept or the app, and a copy of it to each wiretap whose filter matches it.
func (a *Agent) relay(ctx context.Context, c net.Conn, p Port) {
	r := &route.Relay{
		Table: func() route.Table { return a.table(p.Name) },
		Dial: func(ctx context.Context, id string) (net.Conn, error) {
			if id != "" {
				return a.handOver(ctx, c, p, id)
			}
			if a.isIntercepted(p.Name) {
				if t, err := a.handOver(ctx, c, p, ""); err == nil {
					return t, nil
				}
			}
			return a.dialApp(ctx, p)
		},
		Taps: func() route.Table { return a.tapsOf(p.Name).filtered },
		Tap: func(ctx context.Context, id string) *route.Tap {
			return route.OpenTap(ctx, func(ctx context.Context) (net.Conn, error) { return a.handOver(ctx, c, p, id) }, &a.routed)
		},
		Stats: &a.routed,
		Log:   a.cfg.Log,
	}
	r.Serve(ctx, c)
}

// handOver asks the manager to give the connection to the intercepting client: the
// holder of the port's global intercept, or, with a route, that filtered intercept's.
func (a *Agent) handOver(ctx context.Context, c net.Conn, p Port, routeID string) (net.Conn, error) {
	a.mu.Lock()
	r := a.view.intercepted[p.Name]
	if routeID != "" {
		r = a.view.owner[routeID]
	}
	a.mu.Unlock()
	if r == nil {
		return nil, fmt.Errorf("no manager pod holds an intercept of port %s now", p.Name)
	}
	r.open.Add(1)
	sctx, end := context.WithCancel(ctx)
	context.AfterFunc(sctx, func() { r.open.Add(-1) })
	stream, err := r.client.Flow(sctx)
	if err != nil {
		end()
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stop := context.AfterFunc(dctx, end)
	t, err := tunnel.OpenFlow(dctx, stream, end, &tunnelpb.Dial{Network: "tcp", Address: p.Name, Origin: c.RemoteAddr().String(), Route: routeID})
	stop()
	return t, err
}
