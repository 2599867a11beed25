package manager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// A probe proves that a workload's Service delivers to its agents, so that tp intercept
// returns only once a request to the Service reaches the developer: after a rollout
// kube-proxy may still send connections to pods that are gone ("no route to host") or
// still without the agent. The manager connects to the Service as any client in the
// cluster would, and an agent's Flow whose origin is that connection's address is the
// probe coming back. The manager ends it: neither the app nor the client sees it.

// maxProbes bounds the connections one Probe makes.
const maxProbes = 10

// probeWait bounds one probe connection, its dial included.
const probeWait = 1500 * time.Millisecond

// ProbeDialer connects to a Service for a probe: address as a client gave it, resolved
// with namespace's search path, under the manager's dial policy.
type ProbeDialer func(ctx context.Context, address, namespace string) (net.Conn, error)

// SetProbeDialer lets the registry probe Services; without one, a Probe is answered with
// an error.
func (r *Registry) SetProbeDialer(d ProbeDialer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.probeDial = d
}

// startProbeLocked answers p for client c on its own goroutine: the probe's connections
// take seconds, and the session's messages must not wait for them.
func (r *Registry) startProbeLocked(ctx context.Context, c *clientSession, p *tunnelpb.Probe) {
	it := r.findLocked(c, p.GetName())
	res := &tunnelpb.ProbeResult{Name: p.GetName()}
	switch {
	case it == nil:
		res.Error = fmt.Sprintf("no intercept named %q is held by this client", p.GetName())
	case r.probeDial == nil:
		res.Error = "this manager cannot probe Services"
	case p.GetAddress() == "":
		res.Error = "a probe needs the Service's address"
	}
	if res.Error != "" {
		r.sendLocked(c, &tunnelpb.InterceptServerMsg{Kind: &tunnelpb.InterceptServerMsg_Probe{Probe: res}})
		return
	}
	if c.probing {
		res.Error = "a probe of this client is under way already"
		r.sendLocked(c, &tunnelpb.InterceptServerMsg{Kind: &tunnelpb.InterceptServerMsg_Probe{Probe: res}})
		return
	}
	c.probing = true
	dial, n := r.probeDial, min(max(int(p.GetCount()), 1), maxProbes)
	go func() {
		defer func() {
			r.mu.Lock()
			c.probing = false
			r.mu.Unlock()
		}()
		for range n {
			err := r.probeOnce(ctx, dial, p.GetAddress(), p.GetNamespace(), it)
			if err != nil {
				res.Error = err.Error()
				continue
			}
			res.Delivered++
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.sendLocked(c, &tunnelpb.InterceptServerMsg{Kind: &tunnelpb.InterceptServerMsg_Probe{Probe: res}})
	}()
}

// probeOnce makes one probe connection and waits for an agent to hand it back. A filtered
// intercept's agent hands over a request, not a connection: the probe sends one that only
// its filter takes (its id header).
func (r *Registry) probeOnce(ctx context.Context, dial ProbeDialer, address, namespace string, it *intercept) error {
	id := ""
	if it.filter != nil {
		id = it.filter.ID
	}
	ctx, cancel := context.WithTimeout(ctx, probeWait)
	defer cancel()
	conn, err := dial(ctx, address, namespace)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", address, err)
	}
	defer conn.Close()
	back := make(chan struct{}, 1)
	origin := conn.LocalAddr().String()
	r.mu.Lock()
	r.probes[origin] = &probeConn{back: back, it: it}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.probes, origin)
		r.mu.Unlock()
	}()
	if id != "" {
		host, _, _ := strings.Cut(address, ":")
		req := fmt.Sprintf("GET /.tp-probe HTTP/1.1\r\nHost: %s\r\n%s: %s\r\nConnection: close\r\n\r\n", host, route.IDHeader, id)
		if _, err := conn.Write([]byte(req)); err != nil {
			return fmt.Errorf("probing %s: %w", address, err)
		}
	}
	select {
	case <-back:
		return nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("a connection to %s did not reach an agent of the intercept within %s (a service mesh's sidecar that rewrites source addresses hides the probe from tp: the intercept may work all the same)", address, probeWait)
		}
		return ctx.Err()
	}
}

// probeConn is one probe connection under way: it counts when an agent hands it to the
// intercept it probes (a wiretap's copy of it, or a connection of another port, does not).
type probeConn struct {
	back chan struct{}
	it   *intercept
}

// probeBackLocked reports whether an agent's flow from origin is a probe's connection (the
// manager then ends it), and tells its prober when the flow is for the intercept probed:
// key and route are what the agent said the flow is for.
func (r *Registry) probeBackLocked(origin string, key interceptKey, route string) bool {
	p := r.probes[origin]
	if p == nil {
		return false
	}
	if target, _ := r.flowTargetLocked(key, route); target == p.it {
		select {
		case p.back <- struct{}{}:
		default:
		}
	}
	return true
}
