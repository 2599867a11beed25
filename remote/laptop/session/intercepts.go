package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/connectivity"

	"github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// InterceptSpec is an intercept a session holds: connections to Port of the workload's
// pods come to Local on this machine.
type InterceptSpec struct {
	Name      string    `json:"name"`
	Namespace string    `json:"namespace"`
	Kind      string    `json:"kind"`
	Workload  string    `json:"workload"`
	Port      string    `json:"port"`  // the name the agent serves the intercepted port under
	Local     string    `json:"local"` // host:port here
	Since     time.Time `json:"since"`
	// Holder is the Kubernetes user the intercept's grant names (set once the manager
	// accepted it).
	Holder string `json:"holder,omitempty"`
	// Problem is what keeps the intercept from the workload's traffic, as the manager last
	// found it in the cluster (with what to do about it); empty when all is well. Set by
	// the session from the manager's reports, in Intercepts' answer only.
	Problem string `json:"problem,omitempty"`
	// HTTP, when set, filters the intercept: only the requests it matches come here.
	HTTP *route.Filter `json:"http,omitempty"`
	// Wiretap: copies come here (of what HTTP matches, or of every connection), and the
	// callers' answers still come from the app.
	Wiretap bool `json:"wiretap,omitempty"`
	// Group is the name of the intercept of several ports this one is a port of (tp leave
	// GROUP ends them all); empty for an intercept of one port.
	Group string `json:"group,omitempty"`
	// Probe, when set, asks the manager to prove, once the intercept is in place, that
	// the workload's Service delivers to its agents (Held.Delivered). It is not kept.
	Probe *ProbeSpec `json:"probe,omitempty"`
}

// ProbeSpec is a probe of the Service an intercept takes the traffic of: Count
// connections to Address (a cluster name and port; resolved in Namespace).
type ProbeSpec struct {
	Address   string `json:"address"`
	Namespace string `json:"namespace"`
	Count     int    `json:"count"`
}

// Held is the manager's answer to an intercept asked for.
type Held struct {
	// Agents is how many registered agents serve it.
	Agents int `json:"agents"`
	// Overlap names, for a filtered intercept, other intercepts of the port whose filters
	// may match the same requests, and where such a request goes.
	Overlap string `json:"overlap,omitempty"`
	// Delivered is how many of a probe's connections reached an agent, and ProbeError why
	// the others did not.
	Delivered  int    `json:"delivered,omitempty"`
	ProbeError string `json:"probeError,omitempty"`
	// Problem is what the manager finds keeps the intercept from the workload's traffic.
	Problem string `json:"problem,omitempty"`
}

// intercepts is the session's side of its intercepts: one Intercepts.Session stream (the
// lease), re-opened and re-asserted after the tunnel comes back.
type intercepts struct {
	mu      sync.Mutex
	specs   map[string]InterceptSpec
	stream  tunnelpb.Intercepts_SessionClient
	sendMu  sync.Mutex
	waiters map[string]chan *tunnelpb.InterceptResult
	probes  map[string]chan *tunnelpb.ProbeResult // by intercept name
	grants  map[string]heldGrant                  // by intercept name
	// problems is the manager's latest report per intercept name ("" or absent: none).
	problems  map[string]string
	onProblem func(name, problem string)
	who       string
	running   bool
}

const (
	renewEvery  = 3 * time.Second
	resultWait  = 15 * time.Second
	localDial   = 5 * time.Second
	reassertGap = time.Second
)

func (s *Session) icState() *intercepts {
	s.icOnce.Do(func() {
		who := "tp"
		if u, err := user.Current(); err == nil {
			who = u.Username
		}
		if h, err := os.Hostname(); err == nil {
			who += "@" + h
		}
		s.ic = &intercepts{specs: map[string]InterceptSpec{}, waiters: map[string]chan *tunnelpb.InterceptResult{}, grants: map[string]heldGrant{},
			probes:   map[string]chan *tunnelpb.ProbeResult{},
			problems: map[string]string{}, who: who}
	})
	return s.ic
}

// Intercept writes the intercept's grant (once per name and target), asks the manager for
// the intercept and keeps it (renewing it, and asserting it again after a reconnection)
// until Leave or Close.
func (s *Session) Intercept(ctx context.Context, spec InterceptSpec) (Held, error) {
	ic := s.icState()
	if _, _, err := net.SplitHostPort(spec.Local); err != nil {
		return Held{}, fmt.Errorf("intercept %s: local address %q: %w", spec.Name, spec.Local, err)
	}
	if spec.Since.IsZero() {
		spec.Since = time.Now()
	}
	probe := spec.Probe
	spec.Probe = nil
	ic.mu.Lock()
	oldGrant, hadGrant := ic.grants[spec.Name]
	ic.mu.Unlock()
	// A grant this session wrote for the same target serves again (tp intercept asks
	// every second until the agents are up); anything else gets a fresh one. When it
	// cannot be written the request goes without: the manager refuses it and says why.
	g, grantErr, wrote := oldGrant, error(nil), false
	if !hadGrant || oldGrant.target != spec.grantTarget() {
		ownHash := ""
		if hadGrant {
			ownHash = grant.Hash(oldGrant.secret)
		}
		g, grantErr = s.writeGrant(ctx, spec, ic.who, ownHash, s.grantLive)
		wrote = grantErr == nil
	}
	wait := make(chan *tunnelpb.InterceptResult, 1)
	ic.mu.Lock()
	old, had := ic.specs[spec.Name]
	ic.specs[spec.Name] = spec
	ic.waiters[spec.Name] = wait
	if grantErr == nil {
		ic.grants[spec.Name] = g
	} else {
		delete(ic.grants, spec.Name)
	}
	start := !ic.running
	ic.running = true
	ic.mu.Unlock()
	if start {
		go s.interceptLoop()
	}
	if err := s.sendCreate(spec); err != nil && !errors.Is(err, errNoStream) {
		return Held{}, err
	}
	select {
	case res := <-wait:
		if res.GetError() != "" {
			ic.mu.Lock()
			if had {
				ic.specs[spec.Name] = old
			} else {
				delete(ic.specs, spec.Name)
			}
			if hadGrant {
				ic.grants[spec.Name] = oldGrant
			} else {
				delete(ic.grants, spec.Name)
			}
			ic.mu.Unlock()
			if wrote && !hadGrant {
				_ = s.deleteGrant(s.ctx, spec.Namespace, g)
			}
			msg := res.GetError()
			if grantErr != nil {
				msg += " (" + grantErr.Error() + ")"
			}
			return Held{}, remote.Errorf(remote.Refused, "tp's manager refused the intercept: %s", msg)
		}
		ic.mu.Lock()
		if sp, ok := ic.specs[spec.Name]; ok {
			sp.Holder = res.GetHolder()
			ic.specs[spec.Name] = sp
		}
		ic.mu.Unlock()
		held := Held{Agents: int(res.GetAgents()), Overlap: res.GetOverlap(), Problem: res.GetProblem()}
		if probe != nil && held.Agents > 0 {
			held.Delivered, held.ProbeError = s.probe(ctx, spec.Name, probe)
		}
		return held, nil
	case <-time.After(resultWait):
		return Held{}, remote.Errorf(remote.Timeout, "the manager did not answer the intercept in %s: %v", resultWait, s.downError())
	case <-ctx.Done():
		return Held{}, ctx.Err()
	}
}

// probe asks the manager to probe the Service of the intercept name; it returns how many
// of the probe's connections reached an agent, and why the others did not.
func (s *Session) probe(ctx context.Context, name string, p *ProbeSpec) (int, string) {
	ic := s.icState()
	wait := make(chan *tunnelpb.ProbeResult, 1)
	ic.mu.Lock()
	ic.probes[name] = wait
	ic.mu.Unlock()
	defer func() {
		ic.mu.Lock()
		if ic.probes[name] == wait {
			delete(ic.probes, name)
		}
		ic.mu.Unlock()
	}()
	err := s.send(&tunnelpb.InterceptClientMsg{Kind: &tunnelpb.InterceptClientMsg_Probe{Probe: &tunnelpb.Probe{
		Name: name, Address: p.Address, Namespace: p.Namespace, Count: int32(p.Count)}}})
	if err != nil {
		return 0, fmt.Sprintf("asking the manager for a probe: %v", err)
	}
	select {
	case res := <-wait:
		return int(res.GetDelivered()), res.GetError()
	case <-time.After(resultWait + time.Duration(p.Count)*2*time.Second):
		return 0, "the manager did not answer the probe"
	case <-ctx.Done():
		return 0, ctx.Err().Error()
	}
}

// Leave ends an intercept.
func (s *Session) Leave(name string) error {
	ic := s.icState()
	ic.mu.Lock()
	spec, ok := ic.specs[name]
	g, hadGrant := ic.grants[name]
	delete(ic.specs, name)
	delete(ic.grants, name)
	delete(ic.problems, name)
	ic.mu.Unlock()
	if !ok {
		return remote.Errorf(remote.NoSuchHost, "no intercept named %q here", name)
	}
	if err := s.send(&tunnelpb.InterceptClientMsg{Kind: &tunnelpb.InterceptClientMsg_Leave{Leave: name}}); err != nil && !errors.Is(err, errNoStream) {
		return err
	}
	if hadGrant {
		if err := s.deleteGrant(context.Background(), spec.Namespace, g); err != nil {
			s.cfg.Log.Warn("intercept ended, its grant stays (harmless: its secret is gone)", "name", name, "err", err)
		}
	}
	return nil
}

// dropGrants removes the grants of every intercept this session holds, as it closes.
func (s *Session) dropGrants() {
	ic := s.icState()
	ic.mu.Lock()
	type held struct {
		ns string
		g  heldGrant
	}
	var all []held
	for name, g := range ic.grants {
		all = append(all, held{ic.specs[name].Namespace, g})
	}
	ic.grants = map[string]heldGrant{}
	ic.mu.Unlock()
	// One bound for all: a session closing while the API is unreachable must not hang.
	ctx, cancel := context.WithTimeout(context.Background(), grantWait)
	defer cancel()
	for _, h := range all {
		if err := s.deleteGrant(ctx, h.ns, h.g); err != nil {
			s.cfg.Log.Warn("closing: an intercept grant stays (harmless: its secret is gone)", "lease", h.g.lease, "err", err)
		}
	}
}

// grantLive asks the manager whether an intercept holds the grant ns/lease with hash.
func (s *Session) grantLive(ns, lease, hash string) bool {
	ctx, cancel := context.WithTimeout(s.ctx, grantWait)
	defer cancel()
	resp, err := s.ctl.intercepts.List(ctx, &tunnelpb.ListRequest{Grants: []*tunnelpb.GrantRef{{Namespace: ns, Name: lease, SecretSha256: hash}}})
	// Not knowing counts as live: taking over another's grant must be sure.
	return err != nil || len(resp.GetIntercepts()) > 0
}

// SetLocalDial sets how intercepted connections reach their local address (by default a
// TCP dial on this machine): tp run's VIF dials into its namespace instead.
func (s *Session) SetLocalDial(dial func(ctx context.Context, addr string) (net.Conn, error)) {
	s.localDial.Store(&dial)
}

// Intercepts lists the intercepts this session holds.
func (s *Session) Intercepts() []InterceptSpec {
	ic := s.icState()
	ic.mu.Lock()
	defer ic.mu.Unlock()
	out := make([]InterceptSpec, 0, len(ic.specs))
	for _, sp := range ic.specs {
		sp.Problem = ic.problems[sp.Name]
		out = append(out, sp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// OnInterceptProblem has f called whenever the manager's report of an intercept's problem
// changes: a problem appears or changes (problem is what to tell the user), or clears
// (problem is ""). f runs on the session's receiving goroutine: it must not block.
func (s *Session) OnInterceptProblem(f func(name, problem string)) {
	ic := s.icState()
	ic.mu.Lock()
	ic.onProblem = f
	ic.mu.Unlock()
}

// ListIntercepts asks the manager about the intercepts in namespace ("" = all) whose grants
// this session's credentials may read: the API server decides what a developer sees.
func (s *Session) ListIntercepts(ctx context.Context, namespace string) ([]*tunnelpb.InterceptInfo, error) {
	if s.State() != Connected {
		return nil, s.downError()
	}
	refs, err := s.grantRefs(ctx, namespace)
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, nil
	}
	resp, err := s.ctl.intercepts.List(ctx, &tunnelpb.ListRequest{Grants: refs})
	if err != nil {
		return nil, fmt.Errorf("listing intercepts: %w", err)
	}
	return resp.GetIntercepts(), nil
}

var errNoStream = errors.New("no intercept session yet")

func (s *Session) send(m *tunnelpb.InterceptClientMsg) error {
	ic := s.icState()
	ic.mu.Lock()
	st := ic.stream
	ic.mu.Unlock()
	if st == nil {
		return errNoStream
	}
	ic.sendMu.Lock()
	defer ic.sendMu.Unlock()
	return st.Send(m)
}

func (s *Session) sendCreate(spec InterceptSpec) error {
	ic := s.icState()
	ic.mu.Lock()
	g := ic.grants[spec.Name]
	ic.mu.Unlock()
	req := &tunnelpb.InterceptRequest{
		Name: spec.Name, Namespace: spec.Namespace, Kind: spec.Kind, Workload: spec.Workload, Port: spec.Port, Client: ic.who,
		Grant: g.lease, Secret: g.secret, Wiretap: spec.Wiretap,
	}
	if spec.HTTP != nil {
		req.Http = spec.HTTP.Proto()
	}
	return s.send(&tunnelpb.InterceptClientMsg{Kind: &tunnelpb.InterceptClientMsg_Create{Create: req}})
}

// errMoving ends an intercept stream whose manager pod is stopping.
var errMoving = errors.New("the manager pod is stopping")

// interceptLoop keeps an intercept session open while the session lives: it opens the
// stream, asserts every intercept on it, renews them, takes the announced connections, and
// after a break starts over.
func (s *Session) interceptLoop() {
	ic := s.icState()
	for s.ctx.Err() == nil {
		err := s.interceptSession()
		ic.mu.Lock()
		ic.stream = nil
		ic.mu.Unlock()
		if s.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errMoving) {
			// At once (the agents hold the intercepted ports meanwhile), once the channel
			// left the pod that goes: a stream opened before would reach it again.
			wctx, cancel := context.WithTimeout(s.ctx, time.Second)
			if s.ctl.cc.GetState() == connectivity.Ready {
				s.ctl.cc.WaitForStateChange(wctx, connectivity.Ready)
			}
			cancel()
			continue
		}
		s.cfg.Log.Warn("intercept session ended; asserting the intercepts again", "err", err)
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(reassertGap):
		}
	}
}

func (s *Session) interceptSession() error {
	ic := s.icState()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stream, err := s.ctl.intercepts.Session(ctx)
	if err != nil {
		return err
	}
	ic.mu.Lock()
	ic.stream = stream
	specs := make([]InterceptSpec, 0, len(ic.specs))
	for _, sp := range ic.specs {
		specs = append(specs, sp)
	}
	ic.mu.Unlock()
	for _, sp := range specs {
		if err := s.sendCreate(sp); err != nil {
			return err
		}
	}
	go remote.Every(ctx, renewEvery, func(time.Time) bool {
		if err := s.send(&tunnelpb.InterceptClientMsg{Kind: &tunnelpb.InterceptClientMsg_Renew{Renew: &tunnelpb.Renew{}}}); err != nil {
			cancel()
			return false
		}
		return true
	})
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		switch k := m.GetKind().(type) {
		case *tunnelpb.InterceptServerMsg_Result:
			s.takeResult(k.Result)
		case *tunnelpb.InterceptServerMsg_Incoming:
			go s.takeIncoming(k.Incoming)
		case *tunnelpb.InterceptServerMsg_Moving:
			// The pod goes away; the stream ends next. The next stream reaches another pod.
			s.noteMoving(k.Moving.GetPod())
			return errMoving
		case *tunnelpb.InterceptServerMsg_Probe:
			ic.mu.Lock()
			if w := ic.probes[k.Probe.GetName()]; w != nil {
				select {
				case w <- k.Probe:
				default:
				}
			}
			ic.mu.Unlock()
		}
	}
}

// takeResult hands the manager's result to whoever waits for it (Intercept), and keeps
// the problem it reports for an intercept this session holds, telling OnInterceptProblem's
// function when it changed. The manager sends a result on every request and, marked as a
// report, whenever the problem changes.
func (s *Session) takeResult(res *tunnelpb.InterceptResult) {
	ic := s.icState()
	name := res.GetName()
	ic.mu.Lock()
	var w chan *tunnelpb.InterceptResult
	if !res.GetReport() {
		w = ic.waiters[name]
		delete(ic.waiters, name)
	}
	changed, f := false, ic.onProblem
	if _, held := ic.specs[name]; held && res.GetError() == "" && ic.problems[name] != res.GetProblem() {
		changed = true
		if res.GetProblem() == "" {
			delete(ic.problems, name)
		} else {
			ic.problems[name] = res.GetProblem()
		}
	}
	ic.mu.Unlock()
	if changed {
		if res.GetProblem() != "" {
			s.logger().Warn("intercept problem", "name", name, "problem", res.GetProblem())
		} else {
			s.logger().Info("intercept delivers again", "name", name)
		}
		if f != nil {
			f(name, res.GetProblem())
		}
	}
	if w != nil {
		w <- res
	} else if res.GetError() != "" {
		s.logger().Warn("intercept lost", "name", name, "why", res.GetError())
	}
}

// logger is the session's log (none for a Session a test made bare).
func (s *Session) logger() *slog.Logger {
	if s.cfg.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.cfg.Log
}

// takeIncoming brings one intercepted connection to its local address.
func (s *Session) takeIncoming(in *tunnelpb.Incoming) {
	ic := s.icState()
	ic.mu.Lock()
	spec, ok := ic.specs[in.GetIntercept()]
	ic.mu.Unlock()
	reject := func(why string) {
		_ = s.send(&tunnelpb.InterceptClientMsg{Kind: &tunnelpb.InterceptClientMsg_Reject{Reject: &tunnelpb.Reject{Flow: in.GetFlow(), Reason: why}}})
	}
	if !ok {
		reject("no such intercept here")
		return
	}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	if d := s.localDial.Load(); d != nil {
		dial = *d
	}
	dctx, dcancel := context.WithTimeout(s.ctx, localDial)
	local, err := dial(dctx, spec.Local)
	dcancel()
	if err != nil {
		s.cfg.Log.Info("intercepted connection refused here", "intercept", spec.Name, "local", spec.Local, "err", err)
		reject(fmt.Sprintf("nothing answers at %s on the intercepting machine", spec.Local))
		return
	}
	sctx, end := context.WithCancel(s.ctx)
	// An intercepted flow rides a flow lane like an outbound one: a bulk upload to the
	// laptop must not hold up names and other flows.
	ctx, cancel := context.WithTimeout(s.ctx, resultWait)
	defer cancel()
	ln := s.pickLane(ctx)
	// Whatever fails from here, the manager hears of it: a connection nobody takes would
	// wait for it to give up (acceptWait) before reaching the app.
	stream, err := ln.intercepts.Accept(sctx)
	if err != nil {
		end()
		ln.release()
		local.Close()
		reject(fmt.Sprintf("the intercepting machine could not take it: %v", err))
		return
	}
	c, err := tunnel.OpenFlow(ctx, stream, end, &tunnelpb.Dial{Network: "tcp", Address: in.GetFlow()})
	if err != nil {
		ln.release()
		local.Close()
		reject(fmt.Sprintf("the intercepting machine could not take it: %v", err))
		return
	}
	_, _, _ = remote.Splice(s.count(c, ln), local)
}
