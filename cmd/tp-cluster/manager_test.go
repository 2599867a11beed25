package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/tpdev/tp/remote/manager"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// testLimits are servingLimits, short enough for tests.
func testLimits() limits {
	return limits{clientHandshake: 500 * time.Millisecond, clusterHeaders: 500 * time.Millisecond, clusterIdle: time.Second}
}

// logBuffer is a log the test reads while the servers write it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// expect waits for n lines of the log to contain s.
func (l *logBuffer) expect(t *testing.T, s string, n int) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); l.count(s) < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("%d log lines say %q, want %d; the log:\n%s", strings.Count(l.b.String(), s), s, n, l.b.String())
		}
	}
}

const agentToken = "agent-token"

var webAgent = manager.AgentIdentity{Namespace: "default", Pod: "web-0", UID: "uid", Kind: "StatefulSet", Workload: "web"}

type oneAgent struct{}

func (oneAgent) Verify(_ context.Context, token string) (manager.AgentIdentity, error) {
	if token != agentToken {
		return manager.AgentIdentity{}, errors.New("token rejected")
	}
	return webAgent, nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testManager struct {
	client, cluster string
	logs            *logBuffer
}

// startManager serves the manager's two ports on loopback, as runManager does.
func startManager(t *testing.T) testManager {
	t.Helper()
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := manager.New(manager.Config{Version: "test", Names: manager.NewNames("cluster.local", "127.0.0.1:1"), Log: log})
	s := newServers(srv, manager.NewRegistry(oneAgent{}, nil, log), testLimits(), log)
	var lns []net.Listener
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
	}
	errc := s.serve(lns[0], lns[1])
	t.Cleanup(func() {
		s.stop()
		t.Logf("the manager's log:\n%s", logs.String())
		for range 2 {
			if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("serve: %v", err)
			}
		}
	})
	return testManager{client: lns[0].Addr().String(), cluster: lns[1].Addr().String(), logs: logs}
}

// stillServes checks that both ports answer well-behaved peers: a client's Info, the
// probes, and an agent's Watch.
func (m testManager) stillServes(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := tunnelpb.NewManagerClient(dial(t, m.client)).Info(ctx, &tunnelpb.InfoRequest{})
	if err != nil || info.GetVersion() != "test" {
		t.Fatalf("client API: Info = %v, %v", info, err)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + m.cluster + "/healthz")
	if err != nil {
		t.Fatalf("cluster port: /healthz: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("cluster port: /healthz: %s %q", resp.Status, body)
	}
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+agentToken)
	stream, err := tunnelpb.NewAgentsClient(dial(t, m.cluster)).Watch(actx, &tunnelpb.AgentHello{Pod: webAgent.Pod, Namespace: webAgent.Namespace})
	if err == nil {
		_, err = stream.Recv()
	}
	if err != nil {
		t.Fatalf("cluster port: an agent's Watch: %v", err)
	}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(tunnel.Codec())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// expectClosed waits for the manager to close c (EOF or a reset, not our deadline).
func expectClosed(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the manager kept the connection open for %v: %v", within, err)
	}
}

func random(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// settings is an empty SETTINGS frame, the first frame of every HTTP/2 client.
var settings = []byte{0, 0, 0, 0x4, 0, 0, 0, 0, 0}

// The bytes no gRPC client or agent sends: each connection is closed, with a log line
// naming the port, and both ports go on serving.
func TestGarbageConnectionsAreClosedAndLogged(t *testing.T) {
	preface := []byte(http2.ClientPreface)
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	// A WINDOW_UPDATE of 0 for the connection is a connection error.
	badFrame := []byte{0, 0, 4, 0x8, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	for _, c := range []struct {
		name                string
		in                  []byte
		client, cluster     string // the log line on each port
		clientIn, clusterIn time.Duration
	}{
		{"random bytes", random(4096),
			"client API: dropped a connection that sent no valid request", "cluster port: dropped a connection that sent no valid request", time.Second, time.Second},
		{"truncated preface", preface[:20],
			"client API: dropped a connection that sent no valid request in time", "cluster port: dropped a connection that sent no valid request in time", 2 * time.Second, 2 * time.Second},
		{"tls hello", cat([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), random(500)),
			"client API: dropped a connection that sent no valid request", "cluster port: dropped a connection that sent no valid request", time.Second, time.Second},
		{"preface then random bytes", cat(preface, random(4096)),
			"client API: closed a connection on an HTTP/2 protocol error", "cluster port: dropped a connection that sent no valid request", time.Second, 3 * time.Second},
		{"preface then a bad frame", cat(preface, settings, badFrame),
			"client API: closed a connection on an HTTP/2 protocol error", "cluster port: dropped a connection that sent no valid request", time.Second, 3 * time.Second},
		// The client API keeps a connection past its handshake until keepalive finds it
		// dead (30 s and 10 s); the cluster port closes it once idle.
		{"preface then nothing", cat(preface, settings),
			"", "cluster port: dropped a connection that sent no valid request", 0, 3 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := startManager(t)
			for _, p := range []struct {
				addr, line string
				within     time.Duration
			}{{m.client, c.client, c.clientIn}, {m.cluster, c.cluster, c.clusterIn}} {
				if p.line == "" {
					continue
				}
				conn, err := net.Dial("tcp", p.addr)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = conn.Write(c.in)
				expectClosed(t, conn, p.within)
				conn.Close()
				m.logs.expect(t, p.line, 1)
			}
			m.stillServes(t)
		})
	}
}

// An HTTP/1.1 request is no gRPC call: the client API drops it, the cluster port answers
// it as a probe, and neither passes it to the agents' API.
func TestHTTP1RequestsReachNoGRPCService(t *testing.T) {
	m := startManager(t)
	req := "POST /tp.tunnel.v1.Agents/Watch HTTP/1.1\r\nHost: manager\r\nContent-Type: application/grpc\r\nContent-Length: 0\r\n\r\n"
	conn, err := net.Dial("tcp", m.client)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(conn, req)
	expectClosed(t, conn, time.Second)
	conn.Close()
	m.logs.expect(t, "client API: dropped a connection that sent no valid request", 1)

	conn, err = net.Dial("tcp", m.cluster)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, req)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("cluster port: %v %v", resp, err)
	}
	expectClosed(t, conn, 3*time.Second) // idle
	m.logs.expect(t, "cluster port: dropped a connection that sent no valid request", 1)
	if n := m.logs.count("agent refused"); n != 0 {
		t.Fatalf("an HTTP/1 request reached the agents' API")
	}
	m.stillServes(t)
}

// Connections that send nothing are closed after the handshake limit; while they are
// open, both ports serve others.
func TestSilentConnectionsAreClosedInTime(t *testing.T) {
	m := startManager(t)
	const n = 20
	var conns []net.Conn
	for range n {
		for _, addr := range []string{m.client, m.cluster} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns = append(conns, c)
		}
	}
	m.stillServes(t)
	for _, c := range conns {
		expectClosed(t, c, 2*time.Second)
	}
	m.logs.expect(t, "client API: dropped a connection that sent no valid request in time", n)
	m.logs.expect(t, "cluster port: dropped a connection that sent no valid request in time", n)
	m.stillServes(t)
}

// A gRPC message whose length prefix says 2 GiB is refused at once, without reading it:
// the call ends with RESOURCE_EXHAUSTED, the connection serves on. Streaming calls also
// leave a log line; a unary one cannot (see refusals), and its line is "" here.
func TestOversizedMessagesAreRefused(t *testing.T) {
	m := startManager(t)
	header := []byte{0, 0x80, 0, 0, 0} // uncompressed, 2^31 bytes
	for _, c := range []struct{ addr, path, line string }{
		{m.client, "/tp.tunnel.v1.Manager/Info", ""},
		{m.client, "/tp.tunnel.v1.Manager/Tunnel", "client API: refused a call"},
		{m.cluster, "/tp.tunnel.v1.Agents/Watch", "agent API: refused a call"},
		{m.cluster, "/tp.tunnel.v1.Agents/Flow", "agent API: refused a call"},
	} {
		before := m.logs.count(c.line)
		fields := call(t, c.addr, c.path, append(header, random(100)...))
		if fields["grpc-status"] == "0" || fields["grpc-status"] == "" {
			t.Errorf("%s: answered %v", c.path, fields)
		}
		if c.line != "" {
			m.logs.expect(t, c.line, before+1)
		}
	}
	m.stillServes(t)
}

// Calls of methods the manager does not have are refused and logged.
func TestUnknownMethodsAreRefused(t *testing.T) {
	m := startManager(t)
	for _, c := range []struct{ addr, line string }{{m.client, "client API: refused a call"}, {m.cluster, "agent API: refused a call"}} {
		fields := call(t, c.addr, "/tp.tunnel.v1.Nothing/Here", []byte{0, 0, 0, 0, 0})
		if fields["grpc-status"] != "12" {
			t.Errorf("%s: answered %v", c.addr, fields)
		}
		m.logs.expect(t, c.line, 1)
	}
	m.stillServes(t)
}

// call makes one gRPC call by hand (its request message as body) and returns the fields
// of the answer's headers and trailers.
func call(t *testing.T, addr, path string, body []byte) map[string]string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, http2.ClientPreface)
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "manager"},
		{"content-type", "application/grpc"}, {"te", "trailers"}, {"authorization", "Bearer " + agentToken}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := errors.Join(fr.WriteSettings(),
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}),
		fr.WriteData(1, true, body)); err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%s %s: %v (so far %v)", addr, path, err, fields)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			for _, hf := range f.Fields {
				fields[hf.Name] = hf.Value
			}
			if f.StreamEnded() {
				return fields
			}
		case *http2.RSTStreamFrame:
			fields["rst"] = fmt.Sprint(f.ErrCode)
			return fields
		case *http2.GoAwayFrame:
			t.Fatalf("%s %s: the manager closed the connection: %v %q", addr, path, f.ErrCode, f.DebugData())
		}
	}
}
