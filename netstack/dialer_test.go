package netstack

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
)

// kindLog records the level and kind of every log record that has a kind.
type kindLog struct {
	mu  sync.Mutex
	got []string // "INFO tunnel down"
}

func (k *kindLog) Enabled(context.Context, slog.Level) bool { return true }
func (k *kindLog) WithAttrs([]slog.Attr) slog.Handler       { return k }
func (k *kindLog) WithGroup(string) slog.Handler            { return k }

func (k *kindLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "kind" {
			k.mu.Lock()
			k.got = append(k.got, r.Level.String()+" "+a.Value.String())
			k.mu.Unlock()
		}
		return true
	})
	return nil
}

// connect opens a TCP connection from the program's side, giving up after 10 s.
func (e *env) connect(dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.dialTCP(ctx, dst)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, nil
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
	c, err := e.connect(netip.MustParseAddrPort("10.96.0.7:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	if err := remote.CloseWrite(c); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c); err != nil || string(b) != "ping" {
		t.Fatalf("echo %q, %v", b, err)
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
	var logs kindLog
	d := remote.DialFunc(func(context.Context, string, string) (net.Conn, error) {
		return nil, remote.Errorf(remote.TunnelDown, "the tunnel is reconnecting")
	})
	e := newEnv(t, Config{Dialer: d, Log: slog.New(&logs)}, channelLink)
	c, err := e.connect(netip.MustParseAddrPort("10.96.0.7:80"))
	if err == nil {
		c.Close()
		t.Fatal("connect through a tunnel that is down succeeded")
	}
	if !strings.Contains(err.Error(), "refused") {
		t.Fatalf("connect failed with %q, want connection refused", err)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if len(logs.got) != 1 || logs.got[0] != "INFO tunnel down" {
		t.Fatalf("logged kinds %q, want one INFO tunnel down", logs.got)
	}
}
