package manager

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tpdev/tp/intercept/agent"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// webAgent is the identity agentToken proves.
var webAgent = AgentIdentity{Namespace: "default", Pod: "web-7d4b9c-x2x9z", UID: "0b7e6c1a-5f3d-4c2e-9a8b-1d2e3f4a5b6c", Kind: "Deployment", Workload: "web"}

const agentToken = "eyJhbGciOiJSUzI1NiJ9.agent.sig"

// oneAgent verifies agentToken only.
type oneAgent struct{}

func (oneAgent) Verify(_ context.Context, token string) (AgentIdentity, error) {
	if token != agentToken {
		return AgentIdentity{}, errors.New("token rejected: invalid bearer token")
	}
	return webAgent, nil
}

// watchStream is an agent's Watch call whose agent hangs up after the first state.
type watchStream struct {
	grpc.ServerStream
	ctx    context.Context
	hangUp context.CancelFunc
	mu     sync.Mutex
	states []*tunnelpb.AgentState
}

func (s *watchStream) Context() context.Context { return s.ctx }

func (s *watchStream) Send(st *tunnelpb.AgentState) error {
	s.mu.Lock()
	s.states = append(s.states, st)
	s.mu.Unlock()
	s.hangUp()
	return nil
}

// watch runs the manager's Watch handler as gRPC would for a call with these
// authorization values and this request message.
func watch(t *testing.T, r *Registry, auth []string, hello *tunnelpb.AgentHello) (*watchStream, error) {
	t.Helper()
	md := metadata.MD{}
	for _, a := range auth {
		md.Append("authorization", a)
	}
	ctx, cancel := context.WithCancel(metadata.NewIncomingContext(context.Background(), md))
	defer cancel()
	s := &watchStream{ctx: ctx, hangUp: cancel}
	return s, r.AgentAPI().Watch(hello, s)
}

func TestWatchRegistersOnlyTheTokensPodWithPortsNamedLikeContainerPorts(t *testing.T) {
	good := agent.Hello(webAgent.Pod, webAgent.Namespace, "v1", []agent.Port{{Name: "http", Listen: 9900, App: 8080}})
	for name, c := range map[string]struct {
		auth  []string
		hello *tunnelpb.AgentHello
		code  codes.Code
	}{
		"agent":            {[]string{"Bearer " + agentToken}, good, codes.OK},
		"no ports":         {[]string{"Bearer " + agentToken}, &tunnelpb.AgentHello{Pod: webAgent.Pod, Namespace: webAgent.Namespace}, codes.OK},
		"no token":         {nil, good, codes.Unauthenticated},
		"two tokens":       {[]string{"Bearer " + agentToken, "Bearer " + agentToken}, good, codes.Unauthenticated},
		"basic auth":       {[]string{"Basic " + agentToken}, good, codes.Unauthenticated},
		"empty token":      {[]string{"Bearer "}, good, codes.Unauthenticated},
		"oversized token":  {[]string{"Bearer " + strings.Repeat("a", maxTokenLen+1)}, good, codes.Unauthenticated},
		"forged token":     {[]string{"Bearer forged"}, good, codes.PermissionDenied},
		"another pod":      {[]string{"Bearer " + agentToken}, agent.Hello("db-0", webAgent.Namespace, "v1", nil), codes.PermissionDenied},
		"bad port name":    {[]string{"Bearer " + agentToken}, agent.Hello(webAgent.Pod, webAgent.Namespace, "v1", []agent.Port{{Name: "HTTP", Listen: 9900, App: 8080}}), codes.InvalidArgument},
		"bad port":         {[]string{"Bearer " + agentToken}, agent.Hello(webAgent.Pod, webAgent.Namespace, "v1", []agent.Port{{Name: "http", Listen: 9900, App: 70000}}), codes.InvalidArgument},
		"too many ports":   {[]string{"Bearer " + agentToken}, agent.Hello(webAgent.Pod, webAgent.Namespace, "v1", make([]agent.Port, maxAgentPorts+1)), codes.InvalidArgument},
		"empty port names": {[]string{"Bearer " + agentToken}, agent.Hello(webAgent.Pod, webAgent.Namespace, "v1", []agent.Port{{Listen: 9900, App: 8080}}), codes.InvalidArgument},
	} {
		var logs strings.Builder
		r := NewRegistry(oneAgent{}, nil, testLogger(&logs))
		s, err := watch(t, r, c.auth, c.hello)
		if status.Code(err) != c.code {
			t.Errorf("%s: Watch = %v, want %v", name, err, c.code)
		}
		if registered := len(s.states) > 0; registered != (c.code == codes.OK) {
			t.Errorf("%s: registered %v with %v", name, registered, err)
		}
		if want := map[bool]string{true: "agent registered", false: "agent refused"}[c.code == codes.OK]; !strings.Contains(logs.String(), want) {
			t.Errorf("%s: no %q in the log:\n%s", name, want, logs.String())
		}
	}
}

// FuzzAgentWatch is an agent's registration as the manager receives it: the authorization
// metadata and the AgentHello's bytes, decoded by the manager's codec. The handler must
// answer with a refusal, or register exactly the pod the token proves with ports named like
// container ports, and forget the agent when it hangs up.
func FuzzAgentWatch(f *testing.F) {
	hellos := []*tunnelpb.AgentHello{
		agent.Hello(webAgent.Pod, webAgent.Namespace, "v1", []agent.Port{{Name: "http", Listen: 9900, App: 8080}, {Name: "tp-grpc", Listen: 9901, App: 9090}}),
		agent.Hello(webAgent.Pod, webAgent.Namespace, "", nil),
		agent.Hello(webAgent.Pod, webAgent.Namespace, "v1", []agent.Port{{Name: "HTTP", Listen: 0, App: 65536}}),
		agent.Hello("db-0", "other", "v1", []agent.Port{{Name: "http", Listen: 9900, App: 8080}}),
		{Pod: webAgent.Pod, Namespace: webAgent.Namespace, Ports: []*tunnelpb.AgentPort{nil, {}}},
	}
	for _, h := range hellos {
		wire, _ := proto.Marshal(h)
		f.Add("Bearer "+agentToken, false, wire)
		f.Add("Bearer forged", false, wire)
	}
	f.Add("Bearer "+agentToken, true, []byte{})
	f.Add("bearer "+agentToken, false, []byte{0x0a, 0xff})
	f.Add("Bearer ", false, []byte{0x1a, 0x80})
	f.Fuzz(func(t *testing.T, authorization string, twice bool, wire []byte) {
		hello := new(tunnelpb.AgentHello)
		if err := tunnel.Codec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, hello); err != nil {
			return // gRPC refuses the call before the handler runs
		}
		auth := []string{authorization}
		if twice {
			auth = append(auth, authorization)
		}
		r := NewRegistry(oneAgent{}, nil, nil)
		s, err := watch(t, r, auth, hello)
		checkBearerToken(t, auth)
		if len(r.agents) != 0 {
			t.Fatalf("the registry keeps an agent that hung up")
		}
		if err != nil {
			if c := status.Code(err); c != codes.Unauthenticated && c != codes.PermissionDenied && c != codes.InvalidArgument {
				t.Fatalf("Watch refused with %v: a refusal says whose fault it is", err)
			}
			if len(s.states) != 0 {
				t.Fatalf("Watch sent %v to an agent it refused", s.states)
			}
			return
		}
		if twice || authorization != "Bearer "+agentToken || hello.GetPod() != webAgent.Pod || hello.GetNamespace() != webAgent.Namespace {
			t.Fatalf("Watch registered %v with authorization %q (twice %v)", hello, authorization, twice)
		}
		if len(s.states) != 1 || len(s.states[0].GetIntercepted()) != 0 {
			t.Fatalf("a registered agent with no intercepts heard %v", s.states)
		}
		if len(hello.GetPorts()) > maxAgentPorts {
			t.Fatalf("Watch registered %d ports", len(hello.GetPorts()))
		}
		for _, p := range hello.GetPorts() {
			if len(validation.IsValidPortName(p.GetName())) > 0 || p.GetListen() < 1 || p.GetListen() > 65535 || p.GetApp() < 1 || p.GetApp() > 65535 {
				t.Fatalf("Watch registered port %v", p)
			}
		}
		// What the manager accepted came to it intact: the hello reads back the same.
		again := new(tunnelpb.AgentHello)
		back, _ := proto.Marshal(hello)
		if err := proto.Unmarshal(back, again); err != nil || !proto.Equal(again, hello) {
			t.Fatalf("hello %v does not read back: %v %v", hello, again, err)
		}
	})
}

// checkBearerToken holds bearerToken to its contract: one "Bearer " value with a token of
// 1 to maxTokenLen bytes, returned as it was sent.
func checkBearerToken(t *testing.T, auth []string) {
	t.Helper()
	md := metadata.MD{}
	for _, a := range auth {
		md.Append("authorization", a)
	}
	token, err := bearerToken(md)
	if err != nil {
		if token != "" {
			t.Fatalf("bearerToken(%q) = %q with error %v", auth, token, err)
		}
		return
	}
	if len(auth) != 1 || auth[0] != "Bearer "+token || token == "" || len(token) > maxTokenLen {
		t.Fatalf("bearerToken(%q) = %q", auth, token)
	}
}

// FuzzAgentPorts checks that every port list an agent accepts (TP_AGENT_PORTS) is one the
// manager registers: an agent that starts must not then be refused for its ports.
func FuzzAgentPorts(f *testing.F) {
	for _, seed := range []string{"http:9900:8080", "http:9900:8080,tp-grpc:9901:9090", "tp-8080:9900:8080", "a:1:65535", "http:+9900:08080"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, env string) {
		ports, err := agent.ParsePorts(env)
		if err != nil {
			return
		}
		names, err := checkHello(webAgent, agent.Hello(webAgent.Pod, webAgent.Namespace, "v1", ports))
		if err != nil {
			t.Fatalf("the agent serves %v (TP_AGENT_PORTS %q) but the manager refuses it: %v", ports, env, err)
		}
		if len(names) != len(ports) {
			t.Fatalf("ports %v registered as %v", ports, names)
		}
	})
}

func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// flowStream is an agent's Flow call that sends the frames it has, then ends its side.
type flowStream struct {
	grpc.ServerStream
	ctx  context.Context
	in   []*tunnelpb.Frame
	sent []*tunnelpb.Frame
}

func (s *flowStream) Context() context.Context { return s.ctx }

func (s *flowStream) Recv() (*tunnelpb.Frame, error) {
	if len(s.in) == 0 {
		return nil, io.EOF
	}
	f := s.in[0]
	s.in = s.in[1:]
	return f, nil
}

func (s *flowStream) Send(f *tunnelpb.Frame) error {
	s.sent = append(s.sent, f)
	return nil
}

// FuzzAgentFlow is an agent handing over a connection no client intercepts: its token and
// its first frame's bytes, decoded by the manager's codec. The manager must refuse the
// call, or answer with exactly one refusal that sends the agent back to its app, and keep
// no pending flow.
func FuzzAgentFlow(f *testing.F) {
	for _, d := range []*tunnelpb.Dial{
		{Network: "tcp", Address: "http", Origin: "10.244.0.7:51234"},
		{Network: "tcp", Address: strings.Repeat("p", 254)},
		{Network: "tcp", Address: "http", Data: make([]byte, tunnel.MaxDatagram+1)},
		{Network: "tcp", Address: "http", Route: "0123456789abcdef"},
		{Network: "tcp", Address: "10.96.0.9:5432", Egress: "0123456789abcdef01234567"},
	} {
		wire, _ := proto.Marshal(&tunnelpb.Frame{Kind: &tunnelpb.Frame_Dial{Dial: d}})
		f.Add("Bearer "+agentToken, wire)
	}
	data, _ := proto.Marshal(&tunnelpb.Frame{Kind: &tunnelpb.Frame_Data{Data: []byte("GET /")}})
	f.Add("Bearer "+agentToken, data)
	f.Add("Bearer forged", []byte{})
	f.Fuzz(func(t *testing.T, authorization string, wire []byte) {
		var in []*tunnelpb.Frame
		if fr := new(tunnelpb.Frame); tunnel.Codec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, fr) == nil {
			in = append(in, fr)
		}
		r := NewRegistry(oneAgent{}, nil, nil)
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", authorization))
		s := &flowStream{ctx: ctx, in: in}
		err := r.AgentAPI().Flow(s)
		if len(r.pending) != 0 || len(r.egress) != 0 {
			t.Fatalf("a refused flow is still pending")
		}
		if err != nil {
			if c := status.Code(err); c != codes.Unauthenticated && c != codes.PermissionDenied && c != codes.InvalidArgument {
				t.Fatalf("Flow refused with %v: a refusal says whose fault it is", err)
			}
			if len(s.sent) != 0 {
				t.Fatalf("Flow answered %v and refused with %v", s.sent, err)
			}
			return
		}
		if authorization != "Bearer "+agentToken || len(in) == 0 || in[0].GetDial() == nil {
			t.Fatalf("Flow took %v with authorization %q", in, authorization)
		}
		want := "is not intercepted"
		if in[0].GetDial().GetRoute() != "" {
			want = "ended" // the route's intercept: the agent knew of it, so it ended since
		}
		if len(s.sent) != 1 || s.sent[0].GetDialResult().GetCode() != tunnelpb.Code_CODE_REFUSED ||
			!strings.Contains(s.sent[0].GetDialResult().GetMessage(), want) {
			t.Fatalf("Flow of a port no client intercepts answered %v", s.sent)
		}
	})
}

// A connection announced to the client just before it leaves goes to the app at once: the
// agent must not wait acceptWait for a client that will never take it (a request right
// after tp leave would hang for seconds).
func TestLeaveSendsAnnouncedConnectionsToTheApp(t *testing.T) {
	ctx := context.Background()
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	c := newClient(r)
	msg := create("web-http", "web", "alice", "ok")
	msg.GetCreate().Namespace = webAgent.Namespace
	r.handleClient(ctx, c, msg)
	if res := result(t, c); res.GetError() != "" {
		t.Fatalf("create: %v", res.GetError())
	}
	dial := &tunnelpb.Frame{Kind: &tunnelpb.Frame_Dial{Dial: &tunnelpb.Dial{Network: "tcp", Address: "http"}}}
	s := &flowStream{ctx: metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+agentToken)), in: []*tunnelpb.Frame{dial}}
	done := make(chan error, 1)
	go func() { done <- r.AgentAPI().Flow(s) }()
	select {
	case m := <-c.out:
		if m.GetIncoming() == nil {
			t.Fatalf("the client was told %v, want the incoming connection", m)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the client heard of no incoming connection")
	}
	start := time.Now()
	r.handleClient(ctx, c, &tunnelpb.InterceptClientMsg{Kind: &tunnelpb.InterceptClientMsg_Leave{Leave: "web-http"}})
	select {
	case err := <-done:
		if err != nil || len(s.sent) != 1 || s.sent[0].GetDialResult().GetCode() != tunnelpb.Code_CODE_REFUSED {
			t.Fatalf("Flow: %v, answered %v", err, s.sent)
		}
	case <-time.After(acceptWait / 2):
		t.Fatalf("the announced connection still waits %s after the leave", time.Since(start))
	}
}
