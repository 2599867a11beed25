//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/tests/cluster"
	"github.com/tpdev/tp/tests/kit"
)

// TestDialPolicy: the manager dials for developers only what tp's dial policy allows. A
// developer who sends cloud metadata (169.254.169.254) and the node's kubelet through the
// tunnel (--also-proxy) is refused at once, with the policy named, over HTTP (403 and
// Proxy-Status) and SOCKS5 (0x02, not allowed by ruleset), while a ClusterIP still works.
// Once the admin allows the node's address (tp install --allow-cidr), the kubelet is
// reached through the manager; link-local stays refused whatever is allowed. Nothing listens
// on 169.254.169.254 here, and the harness routes 169.254.0.0/16 to a local device, so a
// dial that slipped through would fail on the machine rather than leave it.
func TestDialPolicy(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-policy")
	w := deployWorkload(t, cs, ns, "web-app")
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")
	t.Cleanup(func() {
		// Leave the manager as every other test expects it: no extra ranges.
		if r := l.TPRun(3*time.Minute, "install"); r.Err != nil {
			t.Logf("reinstalling without --allow-cidr: %v %s", r.Err, r.Stderr)
		}
	})

	const metadata = "169.254.169.254"
	kubelet := net.JoinHostPort(cluster.NodeIP, "10250")
	httpProxy, socks := "http://127.0.0.1:1080", "socks5h://127.0.0.1:1080"
	connect := func() string {
		r := l.MustTP(t, time.Minute, "connect", "--namespace", ns,
			"--also-proxy", metadata+"/32", "--also-proxy", cluster.NodeIP+"/32")
		return r.Stderr
	}

	stderr := connect()
	for _, cidr := range []string{metadata + "/32", cluster.NodeIP + "/32"} {
		if !strings.Contains(stderr, "warning: --also-proxy "+cidr) || !strings.Contains(stderr, "tp install --allow-cidr "+cidr) {
			t.Errorf("tp connect did not warn that --also-proxy %s is beyond the dial policy:\n%s", cidr, stderr)
		}
	}
	t.Logf("tp connect: %s", strings.TrimSpace(stderr))

	// refusedHTTP checks a plain request through the HTTP proxy: 403, Proxy-Status, and a
	// body that names the policy and the way out.
	refusedHTTP := func(t *testing.T, url, says string) {
		t.Helper()
		r := l.Curl(10*time.Second, "-i", "-x", httpProxy, "-w", "\n%{http_code} %{time_total}", url)
		code, took := curlTail(r.Stdout)
		if code != "403" || !strings.Contains(r.Stdout, "Proxy-Status: tp; error=destination_ip_prohibited") ||
			!strings.Contains(r.Stdout, says) || !strings.Contains(r.Stdout, "tp install --allow-cidr") {
			t.Errorf("%s over the HTTP proxy: %q %s\nwant 403, Proxy-Status destination_ip_prohibited and a body saying %q and naming tp install --allow-cidr", url, r.Stdout, r.Stderr, says)
		}
		if took > time.Second {
			t.Errorf("%s over the HTTP proxy: refused after %v, want within 1 s", url, took)
		}
		said := ""
		for _, line := range strings.Split(r.Stdout, "\n") {
			if strings.HasPrefix(line, "tp: ") {
				said = line
			}
		}
		t.Logf("%s over HTTP: %s in %v: %s", url, code, took, said)
	}
	// refusedCONNECT checks an HTTPS request (CONNECT) through the HTTP proxy.
	refusedCONNECT := func(t *testing.T, url string) {
		t.Helper()
		r := l.Curl(10*time.Second, "-k", "-i", "-x", httpProxy, "-w", "\n%{http_connect} %{time_total}", url)
		code, took := curlTail(r.Stdout)
		if code != "403" || !strings.Contains(r.Stdout, "Proxy-Status: tp; error=destination_ip_prohibited") || !strings.Contains(r.Stdout, "tp install --allow-cidr") {
			t.Errorf("%s over CONNECT: %q %s\nwant 403 with Proxy-Status destination_ip_prohibited naming tp install --allow-cidr", url, r.Stdout, r.Stderr)
		}
		if took > time.Second {
			t.Errorf("%s over CONNECT: refused after %v, want within 1 s", url, took)
		}
		t.Logf("%s over CONNECT: %s in %v", url, code, took)
	}
	// refusedSOCKS checks a request through the SOCKS5 proxy: reply 0x02, not allowed by
	// ruleset, which curl (7.88) reports as exit status 97 (a proxy error) and the reply code.
	refusedSOCKS := func(t *testing.T, url string) {
		t.Helper()
		r := l.Curl(10*time.Second, "-k", "-x", socks, "-w", "socks %{time_total}", url)
		code, took := curlTail(r.Stdout)
		if r.Code != 97 || !strings.Contains(r.Stderr, "Can't complete SOCKS5 connection") || !strings.HasSuffix(strings.TrimSpace(r.Stderr), ". (2)") || code != "socks" {
			t.Errorf("%s over SOCKS5: exit %d %q %q, want 97 and reply 2 (not allowed by ruleset)", url, r.Code, r.Stdout, r.Stderr)
		}
		if took > time.Second {
			t.Errorf("%s over SOCKS5: refused after %v, want within 1 s", url, took)
		}
		t.Logf("%s over SOCKS5: refused in %v (%s)", url, took, strings.TrimSpace(r.Stderr))
	}

	t.Run("Refused", func(t *testing.T) {
		refusedHTTP(t, "http://"+metadata+"/", metadata+":80 is link-local")
		refusedHTTP(t, "http://"+kubelet+"/", kubelet+" is outside what tp's manager may dial")
		refusedCONNECT(t, "https://"+kubelet+"/")
		refusedSOCKS(t, "http://"+metadata+"/")
		refusedSOCKS(t, "https://"+kubelet+"/")
	})
	t.Run("ClusterStillWorks", func(t *testing.T) {
		for _, px := range []string{httpProxy, socks} {
			r := l.Curl(20*time.Second, "-x", px, "http://"+w.ClusterIP+"/policy")
			if want := fmt.Sprintf("pod=%s path=/policy\n", w.Pod); r.Stdout != want {
				t.Errorf("ClusterIP through %s: %q %s, want %q", px, r.Stdout, r.Stderr, want)
			}
		}
	})

	// The admin allows the node's address; the developer connects again.
	l.MustTP(t, 30*time.Second, "quit")
	r := l.MustTP(t, 3*time.Minute, "install", "--allow-cidr", cluster.NodeIP+"/32")
	t.Logf("tp install --allow-cidr: %s", strings.TrimSpace(r.Stderr))
	stderr = connect()
	if strings.Contains(stderr, "--also-proxy "+cluster.NodeIP) || !strings.Contains(stderr, "--also-proxy "+metadata) {
		t.Errorf("after --allow-cidr %s/32, tp connect should warn about %s only:\n%s", cluster.NodeIP, metadata, stderr)
	}

	t.Run("Allowed", func(t *testing.T) {
		// Any HTTP status from kubelet (it has no page at /) proves the manager reached it.
		for _, px := range []string{httpProxy, socks} {
			r := l.Curl(20*time.Second, "-k", "-x", px, "-o", "/dev/null", "-w", "%{http_code}", "https://"+kubelet+"/")
			if code, _ := strconv.Atoi(r.Stdout); code < 400 || code > 499 {
				t.Errorf("kubelet through %s after --allow-cidr: %q %s, want an HTTP 4xx from kubelet", px, r.Stdout, r.Stderr)
			} else {
				t.Logf("kubelet through %s after --allow-cidr: HTTP %d", px, code)
			}
		}
		r := l.MustTP(t, 10*time.Second, "status")
		if !strings.Contains(r.Stdout, cluster.NodeIP+"/32") {
			t.Errorf("tp status does not show the allowed range %s/32:\n%s", cluster.NodeIP, r.Stdout)
		}
		t.Logf("tp status:\n%s", r.Stdout)
		// Link-local stays refused, whatever the admin allowed.
		refusedHTTP(t, "http://"+metadata+"/", metadata+":80 is link-local")
		refusedSOCKS(t, "http://"+metadata+"/")
	})
}

// curlTail splits curl's -w output at the end of stdout ("<code> <seconds>").
func curlTail(out string) (code string, took time.Duration) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) != 2 {
		return "", 0
	}
	secs, _ := strconv.ParseFloat(f[1], 64)
	return f[0], time.Duration(secs * float64(time.Second))
}
