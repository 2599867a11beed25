package remote

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
)

func TestCountedCountsAndKeepsHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	defer peer.Close()
	var in, out atomic.Int64
	c := Count(raw, &in, &out)
	defer c.Close()

	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := CloseWrite(c); err != nil {
		t.Fatalf("CloseWrite through Counted: %v", err)
	}
	if got, err := io.ReadAll(peer); err != nil || string(got) != "hello" {
		t.Fatalf("peer read %q, %v; want hello then EOF", got, err)
	}
	if _, err := peer.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	if got, err := io.ReadAll(c); err != nil || string(got) != "answer" {
		t.Fatalf("read %q, %v after the half-close; want the answer", got, err)
	}
	if in.Load() != int64(len("answer")) || out.Load() != int64(len("hello")) {
		t.Fatalf("counted in %d, out %d; want %d, %d", in.Load(), out.Load(), len("answer"), len("hello"))
	}
}

func TestCloseWriteUnsupported(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if err := CloseWrite(a); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CloseWrite on a pipe: %v, want ErrUnsupported", err)
	}
}
