package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"google.golang.org/protobuf/proto"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// pipe is an in-memory stream pair, unbuffered like a stream with a tiny window.
type pipe struct {
	in   <-chan *tunnelpb.Frame
	out  chan<- *tunnelpb.Frame
	done chan struct{} // closed when either end is ended
	once *sync.Once
}

func newPipe() (a, b *pipe) {
	ab, ba := make(chan *tunnelpb.Frame), make(chan *tunnelpb.Frame)
	done, once := make(chan struct{}), &sync.Once{}
	return &pipe{in: ba, out: ab, done: done, once: once}, &pipe{in: ab, out: ba, done: done, once: once}
}

func (p *pipe) Send(f *tunnelpb.Frame) error {
	select {
	case p.out <- f:
		return nil
	case <-p.done:
		return io.EOF
	}
}

func (p *pipe) Recv() (*tunnelpb.Frame, error) {
	select {
	case f := <-p.in:
		return f, nil
	case <-p.done:
		return nil, io.EOF
	}
}

func (p *pipe) end() { p.once.Do(func() { close(p.done) }) }

// connected returns both ends of a tunnel whose dial succeeded.
func connected(t *testing.T, network string) (client, server *Conn) {
	t.Helper()
	a, b := newPipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		d, err := Accept(b)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		if err := Answer(b, nil, "10.0.0.1:80"); err != nil {
			t.Errorf("answer: %v", err)
		}
		server = NewConn(b, b.end, d.GetNetwork() == "udp", Addr{}, Addr{})
	}()
	c, err := Open(context.Background(), a, a.end, &tunnelpb.Dial{Network: network, Address: "web-app:80", Namespace: "default"})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	<-done
	t.Cleanup(func() { c.Close(); server.Close() })
	return c, server
}

func TestStreamBothWaysWithHalfClose(t *testing.T) {
	c, s := connected(t, "tcp")
	up := make([]byte, 1<<20+123)
	down := make([]byte, 3<<20+7)
	_, _ = rand.Read(up)
	_, _ = rand.Read(down)
	var wg sync.WaitGroup
	var gotUp []byte
	var upErr error
	wg.Go(func() {
		gotUp, upErr = io.ReadAll(s) // ends at the client's CloseWrite
		if _, err := s.Write(down); err != nil {
			t.Errorf("server write: %v", err)
		}
		_ = s.CloseWrite()
	})
	if _, err := c.Write(up); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("write after CloseWrite: want an error")
	}
	gotDown, err := io.ReadAll(c)
	wg.Wait()
	if upErr != nil || !bytes.Equal(gotUp, up) {
		t.Fatalf("upstream: %d of %d bytes, %v", len(gotUp), len(up), upErr)
	}
	if err != nil || !bytes.Equal(gotDown, down) {
		t.Fatalf("downstream: %d of %d bytes, %v", len(gotDown), len(down), err)
	}
}

func TestPacketModeKeepsDatagrams(t *testing.T) {
	c, s := connected(t, "udp")
	msgs := [][]byte{[]byte("one"), {}, bytes.Repeat([]byte("x"), 9000)}
	go func() {
		for _, m := range msgs {
			if _, err := c.Write(m); err != nil {
				t.Errorf("write: %v", err)
			}
		}
	}()
	buf := make([]byte, 65535)
	for i, want := range msgs {
		n, err := s.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: got %d bytes (%v), want %d", i, n, err, len(want))
		}
	}
	if _, err := c.Write(make([]byte, MaxDatagram+1)); err == nil {
		t.Fatal("oversized datagram: want an error")
	}
}

func TestReadDeadlineAndClose(t *testing.T) {
	c, s := connected(t, "tcp")
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	var ne net.Error
	_ = c.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read with a past deadline: %v, want a timeout net.Error", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	go func() { _, _ = s.Write([]byte("late")) }()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "late" {
		t.Fatalf("read after clearing the deadline: %q %v", buf, err)
	}
	errc := make(chan error, 1)
	go func() { _, err := c.Read(buf); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on closed conn: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
}

func TestWriteDeadlineEndsABlockedSend(t *testing.T) {
	c, _ := connected(t, "tcp") // nobody reads the server side: after a frame or two, Send blocks
	_ = c.SetWriteDeadline(time.Now().Add(30 * time.Millisecond))
	start := time.Now()
	_, err := c.Write(make([]byte, 8*MaxChunk))
	if !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("blocked write: %v after %s", err, time.Since(start))
	}
}

func TestDialRefusalsCarryKindAndMessage(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want remote.Kind
	}{
		{remote.Errorf(remote.Refused, "connection refused by web-app:81"), remote.Refused},
		{remote.NoSuchHostError("web-ap", "default"), remote.NoSuchHost},
		{remote.Errorf(remote.Timeout, "slow"), remote.Timeout},
		{remote.Errorf(remote.Unreachable, "no route"), remote.Unreachable},
		{errors.New("other"), remote.Failed},
	} {
		a, b := newPipe()
		go func() {
			if _, err := Accept(b); err == nil {
				_ = Answer(b, tc.err, "")
			}
		}()
		_, err := Open(context.Background(), a, a.end, &tunnelpb.Dial{Network: "tcp", Address: "web-ap:80", Namespace: "default"})
		if remote.KindOf(err) != tc.want || err.Error() != tc.err.Error() {
			t.Errorf("dial answered %v: got %v (kind %v), want kind %v and the same message", tc.err, err, remote.KindOf(err), tc.want)
		}
	}
}

func TestValidateDial(t *testing.T) {
	good := []*tunnelpb.Dial{
		{Network: "tcp", Address: "web-app:80"},
		{Network: "udp", Address: "10.96.0.10:53", Namespace: "kube-system"},
		{Network: "tcp", Address: "[fd00::1]:443"},
	}
	bad := []*tunnelpb.Dial{
		{Network: "unix", Address: "/var/run/x.sock"},
		{Network: "tcp", Address: "web-app"},
		{Network: "tcp", Address: "web-app:0"},
		{Network: "tcp", Address: "web-app:70000"},
		{Network: "tcp", Address: ":80"},
		{Network: "tcp", Address: "a b:80"},
		{Network: "tcp", Address: "web-app:80", Namespace: "../etc"},
		{},
	}
	for _, d := range good {
		if err := ValidateDial(d); err != nil {
			t.Errorf("%v: %v", d, err)
		}
	}
	for _, d := range bad {
		if err := ValidateDial(d); err == nil {
			t.Errorf("%v: want an error", d)
		}
	}
}

func TestAcceptRejectsDataBeforeDial(t *testing.T) {
	a, b := newPipe()
	go func() { _ = a.Send(&tunnelpb.Frame{Kind: &tunnelpb.Frame_Data{Data: []byte("GET /")}}) }()
	if _, err := Accept(b); err == nil {
		t.Fatal("data before dial: want an error")
	}
}

func TestEarlyDataRidesWithTheDial(t *testing.T) {
	a, b := newPipe()
	got := make(chan *tunnelpb.Dial, 1)
	go func() {
		d, err := Accept(b)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		got <- d
		_ = Answer(b, nil, "10.0.0.1:80")
		s := NewConn(b, b.end, false, Addr{}, Addr{})
		_, _ = s.Write([]byte("answer"))
		_ = s.CloseWrite()
	}()
	via := &tunnelpb.Via{Namespace: "shop", Kind: "Deployment", Workload: "web", Grant: "tp-egress-web-1", Secret: "s"}
	c, err := OpenEarly(a, a.end, &tunnelpb.Dial{Network: "tcp", Address: "web-app:80", Namespace: "shop", Via: via})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	d := <-got
	if string(d.GetData()) != "GET / HTTP/1.1\r\n\r\n" {
		t.Fatalf("dial carried %q, want the first write", d.GetData())
	}
	// Every field of the dial goes out with the first bytes: an egress dropped here would
	// leave from the manager instead of the workload.
	if d.GetNamespace() != "shop" || !proto.Equal(d.GetVia(), via) {
		t.Fatalf("the early dial lost fields: %v", d)
	}
	answer, err := io.ReadAll(c)
	if err != nil || string(answer) != "answer" {
		t.Fatalf("read: %q %v", answer, err)
	}
}

func TestEarlyDataRefusalComesFromTheFirstRead(t *testing.T) {
	for _, writeFirst := range []bool{true, false} {
		a, b := newPipe()
		go func() {
			if _, err := Accept(b); err == nil {
				_ = Answer(b, remote.Errorf(remote.Refused, "connection refused by web-app:81"), "")
			}
		}()
		c, _ := OpenEarly(a, a.end, &tunnelpb.Dial{Network: "tcp", Address: "web-app:81"})
		if writeFirst {
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
		}
		_, err := c.Read(make([]byte, 10))
		if !errors.Is(err, remote.ErrRefused) || !strings.Contains(err.Error(), "web-app:81") {
			t.Fatalf("first read (write first: %v): %v, want the refusal", writeFirst, err)
		}
		c.Close()
	}
}
