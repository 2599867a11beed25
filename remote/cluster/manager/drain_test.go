package manager

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tpdev/tp/intercept/agent"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// keptWatch is an agent's Watch call that stays until the manager ends it.
type keptWatch struct {
	grpc.ServerStream
	ctx    context.Context
	states chan *tunnelpb.AgentState
}

func (s *keptWatch) Context() context.Context { return s.ctx }
func (s *keptWatch) Send(st *tunnelpb.AgentState) error {
	s.states <- st
	return nil
}

func TestDrainHandsClientsAndAgentsToTheOtherPods(t *testing.T) {
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	cc := inMemory(t, func(s *grpc.Server) { tunnelpb.RegisterInterceptsServer(s, r.ClientAPI()) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := tunnelpb.NewInterceptsClient(cc).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(intercepting("all", "alice", "alice@laptop", nil)); err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetResult().GetError() != "" {
		t.Fatalf("intercept: %v %v", m, err)
	}

	w := &keptWatch{ctx: metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+agentToken)), states: make(chan *tunnelpb.AgentState, 8)}
	watched := make(chan error, 1)
	go func() {
		watched <- r.AgentAPI().Watch(agent.Hello(webAgent.Pod, webAgent.Namespace, "v1", []agent.Port{{Name: "http", Listen: 9900, App: 8080}}), w)
	}()
	if st := <-w.states; len(st.GetIntercepted()) != 1 || st.GetDraining() {
		t.Fatalf("the agent hears %v before the drain", st)
	}

	drained := make(chan struct{})
	go func() {
		r.Drain(ctx, "m-1", time.Second)
		close(drained)
	}()
	// The agent first: it holds the port while the client moves.
	select {
	case st := <-w.states:
		if !st.GetDraining() || len(st.GetIntercepted()) != 0 {
			t.Errorf("the agent hears %v when the pod drains", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the agent heard nothing of the drain")
	}
	if err := <-watched; err != nil {
		t.Errorf("the agent's Watch ends with %v", err)
	}
	// Then the client: Moving, and the end of its stream.
	m, err := stream.Recv()
	if err != nil || m.GetMoving().GetPod() != "m-1" {
		t.Fatalf("the client hears %v, %v when the pod drains", m, err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("the client's stream ends with %v, want Unavailable", err)
	}
	<-drained
	if !r.Draining() {
		t.Error("Draining is false after Drain")
	}

	// A client or agent that comes now is sent on at once.
	again, err := tunnelpb.NewInterceptsClient(cc).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := again.Recv(); err != nil || m.GetMoving() == nil {
		t.Errorf("a new stream to a draining pod hears %v, %v", m, err)
	}
	w2 := &keptWatch{ctx: w.ctx, states: make(chan *tunnelpb.AgentState, 8)}
	if err := r.AgentAPI().Watch(agent.Hello(webAgent.Pod, webAgent.Namespace, "v1", []agent.Port{{Name: "http", Listen: 9900, App: 8080}}), w2); err != nil || !(<-w2.states).GetDraining() {
		t.Errorf("a new agent of a draining pod: %v", err)
	}
}
