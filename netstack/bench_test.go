package netstack

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkTCPThroughput measures one bulk TCP flow through the client stack, the link,
// the Stack and its Dial hook to a loopback server: "upload" is program to host side,
// "download" the other way. Each iteration moves 1 MiB, so ns/op is the time per MiB and
// MB/s the throughput.
//
// On Linux the socketpair link is the closer model of a TUN (a syscall per packet each
// way); the channel link shows the two gVisor stacks alone.
func BenchmarkTCPThroughput(b *testing.B) {
	const chunk = 1 << 20
	for name, link := range testLinks() {
		b.Run(name+"/upload", func(b *testing.B) {
			done := make(chan int64, 1)
			ln := listenTCP(b, func(c net.Conn) {
				n, _ := io.Copy(io.Discard, c)
				done <- n
			})
			c := benchConn(b, ln, link)
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.CloseWrite()
			if n := <-done; n != int64(b.N)*chunk {
				b.Fatalf("host side got %d bytes, want %d", n, b.N*chunk)
			}
			b.StopTimer()
		})
		b.Run(name+"/download", func(b *testing.B) {
			ln := listenTCP(b, func(c net.Conn) {
				var want int64
				if err := binary.Read(c, binary.BigEndian, &want); err != nil {
					return
				}
				buf := make([]byte, chunk)
				for sent := int64(0); sent < want; sent += chunk {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			})
			c := benchConn(b, ln, link)
			buf := make([]byte, 256<<10)
			b.SetBytes(chunk)
			b.ResetTimer()
			if err := binary.Write(c, binary.BigEndian, int64(b.N)*chunk); err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, buf)
			if err != nil || n != int64(b.N)*chunk {
				b.Fatalf("program got %d bytes, want %d: %v", n, b.N*chunk, err)
			}
			b.StopTimer()
		})
	}
}

// benchConn connects a program-side conn through a new Stack to ln.
func benchConn(b *testing.B, ln net.Listener, link linkFunc) interface {
	net.Conn
	CloseWrite() error
} {
	b.Helper()
	rec := newRecorder(ln.Addr().String())
	e := newEnv(b, Config{Dial: rec.Dial}, link)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.dialTCP(ctx, netip.MustParseAddrPort("203.0.113.80:80"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}
