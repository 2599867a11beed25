package localproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/testlog"
)

// halfCloseBackend reads until EOF, reports what it read, then answers and closes: it
// only answers if the client's half-close reached it.
func halfCloseBackend(t *testing.T) (addr string, got <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ch := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c) // returns at EOF only
		if err != nil {
			ch <- "error: " + err.Error()
			return
		}
		ch <- string(b)
		_, _ = io.WriteString(c, "answer after EOF")
	}()
	return ln.Addr().String(), ch
}

func TestHalfClosePropagates(t *testing.T) {
	for _, proto := range []string{"socks5", "http-connect"} {
		t.Run(proto, func(t *testing.T) {
			backend, got := halfCloseBackend(t)
			_, addr := startServer(t, Config{Dialer: dialTo(backend)})
			var c net.Conn
			var r io.Reader
			switch proto {
			case "socks5":
				d, _ := proxy.SOCKS5("tcp", addr, nil, proxy.Direct)
				var err error
				if c, err = d.Dial("tcp", "web-app:80"); err != nil {
					t.Fatal(err)
				}
				r = c
			default:
				var err error
				if c, err = net.Dial("tcp", addr); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(c, "CONNECT web-app:80 HTTP/1.1\r\nHost: web-app:80\r\n\r\n")
				br := bufio.NewReader(c)
				resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("CONNECT: %v %v", resp, err)
				}
				r = br
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, "request"); err != nil {
				t.Fatal(err)
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			select {
			case s := <-got:
				if s != "request" {
					t.Fatalf("backend read %q", s)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the backend never saw EOF: the half-close was not passed on")
			}
			answer, err := io.ReadAll(r)
			if err != nil || string(answer) != "answer after EOF" {
				t.Fatalf("client read %q %v after its half-close", answer, err)
			}
		})
	}
}

func TestConcurrentConnections(t *testing.T) {
	const n = 200
	d := dialTo(startEcho(t))
	s, addr := startServer(t, Config{Dialer: d})
	socks, _ := proxy.SOCKS5("tcp", addr, nil, proxy.Direct)

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			var c net.Conn
			var r io.Reader
			var err error
			if i%2 == 0 {
				c, err = socks.Dial("tcp", fmt.Sprintf("svc-%d.ns:80", i))
				r = c
			} else {
				c, err = net.Dial("tcp", addr)
				if err == nil {
					fmt.Fprintf(c, "CONNECT svc-%d.ns:80 HTTP/1.1\r\nHost: svc-%d.ns:80\r\n\r\n", i, i)
					br := bufio.NewReader(c)
					var resp *http.Response
					if resp, err = http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
					r = br
				}
			}
			if err != nil {
				errs <- fmt.Errorf("conn %d: %w", i, err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			msg := strings.Repeat(fmt.Sprintf("<%d>", i), 1000)
			go io.WriteString(c, msg)
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(r, buf); err != nil || string(buf) != msg {
				errs <- fmt.Errorf("conn %d: echo %v", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(d.Calls()); got != n {
		t.Errorf("%d dials, want %d", got, n)
	}
	eventually(t, "all connections to close", func() bool { return s.Stats().Open == 0 })
	st := s.Stats()
	if st.Total != n || st.BytesOut < n*4000 || st.BytesIn < n*4000 {
		t.Errorf("stats %+v", st)
	}
}

// Garbage closes only the connection it came on, with a log line; the server goes on.
func TestGarbageDoesNotKillServer(t *testing.T) {
	var logs testlog.Buffer
	d := dialTo(startEcho(t))
	_, addr := startServer(t, Config{Dialer: d, Log: logs.Logger(), HandshakeTimeout: 300 * time.Millisecond})
	garbage := [][]byte{
		{0x00, 0x01, 0x02},
		{0x16, 0x03, 0x01, 0x02, 0x00, 0x01},      // TLS ClientHello: an https:// proxy URL
		{0x04, 0x01, 0x00, 0x50, 127, 0, 0, 1, 0}, // SOCKS4
		{0x05},             // SOCKS5, then nothing
		{0x05, 0xff},       // claims 255 methods, sends none
		{0x05, 0x01, 0x02}, // only user/pass offered, then nothing
		{0x05, 0x01, 0x00, 0x05, 0x09, 0x00, 0x01}, // unknown command
		{0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x07}, // unknown address type
		[]byte("GET\r\n\r\n"),
		[]byte("NOT HTTP AT ALL\x00\x01\x02\r\n\r\n"),
		[]byte(strings.Repeat("A", 100000)),
		{0xff, 0xfe, 0xfd},
	}
	for i, g := range garbage {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("garbage %d: the server stopped accepting: %v", i, err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		go c.Write(g)
		_, _ = io.Copy(io.Discard, c) // until the server closes it
		_ = c.Close()
	}
	logs.Expect(t, "neither SOCKS5 nor HTTP", 1, 5*time.Second)
	for _, want := range []string{"SOCKS4 is not supported", "must be http://, not https://", "socks5: closing connection"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	// Still serving.
	socks, _ := proxy.SOCKS5("tcp", addr, nil, proxy.Direct)
	c, err := socks.Dial("tcp", "web-app:80")
	if err != nil {
		t.Fatalf("after garbage: %v", err)
	}
	_ = c.Close()
}

// A client that connects and says nothing, or stops half way, must not hold up others.
func TestIdleClientsDoNotBlockOthers(t *testing.T) {
	d := dialTo(startEcho(t))
	_, addr := startServer(t, Config{Dialer: d})
	for _, first := range [][]byte{nil, {0x05}, []byte("GET http://x/ HT")} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if first != nil {
			_, _ = c.Write(first)
		}
	}
	done := make(chan error, 1)
	go func() {
		socks, _ := proxy.SOCKS5("tcp", addr, nil, proxy.Direct)
		c, err := socks.Dial("tcp", "web-app:80")
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a new client waited behind idle ones")
	}
}

func TestHandshakeTimeoutClosesIdleClient(t *testing.T) {
	_, addr := startServer(t, Config{Dialer: failWith(errors.New("unused")), HandshakeTimeout: 200 * time.Millisecond})
	for _, first := range [][]byte{nil, {0x05, 0x01}} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write(first)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Errorf("first bytes %v: server did not close an idle client: %v", first, err)
		}
	}
}

func TestSelfLoopRefused(t *testing.T) {
	d := failWith(errors.New("must not dial"))
	_, addr := startServer(t, Config{Dialer: d})
	port := addr[strings.LastIndex(addr, ":")+1:]

	for _, target := range []string{addr, "localhost:" + port, "0.0.0.0:" + port} {
		host, p, _ := net.SplitHostPort(target)
		pn := 0
		fmt.Sscan(p, &pn)
		if _, code, _ := socksRequest(t, addr, 1, host, uint16(pn)); code != 0x02 {
			t.Errorf("SOCKS CONNECT %s: reply %#02x, want 0x02 not allowed", target, code)
		}
		resp, err := proxyClient(t, addr).Get("http://" + target + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusLoopDetected || !strings.HasPrefix(string(body), "tp: refusing to proxy") {
			t.Errorf("GET via proxy to %s: %d %q", target, resp.StatusCode, body)
		}
	}
	if calls := d.Calls(); len(calls) != 0 {
		t.Errorf("loop targets were dialed: %q", calls)
	}
}

func TestIsSelf(t *testing.T) {
	s := New(Config{Dialer: failWith(nil), SelfAddrs: []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.1:1080"),
		netip.MustParseAddrPort("[::]:3128"),
	}})
	tests := map[string]bool{
		"127.0.0.1:1080":          true,
		"localhost:1080":          true,
		"LOCALHOST.:1080":         true,
		"[::ffff:127.0.0.1]:1080": true,
		"0.0.0.0:1080":            true,
		"127.0.0.1:1081":          false,
		"10.0.0.1:1080":           false,
		"web-app:1080":            false,
		"[::1]:3128":              true,
		"127.0.0.5:3128":          true,
		"localhost:3128":          true,
		"192.168.1.1:3128":        false, // can't know without listing interfaces
		"bad":                     false,
	}
	for addr, want := range tests {
		if got := s.isSelf(addr); got != want {
			t.Errorf("isSelf(%q) = %v, want %v", addr, got, want)
		}
	}
}

// Ending Serve's context closes clients and the destinations opened for them.
func TestServeClosesEverythingOnCancel(t *testing.T) {
	destClosed := make(chan struct{})
	d := &fakeDialer{fn: func(context.Context, string, string) (net.Conn, error) {
		a, b := net.Pipe()
		go func() {
			_, _ = io.Copy(io.Discard, b) // returns when the proxy closes a
			close(destClosed)
		}()
		return a, nil
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Dialer: d})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()

	socks, _ := proxy.SOCKS5("tcp", ln.Addr().String(), nil, proxy.Direct)
	c, err := socks.Dial("tcp", "quiet.svc:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	eventually(t, "two open connections", func() bool { return s.Stats().Open == 2 })

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	for _, conn := range []net.Conn{c, idle} {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, conn); err != nil {
			t.Errorf("client connection not closed: %v", err)
		}
	}
	select {
	case <-destClosed:
	case <-time.After(5 * time.Second):
		t.Error("destination connection not closed")
	}
	if st := s.Stats(); st.Open != 0 {
		t.Errorf("open connections after Serve returned: %d", st.Open)
	}
}

func TestServeReturnsWhenListenerCloses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Dialer: failWith(errors.New("unused"))})
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), ln) }()
	time.Sleep(50 * time.Millisecond)
	_ = ln.Close()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve returned %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestDialTimeoutKind(t *testing.T) {
	d := &fakeDialer{fn: func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, errors.New("gave up")
	}}
	s := New(Config{Dialer: d, DialTimeout: 50 * time.Millisecond})
	_, err := s.dial(context.Background(), "tcp", "slow:80")
	if remote.KindOf(err) != remote.Timeout || !strings.Contains(err.Error(), "slow:80") {
		t.Fatalf("err %v (kind %v), want a Timeout naming the target", err, remote.KindOf(err))
	}
	// A caller that gave up is not a timeout of ours.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.dial(ctx, "tcp", "slow:80"); remote.KindOf(err) == remote.Timeout {
		t.Fatalf("cancelled dial reported as timeout: %v", err)
	}
}
