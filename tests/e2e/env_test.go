//go:build e2e

// Package e2e holds the end-to-end suites. They run against the real local cluster
// (make cluster-up) with `make e2e`; without a reachable cluster they fail, never skip.
// Shared helpers live in tests/kit.
package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/tests/cluster"
	"github.com/tpdev/tp/tests/kit"
	"github.com/tpdev/tp/tests/workload"
)

const (
	WorkloadImage = kit.WorkloadImage
	HTTPPort      = kit.HTTPPort
	HTTPSPort     = kit.HTTPSPort
	TCPEchoPort   = kit.TCPEchoPort
	UDPEchoPort   = kit.UDPEchoPort
)

type Workload = kit.Workload

func restConfig(t testing.TB, dial func(ctx context.Context, network, address string) (net.Conn, error)) *rest.Config {
	t.Helper()
	return kit.RESTConfig(t, dial)
}

func clientset(t testing.TB) kubernetes.Interface { t.Helper(); return kit.Clientset(t) }

func namespace(t testing.TB, cs kubernetes.Interface, prefix string) string {
	t.Helper()
	return kit.Namespace(t, cs, prefix)
}

func deployWorkload(t testing.TB, cs kubernetes.Interface, namespace, name string) Workload {
	t.Helper()
	return kit.DeployWorkload(t, cs, namespace, name)
}

func waitFor(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	kit.WaitFor(t, timeout, what, check)
}

// laptopDial dials from the laptop namespace, which reaches the API server and nothing else.
var laptopDial = cluster.LaptopDialContext

func podStates(pods []corev1.Pod) string { return kit.PodStates(pods) }

// laptopServer serves HTTP on the first laptop's loopback, answering "<prefix> <path>", until
// the test ends; it returns the port.
func laptopServer(t testing.TB, prefix string) string {
	t.Helper()
	return serveIn(t, cluster.LaptopNetns, prefix)
}

// laptopServerOn is laptopServer on l's loopback: each laptop namespace has its own, which
// another laptop's tp cannot reach.
func laptopServerOn(t testing.TB, l *kit.Laptop, prefix string) string {
	t.Helper()
	return serveIn(t, l.Net.Netns, prefix)
}

func serveIn(t testing.TB, netns, prefix string) string {
	t.Helper()
	ln, err := cluster.ListenInNetns(netns, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	// HTTP/1.1, and HTTP/2 cleartext answering gRPC's workload.WhoMethod with prefix.
	srv := workload.NewServer(workload.WithGRPC(prefix, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(rw, "%s %s\n", prefix, r.URL.Path)
	})))
	go func() { _ = srv.Serve(ln) }()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}
