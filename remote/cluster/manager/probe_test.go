package manager

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// fakeService stands for a workload's Service and its agent: each connection it accepts
// is handed back to the manager as the agent would, with the connection's origin and the
// route delivers names, when delivers says so; it reports the first request line of each connection on lines.
func fakeService(t *testing.T, r *Registry, delivers func() (bool, string), lines chan<- string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if lines != nil {
					c.SetReadDeadline(time.Now().Add(time.Second))
					head, br := "", bufio.NewReader(c)
					for {
						line, err := br.ReadString('\n')
						head += line
						if err != nil || line == "\r\n" {
							break
						}
					}
					lines <- head
				}
				ok, route := delivers()
				if !ok {
					return
				}
				dial := &tunnelpb.Frame{Kind: &tunnelpb.Frame_Dial{Dial: &tunnelpb.Dial{Network: "tcp", Address: "http", Origin: c.RemoteAddr().String(), Route: route}}}
				s := &flowStream{ctx: metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+agentToken)), in: []*tunnelpb.Frame{dial}}
				_ = r.AgentAPI().Flow(s)
			}()
		}
	}()
	return ln.Addr().String()
}

func probeResult(t *testing.T, c *clientSession) *tunnelpb.ProbeResult {
	t.Helper()
	for {
		select {
		case m := <-c.out:
			if m.GetProbe() != nil {
				return m.GetProbe()
			}
			if m.GetIncoming() != nil {
				t.Errorf("a probe reached the client: %v", m)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("no probe result")
			return nil
		}
	}
}

func probe(name, address string, n int32) *tunnelpb.InterceptClientMsg {
	return &tunnelpb.InterceptClientMsg{Kind: &tunnelpb.InterceptClientMsg_Probe{Probe: &tunnelpb.Probe{Name: name, Address: address, Namespace: "shop", Count: n}}}
}

// A probe counts the connections to the Service that an agent hands back; they never
// reach the client, and a filtered intercept's probe is a request its filter takes.
func TestProbeCountsWhatTheAgentsHandBack(t *testing.T) {
	r := NewRegistry(oneAgent{}, fakeAuth{}, nil)
	alice := newClient(r)
	dials := 0
	r.SetProbeDialer(func(ctx context.Context, address, namespace string) (net.Conn, error) {
		dials++
		if namespace != "shop" {
			t.Errorf("probe dialed in namespace %q", namespace)
		}
		return (&net.Dialer{}).DialContext(ctx, "tcp", address)
	})
	delivered, routeID := true, ""
	lines := make(chan string, 10)
	addr := fakeService(t, r, func() (bool, string) { return delivered, routeID }, lines)

	mustIntercept(t, r, alice, intercepting("whole", "alice", "alice@laptop", nil))
	r.handleClient(context.Background(), alice, probe("whole", addr, 3))
	if res := probeResult(t, alice); res.GetDelivered() != 3 || res.GetError() != "" || dials != 3 {
		t.Errorf("probe of a whole intercept: %v after %d dials", res, dials)
	}
	for range 3 {
		nextLine(t, lines)
	}
	leave(r, alice, "whole")

	mustIntercept(t, r, alice, intercepting("mine", "alice", "alice@laptop", &tunnelpb.HTTPFilter{Id: "alice-1a2b"}))
	r.mu.Lock()
	routeID = r.findLocked(alice, "mine").id // as the agent routes the probe's request
	r.mu.Unlock()
	r.handleClient(context.Background(), alice, probe("mine", addr, 1))
	if res := probeResult(t, alice); res.GetDelivered() != 1 {
		t.Errorf("probe of a filtered intercept: %v", res)
	}
	if head := nextLine(t, lines); !strings.HasPrefix(head, "GET /.tp-probe HTTP/1.1\r\n") || !strings.Contains(head, "\r\n"+route.IDHeader+": alice-1a2b\r\n") {
		t.Errorf("a filtered intercept's probe sent %q: not a request its filter takes", head)
	}

	// A flow of the probe's connection for another intercept (a wiretap's copy of it) is
	// no proof that the probed intercept gets it.
	routeID = "0123456789abcdef"
	r.handleClient(context.Background(), alice, probe("mine", addr, 1))
	if res := probeResult(t, alice); res.GetDelivered() != 0 {
		t.Errorf("a probe counted a flow for another route: %v", res)
	}
	nextLine(t, lines)
	delivered = false // pods without the agent answer, but no agent hands the probe back
	start := time.Now()
	r.handleClient(context.Background(), alice, probe("mine", addr, 1))
	if res := probeResult(t, alice); res.GetDelivered() != 0 || !strings.Contains(res.GetError(), "did not reach an agent") {
		t.Errorf("probe of a Service that does not deliver: %v", res)
	}
	if took := time.Since(start); took < probeWait {
		t.Errorf("the probe gave up after %s, before its %s", took, probeWait)
	}
	nextLine(t, lines)

	r.handleClient(context.Background(), alice, probe("nobody's", addr, 1))
	if res := probeResult(t, alice); !strings.Contains(res.GetError(), "no intercept named") {
		t.Errorf("probe of another's intercept: %v", res)
	}
	if len(r.probes) != 0 {
		t.Errorf("probes left: %v", r.probes)
	}
}

// nextLine is the next head the fake Service reports.
func nextLine(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case l := <-lines:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("the fake Service saw no connection")
		return ""
	}
}
