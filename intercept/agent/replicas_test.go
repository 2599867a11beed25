package agent

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

func TestPodsAddressNamesTheHeadlessService(t *testing.T) {
	for in, want := range map[string]string{
		"tp-manager.tp-system.svc:8082":          "tp-manager-pods.tp-system.svc:8082",
		"tp-manager.team.svc.cluster.local:8082": "tp-manager-pods.team.svc.cluster.local:8082",
		"10.96.0.7:8082":                         "",
		"tp-manager:8082":                        "",
		"no-port.tp-system.svc":                  "",
		"[fd00::1]:8082":                         "",
	} {
		if got := agentspec.PodsAddress(in); got != want {
			t.Errorf("PodsAddress(%q) = %q, want %q", in, got, want)
		}
	}
}

func newTestAgent(addrs ...string) (*Agent, []*replica) {
	a := &Agent{cfg: Config{Log: slog.New(slog.DiscardHandler)}, replicas: map[string]*replica{}}
	var rs []*replica
	for _, addr := range addrs {
		r := &replica{addr: addr}
		r.clear()
		a.replicas[addr] = r
		rs = append(rs, r)
	}
	a.rebuildLocked()
	return a, rs
}

func TestTheAgentMergesTheManagerPodsAndHoldsAMovingPort(t *testing.T) {
	a, rs := newTestAgent("10.0.0.1:8082", "10.0.0.2:8082")
	one, two := rs[0], rs[1]
	a.take(one, &tunnelpb.AgentState{}, map[string]bool{"http": true}, nil, nil)
	a.take(two, &tunnelpb.AgentState{}, nil, map[string]route.Table{"api": {{ID: "r-2"}}}, map[string]portTaps{"http": {whole: []string{"tap-2"}}})
	a.mu.Lock()
	v := a.view
	a.mu.Unlock()
	if v.intercepted["http"] != one || v.owner["r-2"] != two || v.owner["tap-2"] != two || len(v.routes["api"]) != 1 || len(v.taps["http"].whole) != 1 {
		t.Fatalf("merged view %+v", v)
	}

	// The first pod drains: its port is held, not given to the app, until the second pod
	// has it.
	a.take(one, &tunnelpb.AgentState{Draining: true}, nil, nil, nil)
	if a.isIntercepted("http") {
		t.Fatal("a draining pod's intercept still takes connections")
	}
	released := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		a.awaitMove(context.Background(), "http")
		released <- time.Since(start)
	}()
	select {
	case <-released:
		t.Fatal("a connection to a moving port went on before any pod had it")
	case <-time.After(100 * time.Millisecond):
	}
	a.take(two, &tunnelpb.AgentState{}, map[string]bool{"http": true}, nil, nil)
	select {
	case <-released:
	case <-time.After(time.Second):
		t.Fatal("the held connection did not go on once another pod had the port")
	}
	if a.isIntercepted("http") != true || a.view.intercepted["http"] != two {
		t.Errorf("the port is now %v's", a.view.intercepted["http"])
	}

	// A manager pod that names a pod the agent does not know makes it connect at once.
	a.kick = make(chan struct{}, 1)
	a.take(two, &tunnelpb.AgentState{Managers: []string{"10.0.0.1:8082", "10.0.0.2:8082"}}, map[string]bool{"http": true}, nil, nil)
	select {
	case <-a.kick:
		t.Error("known manager pods made the agent look again")
	default:
	}
	a.take(two, &tunnelpb.AgentState{Managers: []string{"10.0.0.2:8082", "10.0.0.3:8082"}}, map[string]bool{"http": true}, nil, nil)
	select {
	case <-a.kick:
	default:
		t.Error("a new manager pod did not make the agent look")
	}

	// A port nobody held never waits; a held one waits no longer than its caller.
	a.take(two, &tunnelpb.AgentState{Draining: true}, nil, nil, nil)
	a.awaitMove(context.Background(), "other")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	a.awaitMove(ctx, "http")
	if took := time.Since(start); took > time.Second {
		t.Errorf("a held connection waited %s past its caller's end", took)
	}
}

// Two developers with filtered intercepts of one port, on two manager pods: when one pod
// drains, its developer's requests wait for that developer's route on the other pod, not
// just for any route there (the other developer's was there all along).
func TestAHeldSharedPortWaitsForTheMovedRoute(t *testing.T) {
	a, rs := newTestAgent("10.0.0.1:8082", "10.0.0.2:8082")
	one, two := rs[0], rs[1]
	a.take(one, &tunnelpb.AgentState{}, nil, map[string]route.Table{"api": {{ID: "alice"}}}, nil)
	a.take(two, &tunnelpb.AgentState{}, nil, map[string]route.Table{"api": {{ID: "bob"}}}, nil)
	a.take(one, &tunnelpb.AgentState{Draining: true}, nil, nil, nil)
	a.take(two, &tunnelpb.AgentState{}, nil, map[string]route.Table{"api": {{ID: "bob"}}}, nil) // an unchanged tick
	a.mu.Lock()
	_, held := a.view.held["api"]
	a.mu.Unlock()
	if !held {
		t.Fatal("the port was let go while only the other developer's route was there")
	}
	a.take(two, &tunnelpb.AgentState{}, nil, map[string]route.Table{"api": {{ID: "bob"}, {ID: "alice-again"}}}, nil)
	a.mu.Lock()
	_, held = a.view.held["api"]
	a.mu.Unlock()
	if held {
		t.Error("the port is still held after the moved route came")
	}
}

// A manager pod that crashed keeps its word until Stale (a blip must not drop an intercept),
// but once another pod speaks for the same port, that pod takes the connections.
func TestALostPodYieldsToOneThatSpeaks(t *testing.T) {
	a, rs := newTestAgent("10.0.0.1:8082", "10.0.0.9:8082")
	dead, fresh := rs[0], rs[1]
	a.take(dead, &tunnelpb.AgentState{}, map[string]bool{"http": true, "admin": true}, nil, nil)
	a.mu.Lock()
	dead.connected = false
	a.rebuildLocked()
	a.mu.Unlock()
	if a.view.intercepted["http"] != dead {
		t.Fatal("a lost pod's intercept was dropped at once")
	}
	a.take(fresh, &tunnelpb.AgentState{}, map[string]bool{"http": true}, nil, nil)
	if a.view.intercepted["http"] != fresh {
		t.Errorf("the port goes to %v, want the pod that speaks", a.view.intercepted["http"].addr)
	}
}
