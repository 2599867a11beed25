package localproxy

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
)

// fakeDialer records every dial and answers with fn.
type fakeDialer struct {
	fn func(ctx context.Context, network, address string) (net.Conn, error)

	mu    sync.Mutex
	calls []string // "network address"
}

func (d *fakeDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	d.calls = append(d.calls, network+" "+address)
	d.mu.Unlock()
	return d.fn(ctx, network, address)
}

func (d *fakeDialer) Calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// dialTo returns a dialer that connects every request to the real address to, whatever
// the requested address.
func dialTo(to string) *fakeDialer {
	return &fakeDialer{fn: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, to)
	}}
}

// failWith returns a dialer whose every dial fails with err.
func failWith(err error) *fakeDialer {
	return &fakeDialer{fn: func(context.Context, string, string) (net.Conn, error) { return nil, err }}
}

// startServer serves cfg on a fresh loopback listener until the test ends, and checks that
// Serve then returns nil promptly.
func startServer(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, cfg, ln), ln.Addr().String()
}

func serveOn(t testing.TB, cfg Config, ln net.Listener) *Server {
	t.Helper()
	s := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
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
	return s
}

// startEcho runs a TCP echo server that passes on half-closes, and returns its address.
func startEcho(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func kindErr(k remote.Kind, msg string) error { return &remote.Error{Kind: k, Msg: msg} }

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
