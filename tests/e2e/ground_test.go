//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tpdev/tp/remote/laptop/portforward"
	"github.com/tpdev/tp/tests/cluster"
	"github.com/tpdev/tp/tests/workload"
)

// TestGround proves the test cluster is real before any tp feature is tested on it: a pod
// runs from a locally loaded image, kube-proxy carries its ClusterIP, CoreDNS names it, and
// the API server port-forwards to it over both transports. It also proves the laptop
// namespace is a laptop: it reaches the API server and no cluster address.
func TestGround(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-ground")
	w := deployWorkload(t, cs, ns, "web-app")
	t.Logf("workload %s/%s: pod %s at %s, ClusterIP %s", ns, w.Name, w.Pod, w.PodIP, w.ClusterIP)

	t.Run("ClusterIPFromHost", func(t *testing.T) {
		body := httpGet(t, directClient(), fmt.Sprintf("http://%s/via/clusterip", w.ClusterIP))
		if want := fmt.Sprintf("pod=%s path=/via/clusterip\n", w.Pod); body != want {
			t.Fatalf("GET by ClusterIP: got %q, want %q", body, want)
		}
	})
	t.Run("PodIPFromHost", func(t *testing.T) {
		body := httpGet(t, directClient(), fmt.Sprintf("http://%s:%d/via/podip", w.PodIP, HTTPPort))
		if want := fmt.Sprintf("pod=%s path=/via/podip\n", w.Pod); body != want {
			t.Fatalf("GET by pod IP: got %q, want %q", body, want)
		}
	})
	t.Run("HTTPSByClusterIP", func(t *testing.T) {
		c := directClient()
		c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // the workload's cert is self-signed
		body := httpGet(t, c, fmt.Sprintf("https://%s/tls", w.ClusterIP))
		if want := fmt.Sprintf("pod=%s path=/tls\n", w.Pod); body != want {
			t.Fatalf("GET over TLS: got %q, want %q", body, want)
		}
	})
	t.Run("TCPEchoByClusterIP", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(w.ClusterIP, strconv.Itoa(TCPEchoPort)), 5*time.Second)
		if err != nil {
			t.Fatalf("dial tcp echo: %v", err)
		}
		echo(t, conn, 256<<10)
	})
	t.Run("UDPEchoByClusterIP", func(t *testing.T) {
		conn, err := net.Dial("udp", net.JoinHostPort(w.ClusterIP, strconv.Itoa(UDPEchoPort)))
		if err != nil {
			t.Fatalf("dial udp echo: %v", err)
		}
		defer conn.Close()
		msg := []byte("datagram " + w.Pod)
		buf := make([]byte, 1500)
		// UDP may lose the first datagram while conntrack learns the flow: retry a few times.
		for i := 0; ; i++ {
			if _, err := conn.Write(msg); err != nil {
				t.Fatalf("udp write: %v", err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			n, err := conn.Read(buf)
			if err == nil {
				if !bytes.Equal(buf[:n], msg) {
					t.Fatalf("udp echo: got %q, want %q", buf[:n], msg)
				}
				return
			}
			if i == 4 {
				t.Fatalf("udp echo: no answer after 5 tries: %v", err)
			}
		}
	})
	t.Run("ClusterDNS", func(t *testing.T) {
		fqdn := fmt.Sprintf("%s.%s.svc.%s.", w.Name, ns, cluster.Domain)
		r := dnsQuery(t, fqdn, dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("A %s: rcode %s, answers %v", fqdn, dns.RcodeToString[r.Rcode], r.Answer)
		}
		if a, ok := r.Answer[0].(*dns.A); !ok || a.A.String() != w.ClusterIP {
			t.Fatalf("A %s: got %v, want %s", fqdn, r.Answer[0], w.ClusterIP)
		}
		missing := fmt.Sprintf("no-such-svc.%s.svc.%s.", ns, cluster.Domain)
		if r := dnsQuery(t, missing, dns.TypeA); r.Rcode != dns.RcodeNameError {
			t.Fatalf("A %s: rcode %s, want NXDOMAIN", missing, dns.RcodeToString[r.Rcode])
		}
	})

	// Port-forward in-process with client-go, made from the laptop namespace: the API server's
	// address is all it needs.
	for _, tr := range []portforward.Transport{portforward.WebSocket, portforward.SPDY} {
		t.Run("PortForward/"+string(tr), func(t *testing.T) {
			fw, err := portforward.New(restConfig(t, laptopDial), tr)
			if err != nil {
				t.Fatal(err)
			}
			defer fw.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			conn, err := fw.DialPod(ctx, ns, w.Pod, TCPEchoPort)
			if err != nil {
				t.Fatalf("port-forward to tcp echo: %v", err)
			}
			echo(t, conn, 4<<20)

			// HTTP over port-forward streams: a download and an upload with digests checked.
			hc := &http.Client{Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return fw.DialPod(ctx, ns, w.Pod, HTTPPort)
				},
			}}
			const n = 32 << 20
			resp, err := hc.Get(fmt.Sprintf("http://%s/bytes?n=%d", w.Name, n))
			if err != nil {
				t.Fatalf("GET /bytes over port-forward: %v", err)
			}
			got := sha256.New()
			copied, err := io.Copy(got, resp.Body)
			resp.Body.Close()
			if err != nil || copied != n {
				t.Fatalf("GET /bytes over port-forward: %d of %d bytes: %v", copied, n, err)
			}
			want := sha256.New()
			_, _ = io.CopyN(want, workload.Pattern(), n)
			if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
				t.Fatalf("GET /bytes over port-forward: digest differs from the pattern's")
			}
			up := make([]byte, 8<<20)
			_, _ = rand.Read(up)
			resp, err = hc.Post(fmt.Sprintf("http://%s/sha256", w.Name), "application/octet-stream", bytes.NewReader(up))
			if err != nil {
				t.Fatalf("POST /sha256 over port-forward: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			sum := sha256.Sum256(up)
			if strings.TrimSpace(string(body)) != hex.EncodeToString(sum[:]) {
				t.Fatalf("POST /sha256 over port-forward: server saw %q, sent %x", body, sum)
			}

			// A port nothing listens on: the stream fails and says so.
			conn, err = fw.DialPod(ctx, ns, w.Pod, 9999)
			if err == nil {
				_, _ = conn.Write([]byte("x"))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			if err == nil || !strings.Contains(err.Error(), "9999") {
				t.Fatalf("port-forward to a closed port: got %v, want an error naming port 9999", err)
			}
		})
	}

	// The laptop reaches the API server and no cluster address: a test that passes through
	// tp from there cannot have gone around it.
	t.Run("LaptopReachesOnlyTheAPIServer", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		api := net.JoinHostPort(cluster.NodeIP, strconv.Itoa(cluster.APIPort))
		conn, err := laptopDial(ctx, "tcp", api)
		if err != nil {
			t.Fatalf("laptop to API server %s: %v", api, err)
		}
		conn.Close()
		for _, addr := range []string{
			net.JoinHostPort(w.ClusterIP, "80"),
			net.JoinHostPort(w.PodIP, strconv.Itoa(HTTPPort)),
			net.JoinHostPort(cluster.DNSIP, "53"),
		} {
			dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
			conn, err := laptopDial(dctx, "tcp", addr)
			dcancel()
			if err == nil {
				conn.Close()
				t.Errorf("laptop dialed %s directly: the laptop namespace must not reach cluster addresses", addr)
			}
		}
	})
}

// directClient talks straight to addresses, ignoring any proxy in the environment.
func directClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
}

func httpGet(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %q %v", url, resp.Status, body, err)
	}
	return string(body)
}

// echo sends n random bytes through an echo server, half-closes, and checks they all come back.
func echo(t *testing.T, conn net.Conn, n int) {
	t.Helper()
	defer conn.Close()
	sent := make([]byte, n)
	_, _ = rand.Read(sent)
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write(sent)
		if err == nil {
			err = closeWrite(conn)
		}
		errc <- err
	}()
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("echo read: %v (after %d bytes)", err, len(got))
	}
	if err := <-errc; err != nil {
		t.Fatalf("echo write: %v", err)
	}
	if !bytes.Equal(got, sent) {
		t.Fatalf("echo: got %d bytes back, sent %d; contents equal: %v", len(got), n, bytes.Equal(got, sent))
	}
}

// dnsQuery asks the cluster's DNS Service (from the host, through kube-proxy).
func dnsQuery(t *testing.T, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, net.JoinHostPort(cluster.DNSIP, "53"))
	if err != nil {
		t.Fatalf("dns %s: %v", name, err)
	}
	return r
}

// closeWrite half-closes conn.
func closeWrite(conn net.Conn) error {
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("%T cannot half-close", conn)
	}
	return cw.CloseWrite()
}
