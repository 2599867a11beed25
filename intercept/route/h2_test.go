package route

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// countingListener counts the connections its server accepts.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func listen(t *testing.T) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &countingListener{Listener: ln}
}

// whoService is a gRPC service written out by hand (no generated code in the module):
// Name answers the server's name, with it in a header and a trailer too; Fail fails with
// NotFound and the name; Chat answers each message "<name>:<message>" as it comes.
func whoService(name string) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "tp.test.Who",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Name", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				if err := dec(new(wrapperspb.StringValue)); err != nil {
					return nil, err
				}
				grpc.SetHeader(ctx, metadata.Pairs("x-header-from", name))
				grpc.SetTrailer(ctx, metadata.Pairs("x-trailer-from", name))
				return wrapperspb.String(name), nil
			}},
			{MethodName: "Fail", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				return nil, status.Error(codes.NotFound, name)
			}},
		},
		Streams: []grpc.StreamDesc{{StreamName: "Chat", ServerStreams: true, ClientStreams: true,
			Handler: func(_ any, st grpc.ServerStream) error {
				for {
					in := new(wrapperspb.StringValue)
					if err := st.RecvMsg(in); err == io.EOF {
						return nil
					} else if err != nil {
						return err
					}
					if err := st.SendMsg(wrapperspb.String(name + ":" + in.GetValue())); err != nil {
						return err
					}
				}
			}}},
	}
}

var chatDesc = &grpc.StreamDesc{StreamName: "Chat", ServerStreams: true, ClientStreams: true}

// serveGRPC serves whoService(name) on loopback until the test ends.
func serveGRPC(t *testing.T, name string) (*countingListener, *grpc.Server) {
	t.Helper()
	ln := listen(t)
	srv := grpc.NewServer()
	srv.RegisterService(whoService(name), struct{}{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln, srv
}

// grpcServers serves the app and the laptops of routes a and b.
func grpcServers(t *testing.T) (map[string]string, map[string]*countingListener, map[string]*grpc.Server) {
	lns, srvs, addrs := map[string]*countingListener{}, map[string]*grpc.Server{}, map[string]string{}
	for route, name := range map[string]string{"": "app", "a": "laptop-a", "b": "laptop-b"} {
		lns[route], srvs[route] = serveGRPC(t, name)
		addrs[route] = lns[route].Addr().String()
	}
	return addrs, lns, srvs
}

// grpcClient is a gRPC client of addr, counting the connections it opens.
func grpcClient(t *testing.T, addr string, conns *atomic.Int32) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			conns.Add(1)
			return (&net.Dialer{}).DialContext(ctx, "tcp", a)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// withDev is a call's context, with metadata x-dev: dev unless dev is empty.
func withDev(t *testing.T, dev string) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	if dev == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "x-dev", dev)
}

func whoAnswers(dev string) string {
	if dev == "a" || dev == "b" {
		return "laptop-" + dev
	}
	return "app"
}

func TestGRPCCallsOfOneConnectionAreRoutedByMetadata(t *testing.T) {
	addrs, lns, _ := grpcServers(t)
	stats := &Stats{}
	var conns atomic.Int32
	cc := grpcClient(t, relayFor(t, devTable(t), addrs, stats), &conns)
	for i, dev := range []string{"a", "", "b", "a", "c", ""} {
		var header, trailer metadata.MD
		out := new(wrapperspb.StringValue)
		err := cc.Invoke(withDev(t, dev), "/tp.test.Who/Name", wrapperspb.String("?"), out, grpc.Header(&header), grpc.Trailer(&trailer))
		want := whoAnswers(dev)
		if err != nil || out.GetValue() != want {
			t.Errorf("call %d (x-dev %q): %q %v, want %q", i, dev, out.GetValue(), err, want)
		}
		if h, tr := header.Get("x-header-from"), trailer.Get("x-trailer-from"); len(h) != 1 || h[0] != want || len(tr) != 1 || tr[0] != want {
			t.Errorf("call %d (x-dev %q): header %v, trailer %v, want %q in both", i, dev, h, tr, want)
		}
		// A failure is a "trailers-only" answer: its status must come through as it is.
		err = cc.Invoke(withDev(t, dev), "/tp.test.Who/Fail", wrapperspb.String("?"), out)
		if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != want {
			t.Errorf("failing call %d (x-dev %q): %v, want NotFound %q", i, dev, err, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the client opened %d connections, want 1", n)
	}
	for route, ln := range lns {
		if n := ln.n.Load(); n != 1 {
			t.Errorf("%s got %d connections; one client connection makes one", routeName(route), n)
		}
	}
	if stats.Routed.Load() != 6 || stats.Passed.Load() != 6 || stats.Raw.Load() != 0 {
		t.Errorf("routed %d, passed %d, raw %d; want 6, 6, 0", stats.Routed.Load(), stats.Passed.Load(), stats.Raw.Load())
	}
}

// Each message of a bidirectional stream gets its answer before the next is sent: the relay
// holds back neither side.
func TestGRPCStreamThroughARoute(t *testing.T) {
	addrs, _, _ := grpcServers(t)
	var conns atomic.Int32
	cc := grpcClient(t, relayFor(t, devTable(t), addrs, nil), &conns)
	for _, dev := range []string{"b", ""} {
		st, err := cc.NewStream(withDev(t, dev), chatDesc, "/tp.test.Who/Chat")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := st.SendMsg(wrapperspb.String(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
			in := new(wrapperspb.StringValue)
			if err := st.RecvMsg(in); err != nil || in.GetValue() != fmt.Sprintf("%s:%d", whoAnswers(dev), i) {
				t.Errorf("x-dev %q, message %d: %q %v", dev, i, in.GetValue(), err)
			}
		}
		st.CloseSend()
		if err := st.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
			t.Errorf("x-dev %q: the stream ended with %v, want io.EOF", dev, err)
		}
	}
}

// A route whose intercept cannot be reached, from the start or from some call on, sends
// its calls to the app; a call even the app cannot take fails as Unavailable.
func TestGRPCGoneRouteAndGoneApp(t *testing.T) {
	addrs, _, srvs := grpcServers(t)
	delete(addrs, "b") // route b's dial fails
	stats := &Stats{}
	var conns atomic.Int32
	cc := grpcClient(t, relayFor(t, devTable(t), addrs, stats), &conns)
	for i, dev := range []string{"b", "a", "b", "stop a", "a"} {
		if dev == "stop a" {
			srvs["a"].Stop() // the laptop goes away: its connection ends, and a new one fails
			time.Sleep(100 * time.Millisecond)
			continue
		}
		want := map[string]string{"a": "laptop-a", "b": "app"}[dev]
		if i > 3 {
			want = "app"
		}
		out := new(wrapperspb.StringValue)
		if err := cc.Invoke(withDev(t, dev), "/tp.test.Who/Name", wrapperspb.String("?"), out); err != nil || out.GetValue() != want {
			t.Errorf("call %d (x-dev %q): %q %v, want %q", i, dev, out.GetValue(), err, want)
		}
	}
	if stats.Fallbacks.Load() != 3 || stats.Routed.Load() != 1 || stats.Passed.Load() != 3 {
		t.Errorf("fallbacks %d, routed %d, passed %d; want 3, 1, 3", stats.Fallbacks.Load(), stats.Routed.Load(), stats.Passed.Load())
	}
	addrs, _, _ = grpcServers(t)

	cc = grpcClient(t, relayFor(t, devTable(t), map[string]string{"a": addrs["a"]}, nil), &conns)
	err := cc.Invoke(withDev(t, ""), "/tp.test.Who/Name", wrapperspb.String("?"), new(wrapperspb.StringValue))
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "502") {
		t.Errorf("with no app: %v, want Unavailable (502)", err)
	}
	out := new(wrapperspb.StringValue) // the connection still carries the route's calls
	if err := cc.Invoke(withDev(t, "a"), "/tp.test.Who/Name", wrapperspb.String("?"), out); err != nil || out.GetValue() != "laptop-a" {
		t.Errorf("with no app, route a: %q %v", out.GetValue(), err)
	}
}

// serveH2C serves handler as HTTP/2 with prior knowledge only, on loopback until the test
// ends.
func serveH2C(t *testing.T, h http.Handler) string {
	t.Helper()
	return serveH2CListener(t, h, listen(t), 0)
}

func serveH2CListener(t *testing.T, h http.Handler, ln net.Listener, idle time.Duration) string {
	t.Helper()
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols), IdleTimeout: idle}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// An upstream's server that ends its idle connection gets a new one for the next request.
func TestH2CIdleUpstreamIsRedialed(t *testing.T) {
	app := listen(t)
	stats := &Stats{}
	addr := relayFor(t, nil, map[string]string{"": serveH2CListener(t, namedH2("app"), app, 50*time.Millisecond)}, stats)
	client := h2cClient((&net.Dialer{}).DialContext)
	for i := range 3 {
		if i > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		resp, err := client.Get(fmt.Sprintf("http://%s/%d", addr, i))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("app GET /%d  ", i); string(got) != want {
			t.Errorf("request %d: %q, want %q", i, got, want)
		}
	}
	if n := app.n.Load(); n != 3 {
		t.Errorf("the app got %d connections, want 3", n)
	}
}

// namedH2 answers "<name> <method> <path> <x-thing> <body>", with the header X-From: name
// and the trailer X-Length: the body's length.
func namedH2(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-From", name)
		w.Header()["Date"] = nil // nor must the relay add one
		fmt.Fprintf(w, "%s %s %s %s %s", name, r.Method, r.RequestURI, r.Header.Get("X-Thing"), body)
		w.Header().Set(http.TrailerPrefix+"X-Length", fmt.Sprint(len(body)))
		w.Header().Set(http.TrailerPrefix+"X-Request-Trailer", r.Trailer.Get("X-Sum"))
	})
}

// h2cClient speaks HTTP/2 with prior knowledge; dial makes its connections.
func h2cClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	return &http.Client{Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx, network, addr)
		}}}
}

func pathTable(t *testing.T) Table {
	t.Helper()
	var table Table
	for _, id := range []string{"a", "b"} {
		m, err := Filter{Path: &Match{Value: "/" + id, Kind: Prefix}}.Compile()
		if err != nil {
			t.Fatal(err)
		}
		table = append(table, Route{ID: id, Match: m})
	}
	return table
}

func TestH2CRequestsAreRoutedByPath(t *testing.T) {
	addrs := map[string]string{"": serveH2C(t, namedH2("app")), "a": serveH2C(t, namedH2("laptop-a")), "b": serveH2C(t, namedH2("laptop-b"))}
	stats := &Stats{}
	addr := relayFor(t, pathTable(t), addrs, stats)
	var conns atomic.Int32
	client := h2cClient(func(ctx context.Context, network, a string) (net.Conn, error) {
		conns.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, a)
	})
	for i, c := range []struct{ path, want string }{
		{"/a/1?q=1", "laptop-a"}, {"/b", "laptop-b"}, {"/c/a", "app"}, {"/a%2Fb", "laptop-a"},
	} {
		method, body := "GET", ""
		if i%2 == 1 {
			method, body = "POST", strings.Repeat("x", 100_000)
		}
		r, _ := http.NewRequest(method, "http://"+addr+c.path, strings.NewReader(body))
		r.Header.Set("X-Thing", "thing")
		if body != "" {
			r.Trailer = http.Header{"X-Sum": {"sum"}}
		}
		resp, err := client.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%s %s %s thing %s", c.want, method, c.path, body); string(got) != want {
			t.Errorf("%s %s: %.60q, want %.60q", method, c.path, got, want)
		}
		if resp.ProtoMajor != 2 || resp.Header.Get("X-From") != c.want || resp.Trailer.Get("X-Length") != fmt.Sprint(len(body)) {
			t.Errorf("%s %s: HTTP/%d, X-From %q, trailer X-Length %q", method, c.path, resp.ProtoMajor, resp.Header.Get("X-From"), resp.Trailer.Get("X-Length"))
		}
		if got := resp.Trailer.Get("X-Request-Trailer"); (body != "") != (got == "sum") {
			t.Errorf("%s %s: the upstream got the request's trailer X-Sum %q", method, c.path, got)
		}
		if _, ok := resp.Header["Date"]; ok {
			t.Errorf("%s %s: a Date the upstream did not send", method, c.path)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the client opened %d connections, want 1", n)
	}
	if stats.Routed.Load() != 3 || stats.Passed.Load() != 1 {
		t.Errorf("routed %d, passed %d; want 3 and 1", stats.Routed.Load(), stats.Passed.Load())
	}
}

// slowStart is a client connection that keeps silent past the relay's FirstByte (so the
// relay dials the app to see whether it speaks first), then sends the preface in pieces.
type slowStart struct {
	net.Conn
	started bool
}

func (c *slowStart) Write(p []byte) (int, error) {
	if c.started || len(p) < 10 {
		return c.Conn.Write(p)
	}
	c.started = true
	time.Sleep(200 * time.Millisecond)
	for _, part := range [][]byte{p[:3], p[3:10], p[10:]} {
		if _, err := c.Conn.Write(part); err != nil {
			return 0, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return len(p), nil
}

// The preface is waited for when it comes in pieces, and late; what only starts like it is
// HTTP/1, and a request shorter than the preface is answered without waiting for more.
func TestPrefaceDetection(t *testing.T) {
	h2addrs := map[string]string{"": serveH2C(t, namedH2("app")), "a": serveH2C(t, namedH2("laptop-a"))}
	client := h2cClient(func(ctx context.Context, network, a string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, a)
		return &slowStart{Conn: c}, err
	})
	addr := relayFor(t, pathTable(t), h2addrs, nil)
	for _, c := range []struct{ path, want string }{{"/x", "app"}, {"/a", "laptop-a"}} {
		resp, err := client.Get("http://" + addr + c.path)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := c.want + " GET " + c.path + "  "; string(got) != want {
			t.Errorf("a late preface in pieces, %s: %q, want %q", c.path, got, want)
		}
	}

	addr = relayFor(t, devTable(t), devServers(t), nil)
	for _, c := range []struct{ req, want string }{
		{"GET /s HTTP/1.0\r\n\r\n", "app GET /s "},
		{"PRI /p HTTP/1.1\r\nHost: x\r\nX-Dev: a\r\nConnection: close\r\n\r\n", "laptop-a PRI /p "},
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, c.req) // and nothing more, the connection kept open
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Errorf("%q: %v", c.req, err)
			conn.Close()
			continue
		}
		got, _ := io.ReadAll(resp.Body)
		if string(got) != c.want {
			t.Errorf("%q: %q, want %q", c.req, got, c.want)
		}
		conn.Close()
	}
}
