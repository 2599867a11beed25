package portforward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
)

// fakeStream reads from r and records writes and closes.
type fakeStream struct {
	hdr           http.Header
	r             io.Reader
	mu            sync.Mutex
	written       strings.Builder
	closed, reset bool
}

func (s *fakeStream) Read(p []byte) (int, error) { return s.r.Read(p) }
func (s *fakeStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written.Write(p)
}
func (s *fakeStream) Close() error         { s.mu.Lock(); s.closed = true; s.mu.Unlock(); return nil }
func (s *fakeStream) Reset() error         { s.mu.Lock(); s.reset = true; s.mu.Unlock(); return nil }
func (s *fakeStream) Headers() http.Header { return s.hdr }
func (s *fakeStream) Identifier() uint32   { return 0 }

// fakeConn answers each stream pair with the given data and error-stream contents.
type fakeConn struct {
	data, errMsg string
	mu           sync.Mutex
	streams      []*fakeStream
	removed      []httpstream.Stream
	closeCh      chan bool
}

func (c *fakeConn) CreateStream(h http.Header) (httpstream.Stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &fakeStream{hdr: h.Clone(), r: strings.NewReader(c.data)}
	if h.Get(corev1.StreamType) == corev1.StreamTypeError {
		s.r = strings.NewReader(c.errMsg)
	}
	c.streams = append(c.streams, s)
	return s, nil
}
func (c *fakeConn) Close() error                 { return nil }
func (c *fakeConn) CloseChan() <-chan bool       { return c.closeCh }
func (c *fakeConn) SetIdleTimeout(time.Duration) {}
func (c *fakeConn) RemoveStreams(s ...httpstream.Stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removed = append(c.removed, s...)
}
func (c *fakeConn) RemoveStreamsCount() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.removed) }

func TestDialPodSharesOneConnectionPerPod(t *testing.T) {
	var upgrades atomic.Int32
	conn := &fakeConn{data: "hello", closeCh: make(chan bool)}
	f := newForwarder(func(ns, pod string) (httpstream.Connection, error) {
		upgrades.Add(1)
		time.Sleep(20 * time.Millisecond) // let the callers pile up on one upgrade
		return conn, nil
	})
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Go(func() {
			c, err := f.DialPod(context.Background(), "ns", "pod", 8080)
			if err != nil {
				t.Error(err)
				return
			}
			c.Close()
		})
	}
	wg.Wait()
	if n := upgrades.Load(); n != 1 {
		t.Fatalf("%d upgrades for one pod, want 1", n)
	}
	if n := conn.RemoveStreamsCount(); n != 20 {
		t.Fatalf("%d streams removed after 10 closed conns, want 20 (client-go keeps the rest forever)", n)
	}
	for _, s := range conn.streams {
		if s.hdr.Get(corev1.PortHeader) != "8080" || s.hdr.Get(corev1.PortForwardRequestIDHeader) == "" {
			t.Fatalf("stream headers: %v", s.hdr)
		}
	}
}

func TestReadReportsTheRuntimesError(t *testing.T) {
	conn := &fakeConn{errMsg: "failed to connect to localhost:9999 inside namespace: connection refused", closeCh: make(chan bool)}
	f := newForwarder(func(ns, pod string) (httpstream.Connection, error) { return conn, nil })
	c, err := f.DialPod(context.Background(), "ns", "pod", 9999)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Read(make([]byte, 10))
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "pod ns/pod port 9999") {
		t.Fatalf("read: %v, want the runtime's message and the pod", err)
	}
}

func TestReadEndsCleanlyWithoutAnError(t *testing.T) {
	conn := &fakeConn{data: "abc", closeCh: make(chan bool)}
	f := newForwarder(func(ns, pod string) (httpstream.Connection, error) { return conn, nil })
	c, _ := f.DialPod(context.Background(), "ns", "pod", 80)
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "abc" {
		t.Fatalf("read all: %q, %v", got, err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if !conn.streams[1].closed || conn.streams[1].reset {
		t.Fatal("CloseWrite must half-close the data stream, not reset it")
	}
}

func TestFailedUpgradeIsRetriedAndClosedConnectionsAreEvicted(t *testing.T) {
	var calls atomic.Int32
	conn := &fakeConn{closeCh: make(chan bool)}
	f := newForwarder(func(ns, pod string) (httpstream.Connection, error) {
		if calls.Add(1) == 1 {
			return nil, errors.New("pods \"pod\" is forbidden")
		}
		return conn, nil
	})
	if _, err := f.DialPod(context.Background(), "ns", "pod", 80); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("first dial: %v, want the upgrade's error", err)
	}
	if _, err := f.DialPod(context.Background(), "ns", "pod", 80); err != nil {
		t.Fatalf("second dial: %v (a failed upgrade must not stick)", err)
	}
	close(conn.closeCh) // the connection dies
	deadline := time.Now().Add(2 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.conns)
		f.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection stays cached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDeadlines(t *testing.T) {
	c := &streamConn{}
	if err := c.SetDeadline(time.Time{}); err != nil {
		t.Fatalf("clearing a deadline: %v", err)
	}
	if err := c.SetReadDeadline(time.Now()); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("setting a deadline: %v, want ErrUnsupported", err)
	}
}

func TestParseTransport(t *testing.T) {
	for in, want := range map[string]Transport{"": Auto, "auto": Auto, "websocket": WebSocket, "spdy": SPDY} {
		if got, err := ParseTransport(in); err != nil || got != want {
			t.Errorf("ParseTransport(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseTransport("quic"); err == nil {
		t.Error("ParseTransport(quic): want an error")
	}
}

// An upgrade that never answers fails its lane after upgradeTimeout, and the next dial
// makes a new one rather than waiting on the stuck one.
func TestStuckUpgradeGivesUp(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	defer close(release)
	f := newForwarder(func(namespace, pod string) (httpstream.Connection, error) {
		calls.Add(1)
		<-release
		return nil, errors.New("too late")
	})
	start := time.Now()
	conn, err := f.upgradeWithin("ns", "pod", 50*time.Millisecond)
	if err == nil || conn != nil || time.Since(start) > time.Second {
		t.Fatalf("stuck upgrade: %v %v after %s", conn, err, time.Since(start))
	}
	_, _ = f.upgradeWithin("ns", "pod", 50*time.Millisecond)
	if calls.Load() != 2 {
		t.Errorf("%d upgrades, want a new one for the second attempt", calls.Load())
	}
}

// upgradeServer refuses WebSocket upgrades (as an API server before 1.30, or a proxy that
// does not pass them, does) and SPDY ones too, saying which it saw.
func upgradeServer(t *testing.T) (*httptest.Server, *atomic.Int32, *atomic.Int32) {
	var ws, spdy atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			ws.Add(1)
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"websocket upgrades are not served here"}`)
			return
		}
		spdy.Add(1)
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"spdy upgrade reached the server"}`)
	}))
	t.Cleanup(srv.Close)
	return srv, &ws, &spdy
}

// The WebSocket upgrade connects with the rest.Config's Dial, as the SPDY one does: client-go's
// own WebSocket dialer ignores it (and with it tp's bounded connect).
func TestWebSocketUpgradeDialsWithTheConfigsDial(t *testing.T) {
	srv, ws, _ := upgradeServer(t)
	var dialed atomic.Int32
	// Loopback port 1, where nothing listens: a dial that bypasses the hook is refused at once.
	cfg := &rest.Config{Host: "http://127.0.0.1:1", Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		dialed.Add(1)
		if address != "127.0.0.1:1" {
			return nil, fmt.Errorf("dialed %q", address)
		}
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}}
	f, err := New(cfg, WebSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = f.DialPod(context.Background(), "ns", "pod", 80)
	if dialed.Load() == 0 || ws.Load() == 0 {
		t.Fatalf("the upgrade did not go through the config's Dial (dials %d, upgrades seen %d): %v", dialed.Load(), ws.Load(), err)
	}
	if !httpstream.IsUpgradeFailure(err) || !strings.Contains(err.Error(), "websocket upgrades are not served here") {
		t.Fatalf("refused upgrade: %v, want an upgrade failure with the server's message", err)
	}
}

// Auto falls back to SPDY when the WebSocket upgrade is refused.
func TestAutoFallsBackToSPDY(t *testing.T) {
	srv, ws, spdy := upgradeServer(t)
	f, err := New(&rest.Config{Host: srv.URL}, Auto)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = f.DialPod(context.Background(), "ns", "pod", 80)
	if ws.Load() != 1 || spdy.Load() != 1 {
		t.Fatalf("upgrades seen: websocket %d, spdy %d, want one of each (%v)", ws.Load(), spdy.Load(), err)
	}
	if err == nil || !strings.Contains(err.Error(), "spdy upgrade reached the server") {
		t.Fatalf("dial: %v, want the SPDY upgrade's refusal", err)
	}
}
