package agent

import (
	"context"
	"maps"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// The manager may run as several pods (tp install --replicas, or two for a moment during a
// rollout). Each pod serves the intercepts of the clients connected to it, so the agent
// keeps a connection to every pod, merges what they say, and hands each connection to the
// pod whose route took it.

// replica is one manager pod as the agent sees it: its connection and what it last said.
type replica struct {
	addr   string
	cc     *grpc.ClientConn
	client tunnelpb.AgentsClient
	cancel context.CancelFunc

	// The pod's last state (guarded by Agent.mu).
	intercepted map[string]bool
	routes      map[string]route.Table
	taps        map[string]portTaps
	heard       time.Time
	draining    bool
	// managers are the manager pods this one said are ready.
	managers []string
	// connected: its Watch is up (it said something on it, and it has not ended).
	connected bool
	// missing is when the lookup last stopped finding the pod (zero while it finds it).
	missing time.Time
	// open counts the intercepted connections handed to the pod and not ended: a pod gone
	// from the lookup keeps its connection while they last.
	open atomic.Int64
}

// takers are the ports whose connections (or some of their requests) the replica's
// intercepts take: a wiretap takes none.
func (r *replica) takers() []string {
	out := slices.Collect(maps.Keys(r.routes))
	for p := range r.intercepted {
		out = append(out, p)
	}
	return out
}

// ports are the ports the replica has anything on.
func (r *replica) ports() []string {
	var out []string
	for p := range r.intercepted {
		out = append(out, p)
	}
	out = slices.AppendSeq(out, maps.Keys(r.routes))
	out = slices.AppendSeq(out, maps.Keys(r.taps))
	return out
}

func (r *replica) clear() {
	r.intercepted, r.routes, r.taps = map[string]bool{}, map[string]route.Table{}, nil
}

// hold keeps a draining pod's port for its clients, who assert their intercepts on
// another pod: until a route comes that was not there when the hold began (before), or
// until is past.
type hold struct {
	until  time.Time
	before map[string]bool
}

// takerIDs names what takes port's connections on the replica: its routes, and its global
// intercept.
func (r *replica) takerIDs(port string) []string {
	var ids []string
	if r.intercepted[port] {
		ids = append(ids, "global@"+r.addr)
	}
	for _, rt := range r.routes[port] {
		ids = append(ids, rt.ID)
	}
	return ids
}

// tookSince reports whether the replica takes port's connections with something not in
// before.
func (r *replica) tookSince(port string, before map[string]bool) bool {
	return slices.ContainsFunc(r.takerIDs(port), func(id string) bool { return !before[id] })
}

// view is the agent's merged picture of every replica's state, rebuilt on each change.
type view struct {
	// intercepted is, by port, the replica that holds the port's global intercept.
	intercepted map[string]*replica
	routes      map[string]route.Table
	taps        map[string]portTaps
	// owner is, by route id, the replica whose intercept the route is.
	owner map[string]*replica
	// held are the ports a draining replica held: their new connections wait for another
	// replica's new route until the hold's time is up.
	held map[string]hold
	// changed closes when the view is next rebuilt.
	changed chan struct{}
}

// moveHold bounds how long a new connection waits for the clients of a draining manager
// pod to assert their intercepts on another pod (about a second when all is well).
const moveHold = 5 * time.Second

// rebuildLocked merges the replicas' states into a new view; replicas in address order, so
// that every agent of a workload merges them alike. The pods the agent speaks with come
// first: what a pod it lost said (kept until Stale, for a blip) counts only for the ports
// no connected pod has anything on (a crashed pod's intercepts, asserted again on the new
// pod, go there at once).
func (a *Agent) rebuildLocked() {
	old := a.view
	v := &view{intercepted: map[string]*replica{}, routes: map[string]route.Table{}, taps: map[string]portTaps{},
		owner: map[string]*replica{}, held: map[string]hold{}, changed: make(chan struct{})}
	now := time.Now()
	if old != nil {
		for p, h := range old.held {
			if now.Before(h.until) {
				v.held[p] = h
			}
		}
	}
	order := slices.SortedFunc(maps.Values(a.replicas), func(x, y *replica) int {
		if x.connected != y.connected {
			if x.connected {
				return -1
			}
			return 1
		}
		return strings.Compare(x.addr, y.addr)
	})
	fromConnected := map[string]bool{} // ports a connected pod has something on
	byPod := a.podReplicaLocked()
	for _, r := range order {
		if r.draining || (r.addr == a.cfg.Manager && byPod) {
			continue // the Service reaches a pod the agent has by its address already
		}
		// A lost pod's word, only for the ports no pod it speaks with has a say on.
		skip := func(p string) bool { return !r.connected && fromConnected[p] }
		if r.connected {
			for _, p := range r.ports() {
				fromConnected[p] = true
			}
		}
		for p := range r.intercepted {
			if v.intercepted[p] == nil && !skip(p) {
				v.intercepted[p] = r
			}
		}
		for p, t := range r.routes {
			if skip(p) {
				continue
			}
			v.routes[p] = append(v.routes[p], t...)
			for _, rt := range t {
				v.owner[rt.ID] = r
			}
		}
		for p, pt := range r.taps {
			if skip(p) {
				continue
			}
			m := v.taps[p]
			m.whole = append(m.whole, pt.whole...)
			m.filtered = append(m.filtered, pt.filtered...)
			v.taps[p] = m
			for _, id := range pt.whole {
				v.owner[id] = r
			}
			for _, rt := range pt.filtered {
				v.owner[rt.ID] = r
			}
		}
		for p, h := range v.held {
			if r.tookSince(p, h.before) {
				delete(v.held, p) // the moved intercepts are back, on another pod
			}
		}
	}
	a.view = v
	if old != nil {
		close(old.changed)
	}
}

// podReplicaLocked reports whether the agent speaks with a manager pod by its address.
func (a *Agent) podReplicaLocked() bool {
	for _, r := range a.replicas {
		if r.connected && !r.draining && r.addr != a.cfg.Manager {
			return true
		}
	}
	return false
}

// isHeld reports whether port waits for a draining manager pod's clients to move.
func (a *Agent) isHeld(port string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	h, ok := a.view.held[port]
	return ok && time.Now().Before(h.until)
}

// awaitMove holds a new connection to port while the port's manager pod is moving its
// clients to another pod, until another pod's routes have the port, or moveHold passed.
func (a *Agent) awaitMove(ctx context.Context, port string) {
	for {
		a.mu.Lock()
		h, held := a.view.held[port]
		until := h.until
		changed := a.view.changed
		a.mu.Unlock()
		if !held || !time.Now().Before(until) {
			return
		}
		wait := time.NewTimer(time.Until(until))
		select {
		case <-changed:
		case <-wait.C:
		case <-ctx.Done():
		}
		wait.Stop()
		if ctx.Err() != nil {
			return
		}
	}
}

// take records what replica r said now.
func (a *Agent) take(r *replica, st *tunnelpb.AgentState, intercepted map[string]bool, routes map[string]route.Table, taps map[string]portTaps) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r.managers, r.connected = st.GetManagers(), true
	for _, m := range r.managers {
		if a.replicas[m] == nil {
			select { // a manager pod the agent does not know yet: connect now
			case a.kick <- struct{}{}:
			default:
			}
			break
		}
	}
	if st.GetDraining() {
		// Only the ports it took: a wiretap's copies are not worth holding the app's path.
		until := time.Now().Add(moveHold)
		for _, p := range r.takers() {
			h := hold{until: until, before: map[string]bool{}}
			for _, o := range a.replicas {
				if o != r && !o.draining {
					for _, id := range o.takerIDs(p) {
						h.before[id] = true
					}
				}
			}
			a.view.held[p] = h
		}
		r.clear()
		r.draining, r.heard = true, time.Now()
		a.rebuildLocked()
		return
	}
	r.intercepted, r.routes, r.taps, r.heard, r.draining = intercepted, routes, taps, time.Now(), false
	a.rebuildLocked()
}

const (
	// discoverEvery is how often the agent looks up the manager's pods.
	discoverEvery = 5 * time.Second
	// replicaLinger is how long the agent keeps its connection to a manager pod the lookup
	// no longer finds: a stopping pod lets the intercepted connections open there finish.
	replicaLinger = 30 * time.Second
	// replicaLingerMost bounds that wait for connections that never end.
	replicaLingerMost = 10 * time.Minute
)

// discover keeps a replica for each manager pod the lookup finds or a manager pod names,
// until ctx ends: new pods are watched, pods gone are let go. With no pod known (a lookup
// that fails, a manager without the headless Service), the agent keeps to the Service's
// address.
func (a *Agent) discover(ctx context.Context) {
	t := time.NewTicker(discoverEvery)
	defer t.Stop()
	for {
		addrs, _ := a.cfg.Pods(ctx)
		a.mu.Lock()
		// The lookup names only pods the agent knows and cannot reach (a crash, a lookup
		// that lags behind the new pod), or none.
		known := !slices.ContainsFunc(addrs, func(addr string) bool { r := a.replicas[addr]; return r == nil || r.connected })
		live := false
		for _, r := range a.replicas {
			// Only a pod that speaks now (a gone pod's last list may name itself), or one
			// that drains: its last list names where its clients go.
			if r.connected || r.draining {
				addrs = append(addrs, r.managers...)
			}
			live = live || r.connected && !r.draining && r.addr != a.cfg.Manager
		}
		a.mu.Unlock()
		if !live && known {
			// No manager pod to speak with, and none new to try: the Service reaches
			// whichever is ready first.
			addrs = append(addrs, a.cfg.Manager)
		}
		a.place(ctx, addrs)
		select {
		case <-ctx.Done():
			a.place(ctx, nil)
			return
		case <-t.C:
		case <-a.kick:
		}
	}
}

// place makes the replicas those of addrs.
func (a *Agent) place(ctx context.Context, addrs []string) {
	want := map[string]bool{}
	for _, addr := range addrs {
		want[addr] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	byPod := a.podReplicaLocked()
	for addr, r := range a.replicas {
		switch {
		case want[addr] || r.connected && !r.draining && addr != a.cfg.Manager:
			// A pod the agent speaks with stays, found or not (a readiness blip).
			r.missing = time.Time{}
		case addr == a.cfg.Manager && byPod && r.open.Load() == 0:
			r.cancel()
			_ = r.cc.Close()
			delete(a.replicas, addr)
		case r.missing.IsZero() && ctx.Err() == nil:
			r.missing = now
		case ctx.Err() != nil || now.Sub(r.missing) >= replicaLinger && r.open.Load() == 0 || now.Sub(r.missing) >= replicaLingerMost:
			r.cancel()
			_ = r.cc.Close()
			delete(a.replicas, addr)
			a.cfg.Log.Info("agent: manager pod gone", "manager", addr)
		}
	}
	for addr := range want {
		if a.replicas[addr] != nil || ctx.Err() != nil {
			continue
		}
		cc, err := grpc.NewClient("passthrough:///"+addr, append(tunnel.AgentDialOptions(),
			grpc.WithTransportCredentials(a.creds),
			grpc.WithPerRPCCredentials(token{file: a.cfg.TokenFile}),
		)...)
		if err != nil {
			a.cfg.Log.Warn("agent: cannot reach a manager pod", "manager", addr, "err", err)
			continue
		}
		rctx, cancel := context.WithCancel(ctx)
		r := &replica{addr: addr, cc: cc, client: tunnelpb.NewAgentsClient(cc), cancel: cancel}
		r.clear()
		a.replicas[addr] = r
		go a.watch(rctx, r)
	}
	a.rebuildLocked()
}

// lookupPods is Config.Pods by default: the addresses of the manager's headless Service.
func lookupPods(manager string) func(ctx context.Context) ([]string, error) {
	pods := agentspec.PodsAddress(manager)
	return func(ctx context.Context) ([]string, error) {
		if pods == "" {
			return nil, nil
		}
		host, port, _ := net.SplitHostPort(pods)
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			return nil, err
		}
		out := make([]string, 0, len(ips))
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
		slices.Sort(out)
		return out, nil
	}
}
