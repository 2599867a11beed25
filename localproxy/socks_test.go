package localproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/testlog"
)

// socksRequest sends a SOCKS5 no-auth greeting and a request for cmd to host:port (sent
// as a name unless host parses as an IP), and returns the connection and the reply code
// and bound address.
func socksRequest(t *testing.T, proxyAddr string, cmd byte, host string, port uint16) (net.Conn, byte, *net.UDPAddr) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	var greet [2]byte
	if _, err := io.ReadFull(c, greet[:]); err != nil || greet != [2]byte{5, 0} {
		t.Fatalf("greeting: %v %v", greet, err)
	}
	req := []byte{5, cmd, 0}
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		req = append(append(req, 1), ip.To4()...)
	} else if ip != nil {
		req = append(append(req, 4), ip.To16()...)
	} else {
		req = append(append(req, 3, byte(len(host))), host...)
	}
	req = binary.BigEndian.AppendUint16(req, port)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var head [4]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	var addr []byte
	switch head[3] {
	case 1:
		addr = make([]byte, 4+2)
	case 4:
		addr = make([]byte, 16+2)
	default:
		t.Fatalf("reply address type %d", head[3])
	}
	if _, err := io.ReadFull(c, addr); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Time{})
	bound := &net.UDPAddr{IP: net.IP(addr[:len(addr)-2]), Port: int(binary.BigEndian.Uint16(addr[len(addr)-2:]))}
	return c, head[1], bound
}

func TestSOCKSConnectPassesNameUnresolved(t *testing.T) {
	echo := startEcho(t)
	d := dialTo(echo)
	_, addr := startServer(t, Config{Dialer: d})

	for _, auth := range []*proxy.Auth{nil, {User: "any", Password: "thing"}} {
		client, err := proxy.SOCKS5("tcp", addr, auth, proxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.Dial("tcp", "web-app.other-ns:8080")
		if err != nil {
			t.Fatalf("auth %v: %v", auth, err)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q %v", buf, err)
		}
		_ = c.Close()
	}
	want := []string{"tcp web-app.other-ns:8080", "tcp web-app.other-ns:8080"}
	if got := d.Calls(); !slices.Equal(got, want) {
		t.Fatalf("dialer got %q, want %q (the name must reach the Dialer unresolved)", got, want)
	}
}

func TestSOCKSReplyCodes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want byte
	}{
		{"refused", kindErr(remote.Refused, `nothing listens on web-app:8080`), 0x05},
		{"no such host", kindErr(remote.NoSuchHost, `no service "web-ap" in namespace "default"`), 0x04},
		{"unreachable", kindErr(remote.Unreachable, `no pod has 10.1.2.3`), 0x03},
		{"timeout", kindErr(remote.Timeout, `web-app:8080 did not answer`), 0x06},
		{"forbidden by policy", kindErr(remote.Forbidden, `169.254.169.254:80 is link-local, which tp's dial policy never lets the manager dial`), 0x02},
		{"deadline", fmt.Errorf("dialing: %w", context.DeadlineExceeded), 0x06},
		{"tunnel down", kindErr(remote.TunnelDown, `port-forward to the manager dropped`), 0x01},
		{"failed", kindErr(remote.Failed, `manager said: boom`), 0x01},
		{"plain error", errors.New("something odd"), 0x01},
		// The library would have mapped this one to 0x05 by its text.
		{"misleading text", kindErr(remote.NoSuchHost, "refused to say: no such service"), 0x04},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs testlog.Buffer
			_, addr := startServer(t, Config{Dialer: failWith(tt.err), Log: logs.Logger()})
			c, code, _ := socksRequest(t, addr, 1, "web-app", 8080)
			if code != tt.want {
				t.Errorf("reply code %#02x, want %#02x", code, tt.want)
			}
			// The server closes after a failure reply.
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Errorf("connection still open after failure reply: %d %v", n, err)
			}
			// The code can't carry the message; the log must.
			logs.Expect(t, "connect failed", 1, 5*time.Second)
			if !strings.Contains(logs.String(), tt.err.Error()) && !strings.Contains(logs.String(), strconv.Quote(tt.err.Error())) {
				t.Errorf("log lacks the error text %q:\n%s", tt.err.Error(), logs.String())
			}
		})
	}
}

func TestSOCKSDialTimeout(t *testing.T) {
	sawCancel := make(chan struct{})
	d := &fakeDialer{fn: func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		close(sawCancel)
		return nil, errors.New("operation was canceled") // deliberately not a timeout kind
	}}
	_, addr := startServer(t, Config{Dialer: d, DialTimeout: 100 * time.Millisecond})
	start := time.Now()
	_, code, _ := socksRequest(t, addr, 1, "slow.svc", 80)
	if code != 0x06 {
		t.Errorf("reply code %#02x, want 0x06 (timeout)", code)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v for a 100ms dial timeout", el)
	}
	select {
	case <-sawCancel:
	default:
		t.Error("the dialer's context was not cancelled")
	}
}

func TestSOCKSIPTarget(t *testing.T) {
	d := failWith(kindErr(remote.Refused, "no"))
	_, addr := startServer(t, Config{Dialer: d})
	socksRequest(t, addr, 1, "10.96.0.10", 53)
	socksRequest(t, addr, 1, "fd00::1", 443)
	want := []string{"tcp 10.96.0.10:53", "tcp [fd00::1]:443"}
	if got := d.Calls(); !slices.Equal(got, want) {
		t.Fatalf("dialer got %q, want %q", got, want)
	}
}

func TestSOCKSBindNotSupported(t *testing.T) {
	d := failWith(errors.New("unused"))
	_, addr := startServer(t, Config{Dialer: d})
	if _, code, _ := socksRequest(t, addr, 2, "web-app", 80); code != 0x07 {
		t.Errorf("BIND reply %#02x, want 0x07 command not supported", code)
	}
	if len(d.Calls()) != 0 {
		t.Errorf("BIND dialed: %q", d.Calls())
	}
}

// The success reply must be a valid SOCKS reply even when the dialed connection's local
// address isn't TCP (a tunnel stream's isn't).
func TestSOCKSSuccessWithNonTCPConn(t *testing.T) {
	d := &fakeDialer{fn: func(context.Context, string, string) (net.Conn, error) {
		a, b := net.Pipe()
		go func() {
			defer b.Close()
			buf := make([]byte, 5)
			if _, err := io.ReadFull(b, buf); err == nil {
				_, _ = b.Write(buf)
			}
		}()
		return a, nil
	}}
	_, addr := startServer(t, Config{Dialer: d})
	c, code, _ := socksRequest(t, addr, 1, "web-app", 80)
	if code != 0 {
		t.Fatalf("reply %#02x, want success", code)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo over pipe: %q %v", buf, err)
	}
}
