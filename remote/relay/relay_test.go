package relay

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// fakeClient is a front end's side of a flow: datagrams to send wait in its Queue, replies
// land in replies with their headroom stripped.
type fakeClient struct {
	*Queue
	replies chan []byte
	head    int
}

func newFakeClient(head int) *fakeClient {
	return &fakeClient{Queue: NewQueue(8), replies: make(chan []byte, 8), head: head}
}

func (c *fakeClient) Reply(b []byte) error {
	c.replies <- append([]byte(nil), b[c.head:]...)
	return nil
}

func (c *fakeClient) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// pipeDial returns a Dial whose conns' far ends arrive on the channel.
func pipeDial(far chan<- net.Conn) Dial {
	return func(context.Context) (net.Conn, error) {
		a, b := net.Pipe()
		far <- b
		return a, nil
	}
}

func newTable(t *testing.T, cfg Config) *Table[string, *fakeClient] {
	t.Helper()
	tb := New[string, *fakeClient](context.Background(), cfg)
	t.Cleanup(tb.Close)
	return tb
}

func TestRoundTripWithHeadroom(t *testing.T) {
	tb := newTable(t, Config{Max: 4, Idle: time.Minute, Headroom: 7})
	far := make(chan net.Conn, 1)
	c := newFakeClient(7)
	if err := tb.Add("web-app:53", c, pipeDial(far)); err != nil {
		t.Fatal(err)
	}
	if got, ok := tb.Get("web-app:53"); !ok || got != c {
		t.Fatalf("Get: %v, %v; want the added client", got, ok)
	}
	if !c.Push([]byte("ping")) {
		t.Fatal("Push to an open queue failed")
	}
	dest := <-far
	buf := make([]byte, 100)
	if n, err := dest.Read(buf); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("destination read %q, %v", buf[:n], err)
	}
	if _, err := dest.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if r := <-c.replies; string(r) != "pong" {
		t.Fatalf("reply %q, want pong after the headroom", r)
	}
	if st := tb.Stats(); st.Open != 1 || st.Total != 1 {
		t.Fatalf("stats %+v, want 1 open, 1 in all", st)
	}
	// The destination ending ends the flow: its client is closed and forgotten.
	dest.Close()
	eventually(t, "the flow to end", func() bool { return c.closed() && tb.Stats().Open == 0 })
}

func TestDropNewWhenFull(t *testing.T) {
	tb := newTable(t, Config{Max: 1, Full: DropNew, Idle: time.Minute})
	far := make(chan net.Conn, 2)
	if err := tb.Add("a:1", newFakeClient(0), pipeDial(far)); err != nil {
		t.Fatal(err)
	}
	c := newFakeClient(0)
	if err := tb.Add("b:1", c, pipeDial(far)); !errors.Is(err, ErrFull) {
		t.Fatalf("Add beyond Max: %v, want ErrFull", err)
	}
	if !c.closed() {
		t.Error("the refused flow's client was left open")
	}
}

func TestEvictIdlestWhenFull(t *testing.T) {
	tb := newTable(t, Config{Max: 2, Full: EvictIdlest, Idle: time.Minute})
	far := make(chan net.Conn, 3)
	var clients []*fakeClient
	for _, k := range []string{"a", "b", "c"} {
		c := newFakeClient(0)
		clients = append(clients, c)
		if err := tb.Add(k, c, pipeDial(far)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // distinct activity times
	}
	eventually(t, "the idlest flow to end", clients[0].closed)
	if clients[1].closed() || clients[2].closed() {
		t.Fatal("a newer flow was evicted")
	}
	if st := tb.Stats(); st.Evicted != 1 || st.Open != 2 || st.Total != 3 {
		t.Fatalf("stats %+v, want 1 evicted, 2 open, 3 in all", st)
	}
}

func TestIdleFlowEnds(t *testing.T) {
	const idle = 100 * time.Millisecond
	tb := newTable(t, Config{Max: 1, Idle: idle})
	far := make(chan net.Conn, 1)
	c := newFakeClient(0)
	if err := tb.Add("a", c, pipeDial(far)); err != nil {
		t.Fatal(err)
	}
	dest := <-far
	start := time.Now()
	dest.SetReadDeadline(time.Now().Add(10 * idle))
	if _, err := dest.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("destination read %v, want its conn closed", err)
	}
	if took := time.Since(start); took > 5*idle {
		t.Fatalf("idle flow closed after %v, timeout %v", took, idle)
	}
	eventually(t, "the idle flow to be forgotten", func() bool { return tb.Stats().Open == 0 })
}

func TestClosedTableRefuses(t *testing.T) {
	tb := New[string, *fakeClient](context.Background(), Config{Max: 1, Idle: time.Minute})
	far := make(chan net.Conn, 1)
	c := newFakeClient(0)
	if err := tb.Add("a", c, pipeDial(far)); err != nil {
		t.Fatal(err)
	}
	tb.Close()
	if !c.closed() {
		t.Error("Close left a flow's client open")
	}
	if err := tb.Add("b", newFakeClient(0), pipeDial(far)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v, want ErrClosed", err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestQueueDropsWhenFullOrClosed(t *testing.T) {
	q := NewQueue(1)
	p := []byte("a")
	if !q.Push(p) || q.Push([]byte("b")) {
		t.Fatal("a queue of 1 took other than exactly one datagram")
	}
	p[0] = 'x' // the queue holds a copy
	if got, _, err := q.Next(); err != nil || string(got) != "a" {
		t.Fatalf("Next: %q, %v; want a", got, err)
	}
	q.Close()
	q.Close()
	if q.Push([]byte("c")) {
		t.Error("Push to a closed queue succeeded")
	}
	if _, _, err := q.Next(); err == nil {
		t.Error("Next on a closed queue succeeded")
	}
}
