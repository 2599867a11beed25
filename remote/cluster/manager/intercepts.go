package manager

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// AgentIdentity is who a verified agent is: its pod and the workload that owns the pod.
type AgentIdentity struct {
	Namespace, Pod, UID string
	Kind, Workload      string // Deployment, StatefulSet or ReplicaSet
}

// Verifier checks an agent's token and says which pod presents it; an error means the
// caller is no agent of tp's.
type Verifier interface {
	Verify(ctx context.Context, token string) (AgentIdentity, error)
}

// Registry holds the intercepts clients asked for and the agents that serve them, and
// pairs each intercepted connection an agent receives with the client that holds it.
type Registry struct {
	verify Verifier
	auth   Authorizer
	log    *slog.Logger
	// maxPerHolder bounds the intercepts one Kubernetes user holds: each costs the manager
	// a registry entry and a grant check on every re-assertion.
	maxPerHolder int
	leaseTTL     time.Duration // a client that renews nothing for this long loses its intercepts
	tick         time.Duration // how often agents hear their state, even unchanged

	mu sync.Mutex
	// byKey is each port's intercepts in the order they were made, oldest first: a request
	// that several filters match goes to the first, so the order is the agents' route order.
	// A port has one global intercept alone, or filtered ones only.
	byKey   map[interceptKey][]*intercept
	agents  map[*agentConn]struct{}
	pending map[string]*pendingFlow
	clients map[*clientSession]struct{}
	// egress are the egress dials waiting for their agents' Flows, by id; grants are the
	// egress grants read lately.
	egress    map[string]*egressFlow
	grants    map[string]cachedGrant
	agentWait time.Duration // how long an egress dial waits for an agent
	// probes are the probe connections under way, by their address as agents see it.
	probes    map[string]*probeConn
	probeDial ProbeDialer
	// draining is this manager pod's name once Drain was called: it holds no intercept
	// from then on.
	draining string
	// claims shares the intercepts with the manager's other pods; nil: this pod is alone.
	claims *Claims
}

type interceptKey struct{ namespace, kind, workload, port string }

type intercept struct {
	key  interceptKey
	name string
	// id names the intercept to agents (Route.id, Dial.route); the manager picks it, so
	// that an agent's connection reaches the intercept it was routed to and no other.
	id string
	// filter selects the HTTP requests that come to the client; nil for a global
	// intercept, which takes every connection and holds the port alone.
	filter *route.Filter
	// wiretap: the client gets copies (of what filter selects, or of every connection),
	// and the port's other intercepts are not affected by it.
	wiretap bool
	client  *clientSession
	since   time.Time
	// holder is the Kubernetes user the grant names; grant and grantHash identify the
	// grant, so that List tells about it only to who can read it.
	holder, grant, grantHash string
	// problem is what keeps the intercept from the workload's traffic, as the drift check
	// last found it ("" when all is well); its holder hears of every change.
	problem string
}

type clientSession struct {
	who string
	// probing: a probe of this client is under way (one at a time: each makes dials).
	probing   bool
	out       chan *tunnelpb.InterceptServerMsg
	lastRenew time.Time
	done      chan struct{}
	// moveAsked: Moving was queued (Drain); moved closes once it was sent, ending the stream.
	moveAsked bool
	moved     chan struct{}
}

type agentConn struct {
	id     AgentIdentity
	ports  map[string]bool
	notify chan struct{}
	egress chan *tunnelpb.EgressDial // dials to send with the next state
	gone   chan struct{}             // closed when its Watch ends: its egress dials fail at once
}

type pendingFlow struct {
	it       *intercept         // the intercept it was announced for
	accepted chan tunnel.Stream // the client's Accept stream
	taken    bool               // the client took it (or turned it down): no longer waiting
	rejected chan string
	done     chan struct{} // closed when the relay ends, releasing the Accept handler
}

// DefaultMaxPerHolder is how many intercepts one Kubernetes user may hold at once.
const DefaultMaxPerHolder = 32

// NewRegistry makes a Registry that checks agents with verify and intercepts with auth;
// run Expire to enforce leases.
func NewRegistry(verify Verifier, auth Authorizer, log *slog.Logger) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{
		verify: verify, auth: auth, log: log, leaseTTL: 10 * time.Second, tick: 3 * time.Second, maxPerHolder: DefaultMaxPerHolder,
		byKey: map[interceptKey][]*intercept{}, agents: map[*agentConn]struct{}{}, probes: map[string]*probeConn{},
		pending: map[string]*pendingFlow{}, clients: map[*clientSession]struct{}{},
		egress: map[string]*egressFlow{}, grants: map[string]cachedGrant{}, agentWait: defaultAgentWait,
	}
}

// Expire drops, every second until ctx ends, the intercepts of clients whose lease lapsed:
// a client that vanished without closing its stream (a sleeping laptop) must not keep a
// workload's traffic.
func (r *Registry) Expire(ctx context.Context) {
	remote.Every(ctx, time.Second, func(now time.Time) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for c := range r.clients {
			if now.Sub(c.lastRenew) > r.leaseTTL {
				r.dropClientLocked(c, "its lease lapsed")
			}
		}
		return true
	})
}

// ClientAPI serves tunnelpb.Intercepts.
func (r *Registry) ClientAPI() tunnelpb.InterceptsServer { return clientAPI{r: r} }

// AgentAPI serves tunnelpb.Agents.
func (r *Registry) AgentAPI() tunnelpb.AgentsServer { return agentAPI{r: r} }

type clientAPI struct {
	tunnelpb.UnimplementedInterceptsServer
	r *Registry
}

func (a clientAPI) Session(stream tunnelpb.Intercepts_SessionServer) error {
	r := a.r
	c := &clientSession{out: make(chan *tunnelpb.InterceptServerMsg, 64), lastRenew: time.Now(), done: make(chan struct{}), moved: make(chan struct{})}
	r.mu.Lock()
	r.clients[c] = struct{}{}
	if r.draining != "" {
		r.moveLocked(c) // it came here before it heard that this pod goes away
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.dropClientLocked(c, "its session ended")
		delete(r.clients, c)
		r.mu.Unlock()
		close(c.done)
	}()
	sendErr := make(chan error, 1)
	go func() {
		for {
			select {
			case m := <-c.out:
				if err := stream.Send(m); err != nil {
					sendErr <- err
					return
				}
				if m.GetMoving() != nil {
					close(c.moved)
					return
				}
			case <-c.done:
				return
			}
		}
	}()
	recvErr := make(chan error, 1)
	msgs := make(chan *tunnelpb.InterceptClientMsg)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-c.done:
				return
			}
		}
	}()
	for {
		select {
		case err := <-sendErr:
			return err
		case <-recvErr:
			return nil
		case <-c.moved:
			return status.Error(codes.Unavailable, "this manager pod is stopping: assert the intercepts on another")
		case m := <-msgs:
			r.handleClient(stream.Context(), c, m)
		}
	}
}

// authorizeWait bounds the API calls that check one intercept's grant.
const authorizeWait = 10 * time.Second

func (r *Registry) handleClient(ctx context.Context, c *clientSession, m *tunnelpb.InterceptClientMsg) {
	// The grant and the other pods' claims are checked before the lock is taken: they ask
	// the API server.
	holder, authErr := "", error(nil)
	var remote []*intercept
	if k, ok := m.GetKind().(*tunnelpb.InterceptClientMsg_Create); ok {
		actx, cancel := context.WithTimeout(ctx, authorizeWait)
		holder, authErr = r.authorize(actx, k.Create)
		if authErr == nil && !r.Draining() {
			remote, authErr = r.claim(actx, c, k.Create, holder)
		}
		cancel()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c.lastRenew = time.Now()
	switch k := m.GetKind().(type) {
	case *tunnelpb.InterceptClientMsg_Create:
		if r.draining != "" {
			// Its client moves to another pod, which decides; a claim written here now
			// could take the one the moved client wrote there.
			r.sendLocked(c, &tunnelpb.InterceptServerMsg{Kind: &tunnelpb.InterceptServerMsg_Result{Result: &tunnelpb.InterceptResult{
				Name: k.Create.GetName(), Error: "this manager pod is stopping: asserting the intercept on another"}}})
			return
		}
		res := r.createLocked(c, k.Create, holder, authErr, remote)
		if res.Error != "" && r.findLocked(c, k.Create.GetName()) == nil {
			r.releaseLocked(interceptKeyOf(k.Create), k.Create.GetGrant())
		}
		r.sendLocked(c, &tunnelpb.InterceptServerMsg{Kind: &tunnelpb.InterceptServerMsg_Result{Result: res}})
	case *tunnelpb.InterceptClientMsg_Leave:
		if it := r.findLocked(c, m.GetLeave()); it != nil {
			r.removeLocked(it)
			r.log.Info("leave", "name", it.name, "client", c.who)
		}
	case *tunnelpb.InterceptClientMsg_Reject:
		if p := r.pending[k.Reject.GetFlow()]; p != nil {
			select {
			case p.rejected <- k.Reject.GetReason():
			default:
			}
		}
	case *tunnelpb.InterceptClientMsg_Probe:
		r.startProbeLocked(ctx, c, k.Probe)
	}
}

// authorize asks the Authorizer; a registry without one refuses every intercept (it cannot
// tell who asks).
func (r *Registry) authorize(ctx context.Context, req *tunnelpb.InterceptRequest) (string, error) {
	if r.auth == nil {
		return "", fmt.Errorf("%w: this manager checks no intercept grants", ErrNotAuthorized)
	}
	name, g := interceptGrant(req)
	return r.auth.Authorize(ctx, name, g)
}

// heldByLocked counts holder's intercepts, but for the one named name of client c (asking
// for it again re-points it rather than adding one).
func (r *Registry) heldByLocked(holder string, c *clientSession, name string) int {
	n := 0
	for _, its := range r.byKey {
		for _, it := range its {
			if it.holder == holder && (it.client != c || it.name != name) {
				n++
			}
		}
	}
	return n
}

// describeHolder names who holds an intercept: the Kubernetes user, and where their
// client runs.
func (it *intercept) describeHolder() string {
	if it.client.who == "" || it.client.who == it.holder {
		return it.holder
	}
	return fmt.Sprintf("%s (%s)", it.holder, it.client.who)
}

// sendLocked queues a message to a client; a client too slow to take it loses it rather
// than stalling every other client.
func (r *Registry) sendLocked(c *clientSession, m *tunnelpb.InterceptServerMsg) bool {
	select {
	case c.out <- m:
		return true
	default:
		r.log.Warn("intercept client too slow; message dropped", "client", c.who)
		return false
	}
}

func (r *Registry) dropClientLocked(c *clientSession, why string) {
	for _, it := range r.ofClientLocked(c) {
		r.removeLocked(it)
		r.log.Info("intercept ended", "name", it.name, "client", c.who, "why", why)
	}
}

// endedLocked lets the connections announced for it go to the app at once: it ended, so
// no client will take them (a request right after tp leave must not wait for acceptWait).
// Other intercepts of the same port keep theirs.
func (r *Registry) endedLocked(it *intercept) {
	for _, p := range r.pending {
		if p.it == it {
			select {
			case p.rejected <- "the intercept ended":
			default:
			}
		}
	}
}

// notifyLocked wakes the agents of the workload of key.
func (r *Registry) notifyLocked(key interceptKey) {
	for a := range r.agents {
		if a.matches(key) {
			select {
			case a.notify <- struct{}{}:
			default:
			}
		}
	}
}

// agentsLocked counts the pods whose agents serve key; an agent may reach this manager pod
// by two ways for a moment (the Service and the pod's address).
func (r *Registry) agentsLocked(key interceptKey) int {
	pods := map[string]bool{}
	for a := range r.agents {
		if a.matches(key) && a.ports[key.port] {
			pods[a.id.UID] = true
		}
	}
	return len(pods)
}

func (a *agentConn) matches(key interceptKey) bool {
	return a.id.Namespace == key.namespace && strings.EqualFold(a.id.Kind, key.kind) && a.id.Workload == key.workload
}

func (c clientAPI) Accept(stream tunnelpb.Intercepts_AcceptServer) error {
	d, err := tunnel.First(stream)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	r := c.r
	r.mu.Lock()
	p := r.pending[d.GetAddress()]
	r.mu.Unlock()
	if p == nil {
		return tunnel.Answer(stream, remote.Errorf(remote.Failed, "no connection %q is waiting", d.GetAddress()), "")
	}
	select {
	case p.accepted <- stream:
	default:
		return tunnel.Answer(stream, remote.Errorf(remote.Failed, "connection %q was taken already", d.GetAddress()), "")
	}
	select {
	case <-p.done:
	case <-stream.Context().Done():
	}
	return nil
}

// maxListGrants bounds the grants one List names.
const maxListGrants = 4096

// List tells about the intercepts whose grants the caller names, each with the secret hash
// its Lease carries: a caller learns about an intercept only if it could read the grant
// with its own Kubernetes rights, which the manager cannot see on a port-forwarded call.
func (c clientAPI) List(ctx context.Context, req *tunnelpb.ListRequest) (*tunnelpb.ListResponse, error) {
	if n := len(req.GetGrants()); n > maxListGrants {
		return nil, status.Errorf(codes.InvalidArgument, "list: %d grants named; at most %d", n, maxListGrants)
	}
	type ref struct{ ns, name string }
	asked := map[ref]string{}
	for _, g := range req.GetGrants() {
		asked[ref{g.GetNamespace(), g.GetName()}] = g.GetSecretSha256()
	}
	r := c.r
	resp := &tunnelpb.ListResponse{Intercepts: r.elsewhere(ctx, func(ns, grant, hash string) bool {
		want, ok := asked[ref{ns, grant}]
		return ok && strings.EqualFold(want, hash)
	})}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, its := range r.byKey {
		for _, it := range its {
			if hash, ok := asked[ref{k.namespace, it.grant}]; !ok || !strings.EqualFold(hash, it.grantHash) {
				continue
			}
			resp.Intercepts = append(resp.Intercepts, r.infoLocked(it))
		}
	}
	slices.SortFunc(resp.Intercepts, func(a, b *tunnelpb.InterceptInfo) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Workload, b.Workload),
			strings.Compare(a.Port, b.Port), cmp.Compare(a.SinceUnix, b.SinceUnix), strings.Compare(a.Client, b.Client))
	})
	return resp, nil
}

// infoLocked is it as List tells about it, its filter included.
func (r *Registry) infoLocked(it *intercept) *tunnelpb.InterceptInfo {
	k := it.key
	info := &tunnelpb.InterceptInfo{
		Name: it.name, Namespace: k.namespace, Kind: k.kind, Workload: k.workload, Port: k.port,
		Client: it.client.who, SinceUnix: it.since.Unix(), Agents: int32(r.agentsLocked(k)),
		Holder: it.holder, Grant: it.grant, Problem: it.problem, Wiretap: it.wiretap,
	}
	if it.filter != nil {
		info.Http = it.filter.Proto()
	}
	return info
}

type agentAPI struct {
	tunnelpb.UnimplementedAgentsServer
	r *Registry
}

// identify verifies the token an agent's call carries.
func (r *Registry) identify(ctx context.Context) (AgentIdentity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	token, err := bearerToken(md)
	if err != nil {
		r.log.Warn("agent refused", "from", peerAddr(ctx), "err", err)
		return AgentIdentity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	id, err := r.verify.Verify(ctx, token)
	if errors.Is(err, ErrVerifierBusy) {
		r.log.Warn("agent not verified", "from", peerAddr(ctx), "err", err)
		return AgentIdentity{}, status.Errorf(codes.Unavailable, "the agent's token was not reviewed: %v", err)
	}
	if err != nil {
		r.log.Warn("agent refused", "from", peerAddr(ctx), "err", err)
		return AgentIdentity{}, status.Errorf(codes.PermissionDenied, "not a tp agent: %v", err)
	}
	return id, nil
}

// maxTokenLen bounds the token an agent presents: service-account tokens are JWTs of a
// kilobyte or two, and every token the verifier has not seen costs the API server a review.
const maxTokenLen = 16 << 10

// bearerToken is the token of a call's one "authorization: Bearer ..." metadata value.
func bearerToken(md metadata.MD) (string, error) {
	auth := md.Get("authorization")
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
		return "", errors.New("an agent must present its service account token")
	}
	token := strings.TrimPrefix(auth[0], "Bearer ")
	if token == "" || len(token) > maxTokenLen {
		return "", fmt.Errorf("an agent's token is 1 to %d bytes, not %d", maxTokenLen, len(token))
	}
	return token, nil
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// maxAgentPorts bounds the ports one agent registers: a pod serves a handful, and the
// registry holds them for as long as the agent is connected.
const maxAgentPorts = 256

// checkHello checks an agent's registration against the identity its token proved and
// returns the names of the ports it serves. An agent tp injected always passes: its ports
// are named after container ports (agent.ParsePorts checks the same).
func checkHello(id AgentIdentity, hello *tunnelpb.AgentHello) (map[string]bool, error) {
	if hello.GetPod() != id.Pod || hello.GetNamespace() != id.Namespace {
		return nil, status.Errorf(codes.PermissionDenied, "the token is pod %s/%s's, not %q/%q's", id.Namespace, id.Pod, hello.GetNamespace(), hello.GetPod())
	}
	if n := len(hello.GetPorts()); n > maxAgentPorts {
		return nil, status.Errorf(codes.InvalidArgument, "agent %s/%s registers %d ports; at most %d", id.Namespace, id.Pod, n, maxAgentPorts)
	}
	ports := map[string]bool{}
	for _, p := range hello.GetPorts() {
		if err := checkAgentPort(p); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "agent %s/%s: %v", id.Namespace, id.Pod, err)
		}
		ports[p.GetName()] = true
	}
	return ports, nil
}

func checkAgentPort(p *tunnelpb.AgentPort) error {
	if msgs := validation.IsValidPortName(p.GetName()); len(msgs) > 0 {
		return fmt.Errorf("port name %q: %s", p.GetName(), strings.Join(msgs, "; "))
	}
	if l, a := p.GetListen(), p.GetApp(); l < 1 || l > 65535 || a < 1 || a > 65535 {
		return fmt.Errorf("port %s: %d to %d: ports must be 1-65535", p.GetName(), l, a)
	}
	return nil
}

func (a agentAPI) Watch(hello *tunnelpb.AgentHello, stream tunnelpb.Agents_WatchServer) error {
	r := a.r
	id, err := r.identify(stream.Context())
	if err != nil {
		return err
	}
	ports, err := checkHello(id, hello)
	if err != nil {
		r.log.Warn("agent refused", "from", peerAddr(stream.Context()), "err", status.Convert(err).Message())
		return err
	}
	ag := &agentConn{id: id, ports: ports, notify: make(chan struct{}, 1), egress: make(chan *tunnelpb.EgressDial, egressQueue), gone: make(chan struct{})}
	r.mu.Lock()
	r.agents[ag] = struct{}{}
	r.mu.Unlock()
	r.log.Info("agent registered", "pod", id.Namespace+"/"+id.Pod, "workload", id.Kind+"/"+id.Workload, "ports", slices.Sorted(maps.Keys(ports)))
	defer func() {
		r.mu.Lock()
		delete(r.agents, ag)
		r.mu.Unlock()
		close(ag.gone)
		r.log.Info("agent gone", "pod", id.Namespace+"/"+id.Pod)
	}()
	t := time.NewTicker(r.tick)
	defer t.Stop()
	for {
		r.mu.Lock()
		st, draining, cl := r.agentStateLocked(ag), r.draining, r.claims
		r.mu.Unlock()
		var managers []string
		if cl != nil && draining != "" {
			// Where its clients go: read now, without this pod.
			managers = cl.Pods.Ready(stream.Context(), podsFresh/8, draining)
		} else if cl != nil {
			managers = cl.Pods.Ready(stream.Context(), podsFresh, "")
		}
		if draining != "" {
			// Its last word: the agent holds this pod's ports for the other pods, which it
			// learns here.
			_ = stream.Send(&tunnelpb.AgentState{Draining: true, Managers: managers})
			return nil
		}
		st.Managers = managers
		st.Egress = takeAll(ag.egress)
		if err := stream.Send(st); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-ag.notify:
		case <-t.C:
		}
	}
}

// takeAll takes what waits in c, without waiting.
func takeAll[T any](c chan T) []T {
	var out []T
	for {
		select {
		case v := <-c:
			out = append(out, v)
		default:
			return out
		}
	}
}

// acceptWait bounds how long a connection waits for its client to take it.
const acceptWait = 5 * time.Second

func (a agentAPI) Flow(stream tunnelpb.Agents_FlowServer) error {
	r := a.r
	id, err := r.identify(stream.Context())
	if err != nil {
		return err
	}
	d, err := tunnel.First(stream)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if d.GetEgress() != "" {
		return r.takeEgress(stream.Context(), id, d, stream)
	}
	key := interceptKey{id.Namespace, strings.ToLower(id.Kind), id.Workload, d.GetAddress()}
	r.mu.Lock()
	probe := r.probeBackLocked(d.GetOrigin(), key, d.GetRoute())
	r.mu.Unlock()
	if probe {
		// Taken, then ended: the prober has its answer, and the app never sees the probe.
		_ = tunnel.Answer(stream, nil, "")
		return nil
	}
	flowID := newFlowID()
	p := &pendingFlow{accepted: make(chan tunnel.Stream, 1), rejected: make(chan string, 1), done: make(chan struct{})}
	defer close(p.done)
	r.mu.Lock()
	it, why := r.flowTargetLocked(key, d.GetRoute())
	name := ""
	if it != nil {
		p.it, name = it, it.name
		r.pending[flowID] = p
		if !r.sendLocked(it.client, &tunnelpb.InterceptServerMsg{Kind: &tunnelpb.InterceptServerMsg_Incoming{
			Incoming: &tunnelpb.Incoming{Flow: flowID, Intercept: it.name, From: d.GetOrigin()}}}) {
			why = fmt.Sprintf("the client of intercept %q is too slow to take it", it.name)
		}
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.pending, flowID)
		r.mu.Unlock()
	}()
	if why != "" {
		return tunnel.Answer(stream, remote.Errorf(remote.Refused, "%s", why), "")
	}
	var client tunnel.Stream
	select {
	case client = <-p.accepted:
		r.mu.Lock()
		p.taken = true
		r.mu.Unlock()
	case why := <-p.rejected:
		return tunnel.Answer(stream, remote.Errorf(remote.Refused, "the intercepting client refused the connection: %s", why), "")
	case <-time.After(acceptWait):
		return tunnel.Answer(stream, remote.Errorf(remote.Timeout, "the intercepting client did not take the connection in time"), "")
	case <-stream.Context().Done():
		return nil
	}
	if err := tunnel.Answer(client, nil, ""); err != nil {
		return tunnel.Answer(stream, remote.Errorf(remote.Failed, "the intercepting client went away"), "")
	}
	if err := tunnel.Answer(stream, nil, ""); err != nil {
		return nil
	}
	if err := tunnel.Relay(stream, client); err != nil && !errors.Is(err, context.Canceled) {
		r.log.Debug("intercepted flow ended", "intercept", name, "err", err)
	}
	return nil
}

func newFlowID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
