//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/output"
	"github.com/tpdev/tp/remote/laptop/session"
	"github.com/tpdev/tp/tests/kit"
	"github.com/tpdev/tp/tests/workload"
)

// TestConnect is tp's main job, end to end: on the laptop (a network namespace that reaches
// only the API server, as an unprivileged user), `tp install` and `tp connect`, then real
// clients reach cluster services by name and address through the one proxy port.
func TestConnect(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-connect")
	other := namespace(t, cs, "tp-e2e-other")
	w := deployWorkload(t, cs, ns, "web-app")
	w2 := deployWorkload(t, cs, other, "web-app")
	l := kit.NewLaptop(t)

	r := l.MustTP(t, 3*time.Minute, "install")
	t.Logf("tp install: %s", strings.TrimSpace(r.Stderr))
	r = l.MustTP(t, time.Minute, "connect", "--namespace", ns, "--dns-listen", "127.0.0.1:1053")
	if !strings.Contains(r.Stdout, "export ALL_PROXY='socks5h://127.0.0.1:1080'") || !strings.Contains(r.Stdout, "export HTTP_PROXY='http://127.0.0.1:1080'") {
		t.Fatalf("tp connect printed no exports:\n%s", r.Stdout)
	}
	socks, httpProxy := "socks5h://127.0.0.1:1080", "http://127.0.0.1:1080"

	t.Run("NamesAndAddresses", func(t *testing.T) {
		targets := []struct{ url, pod string }{
			{"http://web-app/short", w.Pod},
			{"http://web-app." + other + "/other-ns", w2.Pod},
			{"http://web-app." + ns + ".svc.cluster.local/fqdn", w.Pod},
			{"http://" + w.ClusterIP + "/clusterip", w.Pod},
			{fmt.Sprintf("http://%s:%d/podip", w.PodIP, HTTPPort), w.Pod},
		}
		for _, px := range []string{socks, httpProxy} {
			for _, tg := range targets {
				r := l.Curl(20*time.Second, "-x", px, tg.url)
				path := tg.url[strings.LastIndex(tg.url, "/"):]
				if want := fmt.Sprintf("pod=%s path=%s\n", tg.pod, path); r.Err != nil || r.Stdout != want {
					t.Errorf("curl -x %s %s: got %q (%v %s), want %q", px, tg.url, r.Stdout, r.Err, r.Stderr, want)
				}
			}
		}
	})

	t.Run("HTTPSThroughCONNECT", func(t *testing.T) {
		r := l.Curl(20*time.Second, "-k", "-x", httpProxy, "https://web-app/tls")
		if want := fmt.Sprintf("pod=%s path=/tls\n", w.Pod); r.Stdout != want {
			t.Fatalf("curl https through CONNECT: got %q (%v %s)", r.Stdout, r.Err, r.Stderr)
		}
	})

	t.Run("TCPEchoThroughSOCKS", func(t *testing.T) {
		conn := socksDial(t, l, "web-app:"+strconv.Itoa(TCPEchoPort))
		echo(t, conn, 4<<20)
	})

	t.Run("UDPEchoThroughSOCKS", func(t *testing.T) {
		for _, target := range []string{"web-app", w.ClusterIP} {
			got := socksUDPEcho(t, l, target, UDPEchoPort, []byte("datagram to "+target))
			if string(got) != "datagram to "+target {
				t.Fatalf("udp echo via %s: got %q", target, got)
			}
		}
	})

	t.Run("DNS", func(t *testing.T) {
		dig := func(args ...string) string {
			r := l.Run(15*time.Second, nil, "dig", append([]string{"@127.0.0.1", "-p", "1053", "+short", "+time=3", "+tries=1"}, args...)...)
			if r.Err != nil {
				t.Fatalf("dig %v: %v %s", args, r.Err, r.Stderr)
			}
			return strings.TrimSpace(r.Stdout)
		}
		if got := dig("web-app"); !strings.HasSuffix(got, w.ClusterIP) {
			t.Errorf("dig web-app: %q, want it to end with %s", got, w.ClusterIP)
		}
		if got := dig("web-app." + other); !strings.HasSuffix(got, w2.ClusterIP) {
			t.Errorf("dig web-app.%s: %q, want %s", other, got, w2.ClusterIP)
		}
		if got := dig("SRV", "_http._tcp.web-app."+ns+".svc.cluster.local"); !strings.Contains(got, " 80 web-app."+ns+".svc.cluster.local.") {
			t.Errorf("dig SRV: %q", got)
		}
		if got := dig("-x", w.ClusterIP); got != "web-app."+ns+".svc.cluster.local." {
			t.Errorf("dig -x %s: %q", w.ClusterIP, got)
		}
		// Neither the cluster's nor resolvable here (the laptop reaches no resolver): an
		// answer at once, NXDOMAIN or SERVFAIL, never a wait.
		start := time.Now()
		r := l.Run(15*time.Second, nil, "dig", "@127.0.0.1", "-p", "1053", "+time=3", "+tries=1", "no-such-svc")
		if !strings.Contains(r.Stdout, "NXDOMAIN") && !strings.Contains(r.Stdout, "SERVFAIL") || time.Since(start) > 2*time.Second {
			t.Errorf("dig no-such-svc: want NXDOMAIN or SERVFAIL at once, got after %s: %s %s", time.Since(start), r.Stdout, r.Stderr)
		}
	})

	t.Run("ConcurrentConnections", func(t *testing.T) {
		px, _ := url.Parse(httpProxy)
		c := l.HTTPClient(px, 60*time.Second)
		c.Transport.(*http.Transport).DisableKeepAlives = true // 200 connections, not 200 requests on a few
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for i := range 200 {
			wg.Go(func() {
				resp, err := c.Get(fmt.Sprintf("http://web-app/conc/%d", i))
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if want := fmt.Sprintf("pod=%s path=/conc/%d\n", w.Pod, i); string(body) != want {
					errs <- fmt.Errorf("request %d: %q", i, body)
				}
			})
		}
		wg.Wait()
		close(errs)
		n := 0
		for err := range errs {
			if n < 5 {
				t.Error(err)
			}
			n++
		}
		if n > 0 {
			t.Fatalf("%d of 200 concurrent requests failed", n)
		}
	})

	t.Run("BulkDownloadAndUpload", func(t *testing.T) {
		px, _ := url.Parse(httpProxy)
		c := l.HTTPClient(px, 5*time.Minute)
		const n = 200 << 20
		start := time.Now()
		resp, err := c.Get(fmt.Sprintf("http://web-app/bytes?n=%d", n))
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.New()
		copied, err := io.Copy(got, resp.Body)
		resp.Body.Close()
		if err != nil || copied != n {
			t.Fatalf("download: %d of %d bytes: %v", copied, n, err)
		}
		want := sha256.New()
		_, _ = io.CopyN(want, workload.Pattern(), n)
		if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Fatal("download: digest differs from the pattern's")
		}
		t.Logf("200 MiB down in %s", time.Since(start).Round(time.Millisecond))

		start = time.Now()
		up := sha256.New()
		body := io.TeeReader(io.LimitReader(rand.Reader, n), up)
		resp, err = c.Post("http://web-app/sha256", "application/octet-stream", body)
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(answer)) != hex.EncodeToString(up.Sum(nil)) {
			t.Fatalf("upload: server's digest %q differs from the sent bytes'", answer)
		}
		t.Logf("200 MiB up in %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("ErrorsSayWhatHappened", func(t *testing.T) {
		r := l.Curl(20*time.Second, "-x", httpProxy, "-w", "\n%{http_code}", "http://web-ap/")
		if want := fmt.Sprintf("tp: no service \"web-ap\" in namespace %q", ns); !strings.Contains(r.Stdout, want) || !strings.HasSuffix(r.Stdout, "502") {
			t.Errorf("unknown service over HTTP: got %q, want 502 and %q", r.Stdout, want)
		}
		r = l.Curl(20*time.Second, "-x", httpProxy, "-w", "\n%{http_code}", fmt.Sprintf("http://%s:9999/", w.PodIP))
		if !strings.Contains(r.Stdout, "connection refused") || !strings.HasSuffix(r.Stdout, "502") {
			t.Errorf("closed port over HTTP: got %q, want 502 and 'connection refused'", r.Stdout)
		}
		if _, err := socksDialErr(l, "web-ap:80"); err == nil || !strings.Contains(err.Error(), "host unreachable") {
			t.Errorf("unknown service over SOCKS: %v, want host unreachable", err)
		}
		if _, err := socksDialErr(l, fmt.Sprintf("%s:9999", w.PodIP)); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("closed port over SOCKS: %v, want connection refused", err)
		}
	})

	t.Run("StatusAndReuse", func(t *testing.T) {
		info := status(t, l, "default")
		var st session.Status
		_ = json.Unmarshal(info.Session, &st)
		if st.State != session.Connected || info.Namespace != ns || info.Listen != "127.0.0.1:1080" || st.TotalFlows == 0 || st.BytesIn == 0 {
			t.Fatalf("tp status: %+v %+v", info, st)
		}
		r := l.MustTP(t, time.Minute, "connect", "--namespace", ns)
		if !strings.Contains(r.Stderr, "already connected") || status(t, l, "default").PID != info.PID {
			t.Fatalf("second tp connect did not reuse the session: %s", r.Stderr)
		}
		r = l.TPRun(time.Minute, "connect", "--namespace", other)
		if r.Code != 2 || !strings.Contains(r.Stderr, "--name") {
			t.Fatalf("tp connect to another namespace under the same name: exit %d, %s", r.Code, r.Stderr)
		}
	})

	t.Run("SecondNamedConnection", func(t *testing.T) {
		l.MustTP(t, time.Minute, "connect", "--name", "second", "--namespace", other, "--listen", "127.0.0.1:1081")
		r := l.Curl(20*time.Second, "-x", "socks5h://127.0.0.1:1081", "http://web-app/second")
		if want := fmt.Sprintf("pod=%s path=/second\n", w2.Pod); r.Stdout != want {
			t.Errorf("second connection: got %q (%s), want %q", r.Stdout, r.Stderr, want)
		}
		r = l.Curl(20*time.Second, "-x", socks, "http://web-app/first")
		if want := fmt.Sprintf("pod=%s path=/first\n", w.Pod); r.Stdout != want {
			t.Errorf("first connection beside the second: got %q (%s), want %q", r.Stdout, r.Stderr, want)
		}
		l.MustTP(t, 30*time.Second, "quit", "--name", "second")
	})

	t.Run("TunnelDownThenBack", func(t *testing.T) {
		scaleManager(t, cs, 0)
		kit.WaitFor(t, 60*time.Second, "manager pods gone", func() error {
			pods, err := cs.CoreV1().Pods(deploy.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: deploy.ManagerLabelSelector})
			if err == nil && len(pods.Items) > 0 {
				err = fmt.Errorf("%d pods", len(pods.Items))
			}
			return err
		})
		kit.WaitFor(t, 30*time.Second, "HTTP 503 while the tunnel is down", func() error {
			r := l.Curl(10*time.Second, "-x", httpProxy, "-w", "\n%{http_code}", "http://web-app/down")
			if !strings.HasSuffix(r.Stdout, "503") || !strings.Contains(r.Stdout, "tunnel") {
				return fmt.Errorf("got %q", r.Stdout)
			}
			return nil
		})
		if _, err := socksDialErr(l, "web-app:80"); err == nil || !strings.Contains(err.Error(), "general") {
			t.Errorf("SOCKS while the tunnel is down: %v, want general failure", err)
		}
		scaleManager(t, cs, 1)
		start := time.Now()
		kit.WaitFor(t, 90*time.Second, "the tunnel back", func() error {
			r := l.Curl(10*time.Second, "-x", httpProxy, "http://web-app/back")
			if r.Stdout != fmt.Sprintf("pod=%s path=/back\n", w.Pod) {
				return fmt.Errorf("got %q %s", r.Stdout, r.Stderr)
			}
			return nil
		})
		t.Logf("tunnel back %s after the manager was scaled up", time.Since(start).Round(100*time.Millisecond))
		var st session.Status
		_ = json.Unmarshal(status(t, l, "default").Session, &st)
		if st.Reconnects < 1 || st.State != session.Connected {
			t.Errorf("tp status after the outage: %+v, want connected with a reconnect counted", st)
		}
	})

	t.Run("QuitLeavesNothing", func(t *testing.T) {
		pid := status(t, l, "default").PID
		l.MustTP(t, 30*time.Second, "quit")
		if err := exec0("kill", "-0", strconv.Itoa(pid)); err == nil {
			t.Errorf("tp daemon pid %d still runs after tp quit", pid)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, addr := range []string{"127.0.0.1:1080", "127.0.0.1:1053"} {
			if c, err := l.Dial(ctx, "tcp", addr); err == nil {
				c.Close()
				t.Errorf("%s still listens after tp quit", addr)
			}
		}
		if r := l.TPRun(10*time.Second, "status"); !strings.Contains(r.Stdout, "not connected") {
			t.Errorf("tp status after quit: %q", r.Stdout)
		}
	})

	t.Run("LaptopCannotReachTheClusterDirectly", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if c, err := l.Dial(ctx, "tcp", net.JoinHostPort(w.ClusterIP, "80")); err == nil {
			c.Close()
			t.Fatal("the laptop reached a ClusterIP without tp: the tests above prove nothing")
		}
	})
}

func status(t *testing.T, l *kit.Laptop, name string) control.Info {
	t.Helper()
	r := l.MustTP(t, 10*time.Second, "status", "--json", "--name", name)
	var st output.Status
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil || st.Kind != output.KindStatus || len(st.Sessions) != 1 {
		t.Fatalf("tp status --json: %v %q", err, r.Stdout)
	}
	matchesSchema(t, output.KindStatus, r.Stdout)
	return st.Sessions[0]
}

func scaleManager(t *testing.T, cs kubernetes.Interface, n int32) {
	t.Helper()
	ctx := context.Background()
	scale, err := cs.AppsV1().Deployments(deploy.DefaultNamespace).GetScale(ctx, deploy.ManagerName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = n
	if _, err := cs.AppsV1().Deployments(deploy.DefaultNamespace).UpdateScale(ctx, deploy.ManagerName, scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// socksReplies names SOCKS5 reply codes (RFC 1928) as clients print them.
var socksReplies = map[byte]string{
	1: "general failure", 2: "not allowed by ruleset", 3: "network unreachable", 4: "host unreachable",
	5: "connection refused", 6: "TTL expired", 7: "command not supported", 8: "address type not supported",
}

// socksDialErr opens a SOCKS5 CONNECT to target (host:port, the host sent as a name, as
// socks5h does) through tp's port from the laptop. The client is written out here so the
// test does not trust a library it shares with tp.
func socksDialErr(l *kit.Laptop, target string) (net.Conn, error) {
	return socksDialVia(l, "127.0.0.1:1080", target)
}

// socksDialVia is socksDialErr through the proxy at proxy.
func socksDialVia(l *kit.Laptop, proxy, target string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(portStr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := l.Dial(ctx, "tcp", proxy)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 262)
	req := append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}, host...)
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, buf[:2+4]); err != nil || buf[1] != 0 {
		c.Close()
		return nil, fmt.Errorf("socks handshake: %v %v", buf[:2], err)
	}
	if buf[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("socks connect to %s: %s (reply %d)", target, socksReplies[buf[3]], buf[3])
	}
	rest := 4 + 2 // bound IPv4 address and port
	switch buf[5] {
	case 4:
		rest = 16 + 2
	case 3:
		if _, err := io.ReadFull(c, buf[:1]); err != nil {
			c.Close()
			return nil, err
		}
		rest = int(buf[0]) + 2
	}
	if _, err := io.ReadFull(c, buf[:rest]); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func socksDial(t *testing.T, l *kit.Laptop, target string) net.Conn {
	t.Helper()
	c, err := socksDialErr(l, target)
	if err != nil {
		t.Fatalf("socks dial %s: %v", target, err)
	}
	return c
}

// socksUDPEcho sends one datagram to host:port through a SOCKS5 UDP ASSOCIATE on tp's port
// (RFC 1928, written out here so the test does not trust a library it shares with tp).
func socksUDPEcho(t *testing.T, l *kit.Laptop, host string, port int, payload []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctrl, err := l.Dial(ctx, "tcp", "127.0.0.1:1080")
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	_ = ctrl.SetDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 512)
	if _, err := ctrl.Write([]byte{5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(ctrl, buf[:2]); err != nil || buf[1] != 0 {
		t.Fatalf("socks greeting: %v %v", buf[:2], err)
	}
	if _, err := ctrl.Write([]byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil { // UDP ASSOCIATE 0.0.0.0:0
		t.Fatal(err)
	}
	if _, err := io.ReadFull(ctrl, buf[:10]); err != nil || buf[1] != 0 || buf[3] != 1 {
		t.Fatalf("socks udp associate reply: %v %v", buf[:10], err)
	}
	relay := net.JoinHostPort(net.IP(buf[4:8]).String(), strconv.Itoa(int(binary.BigEndian.Uint16(buf[8:10]))))
	if strings.HasPrefix(relay, "0.0.0.0:") {
		relay = "127.0.0.1" + relay[len("0.0.0.0"):]
	}
	udp, err := l.Dial(ctx, "udp", relay)
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	var pkt []byte
	if ip := net.ParseIP(host).To4(); ip != nil {
		pkt = append([]byte{0, 0, 0, 1}, ip...)
	} else {
		pkt = append([]byte{0, 0, 0, 3, byte(len(host))}, host...)
	}
	pkt = binary.BigEndian.AppendUint16(pkt, uint16(port))
	pkt = append(pkt, payload...)
	for try := 0; ; try++ {
		if _, err := udp.Write(pkt); err != nil {
			t.Fatal(err)
		}
		_ = udp.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := udp.Read(buf)
		if err == nil {
			// Reply header: RSV RSV FRAG ATYP ADDR PORT.
			hdr := 4 + 4 + 2
			switch buf[3] {
			case 3:
				hdr = 4 + 1 + int(buf[4]) + 2
			case 4:
				hdr = 4 + 16 + 2
			}
			return append([]byte(nil), buf[hdr:n]...)
		}
		if try == 3 {
			t.Fatalf("udp through socks to %s: no answer: %v", host, err)
		}
	}
}

func exec0(name string, args ...string) error { return exec.Command(name, args...).Run() }
