//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/localproxy/dnsshim"
	"github.com/tpdev/tp/tests/kit"
)

// otherUID is another user of the developer's machine: a shared box, or a container on the
// host network.
const otherUID = 65533

// TestPeerUsers: the laptop's ports are the developer's own. tp connect runs as the laptop
// user; that user's curl, SOCKS5 client and dig reach the cluster through its proxy and DNS
// ports, while another user of the same machine (and root) are turned away with an answer
// that says why, and the daemon's log names them.
func TestPeerUsers(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-peer")
	w := deployWorkload(t, cs, ns, "web-app")
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")
	l.MustTP(t, time.Minute, "connect", "--namespace", ns, "--dns-listen", "127.0.0.1:1053")
	want := fmt.Sprintf("pod=%s path=/peer\n", w.Pod)

	t.Run("HTTP", func(t *testing.T) {
		if r := l.Curl(20*time.Second, "-x", "http://127.0.0.1:1080", "http://web-app/peer"); r.Stdout != want {
			t.Fatalf("the developer's curl through the proxy: %q %s, want %q", r.Stdout, r.Stderr, want)
		}
		r := l.RunAs(otherUID, 25*time.Second, nil, "curl", "-sS", "--max-time", "20", "-w", "\nstatus=%{http_code}",
			"-x", "http://127.0.0.1:1080", "http://web-app/peer")
		t.Logf("another user's curl: %q %s", r.Stdout, r.Stderr)
		if strings.Contains(r.Stdout, "pod=") || !strings.Contains(r.Stdout, "status=403") ||
			!strings.Contains(r.Stdout, fmt.Sprintf("uid %d", otherUID)) || !strings.Contains(r.Stdout, fmt.Sprintf("serve only uid %d", kit.LaptopUID)) {
			t.Errorf("another user's curl through the proxy: %q %s, want 403 naming both uids", r.Stdout, r.Stderr)
		}
		// CONNECT, as for https:// URLs.
		r = l.RunAs(otherUID, 25*time.Second, nil, "curl", "-sS", "--max-time", "20", "-p", "-x", "http://127.0.0.1:1080", "http://web-app/peer")
		if r.Err == nil || strings.Contains(r.Stdout, "pod=") || !strings.Contains(r.Stderr, "403") {
			t.Errorf("another user's CONNECT: %v %q %s, want a 403", r.Err, r.Stdout, r.Stderr)
		}
	})

	t.Run("SOCKS5", func(t *testing.T) {
		if r := l.Curl(20*time.Second, "-x", "socks5h://127.0.0.1:1080", "http://web-app/peer"); r.Stdout != want {
			t.Fatalf("the developer's curl through SOCKS5: %q %s, want %q", r.Stdout, r.Stderr, want)
		}
		r := l.RunAs(otherUID, 25*time.Second, nil, "curl", "-sS", "--max-time", "20", "-x", "socks5h://127.0.0.1:1080", "http://web-app/peer")
		t.Logf("another user's curl over SOCKS5: %v %q %s", r.Err, r.Stdout, r.Stderr)
		if r.Err == nil || strings.Contains(r.Stdout, "pod=") {
			t.Errorf("another user's curl through SOCKS5 reached the cluster: %q", r.Stdout)
		}
		// The reply code itself, from a socket of the developer's, another user's and root's.
		for _, tc := range []struct {
			uid  int
			code byte
		}{{kit.LaptopUID, 0}, {otherUID, 2}, {0, 2}} {
			if got := socksReplyAs(t, l, tc.uid, "web-app", 80); got != tc.code {
				t.Errorf("SOCKS5 CONNECT from uid %d: reply %d (%s), want %d", tc.uid, got, socksReplies[got], tc.code)
			}
		}
	})

	t.Run("DNS", func(t *testing.T) {
		dig := func(uid int, extra ...string) kit.Result {
			args := append([]string{"@127.0.0.1", "-p", "1053", "+time=3", "+tries=1", "web-app." + ns + ".svc.cluster.local"}, extra...)
			return l.RunAs(uid, 15*time.Second, nil, "dig", args...)
		}
		for _, proto := range [][]string{nil, {"+tcp"}} {
			own := dig(kit.LaptopUID, proto...)
			if !strings.Contains(own.Stdout, "status: NOERROR") || !strings.Contains(own.Stdout, w.ClusterIP) {
				t.Errorf("the developer's dig %v: %s %s, want %s", proto, own.Stdout, own.Stderr, w.ClusterIP)
			}
			other := dig(otherUID, proto...)
			if !strings.Contains(other.Stdout, "status: REFUSED") || strings.Contains(other.Stdout, w.ClusterIP) {
				t.Errorf("another user's dig %v: %s %s, want REFUSED", proto, other.Stdout, other.Stderr)
			}
		}
	})

	// The control: with the check off, the same user's same curl gets through, so the
	// refusals above are the check's and not a broken runner's.
	t.Run("AllowOtherUsers", func(t *testing.T) {
		l.MustTP(t, time.Minute, "connect", "--name", "shared", "--namespace", ns, "--listen", "127.0.0.1:1090", "--allow-other-users")
		defer l.MustTP(t, 30*time.Second, "quit", "--name", "shared")
		r := l.RunAs(otherUID, 25*time.Second, nil, "curl", "-sS", "--max-time", "20", "-x", "http://127.0.0.1:1090", "http://web-app/peer")
		if r.Stdout != want {
			t.Errorf("another user's curl through a proxy started with --allow-other-users: %q %s, want %q", r.Stdout, r.Stderr, want)
		}
	})

	t.Run("CountedAndLogged", func(t *testing.T) {
		info := status(t, l, "default")
		var px localproxy.Stats
		var dns dnsshim.Stats
		_ = json.Unmarshal(info.Proxy, &px)
		_ = json.Unmarshal(info.DNS, &dns)
		if px.OtherUsers < 4 || dns.Refused < 2 {
			t.Errorf("tp status counts %d refused proxy clients and %d refused DNS queries, want at least 4 and 2", px.OtherUsers, dns.Refused)
		}
		log, _ := os.ReadFile(filepath.Join(l.Home, ".tp", "sessions", "default", "daemon.log"))
		if !strings.Contains(string(log), "another user of this machine") || !strings.Contains(string(log), fmt.Sprintf("uid=%d", otherUID)) {
			t.Errorf("the daemon's log does not name the other user:\n%s", clip(log))
		}
	})
}

// socksReplyAs sends a SOCKS5 CONNECT for host:port to tp's port from a socket of uid's and
// returns the reply code.
func socksReplyAs(t *testing.T, l *kit.Laptop, uid int, host string, port uint16) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := l.DialAs(ctx, uid, "tcp", "127.0.0.1:1080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	req := append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}, host...)
	req = append(req, byte(port>>8), byte(port))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf[:2]); err != nil || buf[1] != 0 {
		t.Fatalf("SOCKS5 greeting from uid %d: %v %v", uid, buf[:2], err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("SOCKS5 reply to uid %d: %v", uid, err)
	}
	return buf[1]
}
