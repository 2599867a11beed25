//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
	"github.com/tpdev/tp/tests/kit"
)

// TestHostileInput sends garbage, truncated and oversized input to every port tp listens
// on (the proxy, the DNS shim, the manager's cluster port) and checks that each bad client
// is cut off, that the rest keep being served and that nothing crashed; and that the
// manager's client API cannot be reached from the cluster network.
func TestHostileInput(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-hostile")
	w := deployWorkload(t, cs, ns, "web-app")
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")
	l.MustTP(t, time.Minute, "connect", "--namespace", ns, "--dns-listen", "127.0.0.1:1053")
	pid := status(t, l, "default").PID
	stillServes := func(t *testing.T, after string) {
		t.Helper()
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("the tp daemon died after %s: %v", after, err)
		}
		r := l.Curl(20*time.Second, "-x", "http://127.0.0.1:1080", "http://web-app/still")
		if want := fmt.Sprintf("pod=%s path=/still\n", w.Pod); r.Stdout != want {
			t.Errorf("after %s the proxy answers %q %s, want %q", after, r.Stdout, r.Stderr, want)
		}
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		b[0] = 0xEE // neither SOCKS5 (5) nor an HTTP method's first letter
		return b
	}

	t.Run("ProxyPort", func(t *testing.T) {
		cases := []struct {
			name string
			send []byte
		}{
			{"RandomMiB", random(1 << 20)},
			{"TruncatedSOCKSGreeting", []byte{5}},
			{"SOCKSBadAddressType", []byte{5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4}},
			{"SOCKSHugeName", append([]byte{5, 1, 0, 5, 1, 0, 3, 255}, random(255)...)},
			{"HTTPEndlessRequestLine", append([]byte("GET /"), bytesOf('a', 2<<20)...)},
			{"HTTPHugeHeader", append([]byte("GET http://web-app/ HTTP/1.1\r\nHost: web-app\r\nX: "), bytesOf('b', 2<<20)...)},
			{"HTTPBadConnect", []byte("CONNECT :::: HTTP/1.1\r\n\r\n")},
			{"HTTPNegativeLength", []byte("POST http://web-app/ HTTP/1.1\r\nHost: web-app\r\nContent-Length: -5\r\n\r\n")},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c, err := l.Dial(ctx, "tcp", "127.0.0.1:1080")
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(15 * time.Second))
				go func() {
					// Then EOF: a truncated request from a client still sending is only
					// cut off by the handshake timeout, as it should be.
					_, _ = c.Write(tc.send)
					_ = c.(interface{ CloseWrite() error }).CloseWrite()
				}()
				// The proxy answers with an error and closes, or just closes: either way
				// the client is cut off well before any timeout of ours.
				reply, err := io.ReadAll(c)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("the proxy kept a client that sent %s open for 15 s (got %q)", tc.name, clip(reply))
				}
				t.Logf("reply %q, then %v", clip(reply), err)
				stillServes(t, tc.name)
			})
		}
		t.Run("ManySilentClients", func(t *testing.T) {
			var conns []net.Conn
			for range 300 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c, err := l.Dial(ctx, "tcp", "127.0.0.1:1080")
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			stillServes(t, "300 clients that send nothing")
			for _, c := range conns {
				c.Close()
			}
		})
		log, _ := os.ReadFile(filepath.Join(l.Home, ".tp", "sessions", "default", "daemon.log"))
		if !strings.Contains(string(log), "neither SOCKS5 nor HTTP") {
			t.Errorf("the daemon's log tells nothing of the garbage it closed:\n%s", clip(log))
		}
	})

	t.Run("DNSPort", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		udp, err := l.Dial(ctx, "udp", "127.0.0.1:1053")
		if err != nil {
			t.Fatal(err)
		}
		defer udp.Close()
		for i := range 200 {
			_, _ = udp.Write(random(1 + i*300%4000))
		}
		valid := new(dns.Msg)
		valid.SetQuestion("web-app."+ns+".svc.cluster.local.", dns.TypeA)
		packed, _ := valid.Pack()
		_, _ = udp.Write(packed[:len(packed)-3]) // truncated
		for _, send := range [][]byte{
			{0xff, 0xff},                             // announces 64 KiB, sends nothing
			append([]byte{0, 200}, random(200)...),   // a whole message of garbage
			append([]byte{0x40, 0}, random(1000)...), // announces 16 KiB, sends less, closes
		} {
			c, err := l.Dial(ctx, "tcp", "127.0.0.1:1053")
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(15 * time.Second))
			_, _ = c.Write(send)
			_ = c.(interface{ CloseWrite() error }).CloseWrite()
			if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the DNS shim kept a TCP client that sent %d bytes of garbage and EOF open", len(send))
			}
			c.Close()
		}
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("the tp daemon died: %v", err)
		}
		// A good question is still answered, over UDP and TCP.
		for _, network := range []string{"udp", "tcp"} {
			conn, err := l.Dial(ctx, network, "127.0.0.1:1053")
			if err != nil {
				t.Fatal(err)
			}
			dc := &dns.Conn{Conn: conn}
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if err := dc.WriteMsg(valid); err != nil {
				t.Fatal(err)
			}
			resp, err := dc.ReadMsg()
			conn.Close()
			if err != nil || len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != w.ClusterIP {
				t.Errorf("DNS over %s after the garbage: %v %v, want %s", network, resp, err, w.ClusterIP)
			}
		}
		stillServes(t, "DNS garbage")
		log, _ := os.ReadFile(filepath.Join(l.Home, ".tp", "sessions", "default", "daemon.log"))
		if !strings.Contains(string(log), "dns shim: dropped a malformed message") {
			t.Errorf("the daemon's log tells nothing of the DNS garbage it dropped")
		}
	})

	t.Run("ManagerPorts", func(t *testing.T) {
		kit.WaitManagerPods(t, cs, 1) // the pod it replaced may still be draining
		pods, err := cs.CoreV1().Pods(deploy.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: deploy.ManagerLabelSelector})
		if err != nil || len(pods.Items) != 1 {
			t.Fatalf("manager pods: %v %d", err, len(pods.Items))
		}
		pod := pods.Items[0]
		restarts := func() int32 {
			p, err := cs.CoreV1().Pods(pod.Namespace).Get(context.Background(), pod.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var n int32
			for _, c := range p.Status.ContainerStatuses {
				n += c.RestartCount
			}
			return n
		}
		before := restarts()
		// The client API listens on the pod's loopback only: from the cluster network (here
		// the node, as any pod could) it is not there at all.
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(deploy.ClientPort)), 3*time.Second); err == nil {
			c.Close()
			t.Errorf("the manager's client API answers on %s:%d from the cluster network", pod.Status.PodIP, deploy.ClientPort)
		}
		// The cluster port serves agents only: the client API (tunnels, names) is not on it.
		addr, agentTLS := managerAddr(t, cs), managerTLS(t, deploy.DefaultNamespace)
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(agentTLS)),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(tunnel.Codec())))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		mc := tunnelpb.NewManagerClient(cc)
		if _, err := mc.Resolve(ctx, &tunnelpb.ResolveRequest{Name: "web-app", Namespace: ns}); grpcstatus.Code(err) != codes.Unimplemented {
			t.Errorf("Resolve on the cluster port: %v, want Unimplemented", err)
		}
		if st, err := mc.Tunnel(ctx); err == nil {
			_ = st.Send(&tunnelpb.Frame{})
			if _, err := st.Recv(); grpcstatus.Code(err) != codes.Unimplemented {
				t.Errorf("Tunnel on the cluster port: %v, want Unimplemented", err)
			}
		}
		// Garbage on the cluster port, in the clear (refused by TLS) and inside a verified
		// TLS connection (refused by the HTTP servers behind it).
		dials := map[string]func(protos ...string) (net.Conn, error){
			"in the clear": func(...string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) },
			"inside TLS": func(protos ...string) (net.Conn, error) {
				cfg := agentTLS.Clone()
				cfg.NextProtos = protos
				return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
			},
		}
		for how, dial := range dials {
			for _, send := range [][]byte{
				random(1 << 20),
				[]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + strings.Repeat("\x00\x00\x04\x08\x00\x00\x00\x00\x00", 1000)),
				[]byte("PRI * HTTP/2.0\r\n\r\nSM"), // truncated preface
				append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), random(4096)...),
				[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
			} {
				protos := []string{"http/1.1"}
				if bytes.HasPrefix(send, []byte("PRI")) {
					protos = []string{"h2"}
				}
				c, err := dial(protos...)
				if err != nil {
					t.Fatalf("%s: %v", how, err)
				}
				_ = c.SetDeadline(time.Now().Add(15 * time.Second))
				go func() { _, _ = c.Write(send) }()
				// In the clear, even a short request is cut off at once.
				if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) && (len(send) > 30 || how == "in the clear") {
					t.Errorf("the manager kept a connection that sent %q... %s open", clip(send), how)
				}
				c.Close()
			}
		}
		if after := restarts(); after != before {
			t.Errorf("the manager restarted %d times under garbage", after-before)
		}
		stillServes(t, "garbage on the manager's cluster port")
	})

	// The agents' API is TLS only: a plaintext gRPC client gets no service, a TLS client
	// that does not trust tp's CA (or expects another name) cannot complete a verified
	// handshake, one that trusts it is served (its forged token then refused), and the
	// manager logs the plaintext client.
	t.Run("ClusterPortIsTLSOnly", func(t *testing.T) {
		addr, agentTLS := managerAddr(t, cs), managerTLS(t, deploy.DefaultNamespace)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		h2c, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer h2c.Close()
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		stream, err := tunnelpb.NewAgentsClient(h2c).Watch(wctx, &tunnelpb.AgentHello{Pod: "p", Namespace: ns})
		if err == nil {
			_, err = stream.Recv()
		}
		wcancel()
		if code := grpcstatus.Code(err); code != codes.Unavailable {
			t.Errorf("Agents.Watch over h2c: %v, want Unavailable (no service; Unauthenticated would mean the call was read)", err)
		}
		t.Logf("Agents.Watch over h2c: %v", err)

		for what, cfg := range map[string]*tls.Config{
			"the system's roots":  {ServerName: agentTLS.ServerName, MinVersion: tls.VersionTLS12},
			"another server name": {RootCAs: agentTLS.RootCAs, ServerName: "tp-manager.default.svc", MinVersion: tls.VersionTLS12},
		} {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
			if err == nil {
				c.Close()
				t.Errorf("TLS trusting %s: the handshake verified", what)
				continue
			}
			var unknown x509.UnknownAuthorityError
			var name x509.HostnameError
			if !errors.As(err, &unknown) && !errors.As(err, &name) {
				t.Errorf("TLS trusting %s: %v, want a verification failure", what, err)
			}
			t.Logf("TLS trusting %s: %v", what, err)
		}

		if err := agentWatch(addr, agentTLS, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", ns, "p"); grpcstatus.Code(err) != codes.Unauthenticated && grpcstatus.Code(err) != codes.PermissionDenied {
			t.Errorf("Agents.Watch over TLS with tp's CA and a forged token: %v, want it served and refused", err)
		}
		probe := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: agentTLS, Proxy: nil}}
		resp, err := probe.Get("https://" + addr + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz over TLS with tp's CA: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/1.1" {
			t.Errorf("GET /healthz over TLS: %s %s %q", resp.Proto, resp.Status, body)
		}

		pods, err := cs.CoreV1().Pods(deploy.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: deploy.ManagerLabelSelector})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("manager pods: %v", err)
		}
		logs, err := cs.CoreV1().Pods(deploy.DefaultNamespace).GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{Container: deploy.ManagerContainer}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(logs), "cluster port: closed a plaintext connection") {
			t.Errorf("the manager's log does not tell of the plaintext clients:\n%s", clip(logs))
		}
		stillServes(t, "plaintext and untrusted TLS clients on the manager's cluster port")
	})
}

func bytesOf(b byte, n int) []byte { return []byte(strings.Repeat(string(b), n)) }

func clip(b []byte) string {
	if len(b) > 120 {
		return string(b[:120]) + "..."
	}
	return string(b)
}
