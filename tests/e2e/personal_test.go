//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tpdev/tp/remote/laptop/client"
	"github.com/tpdev/tp/remote/laptop/output"
	"github.com/tpdev/tp/tests/cluster"
	"github.com/tpdev/tp/tests/kit"
	"github.com/tpdev/tp/tests/workload"
)

// TestPersonalIntercepts has two developers, each on a laptop of their own (own network
// namespace, own tp as an unprivileged user), hold filtered intercepts of one Service port
// at once: each gets the requests their filter matches, the app the rest, request by
// request on one kept-alive connection.
func TestPersonalIntercepts(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-personal")
	w := deployWorkload(t, cs, ns, "web-app")
	a := kit.NewLaptop(t)
	b := kit.NewLaptopIn(t, cluster.Laptops[1])
	a.MustTP(t, 3*time.Minute, "install")
	portA := laptopServerOn(t, a, "laptop-a")
	portA2 := laptopServerOn(t, a, "laptop-a2")
	portB := laptopServerOn(t, b, "laptop-b")
	portBAPI := laptopServerOn(t, b, "laptop-b-api")
	tapped, portTap := recorderOn(t, a)

	r := a.MustTP(t, 3*time.Minute, "intercept", "web-app", "-n", ns, "--port", portA+":80", "--http-header", "x-dev=a")
	t.Logf("laptop a: tp intercept said:\n%s", r.Stderr)
	idA := printedID(t, r.Stderr)
	waitFor(t, 60*time.Second, "x-dev: a reaches laptop a", func() error {
		return expectAll(w.ClusterIP, []routed{{dev: "a", want: "laptop-a /"}, {want: "pod="}})
	})
	r = b.MustTP(t, time.Minute, "intercept", "web-app", "-n", ns, "--port", portB+":80", "--http-header", "x-dev=b")
	idB := printedID(t, r.Stderr)
	var idBAPI string
	if strings.Contains(r.Stderr, "overlap") || strings.Contains(r.Stderr, "note:") {
		t.Errorf("x-dev=a and x-dev=b cannot overlap, yet tp said:\n%s", r.Stderr)
	}

	t.Run("OneConnectionRoutesEachRequest", func(t *testing.T) {
		mixed := []routed{{dev: "a", want: "laptop-a /"}, {dev: "b", want: "laptop-b /"}, {want: "pod="}, {dev: "b", want: "laptop-b /"},
			{dev: "c", want: "pod="}, {dev: "a", want: "laptop-a /"}, {id: idB, want: "laptop-b /"}, {id: idA, dev: "b", want: "laptop-a /"}}
		waitFor(t, 30*time.Second, "both intercepts and the app on one connection", func() error { return expectAll(w.ClusterIP, mixed) })
		// The same, pipelined: every request written before the first answer is read.
		if err := pipelined(w.ClusterIP, mixed); err != nil {
			t.Error(err)
		}
	})

	t.Run("GRPCCallsOfOneConnection", func(t *testing.T) {
		cc, err := grpc.NewClient("passthrough:///"+w.ClusterIP+":80", grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		for i, c := range []struct{ dev, id, want string }{
			{"a", "", "laptop-a"}, {"", "", "pod="}, {"b", "", "laptop-b"}, {"", idA, "laptop-a"}, {"c", "", "pod="}, {"a", "", "laptop-a"},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if c.dev != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "x-dev", c.dev)
			}
			if c.id != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "x-tp-intercept", c.id)
			}
			out := new(wrapperspb.StringValue)
			err := cc.Invoke(ctx, workload.WhoMethod, wrapperspb.String("?"), out)
			cancel()
			if err != nil || !strings.HasPrefix(out.GetValue(), c.want) {
				t.Errorf("gRPC call %d (x-dev %q, id %q): %q, %v; want %s", i, c.dev, c.id, out.GetValue(), err, c.want)
			}
		}
	})

	t.Run("PathBesideHeaderAndTheOverlapRule", func(t *testing.T) {
		r := b.MustTP(t, time.Minute, "intercept", "web-app", "-n", ns, "--port", portBAPI+":80", "--name", "web-api", "--http-path", "/api/")
		t.Logf("laptop b: tp intercept --http-path said:\n%s", r.Stderr)
		idBAPI = printedID(t, r.Stderr)
		if !strings.Contains(r.Stderr, "x-dev=a") || !strings.Contains(r.Stderr, "created first") {
			t.Errorf("a path filter beside header filters: tp said nothing of the overlap:\n%s", r.Stderr)
		}
		waitFor(t, 30*time.Second, "path and header routes", func() error {
			return expectAll(w.ClusterIP, []routed{
				{path: "/api/x", want: "laptop-b-api /api/x"},
				{path: "/api/x", dev: "a", want: "laptop-a /api/x"}, // both match: the oldest takes it
				{path: "/apix", want: "pod="},
				{path: "/other", dev: "b", want: "laptop-b /other"},
			})
		})
	})

	t.Run("ListShowsFiltersAndHolders", func(t *testing.T) {
		r := a.MustTP(t, 30*time.Second, "list", "-n", ns, "-o", "json")
		var list client.ListJSON
		if err := json.Unmarshal([]byte(r.Stdout), &list); err != nil || list.Version != 1 {
			t.Fatalf("tp list -o json: %v\n%s", err, r.Stdout)
		}
		matchesSchema(t, output.KindList, r.Stdout)
		filters := map[string]string{}
		for _, it := range list.Intercepts {
			if it.HTTP == nil || it.Holder == "" || it.Since.IsZero() {
				t.Errorf("intercept %+v: no filter, holder or since", it)
				continue
			}
			filters[it.Name+" "+it.HTTP.ID] = it.HTTP.String()
		}
		if filters["web-app-http "+idA] != "x-dev=a, or x-tp-intercept: "+idA || filters["web-app-http "+idB] != "x-dev=b, or x-tp-intercept: "+idB ||
			filters["web-api "+idBAPI] == "" {
			t.Errorf("tp list -o json: filters %v\n%s", filters, r.Stdout)
		}
		r = b.MustTP(t, 30*time.Second, "list", "-n", ns)
		if !strings.Contains(r.Stdout, "x-dev=a") || !strings.Contains(r.Stdout, "path /api/*") {
			t.Errorf("tp list:\n%s", r.Stdout)
		}
	})

	t.Run("AWholeInterceptIsRefusedBesideFilteredOnes", func(t *testing.T) {
		r := a.TPRun(time.Minute, "intercept", "web-app", "-n", ns, "--port", portA+":80", "--name", "whole")
		if r.Err == nil || !strings.Contains(r.Stderr, "x-dev=b") {
			t.Errorf("a whole intercept beside filtered ones: %v\n%s", r.Err, r.Stderr)
		}
	})

	t.Run("SeveralPortsOneName", func(t *testing.T) {
		multi := deployWorkload(t, cs, ns, "multi")
		a.MustTP(t, 3*time.Minute, "intercept", "multi", "-n", ns, "--port", portA+":http", "--port", portA2+":tcp-echo")
		waitFor(t, 60*time.Second, "both ports of multi reach laptop a", func() error {
			if got := hostGet(multi.ClusterIP, "/m"); !strings.HasPrefix(got, "laptop-a /m") {
				return fmt.Errorf("port http answered %q", got)
			}
			if got := hostGet(fmt.Sprintf("%s:%d", multi.ClusterIP, kit.TCPEchoPort), "/e"); !strings.HasPrefix(got, "laptop-a2 /e") {
				return fmt.Errorf("port tcp-echo answered %q", got)
			}
			return nil
		})
		r := a.MustTP(t, 30*time.Second, "list", "-n", ns)
		if !strings.Contains(r.Stdout, "multi-http") || !strings.Contains(r.Stdout, "multi-tcp-echo") {
			t.Errorf("tp list shows not both ports:\n%s", r.Stdout)
		}
		a.MustTP(t, 30*time.Second, "leave", "multi") // the intercept's name: both ports end
		waitFor(t, 10*time.Second, "both ports of multi back to the app", func() error {
			if got := hostGet(multi.ClusterIP, "/m"); !strings.HasPrefix(got, "pod=") {
				return fmt.Errorf("port http answered %q", got)
			}
			if got := hostGet(fmt.Sprintf("%s:%d", multi.ClusterIP, kit.TCPEchoPort), "/e"); strings.Contains(got, "laptop") {
				return fmt.Errorf("port tcp-echo answered %q", got)
			}
			return nil
		})
		// Laptop b holds two intercepts of web-app: its name alone is ambiguous.
		r = b.TPRun(30*time.Second, "leave", "web-app")
		if r.Err == nil || !strings.Contains(r.Stderr, "web-api") || !strings.Contains(r.Stderr, "web-app-http") {
			t.Errorf("tp leave of a workload with two intercepts: %v\n%s", r.Err, r.Stderr)
		}
	})

	t.Run("NamespaceOfTheConnectionAndTLS", func(t *testing.T) {
		// Laptop b's connection is to ns (its first intercept started it there); its
		// kubeconfig's namespace is another: a workload named without -n is ns's.
		r := b.MustTP(t, time.Minute, "intercept", "web-app", "--port", portB+":80", "--name", "no-ns", "--http-header", "x-dev=no-ns")
		if !strings.Contains(r.Stderr, ns+"/web-app") {
			t.Errorf("tp intercept without -n did not intercept %s/web-app:\n%s", ns, r.Stderr)
		}
		waitFor(t, 30*time.Second, "the intercept made without -n", func() error {
			return expectAll(w.ClusterIP, []routed{{dev: "no-ns", want: "laptop-b /"}})
		})
		b.MustTP(t, 30*time.Second, "leave", "no-ns")
		// A filter on a TLS port cannot work: the agent cannot read the requests.
		r = b.TPRun(time.Minute, "intercept", "web-app", "-n", ns, "--port", portB+":https", "--http-header", "x-dev=b")
		if r.Err == nil || !strings.Contains(r.Stderr, "carries TLS") {
			t.Errorf("a filtered intercept of a TLS port: %v\n%s", r.Err, r.Stderr)
		}
	})

	t.Run("WiretapBesideFilteredIntercepts", func(t *testing.T) {
		r := a.MustTP(t, time.Minute, "intercept", "web-app", "-n", ns, "--port", portTap+":80", "--wiretap", "--http-path", "/tapped/")
		if !strings.Contains(r.Stderr, "wiretapping") || !strings.Contains(r.Stderr, "web-app-http-tap") {
			t.Errorf("tp intercept --wiretap said:\n%s", r.Stderr)
		}
		waitFor(t, 30*time.Second, "the callers answered as before, the wiretap sees copies", func() error {
			if err := expectAll(w.ClusterIP, []routed{
				{path: "/tapped/1", want: "pod="}, {path: "/tapped/2", dev: "b", want: "laptop-b /tapped/2"}, {path: "/other", want: "pod="},
			}); err != nil {
				return err
			}
			seen := tapped.paths()
			if !slices.Contains(seen, "/tapped/1") || !slices.Contains(seen, "/tapped/2") {
				return fmt.Errorf("the wiretap saw %v", seen)
			}
			if slices.Contains(seen, "/other") {
				return fmt.Errorf("the wiretap saw /other, which its filter does not match: %v", seen)
			}
			return nil
		})
		// gRPC: a wiretap by metadata gets a copy of the call (an HTTP/2 stream of its own).
		a.MustTP(t, time.Minute, "intercept", "web-app", "-n", ns, "--port", portTap+":80", "--wiretap", "--http-header", "x-tap=grpc", "--name", "grpc-tap")
		cc, err := grpc.NewClient("passthrough:///"+w.ClusterIP+":80", grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		waitFor(t, 30*time.Second, "a copy of the gRPC call at the wiretap", func() error {
			ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-tap", "grpc"), 5*time.Second)
			defer cancel()
			out := new(wrapperspb.StringValue)
			if err := cc.Invoke(ctx, workload.WhoMethod, wrapperspb.String("?"), out); err != nil || !strings.HasPrefix(out.GetValue(), "pod=") {
				return fmt.Errorf("the call answered %q, %v; want the app's answer", out.GetValue(), err)
			}
			if !slices.Contains(tapped.paths(), workload.WhoMethod) {
				return fmt.Errorf("the wiretap saw %v", tapped.paths())
			}
			return nil
		})
	})

	t.Run("LeaveKillAndRestartKeepTheOthers", func(t *testing.T) {
		b.MustTP(t, 30*time.Second, "leave", "web-app-http")
		waitFor(t, 10*time.Second, "b's header intercept gone, the others kept", func() error {
			return expectAll(w.ClusterIP, []routed{{dev: "b", want: "pod="}, {dev: "a", want: "laptop-a /"}, {path: "/api/y", want: "laptop-b-api /api/y"}})
		})
		// A pod restart: the new pod's agent gets the routes as they stand.
		pods := livePods(t, cs, ns, "web-app")
		if err := cs.CoreV1().Pods(ns).Delete(context.Background(), pods[0].Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 90*time.Second, "the deleted pod gone, its replacement ready", func() error {
			if _, err := cs.CoreV1().Pods(ns).Get(context.Background(), pods[0].Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("pod %s is still there (%v)", pods[0].Name, err)
			}
			for _, p := range livePods(t, cs, ns, "web-app") {
				if podHasAgent(&p) && podReady(&p) {
					return nil
				}
			}
			return fmt.Errorf("no ready pod with the agent: %s", podStates(livePods(t, cs, ns, "web-app")))
		})
		waitFor(t, 30*time.Second, "the routes on the new pod", func() error {
			return expectAll(w.ClusterIP, []routed{{dev: "a", want: "laptop-a /"}, {path: "/api/z", want: "laptop-b-api /api/z"}, {want: "pod="}})
		})
		// kill -9 of laptop a's daemon, which wiretaps /tapped/: its requests go to the app,
		// b's path intercept stays, and no caller waits for the vanished wiretap.
		before := len(tapped.paths())
		callers := callLoop(w.ClusterIP, "/tapped/call")
		time.Sleep(2 * time.Second)
		if len(tapped.paths()) == before {
			t.Error("the wiretap saw none of the callers' requests before the kill")
		}
		if err := syscall.Kill(status(t, a, "default").PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		time.Sleep(3 * time.Second)
		calls := callers()
		var worstBefore, worstAfter time.Duration
		for _, c := range calls {
			if c.err != nil {
				t.Errorf("a caller's request failed around the kill of the wiretapping laptop: %v", c.err)
			}
			if c.at.Before(killed) {
				worstBefore = max(worstBefore, c.took)
			} else {
				worstAfter = max(worstAfter, c.took)
			}
		}
		t.Logf("%d caller requests; slowest before the wiretapping laptop's kill %s, after %s", len(calls), worstBefore, worstAfter)
		if worstAfter > worstBefore+100*time.Millisecond {
			t.Errorf("the kill of a wiretapping laptop delayed a caller by %s (slowest before it: %s)", worstAfter, worstBefore)
		}
		start := time.Now()
		waitFor(t, 30*time.Second, "a's intercept gone after kill -9, b's kept", func() error {
			return expectAll(w.ClusterIP, []routed{{dev: "a", want: "pod="}, {path: "/api/k", want: "laptop-b-api /api/k"}})
		})
		t.Logf("laptop a's requests reached the app again %s after kill -9 of its tp", time.Since(start).Round(100*time.Millisecond))
	})
}

// routed is a request and the start of the answer it must get.
type routed struct {
	path, dev, id, want string
}

func (r routed) request(ip string) *http.Request {
	path := r.path
	if path == "" {
		path = "/"
	}
	req, _ := http.NewRequest("GET", "http://"+ip+path, nil)
	if r.dev != "" {
		req.Header.Set("X-Dev", r.dev)
	}
	if r.id != "" {
		req.Header.Set("X-Tp-Intercept", r.id)
	}
	return req
}

// expectAll sends the requests from the node, in order, on one kept-alive connection.
func expectAll(ip string, reqs []routed) error {
	var dials atomic.Int32
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	defer c.CloseIdleConnections()
	for i, r := range reqs {
		resp, err := c.Do(r.request(ip))
		if err != nil {
			return fmt.Errorf("request %d %+v: %w", i, r, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), r.want) {
			return fmt.Errorf("request %d %+v: answered %q", i, r, body)
		}
	}
	if n := dials.Load(); n != 1 {
		return fmt.Errorf("%d connections for %d requests: the agent did not keep the connection alive", n, len(reqs))
	}
	return nil
}

// pipelined writes every request on one connection before reading the answers.
func pipelined(ip string, reqs []routed) error {
	conn, err := net.DialTimeout("tcp", ip+":80", 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	for _, r := range reqs {
		if err := r.request(ip).Write(conn); err != nil {
			return err
		}
	}
	br := bufio.NewReader(conn)
	for i, r := range reqs {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("pipelined answer %d: %w", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if !strings.HasPrefix(string(body), r.want) {
			return fmt.Errorf("pipelined request %d %+v: answered %q", i, r, body)
		}
	}
	return nil
}

var idLine = regexp.MustCompile(`x-tp-intercept: (\S+)`)

// printedID is the intercept id tp intercept printed.
func printedID(t *testing.T, out string) string {
	t.Helper()
	m := idLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("tp intercept printed no x-tp-intercept header:\n%s", out)
	}
	return m[1]
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// recorder is a laptop server that keeps the paths it was asked for.
type recorder struct {
	mu   sync.Mutex
	seen []string
}

func (r *recorder) paths() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

// recorderOn serves a recorder on l's loopback until the test ends; it returns its port.
func recorderOn(t *testing.T, l *kit.Laptop) (*recorder, string) {
	t.Helper()
	ln, err := l.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rec := &recorder{}
	srv := workload.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { // HTTP/1.1 and h2c
		rec.mu.Lock()
		rec.seen = append(rec.seen, r.URL.Path)
		rec.mu.Unlock()
		io.WriteString(w, "the wiretap's answer\n")
	}))
	go func() { _ = srv.Serve(ln) }()
	return rec, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// call is one caller request of a callLoop.
type call struct {
	at   time.Time
	took time.Duration
	err  error
}

// callLoop sends GETs of path to ip from the node, one after another, each on a new
// connection, until the function it returns is called; that returns every call.
func callLoop(ip, path string) func() []call {
	stop := make(chan struct{})
	done := make(chan []call)
	go func() {
		var calls []call
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- calls
				return
			default:
			}
			start := time.Now()
			resp, err := c.Get(fmt.Sprintf("http://%s%s/%d", ip, path, i))
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !strings.HasPrefix(string(body), "pod=") {
					err = fmt.Errorf("GET %s/%d answered %q", path, i, body)
				}
			}
			calls = append(calls, call{at: start, took: time.Since(start), err: err})
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() []call {
		close(stop)
		return <-done
	}
}
