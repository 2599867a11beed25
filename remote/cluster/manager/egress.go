package manager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Egress through a workload (tp run --egress workload): a client's connection leaves from
// one of the workload's pods, so that NetworkPolicies, meshes and allow-lists see that
// workload. The manager keeps every decision: it checks the client's egress grant, resolves
// the destination and applies its dial policy as for any dial, and only then asks an agent
// of the workload, over the agent's Watch stream, to connect to the address it chose. The
// agent dials from its pod's network and opens a Flow back carrying the egress id and its
// dial's result; the manager pairs that Flow with the client's stream and relays the two.

// Egress opens connections from a workload's pods.
type Egress interface {
	// Egress has an agent of via's workload connect to address (ip:port, allowed by the
	// dial policy) and returns its stream once it connected, with the address it reached
	// and a func that ends the stream; a dial that failed comes back as a *remote.Error.
	Egress(ctx context.Context, via *tunnelpb.Via, network, address string) (stream tunnel.Stream, remoteAddr string, end func(), err error)
}

// tunnelVia carries a client's connection through an agent of the workload it names.
func (s *Server) tunnelVia(stream tunnelpb.Manager_TunnelServer, d *tunnelpb.Dial) {
	var agent tunnel.Stream
	var remoteAddr string
	var end func() // set by the try that succeeded
	err := remote.Errorf(remote.Forbidden, "this manager carries no connections as a workload (--egress workload)")
	if s.cfg.Egress != nil {
		// Longer than a dial of the manager's own: waiting for an agent of the workload
		// (its pods may be starting), then its dial and answer.
		err = s.eachAllowed(stream.Context(), d, s.cfg.DialTimeout+defaultAgentWait+egressAnswerWait, func(ctx context.Context, hostport string) (err error) {
			agent, remoteAddr, end, err = s.cfg.Egress.Egress(ctx, d.GetVia(), d.GetNetwork(), hostport)
			return err
		})
	}
	if end != nil {
		defer end()
	}
	if err != nil {
		s.failed.Add(1)
		s.cfg.Log.Debug("egress failed", "address", d.GetAddress(), "via", describeVia(d.GetVia()), "err", err)
		_ = tunnel.Answer(stream, err, "")
		return
	}
	if tunnel.Answer(stream, nil, remoteAddr) != nil {
		return
	}
	if early := d.GetData(); len(early) > 0 {
		if agent.Send(&tunnelpb.Frame{Kind: &tunnelpb.Frame_Data{Data: early}}) != nil {
			return
		}
	}
	s.open.Add(1)
	defer s.open.Add(-1)
	if err := tunnel.Relay(stream, agent); err != nil && !errors.Is(err, context.Canceled) {
		s.cfg.Log.Debug("egress flow ended with an error", "address", d.GetAddress(), "err", err)
	}
}

func describeVia(v *tunnelpb.Via) string {
	return fmt.Sprintf("%s/%s -n %s", strings.ToLower(v.GetKind()), v.GetWorkload(), v.GetNamespace())
}

const (
	// defaultAgentWait is how long an egress dial waits for an agent of its workload to
	// register: right after tp run adds the agent, its pods are still starting.
	defaultAgentWait = 10 * time.Second
	// egressAnswerWait bounds the agent's answer: its own dial's timeout (agent.Egress: 10
	// s), and the trip.
	egressAnswerWait = 15 * time.Second
	// egressQueue is how many egress dials an agent may have waiting to be sent.
	egressQueue = 256
	// grantTTL is how long an egress grant the manager read stands: a removed grant stops
	// new connections within that, and a burst of connections costs one read.
	grantTTL = 10 * time.Second
	// maxGrantCache bounds the grants remembered.
	maxGrantCache = 4096
)

// egressFlow is an egress dial waiting for its agent's Flow.
type egressFlow struct {
	agent *agentConn
	taken chan tunnel.Stream
	done  chan struct{} // closed when the client's side ends, releasing the agent's Flow
}

type cachedGrant struct {
	holder string
	err    error
	at     time.Time
}

// Egress implements Egress with the registry's agents.
func (r *Registry) Egress(ctx context.Context, via *tunnelpb.Via, network, address string) (tunnel.Stream, string, func(), error) {
	holder, err := r.authorizeEgress(ctx, via)
	if errors.Is(err, ErrNotAuthorized) {
		return nil, "", nil, remote.Errorf(remote.Forbidden, "tp's manager refused to connect as %s: %w", describeVia(via), err)
	}
	if err != nil { // the API server did not answer: not a refusal
		return nil, "", nil, remote.Errorf(remote.Failed, "tp's manager could not check the egress grant for %s: %w", describeVia(via), err)
	}
	ag, err := r.egressAgent(ctx, via)
	if err != nil {
		return nil, "", nil, err
	}
	id := newFlowID()
	f := &egressFlow{agent: ag, taken: make(chan tunnel.Stream, 1), done: make(chan struct{})}
	r.mu.Lock()
	r.egress[id] = f
	r.mu.Unlock()
	end := sync.OnceFunc(func() { close(f.done) })
	defer func() {
		r.mu.Lock()
		delete(r.egress, id)
		r.mu.Unlock()
	}()
	select {
	case ag.egress <- &tunnelpb.EgressDial{Id: id, Network: network, Address: address}:
		select {
		case ag.notify <- struct{}{}:
		default:
		}
	default:
		end()
		return nil, "", nil, remote.Errorf(remote.Failed, "the agent of pod %s/%s has %d connections waiting to be opened; try again", ag.id.Namespace, ag.id.Pod, egressQueue)
	}
	r.log.Debug("egress", "via", describeVia(via), "holder", holder, "pod", ag.id.Pod, "address", address)
	var agent tunnel.Stream
	select {
	case agent = <-f.taken:
	case <-ag.gone:
		end()
		return nil, "", nil, remote.Errorf(remote.Failed, "the agent of pod %s/%s went away before it opened %s; try again", ag.id.Namespace, ag.id.Pod, address)
	case <-ctx.Done():
		end()
		return nil, "", nil, remote.Errorf(remote.Timeout, "the agent of pod %s/%s did not open %s in time", ag.id.Namespace, ag.id.Pod, address)
	case <-time.After(egressAnswerWait):
		end()
		return nil, "", nil, remote.Errorf(remote.Timeout, "the agent of pod %s/%s did not answer in %s (an agent older than tp's manager opens no connections: intercept or tp run --egress workload again to update it)",
			ag.id.Namespace, ag.id.Pod, egressAnswerWait)
	}
	// An agent that took the connection and then says nothing must not hold this dial
	// longer than the dial may last: ending the Flow ends the read.
	stop := context.AfterFunc(ctx, end)
	frame, err := agent.Recv()
	if !stop() {
		return nil, "", nil, remote.Errorf(remote.Timeout, "the agent of pod %s/%s did not say whether it reached %s in time", ag.id.Namespace, ag.id.Pod, address)
	}
	if err != nil {
		end()
		return nil, "", nil, remote.Errorf(remote.Failed, "the agent of pod %s/%s went away while connecting to %s", ag.id.Namespace, ag.id.Pod, address)
	}
	res := frame.GetDialResult()
	if res == nil {
		end()
		return nil, "", nil, remote.Errorf(remote.Failed, "the agent of pod %s/%s answered with %T, not a dial result", ag.id.Namespace, ag.id.Pod, frame.GetKind())
	}
	if err := tunnel.ResultError(res); err != nil {
		end()
		return nil, "", nil, err
	}
	return agent, res.GetRemoteAddr(), end, nil
}

// authorizeEgress checks the client's egress grant, remembering the answer for grantTTL.
func (r *Registry) authorizeEgress(ctx context.Context, via *tunnelpb.Via) (string, error) {
	if r.auth == nil {
		return "", fmt.Errorf("%w: this manager checks no grants", ErrNotAuthorized)
	}
	req := grant.Request{Namespace: via.GetNamespace(), Kind: via.GetKind(), Workload: via.GetWorkload(), Secret: via.GetSecret(), Use: grant.UseEgress}
	sum := sha256.Sum256([]byte(strings.Join([]string{req.Namespace, req.Kind, req.Workload, via.GetGrant(), req.Secret}, "\x00")))
	key := hex.EncodeToString(sum[:])
	r.mu.Lock()
	c, ok := r.grants[key]
	r.mu.Unlock()
	if ok && time.Since(c.at) < grantTTL {
		return c.holder, c.err
	}
	actx, cancel := context.WithTimeout(ctx, authorizeWait)
	defer cancel()
	holder, err := r.auth.Authorize(actx, via.GetGrant(), req)
	if err != nil && !errors.Is(err, ErrNotAuthorized) {
		return "", err // not an answer: ask again next time
	}
	r.mu.Lock()
	if len(r.grants) >= maxGrantCache {
		clear(r.grants)
	}
	r.grants[key] = cachedGrant{holder: holder, err: err, at: time.Now()}
	r.mu.Unlock()
	return holder, err
}

// egressAgent picks an agent of via's workload at random, waiting a while for one.
func (r *Registry) egressAgent(ctx context.Context, via *tunnelpb.Via) (*agentConn, error) {
	key := interceptKey{namespace: via.GetNamespace(), kind: strings.ToLower(via.GetKind()), workload: via.GetWorkload()}
	deadline := time.Now().Add(r.agentWait)
	for {
		r.mu.Lock()
		var all []*agentConn
		for a := range r.agents {
			if a.matches(key) {
				all = append(all, a)
			}
		}
		r.mu.Unlock()
		if len(all) > 0 {
			return all[rand.IntN(len(all))], nil
		}
		if time.Now().After(deadline) {
			return nil, remote.Explain(remote.Unreachable, fmt.Sprintf("no traffic agent of %s is connected to tp's manager", describeVia(via)),
				"--egress workload leaves from the workload's pods through tp's agent: tp run --as adds it; see kubectl get pods for pods that do not start")
		}
		select {
		case <-ctx.Done():
			return nil, remote.Errorf(remote.Timeout, "waiting for a traffic agent of %s: %w", describeVia(via), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// takeEgress gives the Flow an agent opened for egress id to the dial that waits for it:
// only the agent that was asked may answer.
func (r *Registry) takeEgress(ctx context.Context, id AgentIdentity, d *tunnelpb.Dial, stream tunnel.Stream) error {
	r.mu.Lock()
	f := r.egress[d.GetEgress()]
	r.mu.Unlock()
	if f == nil {
		// Given up (the dial's time ran out) or never asked: the agent ends its side.
		return status.Errorf(codes.InvalidArgument, "no egress connection %q is waiting", d.GetEgress())
	}
	if f.agent.id.Namespace != id.Namespace || f.agent.id.Pod != id.Pod {
		r.log.Warn("agent answered another agent's egress", "pod", id.Namespace+"/"+id.Pod)
		return status.Errorf(codes.PermissionDenied, "egress connection %q was asked of another pod", d.GetEgress())
	}
	select {
	case f.taken <- stream:
	default:
		return status.Errorf(codes.InvalidArgument, "egress connection %q was answered already", d.GetEgress())
	}
	select {
	case <-f.done:
	case <-ctx.Done():
	}
	return nil
}
