package localproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
)

// scServe runs tp's real server on a loopback port and returns its address and a stop
// function (also run at cleanup) that ends Serve and waits for it.
func scServe(t *testing.T, cfg Config) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve returned %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Serve did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// scFakeProxy accepts TCP connections on loopback and runs script on each; it closes the
// connection when script returns.
func scFakeProxy(t *testing.T, script func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				script(c)
			})
		}
	})
	return ln.Addr().String()
}

// scReadRequest reads a client's greeting and request and returns them as sent.
func scReadRequest(c net.Conn) (greeting, request []byte, err error) {
	greeting = make([]byte, 2)
	if _, err := io.ReadFull(c, greeting); err != nil {
		return nil, nil, err
	}
	methods := make([]byte, greeting[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return nil, nil, err
	}
	greeting = append(greeting, methods...)
	request = make([]byte, 4)
	if _, err := io.ReadFull(c, request); err != nil {
		return nil, nil, err
	}
	var rest int
	switch request[3] {
	case 1:
		rest = 4 + 2
	case 4:
		rest = 16 + 2
	case 3:
		var l [1]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return nil, nil, err
		}
		request = append(request, l[0])
		rest = int(l[0]) + 2
	default:
		return nil, nil, fmt.Errorf("address type %d", request[3])
	}
	addr := make([]byte, rest)
	if _, err := io.ReadFull(c, addr); err != nil {
		return nil, nil, err
	}
	return greeting, append(request, addr...), nil
}

func scRemoteError(t *testing.T, err error) *remote.Error {
	t.Helper()
	if err == nil {
		t.Fatal("dial succeeded, want an error")
	}
	re, ok := errors.AsType[*remote.Error](err)
	if !ok {
		t.Fatalf("error %v (%T) is not a *remote.Error", err, err)
	}
	return re
}

func scEcho(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: %q %v, want %q", buf, err, msg)
	}
}

func TestSOCKSDialerConnectThroughServer(t *testing.T) {
	echo := startEcho(t)
	backend := dialTo(echo)
	addr, _ := scServe(t, Config{Dialer: backend})
	sd := &SOCKSDialer{Proxy: addr}

	targets := []string{"web-app.other-ns:8080", "10.96.0.10:80", "[fd00::1]:443", "[::ffff:10.0.0.1]:22"}
	for _, target := range targets {
		c, err := sd.DialContext(t.Context(), "tcp", target)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		scEcho(t, c, "ping "+target)
		if c.RemoteAddr().String() != addr {
			t.Errorf("RemoteAddr %v, want the proxy's %s", c.RemoteAddr(), addr)
		}
		_ = c.Close()
	}
	// The name reaches the server's Dialer unresolved; a v4-mapped address goes as IPv4.
	want := []string{"tcp web-app.other-ns:8080", "tcp 10.96.0.10:80", "tcp [fd00::1]:443", "tcp 10.0.0.1:22"}
	if got := backend.Calls(); !slices.Equal(got, want) {
		t.Fatalf("server's Dialer got %q, want %q", got, want)
	}
}

func TestSOCKSDialerHalfClose(t *testing.T) {
	// A backend that speaks first, half-closes, then reads everything the client sends
	// and reports it over got.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Write([]byte("banner"))
		_ = c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
	}()
	addr, _ := scServe(t, Config{Dialer: dialTo(ln.Addr().String())})
	c, err := (&SOCKSDialer{Proxy: addr}).DialContext(t.Context(), "tcp", "web-app:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// Backend → client half-close: we read the banner and then EOF...
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "banner" {
		t.Fatalf("read %q %v, want the banner then EOF", b, err)
	}
	// ...and can still send; our half-close reaches the backend as EOF.
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatalf("write after the backend half-closed: %v", err)
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", c)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "request" {
			t.Fatalf("backend got %q, want %q", s, "request")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the half-close never reached the backend")
	}

	// And the other order, against an echo: our half-close first, the echo's after.
	addr2, _ := scServe(t, Config{Dialer: dialTo(startEcho(t))})
	c2, err := (&SOCKSDialer{Proxy: addr2}).DialContext(t.Context(), "tcp", "echo:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c2.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := c2.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c2); err != nil || string(b) != "hello" {
		t.Fatalf("read %q %v, want the echo then EOF", b, err)
	}
}

func TestSOCKSDialerReplyKinds(t *testing.T) {
	tests := []struct {
		name    string
		backend error
		want    remote.Kind
		msg     string // the message must contain this; %s is the proxy's address
	}{
		{"refused", kindErr(remote.Refused, "nothing listens on web-app:81"), remote.Refused,
			"connection refused by web-app:81 (via tp's proxy %s)"},
		{"no such host", kindErr(remote.NoSuchHost, `no service "web-app"`), remote.NoSuchHost,
			"no such host web-app:81 (via tp's proxy %s: host unreachable)"},
		{"unreachable", kindErr(remote.Unreachable, "no pod has it"), remote.Unreachable,
			"no route to web-app:81 (via tp's proxy %s: network unreachable)"},
		{"timeout", kindErr(remote.Timeout, "did not answer"), remote.Timeout,
			"web-app:81 did not answer in time (via tp's proxy %s: TTL expired)"},
		{"deadline", fmt.Errorf("dialing: %w", context.DeadlineExceeded), remote.Timeout, "TTL expired"},
		{"tunnel down", kindErr(remote.TunnelDown, "port-forward dropped"), remote.Failed,
			"dialing web-app:81 failed (via tp's proxy %s: general failure"},
		{"failed", kindErr(remote.Failed, "boom"), remote.Failed, "general failure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backend := failWith(tt.backend)
			addr, _ := scServe(t, Config{Dialer: backend})
			for _, network := range []string{"tcp", "tcp6"} {
				_, err := (&SOCKSDialer{Proxy: addr}).DialContext(t.Context(), network, "web-app:81")
				re := scRemoteError(t, err)
				if re.Kind != tt.want {
					t.Errorf("%s: kind %v, want %v (error %q)", network, re.Kind, tt.want, err)
				}
				if !errors.Is(err, &remote.Error{Kind: tt.want}) {
					t.Errorf("errors.Is(%v, kind %v) is false", err, tt.want)
				}
				msg := tt.msg
				if strings.Contains(msg, "%s") {
					msg = fmt.Sprintf(msg, addr)
				}
				if !strings.Contains(err.Error(), msg) {
					t.Errorf("%s: message %q lacks %q", network, err, msg)
				}
			}
		})
	}

	t.Run("loop", func(t *testing.T) {
		backend := failWith(errors.New("unused"))
		addr, _ := scServe(t, Config{Dialer: backend})
		_, err := (&SOCKSDialer{Proxy: addr}).DialContext(t.Context(), "tcp", addr)
		re := scRemoteError(t, err)
		if re.Kind != remote.Failed || !strings.Contains(err.Error(), "not allowed by ruleset") {
			t.Errorf("kind %v, error %q; want Failed, not allowed by ruleset", re.Kind, err)
		}
		if len(backend.Calls()) != 0 {
			t.Errorf("the loop was dialed: %q", backend.Calls())
		}
	})
}

func TestSOCKSDialerRequestEncoding(t *testing.T) {
	type seen struct{ greeting, request []byte }
	got := make(chan seen, 10)
	addr := scFakeProxy(t, func(c net.Conn) {
		g, r, err := scReadRequest(c)
		if err != nil {
			return
		}
		got <- seen{g, r}
		_, _ = c.Write([]byte{5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
	})
	sd := &SOCKSDialer{Proxy: addr}
	port := func(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }
	tests := []struct {
		network, address string
		want             []byte
	}{
		{"tcp", "web-app.other-ns:8080", slices.Concat([]byte{5, 1, 0, 3, 16}, []byte("web-app.other-ns"), port(8080))},
		{"tcp", "10.96.0.10:53", slices.Concat([]byte{5, 1, 0, 1, 10, 96, 0, 10}, port(53))},
		{"tcp", "[fd00::1]:443", slices.Concat([]byte{5, 1, 0, 4}, net.ParseIP("fd00::1").To16(), port(443))},
		{"tcp", "[fe80::1%eth0]:443", slices.Concat([]byte{5, 1, 0, 4}, net.ParseIP("fe80::1").To16(), port(443))},
		{"tcp", "[::ffff:1.2.3.4]:1", slices.Concat([]byte{5, 1, 0, 1, 1, 2, 3, 4}, port(1))},
		{"tcp", "localhost:0", slices.Concat([]byte{5, 1, 0, 3, 9}, []byte("localhost"), port(0))},
		// UDP ASSOCIATE names no destination: the client's source, unknown yet.
		{"udp", "dns.kube-system:53", []byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		_, err := sd.DialContext(t.Context(), tt.network, tt.address)
		if remote.KindOf(err) != remote.Refused {
			t.Errorf("%s %s: %v, want the scripted refusal", tt.network, tt.address, err)
		}
		s := <-got
		if !bytes.Equal(s.greeting, []byte{5, 1, 0}) {
			t.Errorf("greeting %v, want no-auth only", s.greeting)
		}
		if !bytes.Equal(s.request, tt.want) {
			t.Errorf("%s %s: request %v, want %v", tt.network, tt.address, s.request, tt.want)
		}
	}
}

func TestSOCKSDialerBadInput(t *testing.T) {
	sd := &SOCKSDialer{Proxy: "127.0.0.1:1", Dial: func(context.Context, string, string) (net.Conn, error) {
		t.Error("the proxy was dialed for a request that can't be made")
		return nil, errors.New("no")
	}}
	for _, tt := range []struct{ network, address string }{
		{"ip", "web-app:80"},
		{"unix", "/tmp/x"},
		{"tcp", "web-app"},
		{"tcp", ":80"},
		{"tcp", "web-app:http"},
		{"tcp", "web-app:65536"},
		{"udp", strings.Repeat("a", 256) + ":53"},
	} {
		_, err := sd.DialContext(t.Context(), tt.network, tt.address)
		if re := scRemoteError(t, err); re.Kind != remote.Failed {
			t.Errorf("%s %q: kind %v", tt.network, tt.address, re.Kind)
		}
	}
	_, err := (&SOCKSDialer{}).DialContext(t.Context(), "tcp", "web-app:80")
	if re := scRemoteError(t, err); re.Kind != remote.Failed || !strings.Contains(err.Error(), "no proxy address") {
		t.Errorf("empty Proxy: %v", err)
	}
}

func TestSOCKSDialerOddReplies(t *testing.T) {
	tests := []struct {
		name   string
		script func(c net.Conn)
		kind   remote.Kind
		msg    string
	}{
		{"command not supported", func(c net.Conn) {
			_, _, _ = scReadRequest(c)
			_, _ = c.Write([]byte{5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0})
		}, remote.Failed, "command not supported"},
		{"address type not supported", func(c net.Conn) {
			_, _, _ = scReadRequest(c)
			_, _ = c.Write([]byte{5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0})
		}, remote.Failed, "address type not supported"},
		{"unassigned code", func(c net.Conn) {
			_, _, _ = scReadRequest(c)
			_, _ = c.Write([]byte{5, 0, 5, 0x42, 0, 1, 0, 0, 0, 0, 0, 0})
		}, remote.Failed, "reply code 0x42"},
		{"short failure reply", func(c net.Conn) {
			_, _, _ = scReadRequest(c)
			_, _ = c.Write([]byte{5, 0, 5, 5})
		}, remote.Refused, "connection refused by web-app:81"},
		{"wants auth", func(c net.Conn) {
			_, _, _ = scReadRequest(c)
			_, _ = c.Write([]byte{5, 0xff})
		}, remote.Failed, "wants authentication"},
		{"not SOCKS", func(c net.Conn) {
			_, _, _ = scReadRequest(c)
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
		}, remote.Failed, "does not speak SOCKS5"},
		{"bad reply version", func(c net.Conn) {
			_, _, _ = scReadRequest(c)
			_, _ = c.Write([]byte{5, 0, 4, 0, 0, 1, 0, 0, 0, 0, 0, 0})
		}, remote.Failed, "version 0x04"},
		{"bad address type", func(c net.Conn) {
			_, _, _ = scReadRequest(c)
			_, _ = c.Write([]byte{5, 0, 5, 0, 0, 9, 0, 0, 0, 0, 0, 0})
		}, remote.Failed, "unknown address type 0x09"},
		{"closes", func(c net.Conn) {
			_, _, _ = scReadRequest(c)
		}, remote.Failed, "closed the connection during the SOCKS5 handshake"},
		{"closes mid-reply", func(c net.Conn) {
			_, _, _ = scReadRequest(c)
			_, _ = c.Write([]byte{5, 0, 5, 0, 0, 4, 0xfd})
		}, remote.Failed, "closed the connection during the SOCKS5 handshake"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := scFakeProxy(t, tt.script)
			_, err := (&SOCKSDialer{Proxy: addr}).DialContext(t.Context(), "tcp", "web-app:81")
			re := scRemoteError(t, err)
			if re.Kind != tt.kind || !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), addr) {
				t.Errorf("got kind %v, %q; want kind %v, a message with %q and the proxy's address", re.Kind, err, tt.kind, tt.msg)
			}
		})
	}
}

// The handshake reads exactly the reply, whatever its bound address type: bytes the
// destination sends right after it belong to the caller.
func TestSOCKSDialerReadsExactlyTheReply(t *testing.T) {
	for _, bound := range [][]byte{
		{1, 127, 0, 0, 1, 0, 80},
		slices.Concat([]byte{4}, net.ParseIP("::1").To16(), []byte{0, 80}),
		{3, 1, 'x', 0, 80},
		slices.Concat([]byte{3, 40}, bytes.Repeat([]byte("y"), 40), []byte{0, 80}),
	} {
		addr := scFakeProxy(t, func(c net.Conn) {
			if _, _, err := scReadRequest(c); err != nil {
				return
			}
			_, _ = c.Write(slices.Concat([]byte{5, 0, 5, 0, 0}, bound, []byte("SSH-2.0-banner")))
			_, _ = io.Copy(io.Discard, c)
		})
		c, err := (&SOCKSDialer{Proxy: addr}).DialContext(t.Context(), "tcp", "git:22")
		if err != nil {
			t.Fatalf("bound %v: %v", bound, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, len("SSH-2.0-banner"))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "SSH-2.0-banner" {
			t.Errorf("bound %v: read %q %v, want the banner", bound, buf, err)
		}
		_ = c.Close()
	}
}

func TestSOCKSDialerProxyNotRunning(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	for _, network := range []string{"tcp", "udp"} {
		_, err := (&SOCKSDialer{Proxy: addr}).DialContext(t.Context(), network, "web-app:80")
		re := scRemoteError(t, err)
		if re.Kind != remote.TunnelDown || !strings.Contains(err.Error(), "tp's proxy at "+addr+" is not running") {
			t.Errorf("%s: kind %v, %q; want TunnelDown saying the proxy isn't running", network, re.Kind, err)
		}
	}
}

// A Dial func's own remote.Error is passed on.
func TestSOCKSDialerDialFuncError(t *testing.T) {
	sd := &SOCKSDialer{Proxy: "proxy:1080", Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, kindErr(remote.Unreachable, "no route to proxy")
	}}
	_, err := sd.DialContext(t.Context(), "tcp", "web-app:80")
	if re := scRemoteError(t, err); re.Kind != remote.Unreachable {
		t.Errorf("kind %v, want Unreachable", re.Kind)
	}
}

func TestSOCKSDialerHandshakeStalls(t *testing.T) {
	scripts := map[string]func(c net.Conn){
		"silent": func(c net.Conn) {
			_, _ = io.Copy(io.Discard, c)
		},
		"after greeting": func(c net.Conn) {
			_, _ = c.Write([]byte{5, 0})
			_, _ = io.Copy(io.Discard, c)
		},
	}
	for name, script := range scripts {
		t.Run(name, func(t *testing.T) {
			closed := make(chan struct{}, 4)
			addr := scFakeProxy(t, func(c net.Conn) {
				script(c) // returns when the client closes
				closed <- struct{}{}
			})
			sd := &SOCKSDialer{Proxy: addr}
			for _, network := range []string{"tcp", "udp"} {
				ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
				start := time.Now()
				_, err := sd.DialContext(ctx, network, "slow:80")
				cancel()
				re := scRemoteError(t, err)
				if re.Kind != remote.Timeout || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%s: kind %v, %v; want Timeout wrapping DeadlineExceeded", network, re.Kind, err)
				}
				if el := time.Since(start); el > 3*time.Second {
					t.Errorf("%s: took %v for a 200ms deadline", network, el)
				}
				select {
				case <-closed:
				case <-time.After(5 * time.Second):
					t.Fatalf("%s: the proxy connection was not closed", network)
				}

				ctx, cancel = context.WithCancel(t.Context())
				time.AfterFunc(100*time.Millisecond, cancel)
				_, err = sd.DialContext(ctx, network, "slow:80")
				if !errors.Is(err, context.Canceled) || remote.KindOf(err) == remote.Timeout {
					t.Errorf("%s: cancelled dial returned %v", network, err)
				}
				select {
				case <-closed:
				case <-time.After(5 * time.Second):
					t.Fatalf("%s: the proxy connection was not closed on cancel", network)
				}
			}
		})
	}
}

// scReadDatagram reads one datagram with a buffer of size n and checks it.
func scReadDatagram(t *testing.T, c net.Conn, n int, want string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, n)
	got, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read (buffer %d): %v", n, err)
	}
	if string(buf[:got]) != want {
		t.Fatalf("read (buffer %d) %.40q (%d bytes), want %.40q (%d bytes)", n, buf[:got], got, want, len(want))
	}
}

func TestSOCKSDialerUDPThroughServer(t *testing.T) {
	echo := startUDPEcho(t)
	backend := newUDPDialer(t, echo)
	addr, _ := scServe(t, Config{Dialer: backend})
	var mu sync.Mutex
	var dials []string
	sd := &SOCKSDialer{Proxy: addr, Dial: func(ctx context.Context, network, a string) (net.Conn, error) {
		mu.Lock()
		dials = append(dials, network)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, a)
	}}

	big := strings.Repeat("0123456789", 3000)
	for _, target := range []string{"dns.kube-system:53", "10.96.0.10:53", "[fd00::53]:53"} {
		c, err := sd.DialContext(t.Context(), "udp", target)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if c.RemoteAddr().String() != target || c.RemoteAddr().Network() != "udp" {
			t.Errorf("RemoteAddr %s %v, want udp %s", c.RemoteAddr().Network(), c.RemoteAddr(), target)
		}
		if la, ok := c.LocalAddr().(*net.UDPAddr); !ok || !la.IP.IsLoopback() {
			t.Errorf("LocalAddr %v, want the loopback UDP socket", c.LocalAddr())
		}
		// Several datagrams in flight keep their boundaries, an empty one included.
		payloads := []string{"query-1", "", "query-3", big}
		for _, p := range payloads {
			if n, err := c.Write([]byte(p)); err != nil || n != len(p) {
				t.Fatalf("write %d bytes: %d %v", len(p), n, err)
			}
		}
		scReadDatagram(t, c, 64<<10, "re:query-1") // read in place
		scReadDatagram(t, c, 3, "re:")             // small buffer
		scReadDatagram(t, c, 10, "re:query-3")
		scReadDatagram(t, c, 100, "re:"+big[:97]) // truncated to the buffer, as UDP does
		// Each Read is one datagram: the truncated rest is gone.
		if _, err := c.Write([]byte("again")); err != nil {
			t.Fatal(err)
		}
		scReadDatagram(t, c, 64<<10, "re:again")

		// Deadlines reach the socket.
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := c.Read(make([]byte, 100)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read past the deadline: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if _, err := c.Read(make([]byte, 100)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("read after Close: %v, want net.ErrClosed", err)
		}
		if err := c.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close: %v", err)
		}
		// Closing ended the association on the server, and its flow.
		eventually(t, "the server to close the flow", func() bool { return backend.open.Load() == 0 })
	}
	want := []string{"udp dns.kube-system:53", "udp 10.96.0.10:53", "udp [fd00::53]:53"}
	if got := backend.Calls(); !slices.Equal(got, want) {
		t.Fatalf("server's Dialer got %q, want %q (names unresolved)", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"tcp", "udp4", "tcp", "udp4", "tcp", "udp4"}; !slices.Equal(dials, want) {
		t.Errorf("Dial got networks %q, want %q", dials, want)
	}
}

func TestSOCKSDialerUDPServerStops(t *testing.T) {
	echo := startUDPEcho(t)
	addr, stop := scServe(t, Config{Dialer: newUDPDialer(t, echo)})
	c, err := (&SOCKSDialer{Proxy: addr}).DialContext(t.Context(), "udp", "dns:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	scReadDatagram(t, c, 100, "re:x")

	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 100))
		readErr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	stop() // closes the control connection
	var err1 error
	select {
	case err1 = <-readErr:
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked Read did not fail when the control connection closed")
	}
	if re := scRemoteError(t, err1); re.Kind != remote.TunnelDown || !strings.Contains(err1.Error(), "ended the UDP association") {
		t.Errorf("blocked Read: kind %v, %v", re.Kind, err1)
	}
	if _, err := c.Read(make([]byte, 100)); remote.KindOf(err) != remote.TunnelDown {
		t.Errorf("later Read: %v", err)
	}
	if _, err := c.Write([]byte("y")); remote.KindOf(err) != remote.TunnelDown {
		t.Errorf("later Write: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close after the proxy ended the association: %v", err)
	}
}

// A scripted relay: it answers the ASSOCIATE with the unspecified address (the client must
// use the proxy's), sends datagrams from the wrong sources, and then ends the association.
func TestSOCKSDialerUDPScriptedRelay(t *testing.T) {
	relay, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	endAssociation := make(chan struct{})
	addr := scFakeProxy(t, func(c net.Conn) {
		if _, req, err := scReadRequest(c); err != nil || req[1] != 3 {
			return
		}
		reply := binary.BigEndian.AppendUint16([]byte{5, 0, 5, 0, 0, 1, 0, 0, 0, 0}, uint16(relay.LocalAddr().(*net.UDPAddr).Port))
		_, _ = c.Write(reply)
		<-endAssociation
	})
	c, err := (&SOCKSDialer{Proxy: addr}).DialContext(t.Context(), "udp", "Web-App.default:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	_ = relay.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1000)
	n, from, err := relay.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("relay at the proxy's host got nothing: %v", err)
	}
	hdr := udpHeaderName("Web-App.default", 53)
	if want := append(slices.Clone(hdr), "hi"...); !bytes.Equal(buf[:n], want) {
		t.Fatalf("relay got %q, want %q", buf[:n], want)
	}
	for _, d := range [][]byte{
		append(udpHeaderName("other.default", 53), "other name"...),
		append(udpHeaderName("web-app.default", 54), "other port"...),
		append(udpHeaderIPv4([4]byte{10, 0, 0, 1}, 53), "an IP"...),
		{0, 0},                              // malformed
		append([]byte{0, 0, 1}, hdr[3:]...), // a fragment
		append(udpHeaderName("web-app.DEFAULT", 53), "mine"...), // names compare case-blind
	} {
		if _, err := relay.WriteToUDP(d, from); err != nil {
			t.Fatal(err)
		}
	}
	scReadDatagram(t, c, 100, "mine")

	close(endAssociation)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 100)); remote.KindOf(err) != remote.TunnelDown {
		t.Fatalf("Read after the proxy closed the control connection: %v, want TunnelDown", err)
	}
}
