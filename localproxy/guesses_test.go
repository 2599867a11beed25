package localproxy

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/remote/testlog"
	"golang.org/x/net/proxy"
)

func TestGuessLimit(t *testing.T) {
	now := time.Unix(1e9, 0)
	g := newGuessLimit()
	g.now = func() time.Time { return now }
	const a = "192.0.2.7:50000"
	for i := range freeGuesses {
		if w := g.wait(a); w != 0 {
			t.Fatalf("turned away after %d wrong tries, want %d free", i, freeGuesses)
		}
		g.record(a, false)
	}
	if w := g.wait(a); w != 0 {
		t.Fatalf("turned away after the free tries: %s", w)
	}
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		g.record(a, false)
		if w := g.wait(a); w != want {
			t.Fatalf("lockout %s, want %s", w, want)
		}
		if w := g.wait("192.0.2.7:50001"); w != want {
			t.Fatalf("another port of the address: lockout %s, want %s", w, want)
		}
		if w := g.wait("192.0.2.8:50000"); w != 0 {
			t.Fatalf("another address is turned away: %s", w)
		}
		now = now.Add(want)
	}
	for range 40 {
		g.record(a, false)
	}
	if w := g.wait(a); w != maxLockout {
		t.Fatalf("lockout %s after many tries, want the most, %s", w, maxLockout)
	}
	g.record(a, true)
	if w := g.wait(a); w != 0 {
		t.Fatalf("a right password does not clear the count: %s", w)
	}

	// An IPv6 host's /64 counts as one.
	for range freeGuesses + 1 {
		g.record("[2001:db8:1:2::1]:1", false)
	}
	if w := g.wait("[2001:db8:1:2::ffff]:2"); w == 0 {
		t.Fatal("another address of the /64 may go on guessing")
	}
	if w := g.wait("[2001:db8:1:3::1]:2"); w != 0 {
		t.Fatal("another /64 is turned away")
	}

	// Old counts are forgotten.
	for range freeGuesses {
		g.record("198.51.100.1:1", false)
	}
	now = now.Add(forgetAfter + time.Second)
	g.record("198.51.100.1:1", false)
	if w := g.wait("198.51.100.1:1"); w != 0 {
		t.Fatalf("tries from %s ago still count: %s", forgetAfter, w)
	}
}

func TestGuessLimitBoundsItsMemory(t *testing.T) {
	g := newGuessLimit()
	for i := range maxTracked + 100 {
		g.record(netipAddr(i)+":1", false)
	}
	if n := len(g.by); n > maxTracked {
		t.Fatalf("%d addresses kept, want at most %d", n, maxTracked)
	}
}

func netipAddr(i int) string {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
}

// Over HTTP a client that keeps guessing gets 429 with Retry-After, even with the right
// password, and reaches nothing.
func TestHTTPGuessingIsTurnedAway(t *testing.T) {
	d := dialTo(startEcho(t))
	var logs testlog.Buffer
	_, addr := startServer(t, Config{Dialer: d, Log: logs.Logger(), Credentials: &testCreds})
	client := proxyClient(t, addr)
	get := func(header string) (int, string, http.Header) {
		req, _ := http.NewRequest(http.MethodGet, "http://web-app/", nil)
		req.Header.Set("Proxy-Authorization", header)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.Header
	}
	for range freeGuesses + 1 {
		if code, _, _ := get(basic(testCreds.User, "guess")); code != http.StatusProxyAuthRequired {
			t.Fatalf("a wrong password: %d, want 407", code)
		}
	}
	code, body, hdr := get(basic(testCreds.User, testCreds.Password))
	if code != http.StatusTooManyRequests || !strings.Contains(body, "too many wrong proxy passwords") || hdr.Get("Retry-After") == "" {
		t.Fatalf("after %d wrong passwords, the right one: %d %q (Retry-After %q), want 429 saying why", freeGuesses+1, code, body, hdr.Get("Retry-After"))
	}
	if calls := d.Calls(); len(calls) != 0 {
		t.Fatalf("a client turned away reached the dialer: %q", calls)
	}
	logs.Expect(t, "too many wrong passwords from its address", 1, 5*time.Second)
}

// Over SOCKS5 too; the log says why (RFC 1929 has no word for it).
func TestSOCKSGuessingIsTurnedAway(t *testing.T) {
	d := dialTo(startEcho(t))
	var logs testlog.Buffer
	_, addr := startServer(t, Config{Dialer: d, Log: logs.Logger(), Credentials: &testCreds})
	try := func(password string) error {
		client, err := proxy.SOCKS5("tcp", addr, &proxy.Auth{User: testCreds.User, Password: password}, proxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.Dial("tcp", "web-app:80")
		if err == nil {
			c.Close()
		}
		return err
	}
	for range freeGuesses + 1 {
		if try("guess") == nil {
			t.Fatal("a wrong password was accepted")
		}
	}
	if try(testCreds.Password) == nil {
		t.Fatal("a client that kept guessing got in at once with the right password")
	}
	logs.Expect(t, "socks5: rejected client: too many wrong passwords from its address", 1, 5*time.Second)
	if calls := d.Calls(); len(calls) != 0 {
		t.Fatalf("a client turned away reached the dialer: %q", calls)
	}
}
