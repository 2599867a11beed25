package localproxy

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzFrontDoor feeds arbitrary bytes to the proxy port as a client's first bytes and
// checks that the server neither panics (a panic in any server goroutine fails the run)
// nor stops serving others.
func FuzzFrontDoor(f *testing.F) {
	for _, seed := range []string{
		"\x05\x01\x00\x05\x01\x00\x03\x07web-app\x00\x50ping",
		"\x05\x01\x00\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00",
		"\x05\x02\x00\x02\x01\x03any\x03pwd",
		"CONNECT web-app:443 HTTP/1.1\r\nHost: web-app:443\r\n\r\nhello",
		"GET http://web-app/ HTTP/1.1\r\nHost: web-app\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"\x16\x03\x01\x00\x05hello",
		"",
	} {
		f.Add([]byte(seed))
	}
	d := dialTo(startEcho(f))
	_, addr := startServer(f, Config{Dialer: d, HandshakeTimeout: 500 * time.Millisecond, DialTimeout: time.Second})

	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("server stopped accepting: %v", err)
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Write(in)
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
		_ = c.Close()

		// Still serving: a browser-style request gets its 400.
		probe, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("server stopped accepting: %v", err)
		}
		defer probe.Close()
		_ = probe.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(probe, "GET / HTTP/1.0\r\n\r\n")
		line, err := bufio.NewReader(probe).ReadString('\n')
		if err != nil || !strings.Contains(line, " 400 ") {
			t.Fatalf("server stopped serving after %q: %q %v", in, line, err)
		}
	})
}
