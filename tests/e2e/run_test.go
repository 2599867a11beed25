//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tpdev/tp/tests/kit"
)

// TestRun is tp run on the laptop, as an unprivileged user: with the VIF, a program that
// knows nothing of proxies (a static Go binary with its own resolver, and curl without
// proxy flags) reaches the cluster by name and address; without it, proxy variables do.
func TestRun(t *testing.T) {
	netcheckBin := os.Getenv("TP_E2E_NETCHECK")
	if netcheckBin == "" {
		t.Fatal("TP_E2E_NETCHECK is not set: run the e2e tests with make e2e, which builds bin/netcheck")
	}
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-run")
	other := namespace(t, cs, "tp-e2e-run-other")
	w := deployWorkload(t, cs, ns, "web-app")
	w2 := deployWorkload(t, cs, other, "web-app")
	l := kit.NewLaptop(t)
	netcheck := l.Copy(t, netcheckBin)
	l.MustTP(t, 3*time.Minute, "install")

	// A server on the laptop's own loopback, for the VIF's host address.
	ln, err := l.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "laptop loopback %s\n", r.URL.Path)
		}))
	}()
	hostPort := ln.Addr().(*net.TCPAddr).Port

	run := func(t *testing.T, args ...string) kit.Result {
		t.Helper()
		return l.TPRun(2*time.Minute, append([]string{"run", "--namespace", ns}, args...)...)
	}
	mustRun := func(t *testing.T, args ...string) string {
		t.Helper()
		r := run(t, args...)
		if r.Err != nil {
			t.Fatalf("tp run %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Err, r.Stdout, r.Stderr)
		}
		return r.Stdout
	}

	t.Run("VIF/StaticProgramReachesEverything", func(t *testing.T) {
		checks := [][]string{
			{"get", "http://web-app/short"}, {"get", "http://web-app." + other + "/other"},
			{"get", "http://web-app." + ns + ".svc.cluster.local/fqdn"}, {"get", "http://" + w.ClusterIP + "/clusterip"},
			{"get", fmt.Sprintf("http://%s:%d/podip", w.PodIP, HTTPPort)},
		}
		for _, c := range checks {
			out := mustRun(t, append([]string{"--vif=on", "--", netcheck}, c...)...)
			pod := w.Pod
			if strings.Contains(c[1], other) {
				pod = w2.Pod
			}
			path := c[1][strings.LastIndex(c[1], "/"):]
			if want := fmt.Sprintf("pod=%s path=%s\n", pod, path); out != want {
				t.Errorf("netcheck %v: got %q, want %q", c, out, want)
			}
		}
		if out := mustRun(t, "--vif=on", "--", netcheck, "srv", "http", "tcp", "web-app."+ns+".svc.cluster.local"); !strings.Contains(out, ":80") {
			t.Errorf("SRV lookup: %q", out)
		}
		if out := mustRun(t, "--vif=on", "--", netcheck, "udp", "web-app:"+strconv.Itoa(UDPEchoPort), "udp through the vif"); out != "udp through the vif\n" {
			t.Errorf("UDP echo: %q", out)
		}
		if out := mustRun(t, "--vif=on", "--", netcheck, "tcp", "web-app:"+strconv.Itoa(TCPEchoPort), "4194304"); !strings.Contains(out, "echoed 4194304") {
			t.Errorf("TCP echo: %q", out)
		}
		// A name nobody has fails at once, not after the resolver's retries.
		start := time.Now()
		if r := run(t, "--vif=on", "--", netcheck, "resolve", "no-such-svc"); r.Err == nil || time.Since(start) > 10*time.Second {
			t.Errorf("resolving a name nobody has: %v after %s (%s)", r.Err, time.Since(start), r.Stdout)
		}
		// A refusal is a refusal (RST to the SYN), not a connection that dies after.
		if out := mustRun(t, "--vif=on", "--", netcheck, "refused", fmt.Sprintf("%s:9999", w.PodIP)); out != "refused\n" {
			t.Errorf("closed port: %q", out)
		}
	})

	t.Run("VIF/CurlWithoutProxyFlags", func(t *testing.T) {
		out := mustRun(t, "--vif=on", "--", "curl", "-sS", "--max-time", "20", "http://web-app/curl")
		if want := fmt.Sprintf("pod=%s path=/curl\n", w.Pod); out != want {
			t.Errorf("curl by name in the VIF: %q, want %q", out, want)
		}
		out = mustRun(t, "--vif=on", "--", "curl", "-sS", "--max-time", "20", fmt.Sprintf("http://198.18.0.1:%d/host", hostPort))
		if out != "laptop loopback /host\n" {
			t.Errorf("the laptop's loopback at 198.18.0.1: %q", out)
		}
	})

	t.Run("ProxyMode", func(t *testing.T) {
		out := mustRun(t, "--vif=off", "--", "curl", "-sS", "--max-time", "20", "http://web-app/proxied")
		if want := fmt.Sprintf("pod=%s path=/proxied\n", w.Pod); out != want {
			t.Errorf("curl with the proxy variables: %q, want %q", out, want)
		}
		out = mustRun(t, "--vif=off", "--", "sh", "-c", "echo $ALL_PROXY $JAVA_TOOL_OPTIONS")
		if !strings.HasPrefix(out, "socks5h://127.0.0.1:") || !strings.Contains(out, "-Dhttp.proxyHost=127.0.0.1") {
			t.Errorf("proxy variables: %q", out)
		}
	})

	for _, vif := range []string{"--vif=on", "--vif=off"} {
		t.Run("ExitStatusSignalsAndStdin/"+vif, func(t *testing.T) {
			if r := run(t, vif, "--", "sh", "-c", "exit 0"); r.Err != nil {
				t.Errorf("exit 0: %v %s", r.Err, r.Stderr)
			}
			if r := run(t, vif, "--", "sh", "-c", "exit 3"); r.Code != 3 {
				t.Errorf("exit 3: got status %d (%v) %s", r.Code, r.Err, r.Stderr)
			}
			r := run(t, vif, "--", "sh", "-c", "kill -TERM $$")
			if ws, ok := r.State.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
				t.Errorf("killed by SIGTERM: tp ended with %v (%v) %s", r.State, r.Err, r.Stderr)
			}
			r = l.RunStdin(time.Minute, "hello through stdin\n", l.TP, "run", "--namespace", ns, vif, "--", "cat")
			if r.Stdout != "hello through stdin\n" {
				t.Errorf("stdin: %q (%v %s)", r.Stdout, r.Err, r.Stderr)
			}
		})
	}

	t.Run("TwoNamespacesAtOnce", func(t *testing.T) {
		var wg sync.WaitGroup
		outs := make([]string, 2)
		for i, n := range []string{ns, other} {
			wg.Go(func() {
				r := l.TPRun(2*time.Minute, "run", "--namespace", n, "--vif=on", "--", netcheck, "get", "http://web-app/both")
				outs[i] = r.Stdout + r.Stderr
			})
		}
		wg.Wait()
		for i, pod := range []string{w.Pod, w2.Pod} {
			if want := fmt.Sprintf("pod=%s path=/both\n", pod); outs[i] != want {
				t.Errorf("tp run in namespace %d: %q, want %q", i, outs[i], want)
			}
		}
	})

	t.Run("UsesTheRunningConnection", func(t *testing.T) {
		l.MustTP(t, time.Minute, "connect", "--namespace", ns)
		defer l.TPRun(30*time.Second, "quit")
		before := status(t, l, "default")
		out := mustRun(t, "--vif=on", "--", netcheck, "get", "http://web-app/shared")
		if want := fmt.Sprintf("pod=%s path=/shared\n", w.Pod); out != want {
			t.Fatalf("tp run beside a connection: %q", out)
		}
		if after := status(t, l, "default"); string(after.Proxy) == string(before.Proxy) {
			t.Errorf("tp run did not go through the running connection (its proxy counters did not move)")
		}
	})
}
