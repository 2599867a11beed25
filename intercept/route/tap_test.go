package route

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// tapServer records the requests it gets (method, path, body) and answers each.
type tapServer struct {
	mu   sync.Mutex
	seen []string
}

func (s *tapServer) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

func (s *tapServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.seen = append(s.seen, fmt.Sprintf("%s %s %s", r.Method, r.URL.Path, body))
	s.mu.Unlock()
	io.WriteString(w, "the tap's answer, which nobody reads")
}

// tapRelay is relayFor with the wiretaps taps, whose copies go to addrs by id.
func tapRelay(t *testing.T, routes, taps Table, addrs map[string]string, stats *Stats) string {
	t.Helper()
	return relayFor(t, routes, addrs, stats, func(r *Relay) {
		r.Taps = func() Table { return taps }
		r.Tap = func(ctx context.Context, id string) *Tap {
			return OpenTap(ctx, func(ctx context.Context) (net.Conn, error) { return r.Dial(ctx, id) }, stats)
		}
	})
}

// A wiretap by filter gets a copy of each request it matches, whichever route answers the
// caller; the caller gets its answer from that route.
func TestFilteredWiretapGetsCopies(t *testing.T) {
	tap := &tapServer{}
	addrs := devServers(t)
	addrs["tap"] = serveHTTP(t, tap, 0)
	m, _ := Filter{Headers: []Match{{Name: "x-dev", Value: "a|b", Kind: Regex}}}.Compile()
	stats := &Stats{}
	addr := tapRelay(t, devTable(t)[:1], Table{{ID: "tap", Match: m}}, addrs, stats)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	for _, c := range []struct{ dev, body, want string }{
		{"a", "one", "laptop-a POST /p one"}, {"b", "two", "app POST /p two"}, {"c", "three", "app POST /p three"},
	} {
		r, _ := http.NewRequest("POST", "http://"+addr+"/p", strings.NewReader(c.body))
		r.Header.Set("X-Dev", c.dev)
		resp, err := client.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != c.want {
			t.Errorf("x-dev %s: %q, want %q", c.dev, got, c.want)
		}
	}
	want := []string{"POST /p one", "POST /p two"}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Join(tap.got(), "|") != strings.Join(want, "|") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := tap.got(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("the wiretap saw %q, want %q", got, want)
	}
	if stats.Tapped.Load() != 1 || stats.TapDrops.Load() != 0 {
		t.Errorf("%d taps, %d dropped; want one copy for the connection, none dropped", stats.Tapped.Load(), stats.TapDrops.Load())
	}
}

// A wiretap whose client reads nothing costs the caller nothing: its copies are dropped
// once the queue is full, and counted.
func TestAStuckWiretapNeverSlowsTheCaller(t *testing.T) {
	ended := make(chan struct{})
	defer close(ended)
	addrs := devServers(t)
	addrs["tap"] = serveTCP(t, func(c net.Conn) { // accepted, never read
		<-ended
		c.Close()
	})
	all, _ := Filter{Path: &Match{Value: "/", Kind: Prefix}}.Compile()
	stats := &Stats{}
	addr := tapRelay(t, nil, Table{{ID: "tap", Match: all}}, addrs, stats)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	body := strings.Repeat("z", 256<<10)
	var slowest time.Duration
	for i := range 40 { // 10 MiB: ten times the tap's queue
		start := time.Now()
		resp, err := client.Post("http://"+addr+"/up", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(got), "app POST /up zzz") {
			t.Fatalf("request %d: %.30q", i, got)
		}
		slowest = max(slowest, time.Since(start))
	}
	if stats.TapDrops.Load() != 1 {
		t.Errorf("%d taps dropped, want the stuck one", stats.TapDrops.Load())
	}
	t.Logf("slowest request beside a stuck wiretap: %s", slowest)
}

// A wiretap without a filter gets the caller's bytes of the connection as they come.
func TestTapConnCopiesTheCallersBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	copied := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b, _ := io.ReadAll(c)
		copied <- string(b)
	}()
	a, b := net.Pipe()
	tap := OpenTap(context.Background(), func(ctx context.Context) (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, nil)
	tc := &TapConn{Conn: b, Taps: []*Tap{tap}}
	go func() {
		io.WriteString(a, "hello ")
		io.WriteString(a, "world")
		a.Close()
	}()
	got, _ := io.ReadAll(bufio.NewReader(tc))
	tc.Close()
	if string(got) != "hello world" {
		t.Errorf("the caller's bytes: %q", got)
	}
	select {
	case c := <-copied:
		if c != "hello world" {
			t.Errorf("the wiretap got %q", c)
		}
	case <-time.After(5 * time.Second):
		t.Error("the wiretap got nothing")
	}
}

// The taps that share a Stats (an agent's) hold at most TapBudget together; what they held
// goes back to the budget when they end.
func TestTapsShareABudget(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stats := &Stats{}
	stuck := func(ctx context.Context) (net.Conn, error) { <-ctx.Done(); return nil, ctx.Err() } // a client that never takes its copies
	chunk := make([]byte, TapQueue/4)
	var taps []*Tap
	for range 2 * TapBudget / TapQueue {
		tap := OpenTap(ctx, stuck, stats)
		for range 4 {
			tap.Write(chunk)
		}
		taps = append(taps, tap)
	}
	if held := stats.tapHeld.Load(); held > TapBudget {
		t.Errorf("the taps hold %d bytes, over the budget of %d", held, TapBudget)
	}
	if drops := stats.TapDrops.Load(); drops != int64(len(taps))/2 {
		t.Errorf("%d taps dropped, want the %d beyond the budget", drops, len(taps)/2)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for stats.tapHeld.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if held := stats.tapHeld.Load(); held != 0 {
		t.Errorf("ended taps still hold %d bytes of the budget", held)
	}
}

// An HTTP/2 stream a filtered wiretap matches is copied to it as a request of its own,
// body included; the caller's answer comes from the app, and a stuck wiretap does not hold
// it up.
func TestFilteredWiretapOfHTTP2Streams(t *testing.T) {
	tap := &tapServer{}
	stuckTap := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }) // never reads
	addrs := map[string]string{"": serveH2C(t, namedH2("app")), "tap": serveH2C(t, tap), "stuck": serveH2C(t, stuckTap)}
	tapped, _ := Filter{Path: &Match{Value: "/tapped/", Kind: Prefix}}.Compile()
	stuck, _ := Filter{Path: &Match{Value: "/big", Kind: Prefix}}.Compile()
	stats := &Stats{}
	addr := tapRelay(t, nil, Table{{ID: "tap", Match: tapped}, {ID: "stuck", Match: stuck}}, addrs, stats)
	client := h2cClient((&net.Dialer{}).DialContext)
	post := func(path, body string) string {
		resp, err := client.Post("http://"+addr+path, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(got)
	}
	if got := post("/tapped/1", "one"); !strings.HasPrefix(got, "app POST /tapped/1  one") {
		t.Errorf("the caller got %q", got)
	}
	if got := post("/other", "two"); !strings.HasPrefix(got, "app POST /other  two") {
		t.Errorf("the caller got %q", got)
	}
	start := time.Now()
	big := strings.Repeat("b", 3*TapQueue) // three times the copy's queue, to a wiretap that reads nothing
	if got := post("/big", big); !strings.HasPrefix(got, "app POST /big  bbb") || len(got) < len(big) {
		t.Errorf("the caller of /big got %.40q (%d bytes)", got, len(got))
	}
	t.Logf("a 3 MiB request beside a stuck wiretap took %s", time.Since(start))
	deadline := time.Now().Add(5 * time.Second)
	for len(tap.got()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := tap.got(); len(got) != 1 || got[0] != "POST /tapped/1 one" {
		t.Errorf("the wiretap saw %q, want only the copy of /tapped/1", got)
	}
	if stats.TapDrops.Load() != 1 {
		t.Errorf("%d copies dropped, want the stuck wiretap's", stats.TapDrops.Load())
	}
}
