package localproxy

import (
	"bufio"
	"bytes"
	"encoding/base64"
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
		sendFirstBytes(t, addr, in)
		checkStillServing(t, addr, in)
	})
}

// fuzzCreds' "user:password" is 15 bytes, a multiple of 3, so its base64 has no padding
// and only one spelling: an input can only carry it as these bytes.
var fuzzCreds = Credentials{User: "fuzzer", Password: "s3cret-p"}

// FuzzFrontDoorCredentials is FuzzFrontDoor for a proxy that asks for credentials, and
// checks too that no input without them (raw for SOCKS5, base64 for HTTP Basic) gets a
// destination dialed.
func FuzzFrontDoorCredentials(f *testing.F) {
	auth := base64.StdEncoding.EncodeToString([]byte(fuzzCreds.User + ":" + fuzzCreds.Password))
	for _, seed := range []string{
		"\x05\x01\x02\x01\x06fuzzer\x08s3cret-p\x05\x01\x00\x03\x07web-app\x00\x50ping",
		"\x05\x01\x02\x01\x06fuzzer\x08s3cret-x\x05\x01\x00\x03\x07web-app\x00\x50ping",
		"\x05\x02\x00\x02\x01\x06fuzzer\x08s3cret-p\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00",
		"\x05\x01\x00\x05\x01\x00\x03\x07web-app\x00\x50ping",
		"\x05\x01\x02\x01\x00\x00\x05\x01\x00\x03\x07web-app\x00\x50",
		"\x05\x01\x02\x01\xff",
		"CONNECT web-app:443 HTTP/1.1\r\nHost: web-app:443\r\nProxy-Authorization: Basic " + auth + "\r\n\r\nhello",
		"CONNECT web-app:443 HTTP/1.1\r\nHost: web-app:443\r\n\r\nhello",
		"GET http://web-app/ HTTP/1.1\r\nHost: web-app\r\nProxy-Authorization: Basic " + auth + "\r\n\r\n",
		"GET http://web-app/ HTTP/1.1\r\nHost: web-app\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\r\n",
		"GET http://web-app/ HTTP/1.1\r\nHost: web-app\r\nProxy-Authorization: Basic\r\n\r\n",
		"GET http://web-app/ HTTP/1.1\r\nHost: web-app\r\nProxy-Authorization: Digest x\r\nProxy-Authorization: Basic " + auth + "\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	d := dialTo(startEcho(f))
	_, addr := startServer(f, Config{Dialer: d, HandshakeTimeout: 500 * time.Millisecond, DialTimeout: time.Second,
		Credentials: &fuzzCreds})

	f.Fuzz(func(t *testing.T, in []byte) {
		before := len(d.Calls())
		sendFirstBytes(t, addr, in)
		hasCreds := bytes.Contains(in, []byte(auth)) ||
			bytes.Contains(in, []byte(fuzzCreds.User)) && bytes.Contains(in, []byte(fuzzCreds.Password))
		if dialed := len(d.Calls()) - before; dialed > 0 && !hasCreds {
			t.Fatalf("%q without the credentials got %d destinations dialed", in, dialed)
		}
		checkStillServing(t, addr, in)
	})
}

// sendFirstBytes sends in as a client's first bytes, half-closes, and reads until the
// server closes (or 2 s pass).
func sendFirstBytes(t *testing.T, addr string, in []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("server stopped accepting: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = c.Write(in)
	_ = c.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, c)
	_ = c.Close()
}

// checkStillServing checks that a browser-style request still gets its 400.
func checkStillServing(t *testing.T, addr string, in []byte) {
	t.Helper()
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
}
