package manager

import (
	"context"
	"time"

	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Drain hands this manager pod's work to the others when it is about to stop (a rollout,
// a node drain), so that no developer sees it go:
//
//  1. Its agents hear that it is draining: it holds no intercept from now on. They hold
//     new connections to the ports it held, for a few seconds, until another pod's routes
//     take them (rather than give them to the app in the gap).
//  2. The connections already announced to clients are given time to be taken (settle),
//     so none is lost between the two pods.
//  3. Each client hears Moving on its intercept stream; then that stream ends. The client
//     asserts its intercepts again on a new stream, which reaches another pod once the
//     client API's connections are told to go away (the caller stops that server
//     gracefully when Drain returns). Flows already open finish where they are.
//
// Drain returns once every client has heard Moving (or ctx ends). Draining is for good:
// a registry that drains takes no new intercept.
func (r *Registry) Drain(ctx context.Context, pod string, settle time.Duration) {
	r.mu.Lock()
	if r.draining != "" {
		r.mu.Unlock()
		return
	}
	r.draining = pod
	var agents []*agentConn
	for a := range r.agents {
		select {
		case a.notify <- struct{}{}:
		default:
		}
		agents = append(agents, a)
	}
	r.mu.Unlock()
	// Every agent has its word before anything here stops: one that has not would hand a
	// connection to this pod as it goes.
	told := time.NewTimer(settle)
	defer told.Stop()
agents:
	for _, a := range agents {
		select {
		case <-a.gone:
		case <-told.C:
			r.log.Warn("draining: agents slow to hear it are left behind")
			break agents
		case <-ctx.Done():
			return
		}
	}
	r.log.Info("draining: agents told; clients move next", "pod", pod, "agents", len(agents))

	deadline := time.Now().Add(settle)
	for time.Now().Before(deadline) && ctx.Err() == nil && r.waiting() > 0 {
		time.Sleep(20 * time.Millisecond)
	}

	r.mu.Lock()
	var moving []*clientSession
	for c := range r.clients {
		r.moveLocked(c)
		moving = append(moving, c)
	}
	r.mu.Unlock()
	// Each client's stream sends Moving, or ends on its own; one that does neither in time
	// (a stuck stream) must not hold the others on this pod.
	wait := time.NewTimer(settle)
	defer wait.Stop()
	for _, c := range moving {
		select {
		case <-c.moved:
		case <-c.done:
		case <-wait.C:
			r.log.Warn("draining: clients slow to hear Moving are left behind")
			return
		case <-ctx.Done():
			return
		}
	}
	r.log.Info("draining: clients told to move", "clients", len(moving))
}

// waiting counts the connections announced to clients and not taken yet.
func (r *Registry) waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.pending {
		if !p.taken {
			n++
		}
	}
	return n
}

// moveLocked queues Moving for c, once; c.moved closes when it was sent, and the client's
// stream ends then. A client too slow to take it is ended without it: it asserts its
// intercepts again on its next stream anyway.
func (r *Registry) moveLocked(c *clientSession) chan struct{} {
	if c.moveAsked {
		return c.moved
	}
	c.moveAsked = true
	if !r.sendLocked(c, &tunnelpb.InterceptServerMsg{Kind: &tunnelpb.InterceptServerMsg_Moving{Moving: &tunnelpb.Moving{Pod: r.draining}}}) {
		close(c.moved)
	}
	return c.moved
}

// Draining reports whether Drain was called.
func (r *Registry) Draining() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.draining != ""
}
