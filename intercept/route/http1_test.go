package route

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serveHTTP serves handler on loopback until the test ends.
func serveHTTP(t *testing.T, h http.Handler, idle time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, IdleTimeout: idle}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// named answers "<name> <method> <path> <body>".
func named(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %s", name, r.Method, r.URL.Path, body)
	})
}

// relayFor serves a relay on loopback that routes by table to addrs (route id → address;
// "" is the app), changed by with, and returns its address.
func relayFor(t *testing.T, table Table, addrs map[string]string, stats *Stats, with ...func(*Relay)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r := &Relay{
		Table: func() Table { return table },
		Dial: func(ctx context.Context, route string) (net.Conn, error) {
			addr, ok := addrs[route]
			if !ok {
				return nil, errors.New("no such route")
			}
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
		Stats:     stats,
		FirstByte: 100 * time.Millisecond,
	}
	for _, f := range with {
		f(r)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.Serve(context.Background(), c)
		}
	}()
	return ln.Addr().String()
}

func devTable(t *testing.T) Table {
	t.Helper()
	var table Table
	for _, dev := range []string{"a", "b"} {
		m, err := Filter{Headers: []Match{{Name: "x-dev", Value: dev}}}.Compile()
		if err != nil {
			t.Fatal(err)
		}
		table = append(table, Route{ID: dev, Match: m})
	}
	return table
}

func devServers(t *testing.T) map[string]string {
	return map[string]string{"": serveHTTP(t, named("app"), 0), "a": serveHTTP(t, named("laptop-a"), 0), "b": serveHTTP(t, named("laptop-b"), 0)}
}

func TestEachRequestOfAKeptAliveConnectionIsRoutedOnItsOwn(t *testing.T) {
	stats := &Stats{}
	addr := relayFor(t, devTable(t), devServers(t), stats)
	var conns atomic.Int32
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		conns.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, a)
	}}}
	for i, c := range []struct{ dev, want string }{
		{"a", "laptop-a"}, {"", "app"}, {"b", "laptop-b"}, {"a", "laptop-a"}, {"", "app"}, {"c", "app"},
	} {
		method, body := "GET", ""
		if i%2 == 1 {
			method, body = "POST", strings.Repeat("x", 100_000) // a body larger than a buffer
		}
		r, _ := http.NewRequest(method, "http://"+addr+"/p", strings.NewReader(body))
		if c.dev != "" {
			r.Header.Set("X-Dev", c.dev)
		}
		resp, err := client.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%s %s /p %s", c.want, method, body); string(got) != want {
			t.Errorf("request %d (x-dev %q): %.60q, want %.60q", i, c.dev, got, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the client opened %d connections; the relay must keep one alive", n)
	}
	if stats.Routed.Load() != 3 || stats.Passed.Load() != 3 {
		t.Errorf("routed %d, passed %d; want 3 and 3", stats.Routed.Load(), stats.Passed.Load())
	}
}

// A pipelining client sends every request before reading an answer: the answers come back
// in order, each from its own route.
func TestPipelinedRequestsAnswerInOrder(t *testing.T) {
	addr := relayFor(t, devTable(t), devServers(t), nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var reqs strings.Builder
	devs := []string{"b", "", "a", "b"}
	for i, dev := range devs {
		fmt.Fprintf(&reqs, "GET /%d HTTP/1.1\r\nHost: x\r\n", i)
		if dev != "" {
			fmt.Fprintf(&reqs, "X-Dev: %s\r\n", dev)
		}
		reqs.WriteString("\r\n")
	}
	if _, err := io.WriteString(c, reqs.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i, dev := range devs {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		want := "app"
		if dev != "" {
			want = "laptop-" + dev
		}
		if want = fmt.Sprintf("%s GET /%d ", want, i); string(got) != want {
			t.Errorf("answer %d: %q, want %q", i, got, want)
		}
	}
}

// A chunked request body and a chunked (streamed) response pass byte for byte, and an
// Expect: 100-continue request gets its 100 from the server.
func TestChunkedBodiesAndContinue(t *testing.T) {
	stream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		for i := range 3 {
			fmt.Fprintf(w, "part%d:%d;", i, len(body))
			w.(http.Flusher).Flush()
		}
	})
	addrs := map[string]string{"": serveHTTP(t, named("app"), 0), "a": serveHTTP(t, stream, 0)}
	addr := relayFor(t, devTable(t)[:1], addrs, nil)
	pr, pw := io.Pipe()
	go func() {
		for range 5 {
			pw.Write([]byte(strings.Repeat("y", 1000)))
		}
		pw.Close()
	}()
	r, _ := http.NewRequest("PUT", "http://"+addr+"/up", pr) // no length: chunked
	r.Header.Set("X-Dev", "a")
	r.Header.Set("Expect", "100-continue")
	start := time.Now()
	resp, err := (&http.Client{Transport: &http.Transport{ExpectContinueTimeout: 10 * time.Second}}).Do(r)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the client waited %s for 100 Continue: the server never saw the request's head", took)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "part0:5000;part1:5000;part2:5000;" || len(resp.TransferEncoding) == 0 {
		t.Errorf("answer %q (transfer encoding %v)", got, resp.TransferEncoding)
	}
}

// After 101 Switching Protocols the connection carries another protocol: bytes pass as
// they come, both ways.
func TestUpgradeCarriesTheNewProtocol(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", 400)
			return
		}
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw)
	})
	addrs := map[string]string{"": serveHTTP(t, named("app"), 0), "a": serveHTTP(t, echo, 0)}
	addr := relayFor(t, devTable(t)[:1], addrs, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nX-Dev: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	for _, msg := range []string{"hello\n", "GET / HTTP/1.1\r\n\r\n"} { // not read as HTTP any more
		io.WriteString(c, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Errorf("echo of %q: %q %v", msg, buf, err)
		}
	}
}

// serveTCP runs handle for each connection to a loopback listener until the test ends; it
// returns the listener's address.
func serveTCP(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}

// What is not HTTP reaches the app as it came, whether the client or the app speaks first.
func TestOtherProtocolsPassToTheApp(t *testing.T) {
	app := serveTCP(t, func(c net.Conn) {
		defer c.Close()
		io.WriteString(c, "220 greeting\r\n") // the server speaks first
		io.Copy(c, c)
	})
	stats := &Stats{}
	addr := relayFor(t, devTable(t), map[string]string{"": app}, stats)
	for _, first := range []string{"", "\x16\x03\x01binary\n", "PING\r\n"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		if first != "" {
			io.WriteString(c, first)
		}
		line, err := br.ReadString('\n')
		if err != nil || line != "220 greeting\r\n" {
			t.Errorf("client sending %q first: greeting %q %v", first, line, err)
		}
		if first != "" {
			buf := make([]byte, len(first))
			if _, err := io.ReadFull(br, buf); err != nil || string(buf) != first {
				t.Errorf("echo of %q: %q %v", first, buf, err)
			}
		}
		c.Close()
	}
	if stats.Raw.Load() != 3 {
		t.Errorf("%d raw connections, want 3", stats.Raw.Load())
	}
}

// A kept-alive app connection its server closed meanwhile is replaced for a request
// without a body; a route whose intercept is gone sends its requests to the app.
func TestClosedUpstreamsAndGoneRoutes(t *testing.T) {
	addrs := map[string]string{"": serveHTTP(t, named("app"), 50*time.Millisecond), "a": serveHTTP(t, named("laptop-a"), 0)}
	stats := &Stats{}
	addr := relayFor(t, devTable(t), addrs, stats) // route b has no server: its dial fails
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get := func(path, dev string) string {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nX-Dev: %s\r\n\r\n", path, dev)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		return string(got)
	}
	if got := get("/1", "c"); got != "app GET /1 " {
		t.Errorf("first: %q", got)
	}
	time.Sleep(200 * time.Millisecond) // the app closes its idle connection
	if got := get("/2", "c"); got != "app GET /2 " {
		t.Errorf("after the app closed its side: %q", got)
	}
	if got := get("/3", "b"); got != "app GET /3 " || stats.Fallbacks.Load() != 1 {
		t.Errorf("to a gone route: %q (%d fallbacks)", got, stats.Fallbacks.Load())
	}
	if got := get("/4", "a"); got != "laptop-a GET /4 " {
		t.Errorf("route a: %q", got)
	}
}

// HEAD's answer has a length but no body; Connection: close ends the connection.
func TestHeadAndClose(t *testing.T) {
	addr := relayFor(t, devTable(t), devServers(t), nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "HEAD /h HTTP/1.1\r\nHost: x\r\nX-Dev: a\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(c)
	head, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
	if err != nil || head.StatusCode != 200 {
		t.Fatalf("HEAD: %v %v", head, err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	if string(got) != "app GET /g " {
		t.Errorf("after HEAD: %q", got)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after Connection: close the relay kept the connection (%d, %v)", n, err)
	}
}

// A large body moves between the connections themselves once the buffered part is
// written; the kept-alive connection stays in step for the requests after it.
func TestLargeBodiesKeepTheConnectionInStep(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/big" {
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			io.WriteString(w, big)
			return
		}
		fmt.Fprintf(w, "%s %d", r.URL.Path, len(body))
	})
	addrs := map[string]string{"": serveHTTP(t, h, 0), "a": serveHTTP(t, h, 0)}
	addr := relayFor(t, devTable(t)[:1], addrs, nil)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	for i, dev := range []string{"", "a", "", "a"} {
		for _, c := range []struct{ method, path, body, want string }{
			{"GET", "/big", "", big},
			{"PUT", "/up", big, fmt.Sprintf("/up %d", len(big))},
			{"GET", "/small", "", "/small 0"},
		} {
			r, _ := http.NewRequest(c.method, "http://"+addr+c.path, strings.NewReader(c.body))
			if dev != "" {
				r.Header.Set("X-Dev", dev)
			}
			resp, err := client.Do(r)
			if err != nil {
				t.Fatalf("round %d %s %s: %v", i, c.method, c.path, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(got) != c.want {
				t.Errorf("round %d %s %s: %d bytes %.40q, want %d bytes", i, c.method, c.path, len(got), got, len(c.want))
			}
		}
	}
}

// What two HTTP readers could read two ways is never routed: a bare LF, or a transfer
// coding in HTTP/1.0, sends the rest of the connection to the app as it came.
func TestAmbiguousRequestsAreNotRouted(t *testing.T) {
	for _, req := range []string{
		"GET / HTTP/1.1\nHost: x\nX-Dev: a\n\n",
		"POST / HTTP/1.0\r\nHost: x\r\nX-Dev: a\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-Dev : a\r\n\r\n",
	} {
		stats := &Stats{}
		addr := relayFor(t, devTable(t), devServers(t), stats)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, req)
		c.SetReadDeadline(time.Now().Add(time.Second)) // the app may keep the connection
		got, _ := io.ReadAll(c)
		c.Close()
		if strings.Contains(string(got), "laptop-a") || stats.Routed.Load() != 0 || stats.Raw.Load() != 1 {
			t.Errorf("%q: routed %d, raw %d, answered %.80q", req, stats.Routed.Load(), stats.Raw.Load(), got)
		}
	}
}

// A request that is not safe to send twice is not sent again when its kept-alive
// connection turns out closed: the client hears so.
func TestOnlySafeRequestsAreSentAgain(t *testing.T) {
	addrs := map[string]string{"": serveHTTP(t, named("app"), 50*time.Millisecond)}
	addr := relayFor(t, nil, addrs, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	send := func(req string) *http.Response {
		io.WriteString(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		return resp
	}
	send("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(200 * time.Millisecond) // the app closes its idle connection
	if resp := send("POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("a POST on a connection the app closed: %s, want 502 rather than sending it twice", resp.Status)
	}
}
