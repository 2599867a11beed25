package localproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/localproxy/peer"
	"github.com/tpdev/tp/remote/testlog"
)

// otherUser is a Guard that takes every local client for another user (for network, or
// for every network when it is "").
func otherUser(log *testlog.Buffer, network string) *peer.Guard {
	return peer.New(peer.Config{Log: log.Logger(), Owner: func(n string, _, _ netip.AddrPort) (uint32, error) {
		if network == "" || n == network {
			return uint32(os.Getuid()) + 1, nil
		}
		return uint32(os.Getuid()), nil
	}})
}

func TestOtherUserRefusedOverSOCKS(t *testing.T) {
	var logs testlog.Buffer
	d := dialTo(startEcho(t))
	s, addr := startServer(t, Config{Dialer: d, Peers: otherUser(&logs, "")})

	for _, cmd := range []byte{1, 3} { // CONNECT, UDP ASSOCIATE
		_, code, _ := socksRequest(t, addr, cmd, "web-app", 80)
		if code != 0x02 {
			t.Errorf("command %d from another user: reply %#02x, want 0x02 (not allowed by ruleset)", cmd, code)
		}
	}
	// A client that offers only username/password gets the same answer, not "wrong password".
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte("\x05\x01\x02\x01\x01u\x01p\x05\x01\x00\x03\x07web-app\x00\x50"))
	reply, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(reply), "\x05\x02\x01\x00\x05\x02") {
		t.Errorf("user/password client from another user: reply %x, want user/password accepted, then 0x02", reply)
	}
	if calls := d.Calls(); len(calls) != 0 {
		t.Errorf("dialed %q for another user", calls)
	}
	if got := s.Stats().OtherUsers; got != 3 {
		t.Errorf("Stats.OtherUsers = %d, want 3", got)
	}
	logs.Expect(t, "another user of this machine", 1, 5*time.Second)
}

func TestOtherUserRefusedOverHTTP(t *testing.T) {
	var logs testlog.Buffer
	d := dialTo(startEcho(t))
	_, addr := startServer(t, Config{Dialer: d, Peers: otherUser(&logs, "")})
	px, _ := url.Parse("http://" + addr)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(px)}, Timeout: 10 * time.Second}

	resp, err := client.Post("http://web-app/upload", "text/plain", strings.NewReader(strings.Repeat("x", 100000)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "serve only uid") ||
		!strings.Contains(resp.Header.Get("Proxy-Status"), "http_request_denied") {
		t.Errorf("plain request from another user: %d %q %q", resp.StatusCode, resp.Header.Get("Proxy-Status"), body)
	}

	// CONNECT, as curl sends for https:// through an HTTP proxy.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "CONNECT web-app:443 HTTP/1.1\r\nHost: web-app:443\r\n\r\n")
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || r.StatusCode != http.StatusForbidden {
		t.Errorf("CONNECT from another user: %v %v", r, err)
	}
	if calls := d.Calls(); len(calls) != 0 {
		t.Errorf("dialed %q for another user", calls)
	}
}

// TestOtherUserCannotTakeUDPRelay: the control connection is the user's, but the first
// datagram to the relay port comes from another user: it is dropped, and the association
// stays free for the user's own.
func TestOtherUserCannotTakeUDPRelay(t *testing.T) {
	var logs testlog.Buffer
	echo := startUDPEcho(t)
	d := newUDPDialer(t, echo)
	_, addr := startServer(t, Config{Dialer: d, Peers: otherUser(&logs, "udp")})
	_, code, relay := socksRequest(t, addr, 3, "0.0.0.0", 0)
	if code != 0 {
		t.Fatalf("UDP ASSOCIATE reply %#02x", code)
	}
	uc, err := net.DialUDP("udp", nil, relay)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	_, _ = uc.Write(append(udpHeaderName("dns.kube-system", 53), "q"...))
	_ = uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := uc.Read(make([]byte, 100)); err == nil {
		t.Error("another user's datagram was relayed")
	}
	if calls := d.Calls(); len(calls) != 0 {
		t.Errorf("dialed %q for another user", calls)
	}
	logs.Expect(t, "another user of this machine", 1, 5*time.Second)
}

// TestOwnUserServed runs the real check (the kernel's answer on Linux): this process's own
// clients pass, over SOCKS5 and HTTP.
func TestOwnUserServed(t *testing.T) {
	d := dialTo(startEcho(t))
	s, addr := startServer(t, Config{Dialer: d})
	c, code, _ := socksRequest(t, addr, 1, "web-app", 80)
	if code != 0 {
		t.Fatalf("own SOCKS5 client: reply %#02x", code)
	}
	_, _ = c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Errorf("echo: %q %v", buf, err)
	}
	if got := s.Stats().OtherUsers; got != 0 {
		t.Errorf("Stats.OtherUsers = %d for this process's own client", got)
	}
}
