package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/tpdev/tp/deploy/pki"
	"github.com/tpdev/tp/remote/testlog"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

const secretToken = "the-agents-secret-token"

// watches records the Watch calls a manager gets: the token, and whether over TLS.
type watches struct {
	tunnelpb.UnimplementedAgentsServer
	calls chan string
}

func (w *watches) Watch(_ *tunnelpb.AgentHello, stream grpc.ServerStreamingServer[tunnelpb.AgentState]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	p, _ := peer.FromContext(stream.Context())
	_, isTLS := p.AuthInfo.(credentials.TLSInfo)
	w.calls <- strings.Join(md.Get("authorization"), ",") + " tls=" + map[bool]string{true: "yes", false: "no"}[isTLS]
	<-stream.Context().Done()
	return nil
}

// manager serves the agents' API over TLS with a certificate of ca for the Service's names.
func manager(t *testing.T, ca *pki.CA) (string, *watches) {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueServer(pki.ServerNames("tp-manager", "tp-system"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &watches{calls: make(chan string, 10)}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})),
		grpc.ForceServerCodecV2(tunnel.Codec()))
	tunnelpb.RegisterAgentsServer(srv, w)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), w
}

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// runAgent runs an agent against addr, trusting ca, until the test ends; it returns the
// agent's log.
func runAgent(t *testing.T, addr string, ca []byte) *testlog.Buffer {
	t.Helper()
	logs := &testlog.Buffer{}
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte(secretToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Pod: "web-0", Namespace: "default", Manager: addr, ServerName: "tp-manager.tp-system.svc",
			CA: ca, TokenFile: tok, Ports: []Port{{Name: "http", Listen: 0, App: 1}}, Log: slog.New(slog.NewTextHandler(logs, nil))})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	return logs
}

func TestAgentVerifiesTheManager(t *testing.T) {
	ca := newCA(t)
	addr, w := manager(t, ca)
	runAgent(t, addr, ca.CertPEM)
	select {
	case got := <-w.calls:
		if got != "Bearer "+secretToken+" tls=yes" {
			t.Fatalf("the manager got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not register with a manager it trusts")
	}
}

// A manager whose certificate is not from the agent's CA (someone else on the pod
// network) gets no call, so no token.
func TestAgentRefusesAnUntrustedManager(t *testing.T) {
	addr, w := manager(t, newCA(t))
	logs := runAgent(t, addr, newCA(t).CertPEM)
	select {
	case got := <-w.calls:
		t.Fatalf("an untrusted manager got a call: %q", got)
	case <-time.After(2 * time.Second):
	}
	// The agent says why, once, though gRPC tries again and again.
	if n := strings.Count(logs.String(), "TLS handshake with the manager failed"); n != 1 || !strings.Contains(logs.String(), "x509") {
		t.Errorf("%d log lines about the failed handshake, want 1 naming the certificate:\n%s", n, logs.String())
	}
}

// A server that speaks no TLS sees a TLS hello and nothing else: the token never travels
// in the clear.
func TestAgentNeverSendsItsTokenInTheClear(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var got bytes.Buffer
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
				b, _ := io.ReadAll(c)
				mu.Lock()
				got.Write(b)
				mu.Unlock()
			}()
		}
	}()
	runAgent(t, ln.Addr().String(), newCA(t).CertPEM)
	time.Sleep(2 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	if bytes.Contains(got.Bytes(), []byte(secretToken)) || bytes.Contains(got.Bytes(), []byte("PRI * HTTP/2.0")) {
		t.Fatalf("the agent sent in the clear: %q", got.Bytes())
	}
	if got.Len() == 0 || got.Bytes()[0] != 0x16 {
		t.Fatalf("the agent sent %q, want a TLS hello", got.Bytes())
	}
}

func TestAgentNeedsACA(t *testing.T) {
	for _, ca := range [][]byte{nil, []byte("not PEM")} {
		err := Run(context.Background(), Config{Pod: "p", Namespace: "n", Manager: "tp-manager.tp-system.svc:8082", CA: ca,
			Ports: []Port{{Name: "http", Listen: 0, App: 1}}})
		if err == nil || !strings.Contains(err.Error(), "CA") {
			t.Errorf("CA %q: %v, want a refusal to start", ca, err)
		}
	}
}
