package manager

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tpdev/tp/intercept/agent"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// egressCluster is a manager (both APIs, over one in-memory gRPC connection) whose agent
// of deployment/web is the real agent's egress code, its pod's network this machine's
// loopback, and whose names resolve to a service address the policy allows.
type egressCluster struct {
	client tunnelpb.ManagerClient
	agents tunnelpb.AgentsClient
	reg    *Registry
	dials  chan string // what the agent dialed
}

func newEgressCluster(t *testing.T) *egressCluster {
	t.Helper()
	reg := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	reg.agentWait = 300 * time.Millisecond
	names := &Names{Domain: "cluster.local", Exchange: fakeDNS(map[string]string{"db.default.svc.cluster.local.": "10.96.0.9"})}
	srv := New(Config{Names: names, Ranges: fixedRanges{}, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("the manager itself dialed: egress must leave from the agent")
	}, Egress: reg})
	cc := inMemory(t, func(gs *grpc.Server) {
		tunnelpb.RegisterManagerServer(gs, srv)
		tunnelpb.RegisterAgentsServer(gs, reg.AgentAPI())
	})
	return &egressCluster{client: tunnelpb.NewManagerClient(cc), agents: tunnelpb.NewAgentsClient(cc), reg: reg, dials: make(chan string, 16)}
}

// runAgent registers web's agent and serves the egress it is asked for until the test ends.
func (c *egressCluster) runAgent(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+agentToken))
	t.Cleanup(cancel)
	stream, err := c.agents.Watch(ctx, agent.Hello(webAgent.Pod, webAgent.Namespace, "test", []agent.Port{{Name: "http", Listen: 9900, App: 8080}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // registered
		t.Fatal(err)
	}
	go func() {
		for {
			st, err := stream.Recv()
			if err != nil {
				return
			}
			for _, e := range st.GetEgress() {
				go func() {
					_ = agent.Egress(ctx, c.agents, webAgent.Namespace+"/"+webAgent.Pod, e, func(ctx context.Context, network, address string) (net.Conn, error) {
						c.dials <- address
						return onLoopback(ctx, network, address)
					})
				}()
			}
		}
	}()
}

func (c *egressCluster) open(t *testing.T, address string, via *tunnelpb.Via) (*tunnel.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.client.Tunnel(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return tunnel.Open(ctx, stream, cancel, &tunnelpb.Dial{Network: "tcp", Address: address, Namespace: "default", Via: via, Data: []byte("early ")})
}

func webVia(secret string) *tunnelpb.Via {
	return &tunnelpb.Via{Namespace: "default", Kind: "Deployment", Workload: "web", Grant: "alice", Secret: secret}
}

func TestEgressLeavesFromTheWorkloadsAgent(t *testing.T) {
	c := newEgressCluster(t)
	echo := echoServer(t)
	port := itoa(echo.Addr().(*net.TCPAddr).Port)

	// No agent yet: the dial waits a while for one, then says what is missing.
	if _, err := c.open(t, "db:"+port, webVia("ok")); !errors.Is(err, remote.ErrUnreachable) || !strings.Contains(err.Error(), "no traffic agent of deployment/web -n default") {
		t.Fatalf("egress without an agent: %v", err)
	}
	c.runAgent(t)

	conn, err := c.open(t, "db:"+port, webVia("ok"))
	if err != nil {
		t.Fatalf("egress through web's agent: %v", err)
	}
	if got := <-c.dials; got != "10.96.0.9:"+port {
		t.Errorf("the agent dialed %s, want the address the manager resolved, 10.96.0.9:%s", got, port)
	}
	_, _ = conn.Write([]byte("through the pod"))
	_ = conn.CloseWrite()
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "early through the pod" {
		t.Fatalf("echo through the agent: %q %v", got, err)
	}
	conn.Close()

	// A refusal from the pod's network comes back as one, naming the pod.
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := itoa(closed.Addr().(*net.TCPAddr).Port)
	closed.Close()
	if _, err := c.open(t, "db:"+closedPort, webVia("ok")); !errors.Is(err, remote.ErrRefused) || !strings.Contains(err.Error(), "from pod default/"+webAgent.Pod) {
		t.Fatalf("a refused egress: %v", err)
	}
	<-c.dials

	// Without a grant the manager asks no agent.
	if _, err := c.open(t, "db:"+port, webVia("guess")); !errors.Is(err, remote.ErrForbidden) || !strings.Contains(err.Error(), "refused to connect as deployment/web") {
		t.Fatalf("egress without a grant: %v", err)
	}
	// The dial policy applies as to any dial: the agent is not asked to reach this machine.
	if _, err := c.open(t, "127.0.0.1:"+port, webVia("ok")); !errors.Is(err, remote.ErrForbidden) {
		t.Fatalf("egress to loopback: %v", err)
	}
	// Another workload's agent is not this one's.
	other := webVia("ok")
	other.Workload = "api"
	if _, err := c.open(t, "db:"+port, other); !errors.Is(err, remote.ErrUnreachable) {
		t.Fatalf("egress as a workload without an agent: %v", err)
	}
	select {
	case d := <-c.dials:
		t.Errorf("the agent dialed %s for a refused egress", d)
	default:
	}
}

func TestOnlyTheAskedAgentAnswersAnEgress(t *testing.T) {
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	asked := &agentConn{id: AgentIdentity{Namespace: "default", Pod: "web-other"}}
	r.egress["e1"] = &egressFlow{agent: asked, taken: make(chan tunnel.Stream, 1), done: make(chan struct{})}
	err := r.takeEgress(context.Background(), webAgent, &tunnelpb.Dial{Egress: "e1"}, nil)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("an agent answering another pod's egress: %v", err)
	}
	if err := r.takeEgress(context.Background(), webAgent, &tunnelpb.Dial{Egress: "e2"}, nil); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an egress nobody asked for: %v", err)
	}
}

// echoServer echoes each connection on loopback until the test ends.
func echoServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.(*net.TCPConn).CloseWrite() }()
		}
	}()
	return ln
}
