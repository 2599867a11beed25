package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

func TestErrorKinds(t *testing.T) {
	err := fmt.Errorf("dialing: %w", Errorf(Refused, "connection refused by web-app:81"))
	if !errors.Is(err, ErrRefused) || errors.Is(err, ErrNoSuchHost) || KindOf(err) != Refused {
		t.Fatalf("kind of a wrapped refusal: %v", KindOf(err))
	}
	if KindOf(context.DeadlineExceeded) != Timeout || KindOf(errors.New("x")) != Failed {
		t.Fatal("deadline errors are timeouts, others failures")
	}
	for name, want := range map[string]string{
		"web-ap":                     `no service "web-ap" in namespace "default"`,
		"web-ap.other":               `no service "web-ap" in namespace "other"`,
		"web-ap.other.svc":           `no service "web-ap" in namespace "other"`,
		"web-ap.other.svc.cluster.x": `no such host "web-ap.other.svc.cluster.x" in the cluster`,
	} {
		if got := NoSuchHostError(name, "default"); got.Error() != want || KindOf(got) != NoSuchHost {
			t.Errorf("NoSuchHostError(%q) = %q, want %q", name, got, want)
		}
	}
	if EarlyData(context.Background()) || !EarlyData(WithEarlyData(context.Background())) {
		t.Fatal("EarlyData does not follow WithEarlyData")
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); accepted <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c, <-accepted
}

func TestSplicePassesHalfCloseAndAnswers(t *testing.T) {
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	done := make(chan struct{})
	go func() { _, _, _ = Splice(a, b); close(done) }()

	_, _ = client.Write([]byte("request"))
	_ = client.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(server) // EOF: the half-close came through
	if err != nil || string(got) != "request" {
		t.Fatalf("server read %q, %v", got, err)
	}
	_, _ = server.Write([]byte("answer after the client's half-close"))
	server.Close()
	answer, err := io.ReadAll(client)
	if err != nil || string(answer) != "answer after the client's half-close" {
		t.Fatalf("client read %q, %v", answer, err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Splice did not end when both directions did")
	}
}

func TestSpliceAbortsOnAReset(t *testing.T) {
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	done := make(chan struct{})
	go func() { _, _, _ = Splice(a, b); close(done) }()
	_, _ = client.Write([]byte("x"))
	buf := make([]byte, 1)
	_, _ = io.ReadFull(server, buf)
	_ = server.(*net.TCPConn).SetLinger(0) // close with RST
	server.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Splice did not end after a reset")
	}
	// The client sees the connection broken, not a clean end of stream.
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(buf); err == io.EOF {
		t.Fatal("a reset on one side reached the other as a clean EOF")
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Kind: Crash, Msg: "the manager crashed", Err: errors.New("exit 2"), Hint: "report it", Detail: "line 1\nline 2\n"}
	if got, want := e.Error(), "the manager crashed: exit 2; report it\n  line 1\n  line 2"; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	wrapped := fmt.Errorf("tp: %w", &Error{Kind: NotInstalled, Msg: "tp is not installed"})
	if !errors.Is(wrapped, ErrNotInstalled) || KindOf(wrapped) != NotInstalled {
		t.Fatal("a wrapped NotInstalled error is not ErrNotInstalled")
	}
	if errors.Is(e, ErrNotInstalled) || KindOf(errors.New("x")) != Failed {
		t.Fatal("only NotInstalled errors are ErrNotInstalled; plain errors are Failed")
	}
	for cat, user := range map[Kind]bool{Usage: true, Unreachable: true, Access: true, Image: true, NotInstalled: true,
		Crash: false, Cluster: false, Timeout: false, Failed: false} {
		if cat.UserFault() != user {
			t.Errorf("%s: UserFault %t, want %t", cat, cat.UserFault(), user)
		}
	}
}
