package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tpdev/tp/deploy/pki"
	"github.com/tpdev/tp/remote/cluster/manager"
	"github.com/tpdev/tp/remote/testlog"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// testLimits are servingLimits, short enough for tests.
func testLimits() limits {
	return limits{clientHandshake: 500 * time.Millisecond, clusterHeaders: 500 * time.Millisecond, clusterIdle: time.Second,
		refusalLines: 5, refusalPeriod: 500 * time.Millisecond}
}

func otherCA(t *testing.T) *x509.CertPool {
	_, pool := testCertificate(t)
	return pool
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
	logs            *testlog.Buffer
	// ca is the bundle the manager's certificate verifies by, for the server name
	// clusterName.
	ca *x509.CertPool
}

const clusterName = "tp-manager.tp-system.svc"

// testCertificate is a server certificate for clusterName from a new CA, as tp install
// makes them.
func testCertificate(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueServer(pki.ServerNames("tp-manager", "tp-system"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pki.Pool(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pool
}

// tlsConfig is an agent's: the manager verified by the test CA, offering protos.
func (m testManager) tlsConfig(protos ...string) *tls.Config {
	return &tls.Config{RootCAs: m.ca, ServerName: clusterName, NextProtos: protos, MinVersion: tls.VersionTLS13}
}

// dialTLS opens a TLS connection to the cluster port offering protos.
func (m testManager) dialTLS(t *testing.T, protos ...string) net.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", m.cluster, m.tlsConfig(protos...))
	if err != nil {
		t.Fatalf("TLS to the cluster port: %v", err)
	}
	return c
}

// conn opens a connection to addr, one of the manager's ports, as a client of it does:
// plain TCP to the client API, TLS offering HTTP/2 to the cluster port.
func (m testManager) conn(t *testing.T, addr string) net.Conn {
	t.Helper()
	if addr == m.cluster {
		return m.dialTLS(t, "h2")
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startManager serves the manager's two ports on loopback, as Run does.
func startManager(t *testing.T) testManager {
	t.Helper()
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := manager.New(manager.Config{Version: "test", Names: manager.NewNames("cluster.local", "127.0.0.1:1"), Log: log})
	cert, pool := testCertificate(t)
	s := newServers(srv, manager.NewRegistry(oneAgent{}, nil, log), nil, testLimits(), cert, log)
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
	return testManager{client: lns[0].Addr().String(), cluster: lns[1].Addr().String(), logs: logs, ca: pool}
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
	https := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: m.tlsConfig()}}
	resp, err := https.Get("https://" + m.cluster + "/healthz")
	if err != nil {
		t.Fatalf("cluster port: /healthz: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("cluster port: /healthz: %s %q", resp.Status, body)
	}
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+agentToken)
	stream, err := tunnelpb.NewAgentsClient(m.dialAgent(t)).Watch(actx, &tunnelpb.AgentHello{Pod: webAgent.Pod, Namespace: webAgent.Namespace})
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

// dialAgent is a gRPC client of the cluster port, as an agent makes it.
func (m testManager) dialAgent(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+m.cluster, grpc.WithTransportCredentials(credentials.NewTLS(m.tlsConfig())),
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
// naming the port, and both ports go on serving. The cluster port speaks TLS only: sent in
// the clear, the bytes are a plaintext client; sent inside TLS, they reach its HTTP
// servers, which close the connection as before.
func TestGarbageConnectionsAreClosedAndLogged(t *testing.T) {
	preface := []byte(http2.ClientPreface)
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	// A WINDOW_UPDATE of 0 for the connection is a connection error.
	badFrame := []byte{0, 0, 4, 0x8, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	const (
		plaintext = "cluster port: closed a plaintext connection: this port speaks TLS only"
		noRequest = "cluster port: dropped a connection that sent no valid request"
	)
	for _, c := range []struct {
		name                           string
		in                             []byte
		client, plain, inTLS           string // the log line on each
		clientIn, plainIn, inTLSWithin time.Duration
	}{
		{"random bytes", random(4096),
			"client API: dropped a connection that sent no valid request", plaintext, noRequest, time.Second, time.Second, time.Second},
		{"truncated preface", preface[:20],
			"client API: dropped a connection that sent no valid request in time", plaintext, noRequest + " in time", 2 * time.Second, time.Second, 2 * time.Second},
		{"tls hello", cat([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), random(500)),
			"client API: dropped a connection that sent no valid request", noRequest, noRequest, time.Second, time.Second, time.Second},
		{"preface then random bytes", cat(preface, random(4096)),
			"client API: closed a connection on an HTTP/2 protocol error", plaintext, noRequest, time.Second, time.Second, 3 * time.Second},
		{"preface then a bad frame", cat(preface, settings, badFrame),
			"client API: closed a connection on an HTTP/2 protocol error", plaintext, noRequest, time.Second, time.Second, 3 * time.Second},
		// The client API keeps a connection past its handshake until keepalive finds it
		// dead (30 s and 10 s); the cluster port closes it once idle.
		{"preface then nothing", cat(preface, settings),
			"", plaintext, noRequest, 0, time.Second, 3 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := startManager(t)
			protos := []string{"http/1.1"}
			if bytes.HasPrefix(c.in, preface) {
				protos = []string{"h2"}
			}
			for _, p := range []struct {
				dial   func() net.Conn
				line   string
				within time.Duration
			}{
				{func() net.Conn { return m.conn(t, m.client) }, c.client, c.clientIn},
				{func() net.Conn { conn, _ := net.Dial("tcp", m.cluster); return conn }, c.plain, c.plainIn},
				{func() net.Conn { return m.dialTLS(t, protos...) }, c.inTLS, c.inTLSWithin},
			} {
				if p.line == "" {
					continue
				}
				before := m.logs.Count(p.line)
				conn := p.dial()
				_, _ = conn.Write(c.in)
				expectClosed(t, conn, p.within)
				conn.Close()
				m.logs.Expect(t, p.line, before+1, 3*time.Second)
			}
			m.stillServes(t)
		})
	}
}

// An HTTP/1.1 request is no gRPC call: the client API drops it, the cluster port answers
// it as a probe (inside TLS; in the clear it is refused), and neither passes it to the
// agents' API.
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
	m.logs.Expect(t, "client API: dropped a connection that sent no valid request", 1, 3*time.Second)

	// In the clear: net/http says it wants TLS, and closes.
	conn, err = net.Dial("tcp", m.cluster)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, req)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("cluster port in the clear: %v %v", resp, err)
	}
	expectClosed(t, conn, time.Second)
	conn.Close()
	m.logs.Expect(t, "cluster port: closed a plaintext connection", 1, 3*time.Second)

	conn = m.dialTLS(t, "http/1.1")
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, req)
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("cluster port: %v %v", resp, err)
	}
	expectClosed(t, conn, 3*time.Second) // idle
	m.logs.Expect(t, "cluster port: dropped a connection that sent no valid request", 1, 3*time.Second)
	if n := m.logs.Count("agent refused"); n != 0 {
		t.Fatalf("an HTTP/1 request reached the agents' API")
	}
	m.stillServes(t)
}

// The agents' API is served over TLS only: an h2c client gets no service, a TLS client
// that does not trust tp's CA (or expects another name) cannot complete a verified
// handshake, and one that trusts it is served.
func TestClusterPortIsTLSOnly(t *testing.T) {
	m := startManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+agentToken)
	hello := &tunnelpb.AgentHello{Pod: webAgent.Pod, Namespace: webAgent.Namespace}
	stream, err := tunnelpb.NewAgentsClient(dial(t, m.cluster)).Watch(actx, hello)
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Watch over h2c: %v, want Unavailable (no service)", err)
	}
	m.logs.Expect(t, "cluster port: closed a plaintext connection", 1, 3*time.Second)
	if n := m.logs.Count("agent refused") + m.logs.Count("agent API: refused a call"); n != 0 {
		t.Error("a call over h2c reached the agents' API")
	}

	for what, cfg := range map[string]*tls.Config{
		"the system's roots":   {ServerName: clusterName, MinVersion: tls.VersionTLS13},
		"another CA":           {RootCAs: otherCA(t), ServerName: clusterName, MinVersion: tls.VersionTLS13},
		"another server name":  {RootCAs: m.ca, ServerName: "tp-manager.elsewhere.svc", MinVersion: tls.VersionTLS13},
		"a Service IP as name": {RootCAs: m.ca, ServerName: "10.96.0.1", MinVersion: tls.VersionTLS13},
	} {
		c, err := tls.Dial("tcp", m.cluster, cfg)
		if err == nil {
			c.Close()
			t.Errorf("%s: handshake verified", what)
			continue
		}
		var unknown x509.UnknownAuthorityError
		var name x509.HostnameError
		if !errors.As(err, &unknown) && !errors.As(err, &name) {
			t.Errorf("%s: %v, want a verification failure", what, err)
		}
	}
	m.logs.Expect(t, "TLS handshake error", 1, 3*time.Second)
	m.stillServes(t)
}

// Refusals are logged a few at a time: a flood of plaintext clients costs a few lines.
func TestPlaintextRefusalsAreLoggedSometimes(t *testing.T) {
	m := startManager(t)
	const line = "cluster port: closed a plaintext connection"
	plain := func() {
		conn, err := net.Dial("tcp", m.cluster)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(conn, http2.ClientPreface)
		expectClosed(t, conn, time.Second)
		conn.Close()
	}
	for range 20 {
		plain()
	}
	time.Sleep(200 * time.Millisecond) // the last reports
	if n := m.logs.Count(line); n != testLimits().refusalLines {
		t.Fatalf("%d lines for 20 plaintext clients, want %d", n, testLimits().refusalLines)
	}
	time.Sleep(testLimits().refusalPeriod)
	plain()
	m.logs.Expect(t, "15 more not logged", 1, 3*time.Second)
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
	m.logs.Expect(t, "client API: dropped a connection that sent no valid request in time", n, 3*time.Second)
	m.logs.Expect(t, "cluster port: dropped a connection that sent no valid request in time", n, 3*time.Second)
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
		before := m.logs.Count(c.line)
		fields := call(t, m.conn(t, c.addr), c.path, append(header, random(100)...))
		if fields["grpc-status"] == "0" || fields["grpc-status"] == "" {
			t.Errorf("%s: answered %v", c.path, fields)
		}
		if c.line != "" {
			m.logs.Expect(t, c.line, before+1, 3*time.Second)
		}
	}
	m.stillServes(t)
}

// Calls of methods the manager does not have are refused and logged.
func TestUnknownMethodsAreRefused(t *testing.T) {
	m := startManager(t)
	for _, c := range []struct{ addr, line string }{{m.client, "client API: refused a call"}, {m.cluster, "agent API: refused a call"}} {
		fields := call(t, m.conn(t, c.addr), "/tp.tunnel.v1.Nothing/Here", []byte{0, 0, 0, 0, 0})
		if fields["grpc-status"] != "12" {
			t.Errorf("%s: answered %v", c.addr, fields)
		}
		m.logs.Expect(t, c.line, 1, 3*time.Second)
	}
	m.stillServes(t)
}

// call makes one gRPC call by hand (its request message as body) and returns the fields
// of the answer's headers and trailers.
func call(t *testing.T, conn net.Conn, path string, body []byte) map[string]string {
	t.Helper()
	addr := conn.RemoteAddr().String()
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
