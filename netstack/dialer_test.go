package netstack

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
)

// lockedBuffer is a log sink for concurrent goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Config.Dialer gets each flow's destination as host:port, and the flow works through it.
func TestDialerCarriesFlows(t *testing.T) {
	ln := listenTCP(t, echoTCP)
	var mu sync.Mutex
	var got []string
	d := remote.DialFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
		mu.Lock()
		got = append(got, network+" "+address)
		mu.Unlock()
		return (&net.Dialer{}).DialContext(ctx, network, ln.Addr().String())
	})
	e := newEnv(t, Config{Dialer: d}, channelLink)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.dialTCP(ctx, netip.MustParseAddrPort("10.96.0.7:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := c.Read(buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q, %v", buf, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != "tcp 10.96.0.7:80" {
		t.Fatalf("Dialer calls %q, want one tcp 10.96.0.7:80", got)
	}
}

// A TunnelDown from the Dialer stays TunnelDown in the stack (logged as tp's own failure),
// while the program sees its connect refused.
func TestDialerKeepsErrorKind(t *testing.T) {
	var logs lockedBuffer
	d := remote.DialFunc(func(context.Context, string, string) (net.Conn, error) {
		return nil, remote.Errorf(remote.TunnelDown, "the tunnel is reconnecting")
	})
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e := newEnv(t, Config{Dialer: d, Log: log}, channelLink)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.dialTCP(ctx, netip.MustParseAddrPort("10.96.0.7:80"))
	if err == nil {
		c.Close()
		t.Fatal("connect through a tunnel that is down succeeded")
	}
	if !strings.Contains(err.Error(), "refused") {
		t.Fatalf("connect failed with %q, want connection refused", err)
	}
	if out := logs.String(); !strings.Contains(out, `kind="tunnel down"`) || !strings.Contains(out, "level=INFO") {
		t.Fatalf("log %q, want the dial failure at INFO with kind tunnel down", out)
	}
}
