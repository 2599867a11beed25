package manager

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tpdev/tp/intercept/agent"
	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// intercepting asks for intercept name of port http of webAgent's workload, for holder from
// client; f nil asks for a global one.
func intercepting(name, holder, client string, f *tunnelpb.HTTPFilter) *tunnelpb.InterceptClientMsg {
	m := create(name, webAgent.Workload, holder, "ok")
	m.GetCreate().Namespace = webAgent.Namespace
	m.GetCreate().Client = client
	m.GetCreate().Http = f
	return m
}

func header(name, value string) *tunnelpb.HTTPFilter {
	return &tunnelpb.HTTPFilter{Headers: []*tunnelpb.Match{{Name: name, Value: value}}}
}

// mustIntercept makes the intercept m asks for, and returns the manager's answer.
func mustIntercept(t *testing.T, r *Registry, c *clientSession, m *tunnelpb.InterceptClientMsg) *tunnelpb.InterceptResult {
	t.Helper()
	r.handleClient(context.Background(), c, m)
	res := result(t, c)
	if res.GetError() != "" {
		t.Fatalf("intercept %s: %s", m.GetCreate().GetName(), res.GetError())
	}
	return res
}

// mustRefuse asks for the intercept m names and returns the refusal.
func mustRefuse(t *testing.T, r *Registry, c *clientSession, m *tunnelpb.InterceptClientMsg) string {
	t.Helper()
	r.handleClient(context.Background(), c, m)
	res := result(t, c)
	if res.GetError() == "" {
		t.Fatalf("intercept %s was made; want a refusal", m.GetCreate().GetName())
	}
	return res.GetError()
}

func leave(r *Registry, c *clientSession, name string) {
	r.handleClient(context.Background(), c, &tunnelpb.InterceptClientMsg{Kind: &tunnelpb.InterceptClientMsg_Leave{Leave: name}})
}

// agentState is what webAgent, serving port http, hears when it registers.
func agentState(t *testing.T, r *Registry) *tunnelpb.AgentState {
	t.Helper()
	hello := agent.Hello(webAgent.Pod, webAgent.Namespace, "v1", []agent.Port{{Name: "http", Listen: 9900, App: 8080}})
	s, err := watch(t, r, []string{"Bearer " + agentToken}, hello)
	if err != nil || len(s.states) != 1 {
		t.Fatalf("Watch: %v, states %v", err, s.states)
	}
	return s.states[0]
}

// routes is the route ids the agent has for port http, in order, and checks that the port
// is not also intercepted whole.
func routes(t *testing.T, st *tunnelpb.AgentState) []string {
	t.Helper()
	if len(st.GetIntercepted()) != 0 {
		t.Errorf("filtered intercepts' port is intercepted whole too: %v", st)
	}
	var ids []string
	for _, pr := range st.GetRoutes() {
		if pr.GetPort() != "http" {
			t.Errorf("routes for port %q", pr.GetPort())
		}
		for _, rt := range pr.GetRoutes() {
			ids = append(ids, rt.GetId())
		}
	}
	return ids
}

// handOver is webAgent handing the manager a connection of port http that it routed to
// routeID; the Flow runs until the connection is taken, refused or times out.
func handOver(r *Registry, routeID string) (*flowStream, chan error) {
	dial := &tunnelpb.Frame{Kind: &tunnelpb.Frame_Dial{Dial: &tunnelpb.Dial{Network: "tcp", Address: "http", Route: routeID}}}
	s := &flowStream{ctx: metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+agentToken)), in: []*tunnelpb.Frame{dial}}
	done := make(chan error, 1)
	go func() { done <- r.AgentAPI().Flow(s) }()
	return s, done
}

func incoming(t *testing.T, c *clientSession) *tunnelpb.Incoming {
	t.Helper()
	select {
	case m := <-c.out:
		if m.GetIncoming() == nil {
			t.Fatalf("the client was told %v, want an incoming connection", m)
		}
		return m.GetIncoming()
	case <-time.After(2 * time.Second):
		t.Fatal("the client heard of no incoming connection")
		return nil
	}
}

// refusedFlow waits for a Flow to end with a refusal that says want.
func refusedFlow(t *testing.T, s *flowStream, done chan error, within time.Duration, want string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil || len(s.sent) != 1 || s.sent[0].GetDialResult().GetCode() != tunnelpb.Code_CODE_REFUSED ||
			!strings.Contains(s.sent[0].GetDialResult().GetMessage(), want) {
			t.Fatalf("Flow: %v, answered %v; want a refusal saying %q", err, s.sent, want)
		}
	case <-time.After(within):
		t.Fatalf("the connection is still pending after %s", within)
	}
}

// Two developers hold filtered intercepts of one port: the agent routes by both, in the
// order they were made, and a connection reaches the client of the route it names.
func TestFilteredInterceptsShareAPort(t *testing.T) {
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	alice, bob := newClient(r), newClient(r)
	if res := mustIntercept(t, r, alice, intercepting("a", "alice", "alice@laptop", header("x-dev", "a"))); res.GetOverlap() != "" {
		t.Errorf("the first intercept of a port overlaps: %q", res.GetOverlap())
	}
	if res := mustIntercept(t, r, bob, intercepting("b", "bob", "bob@laptop", header("x-dev", "b"))); res.GetOverlap() != "" {
		t.Errorf("x-dev=b overlaps x-dev=a: %q", res.GetOverlap())
	}
	st := agentState(t, r)
	ids := routes(t, st)
	if len(ids) != 2 || ids[0] == ids[1] || len(ids[0]) != 16 {
		t.Fatalf("the agent's routes: %v", st)
	}
	if got := st.GetRoutes()[0].GetRoutes()[0].GetHttp(); !proto.Equal(got, header("x-dev", "a")) {
		t.Errorf("alice's route filters %v", got)
	}

	s, done := handOver(r, ids[1])
	if in := incoming(t, bob); in.GetIntercept() != "b" {
		t.Errorf("bob was handed a connection of intercept %q", in.GetIntercept())
	}
	if len(alice.out) != 0 {
		t.Errorf("alice heard of bob's connection: %v", <-alice.out)
	}
	r.handleClient(context.Background(), bob, &tunnelpb.InterceptClientMsg{Kind: &tunnelpb.InterceptClientMsg_Reject{Reject: &tunnelpb.Reject{Flow: incomingFlow(r)}}})
	refusedFlow(t, s, done, time.Second, "refused the connection")

	// A connection that names no route, or one that ended, goes to the app.
	s, done = handOver(r, "")
	refusedFlow(t, s, done, time.Second, "filtered intercepts hold it")
	s, done = handOver(r, "0123456789abcdef")
	refusedFlow(t, s, done, time.Second, "the intercept of route 0123456789abcdef on port http of default/web ended")

	resp, err := r.ClientAPI().List(context.Background(), &tunnelpb.ListRequest{Grants: []*tunnelpb.GrantRef{
		{Namespace: webAgent.Namespace, Name: "alice", SecretSha256: grant.Hash("ok")}, {Namespace: webAgent.Namespace, Name: "bob", SecretSha256: grant.Hash("ok")}}})
	if err != nil || len(resp.GetIntercepts()) != 2 {
		t.Fatalf("List: %v, %v", resp, err)
	}
	for i, want := range []*tunnelpb.HTTPFilter{header("x-dev", "a"), header("x-dev", "b")} {
		if got := resp.GetIntercepts()[i]; !proto.Equal(got.GetHttp(), want) || got.GetPort() != "http" {
			t.Errorf("List tells %v; want the filter %v", got, want)
		}
	}
}

// incomingFlow is the one pending flow's id.
func incomingFlow(r *Registry) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.pending {
		return id
	}
	return ""
}

// A global intercept holds the port alone: no filtered one beside it, and none beside
// filtered ones; the refusal says who holds what.
func TestGlobalAndFilteredInterceptsExcludeEachOther(t *testing.T) {
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	alice, bob := newClient(r), newClient(r)
	mustIntercept(t, r, alice, intercepting("all", "alice", "alice@laptop", nil))
	msg := mustRefuse(t, r, bob, intercepting("b", "bob", "bob@laptop", header("x-dev", "b")))
	for _, want := range []string{`already intercepted by alice (alice@laptop) (since `, `as "all")`, "takes every connection"} {
		if !strings.Contains(msg, want) {
			t.Errorf("a filtered intercept beside a global one: %q; want it to say %q", msg, want)
		}
	}
	if st := agentState(t, r); len(st.GetRoutes()) != 0 || len(st.GetIntercepted()) != 1 || st.GetIntercepted()[0] != "http" {
		t.Errorf("the agent of a global intercept hears %v", st)
	}
	leave(r, alice, "all")

	mustIntercept(t, r, alice, intercepting("a", "alice", "alice@laptop", header("x-dev", "a")))
	msg = mustRefuse(t, r, bob, intercepting("all", "bob", "bob@laptop", nil))
	for _, want := range []string{`already intercepted by alice (alice@laptop) (since `, `as "a", filter x-dev=a)`, "needs the port alone"} {
		if !strings.Contains(msg, want) {
			t.Errorf("a global intercept beside a filtered one: %q; want it to say %q", msg, want)
		}
	}
	// The same client too: its global intercept would take the routes of its filtered one.
	if msg := mustRefuse(t, r, alice, intercepting("all", "alice", "alice@laptop", nil)); !strings.Contains(msg, `as "a"`) {
		t.Errorf("a client's global intercept beside its own filtered one: %q", msg)
	}
}

func TestOverlappingFiltersAreNamedWithWhoGetsTheRequests(t *testing.T) {
	var logs strings.Builder
	r := NewRegistry(oneAgent{}, fakeAuth{}, testLogger(&logs))
	alice, bob, carol := newClient(r), newClient(r), newClient(r)
	mustIntercept(t, r, alice, intercepting("a", "alice", "alice@laptop", header("x-dev", "a")))
	mustIntercept(t, r, bob, intercepting("b", "bob", "", header("x-dev", "b")))
	api := &tunnelpb.HTTPFilter{Path: &tunnelpb.Match{Value: "/api", Kind: tunnelpb.MatchKind_MATCH_PREFIX}}
	overlap := mustIntercept(t, r, carol, intercepting("c", "carol", "", api)).GetOverlap()
	for _, want := range []string{
		`"a" of alice (alice@laptop) (filter x-dev=a), which gets them (created first)`,
		`"b" of bob (filter x-dev=b), which gets them`,
		"goes to the one created first",
	} {
		if !strings.Contains(overlap, want) {
			t.Errorf("overlap %q; want it to say %q", overlap, want)
		}
	}
	if !strings.Contains(logs.String(), "intercepts overlap") {
		t.Errorf("the overlap is not logged:\n%s", logs.String())
	}
	// Alice, asking again, hears that she gets the requests she shares with carol.
	overlap = mustIntercept(t, r, alice, intercepting("a", "alice", "alice@laptop", header("x-dev", "a"))).GetOverlap()
	if !strings.Contains(overlap, `"c" of carol (filter path /api*), which does not get them (this one was created first)`) || strings.Contains(overlap, `"b"`) {
		t.Errorf("alice's overlap: %q", overlap)
	}
}

func TestLeavingOneFilteredInterceptKeepsTheOthers(t *testing.T) {
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	alice, bob := newClient(r), newClient(r)
	mustIntercept(t, r, alice, intercepting("a", "alice", "", header("x-dev", "a")))
	mustIntercept(t, r, bob, intercepting("b", "bob", "", header("x-dev", "b")))
	ids := routes(t, agentState(t, r))

	// Bob's announced connection outlives alice's intercept, and ends with his.
	s, done := handOver(r, ids[1])
	incoming(t, bob)
	leave(r, alice, "a")
	select {
	case <-done:
		t.Fatalf("alice's leave ended bob's connection: %v", s.sent)
	case <-time.After(100 * time.Millisecond):
	}
	if got := routes(t, agentState(t, r)); len(got) != 1 || got[0] != ids[1] {
		t.Errorf("after alice left the agent routes %v; want bob's %s", got, ids[1])
	}
	leave(r, bob, "b")
	refusedFlow(t, s, done, acceptWait/2, "the intercept ended")
	if st := agentState(t, r); len(st.GetRoutes())+len(st.GetIntercepted()) != 0 {
		t.Errorf("the agent of a port nobody intercepts hears %v", st)
	}

	// A client that goes away takes its intercepts only.
	mustIntercept(t, r, alice, intercepting("a", "alice", "", header("x-dev", "a")))
	mustIntercept(t, r, bob, intercepting("b", "bob", "", header("x-dev", "b")))
	mustIntercept(t, r, alice, intercepting("a2", "alice", "", header("x-dev", "a2")))
	r.mu.Lock()
	r.dropClientLocked(alice, "its lease lapsed")
	r.mu.Unlock()
	if its := r.byKey[interceptKey{webAgent.Namespace, "deployment", webAgent.Workload, "http"}]; len(its) != 1 || its[0].name != "b" {
		t.Errorf("after alice's session ended: %v", its)
	}
}

func TestFilterIDsAreUniquePerPort(t *testing.T) {
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	alice, bob := newClient(r), newClient(r)
	mine := header("x-dev", "a")
	mine.Id = "alice-1"
	mustIntercept(t, r, alice, intercepting("a", "alice", "", mine))
	theirs := header("x-dev", "b")
	theirs.Id = "alice-1"
	if msg := mustRefuse(t, r, bob, intercepting("b", "bob", "", theirs)); !strings.Contains(msg, `id "alice-1" is taken on port http of default/web by alice (since `) {
		t.Errorf("a second intercept with id alice-1: %q", msg)
	}
	mustIntercept(t, r, alice, intercepting("a", "alice", "", mine)) // its own id, asked again
	if msg := mustRefuse(t, r, bob, intercepting("b", "bob", "", &tunnelpb.HTTPFilter{})); !strings.Contains(msg, `intercept "b": its HTTP filter: a filter needs`) {
		t.Errorf("an empty filter: %q", msg)
	}
}

// A client asserts its intercepts again after every reconnection: that must not move it
// behind later intercepts (which would give it their overlapping requests), nor wake the
// agents unless its filter changed.
func TestAskingAgainKeepsTheOrder(t *testing.T) {
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	r.maxPerHolder = 2
	alice, bob := newClient(r), newClient(r)
	mustIntercept(t, r, alice, intercepting("a", "alice", "", header("x-dev", "a")))
	mustIntercept(t, r, bob, intercepting("b", "alice", "", header("x-dev", "b")))
	ids := routes(t, agentState(t, r))
	key := interceptKey{webAgent.Namespace, "deployment", webAgent.Workload, "http"}
	since := r.byKey[key][0].since

	ag := &agentConn{id: webAgent, ports: map[string]bool{"http": true}, notify: make(chan struct{}, 1)}
	r.agents[ag] = struct{}{}
	again := mustIntercept(t, r, alice, intercepting("a", "alice", "", header("x-dev", "a")))
	if len(ag.notify) != 0 {
		t.Errorf("an unchanged intercept asked again woke the agents")
	}
	if again.GetAgents() != 1 || again.GetOverlap() != "" {
		t.Errorf("asked again: %v", again)
	}
	mustIntercept(t, r, alice, intercepting("a", "alice", "", header("x-dev", "a-new")))
	if len(ag.notify) != 1 {
		t.Errorf("a changed filter did not wake the agents")
	}
	st := agentState(t, r)
	if got := routes(t, st); len(got) != 2 || got[0] != ids[0] || got[1] != ids[1] {
		t.Errorf("after alice asked again the routes are %v; were %v", got, ids)
	}
	if got := st.GetRoutes()[0].GetRoutes()[0].GetHttp(); !proto.Equal(got, header("x-dev", "a-new")) {
		t.Errorf("alice's route filters %v after her filter changed", got)
	}
	if r.byKey[key][0].since != since {
		t.Errorf("asking again changed since")
	}
	// Two intercepts of one port count two against their holder.
	if msg := mustRefuse(t, r, alice, intercepting("c", "alice", "", header("x-dev", "c"))); !strings.Contains(msg, "alice holds 2 intercepts") {
		t.Errorf("a third intercept of a holder capped at two: %q", msg)
	}
}

// A problem the drift check finds with a port is every one of its intercepts': each holder
// hears of it.
func TestDriftTellsEveryHolderOfAPort(t *testing.T) {
	ctx := context.Background()
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	alice, bob := newClient(r), newClient(r)
	for _, c := range []struct {
		cl   *clientSession
		name string
	}{{alice, "alice"}, {bob, "bob"}} {
		m := create(c.name, "web", c.name, "ok")
		m.GetCreate().Http = header("x-dev", c.name)
		mustIntercept(t, r, c.cl, m)
	}
	w := newDriftWorld(t)
	w.record = nil
	r.checkDrift(ctx, fake.NewClientset(w.objects()...))
	for _, c := range []*clientSession{alice, bob} {
		if res := result(t, c); !strings.Contains(res.GetProblem(), "agent record of deployment/web is gone") || !res.GetReport() {
			t.Errorf("after the record went: %+v", res)
		}
	}
	// A new intercept of the port starts with the port's problem.
	carol := newClient(r)
	m := create("carol", "web", "carol", "ok")
	m.GetCreate().Http = header("x-dev", "carol")
	if res := mustIntercept(t, r, carol, m); !strings.Contains(res.GetProblem(), "agent record of deployment/web is gone") {
		t.Errorf("a new intercept of a port with a problem: %+v", res)
	}
}

// The same name asked for on another port moves there: the old one ends, its announced
// connections go to the app, and the new one comes after the port's others.
func TestARenamedPortMovesTheIntercept(t *testing.T) {
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	alice, bob := newClient(r), newClient(r)
	mustIntercept(t, r, alice, intercepting("a", "alice", "", header("x-dev", "a")))
	ids := routes(t, agentState(t, r))
	s, done := handOver(r, ids[0])
	incoming(t, alice)

	other := intercepting("b", "bob", "", header("x-dev", "b"))
	other.GetCreate().Port = "grpc"
	mustIntercept(t, r, bob, other)
	moved := intercepting("a", "alice", "", header("x-dev", "a"))
	moved.GetCreate().Port = "grpc"
	mustIntercept(t, r, alice, moved)
	refusedFlow(t, s, done, acceptWait/2, "the intercept ended")
	if st := agentState(t, r); len(st.GetRoutes()) != 0 {
		t.Errorf("port http after its intercept moved: %v", st)
	}
	its := r.byKey[interceptKey{webAgent.Namespace, "deployment", webAgent.Workload, "grpc"}]
	if len(its) != 2 || its[0].name != "b" || its[1].name != "a" {
		t.Errorf("port grpc holds %v; want b, then a", its)
	}
}

// Wiretaps stand beside any intercept of the port: a whole one, filtered ones, other
// wiretaps. Agents hear them apart from the routes, and a wiretap's connections reach its
// client by its id.
func TestWiretapsStandBesideEveryIntercept(t *testing.T) {
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	alice, bob, carol := newClient(r), newClient(r), newClient(r)
	tap := intercepting("tap-all", "carol", "carol@laptop", nil)
	tap.GetCreate().Wiretap = true
	mustIntercept(t, r, carol, tap)
	mustIntercept(t, r, alice, intercepting("whole", "alice", "alice@laptop", nil)) // a wiretap does not hold the port
	tapA := intercepting("tap-a", "bob", "bob@laptop", header("x-dev", "a"))
	tapA.GetCreate().Wiretap = true
	if res := mustIntercept(t, r, bob, tapA); res.GetOverlap() != "" {
		t.Errorf("a wiretap overlaps: %s", res.GetOverlap())
	}
	st := agentState(t, r)
	if len(st.GetIntercepted()) != 1 || len(st.GetRoutes()) != 0 || len(st.GetTaps()) != 1 || len(st.GetTaps()[0].GetRoutes()) != 2 {
		t.Fatalf("agent state %v: want the port whole, and two taps", st)
	}
	taps := st.GetTaps()[0].GetRoutes()
	if taps[0].GetHttp() != nil || taps[1].GetHttp().GetHeaders()[0].GetValue() != "a" {
		t.Errorf("taps %v: want the whole stream's first, then x-dev=a", taps)
	}
	// A filtered intercept beside the whole one is still refused: the wiretaps change nothing.
	mustRefuse(t, r, bob, intercepting("mine", "bob", "bob@laptop", header("x-dev", "b")))
	leave(r, alice, "whole")
	mustIntercept(t, r, bob, intercepting("mine", "bob", "bob@laptop", header("x-dev", "b")))
	st = agentState(t, r)
	if len(st.GetIntercepted()) != 0 || len(st.GetRoutes()) != 1 || len(st.GetRoutes()[0].GetRoutes()) != 1 || len(st.GetTaps()[0].GetRoutes()) != 2 {
		t.Fatalf("agent state %v: want one route and two taps", st)
	}
	s, done := handOver(r, taps[0].GetId())
	if in := incoming(t, carol); in.GetIntercept() != "tap-all" {
		t.Errorf("the wiretap's connection reached %v", in)
	}
	r.mu.Lock()
	for _, p := range r.pending {
		p.rejected <- "test over"
	}
	r.mu.Unlock()
	refusedFlow(t, s, done, 2*time.Second, "test over")
	var resp *tunnelpb.ListResponse
	resp, _ = r.ClientAPI().List(context.Background(), &tunnelpb.ListRequest{Grants: []*tunnelpb.GrantRef{
		{Namespace: webAgent.Namespace, Name: "carol", SecretSha256: grant.Hash("ok")}}})
	if len(resp.GetIntercepts()) != 1 || !resp.GetIntercepts()[0].GetWiretap() {
		t.Errorf("List: %v", resp.GetIntercepts())
	}
}
