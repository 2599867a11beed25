package netstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/testlog"
)

func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

// The program sends 4 MiB and half-closes; the host side reads to EOF (so the FIN crossed),
// then sends 4 MiB of its own and closes; the program reads to EOF. IPv4 and IPv6, each link.
func TestTCPBothWaysWithHalfClose(t *testing.T) {
	const size = 4 << 20
	for name, link := range testLinks() {
		for _, dst := range []netip.AddrPort{
			netip.MustParseAddrPort("203.0.113.7:8080"),
			netip.MustParseAddrPort("[2001:db8::7]:443"),
		} {
			t.Run(fmt.Sprintf("%s/%s", name, dst), func(t *testing.T) {
				up, down := pattern(1, size), pattern(2, size)
				got := make(chan [32]byte, 1)
				ln := listenTCP(t, func(c net.Conn) {
					h := sha256.New()
					if _, err := io.Copy(h, c); err != nil {
						t.Errorf("host side read: %v", err)
					}
					got <- [32]byte(h.Sum(nil))
					if _, err := c.Write(down); err != nil {
						t.Errorf("host side write after the half-close: %v", err)
					}
				})
				rec := newRecorder(ln.Addr().String())
				e := newEnv(t, Config{Dial: rec.Dial}, link)

				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				c, err := e.dialTCP(ctx, dst)
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				var wg sync.WaitGroup
				wg.Go(func() {
					if _, err := c.Write(up); err != nil {
						t.Errorf("program write: %v", err)
					}
					if err := c.CloseWrite(); err != nil {
						t.Errorf("program half-close: %v", err)
					}
				})
				back, err := io.ReadAll(c)
				wg.Wait()
				if err != nil {
					t.Fatalf("program read: %v", err)
				}
				if !bytes.Equal(back, down) {
					t.Fatalf("program got %d bytes, not the host side's %d", len(back), len(down))
				}
				if sum := <-got; sum != sha256.Sum256(up) {
					t.Fatal("host side got other bytes than the program sent")
				}

				calls := rec.Calls()
				if len(calls) != 1 {
					t.Fatalf("Dial called %d times, want 1", len(calls))
				}
				local := c.LocalAddr().(*net.TCPAddr).AddrPort()
				want := dialCall{"tcp", netip.AddrPortFrom(local.Addr().Unmap(), local.Port()), dst}
				if calls[0] != want {
					t.Fatalf("Dial got %+v, want %+v", calls[0], want)
				}
				eventually(t, 5*time.Second, "the flow to end", func() bool { return e.tp.Stats().TCPOpen == 0 })
				st := e.tp.Stats()
				if st.TCPTotal != 1 || st.BytesOut != size || st.BytesIn != size || st.FailedDials != 0 {
					t.Fatalf("stats %+v, want 1 TCP flow, %d bytes each way, no failed dial", st, size)
				}
			})
		}
	}
}

// A flow cut by a reset on one side is cut by a reset on the other: a FIN would pass a
// truncated transfer for a complete one.
func TestTCPResetPassesThrough(t *testing.T) {
	t.Run("host side resets", func(t *testing.T) {
		ln := listenTCP(t, func(c net.Conn) {
			// After the program's first byte, so that its connect has surely returned.
			if _, err := c.Read(make([]byte, 1)); err != nil {
				return
			}
			c.Write(make([]byte, 100<<10))
			c.(*net.TCPConn).SetLinger(0)
		})
		rec := newRecorder(ln.Addr().String())
		e := newEnv(t, Config{Dial: rec.Dial}, channelLink)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := e.dialTCP(ctx, netip.MustParseAddrPort("203.0.113.4:80"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("g")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(c); err == nil || isTimeout(err) {
			t.Fatalf("program read after the host side's reset: %v; want a reset", err)
		}
	})
	t.Run("program resets", func(t *testing.T) {
		hostErr := make(chan error, 1)
		ln := listenTCP(t, func(c net.Conn) {
			c.Write([]byte("unread"))
			_, err := io.Copy(io.Discard, c)
			hostErr <- err
		})
		rec := newRecorder(ln.Addr().String())
		e := newEnv(t, Config{Dial: rec.Dial}, channelLink)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := e.dialTCP(ctx, netip.MustParseAddrPort("203.0.113.4:81"))
		if err != nil {
			t.Fatal(err)
		}
		// Closing with unread data makes the program's stack send a RST.
		eventually(t, 5*time.Second, "the host side's bytes to arrive", func() bool { return e.tp.Stats().BytesIn == 6 })
		time.Sleep(50 * time.Millisecond)
		c.Close()
		select {
		case err := <-hostErr:
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("host side read after the program's reset: %v; want ECONNRESET", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the host side did not see the flow end")
		}
	})
}

// Whatever Dial's error, the program's connect fails at once with "refused": a RST to its
// SYN, not a handshake followed by a reset.
func TestTCPDialFailureRefusesConnect(t *testing.T) {
	failures := []error{
		remote.Errorf(remote.Refused, "connection refused: web-app:81"),
		remote.NoSuchHostError("web-ap", "default"),
		remote.Errorf(remote.Unreachable, "no route to 10.244.9.9"),
		remote.Errorf(remote.Timeout, "dial 10.96.0.7:80 timed out"),
		remote.Errorf(remote.TunnelDown, "the tunnel is reconnecting"),
		remote.Errorf(remote.Forbidden, "169.254.169.254:80 is link-local, which tp's dial policy never lets the manager dial"),
		errors.New("something else"),
	}
	for name, link := range testLinks() {
		t.Run(name, func(t *testing.T) {
			var next int
			var mu sync.Mutex
			dial := func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error) {
				mu.Lock()
				defer mu.Unlock()
				err := failures[next]
				next++
				return nil, err
			}
			e := newEnv(t, Config{Dial: dial}, link)
			for i, f := range failures {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				start := time.Now()
				c, err := e.dialTCP(ctx, netip.AddrPortFrom(netip.MustParseAddr("10.96.0.7"), uint16(80+i)))
				cancel()
				took := time.Since(start)
				if err == nil {
					c.Close()
					t.Fatalf("%v: connect succeeded", f)
				}
				if !strings.Contains(err.Error(), "refused") {
					t.Fatalf("%v: connect failed with %q, want connection refused", f, err)
				}
				// The client's first SYN retransmit comes after 1 s: faster means the
				// first SYN was answered.
				if took > 900*time.Millisecond {
					t.Fatalf("%v: refusal took %v", f, took)
				}
			}
			st := e.tp.Stats()
			if st.FailedDials != int64(len(failures)) || st.TCPTotal != 0 {
				t.Fatalf("stats %+v, want %d failed dials and no flow", st, len(failures))
			}
		})
	}
}

// Datagrams of many sizes come back whole, each its own read; a burst keeps its
// boundaries; all of a flow's datagrams share one Dial.
func TestUDPRoundTripKeepsBoundaries(t *testing.T) {
	sizes := []int{0, 1, 100, 1472, 1473, 9000, 60000, 65000}
	for name, link := range testLinks() {
		for _, dst := range []netip.AddrPort{
			netip.MustParseAddrPort("198.51.100.53:53"),
			netip.MustParseAddrPort("[2001:db8::53]:5353"),
		} {
			t.Run(fmt.Sprintf("%s/%s", name, dst), func(t *testing.T) {
				echo := listenUDPEcho(t)
				rec := newRecorder(echo.LocalAddr().String())
				e := newEnv(t, Config{Dial: rec.Dial}, link)
				c := e.dialUDP(t, dst)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, maxDatagram)
				for i, n := range sizes {
					msg := pattern(uint64(i), n)
					if _, err := c.Write(msg); err != nil {
						t.Fatalf("write %d bytes: %v", n, err)
					}
					got, err := c.Read(buf)
					if err != nil {
						t.Fatalf("read back %d bytes: %v", n, err)
					}
					if !bytes.Equal(buf[:got], msg) {
						t.Fatalf("sent %d bytes, got %d back", n, got)
					}
				}
				const burst = 20
				for i := range burst {
					if _, err := c.Write(pattern(100, 10+i)); err != nil {
						t.Fatal(err)
					}
				}
				for i := range burst {
					got, err := c.Read(buf)
					if err != nil {
						t.Fatalf("burst read %d: %v", i, err)
					}
					if !bytes.Equal(buf[:got], pattern(100, 10+i)) {
						t.Fatalf("burst datagram %d: %d bytes, want %d", i, got, 10+i)
					}
				}

				calls := rec.Calls()
				local := c.LocalAddr().(*net.UDPAddr).AddrPort()
				want := dialCall{"udp", netip.AddrPortFrom(local.Addr().Unmap(), local.Port()), dst}
				if len(calls) != 1 || calls[0] != want {
					t.Fatalf("Dial calls %+v, want one %+v", calls, want)
				}
				// BytesIn is counted after the datagram is handed over: wait for the last.
				eventually(t, 5*time.Second, "equal bytes each way", func() bool {
					st := e.tp.Stats()
					return st.BytesOut == st.BytesIn
				})
				st := e.tp.Stats()
				if st.UDPOpen != 1 || st.UDPTotal != 1 || st.BytesOut == 0 {
					t.Fatalf("stats %+v, want 1 open UDP flow", st)
				}
			})
		}
	}
}

// A flow ends after UDPIdleTimeout without datagrams (its host-side conn is closed), lives
// on while datagrams pass, and a later datagram starts a new flow.
func TestUDPIdleFlowCloses(t *testing.T) {
	const idle = 300 * time.Millisecond
	echo := listenUDPEcho(t)
	rec := newRecorder(echo.LocalAddr().String())
	e := newEnv(t, Config{Dial: rec.Dial, UDPIdleTimeout: idle}, channelLink)
	c := e.dialUDP(t, netip.MustParseAddrPort("198.51.100.1:9999"))
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 100)
	roundTrip := func() {
		t.Helper()
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(buf); err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("round trip: %q, %v", buf[:n], err)
		}
	}
	// Active for 3 timeouts: the flow must survive.
	for end := time.Now().Add(3 * idle); time.Now().Before(end); time.Sleep(idle / 3) {
		roundTrip()
	}
	if n := len(rec.Calls()); n != 1 {
		t.Fatalf("an active flow was redialled: %d dials", n)
	}
	start := time.Now()
	select {
	case <-rec.closed:
	case <-time.After(5 * idle):
		t.Fatal("the idle flow's host-side conn was not closed")
	}
	if took := time.Since(start); took > 2*idle {
		t.Fatalf("idle flow closed after %v, timeout %v", took, idle)
	}
	eventually(t, time.Second, "UDPOpen 0", func() bool { return e.tp.Stats().UDPOpen == 0 })
	roundTrip()
	if n := len(rec.Calls()); n != 2 {
		t.Fatalf("a datagram after the idle close made %d dials in all, want 2", n)
	}
}

// At MaxUDPFlows a new flow evicts the idlest one.
func TestUDPEvictsIdlestFlow(t *testing.T) {
	echo := listenUDPEcho(t)
	rec := newRecorder(echo.LocalAddr().String())
	e := newEnv(t, Config{Dial: rec.Dial, MaxUDPFlows: 2}, channelLink)
	dst := netip.MustParseAddrPort("198.51.100.2:7")
	buf := make([]byte, 100)
	var conns []net.Conn
	for i := range 3 {
		c := e.dialUDP(t, dst)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		conns = append(conns, c)
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("flow %d: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond) // distinct activity times
	}
	select {
	case call := <-rec.closed:
		if first := rec.Calls()[0]; call != first {
			t.Fatalf("evicted %+v, want the idlest, %+v", call, first)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no flow was evicted")
	}
	st := e.tp.Stats()
	if st.UDPEvicted != 1 || st.UDPOpen != 2 || st.UDPTotal != 3 {
		t.Fatalf("stats %+v, want 1 evicted, 2 open, 3 in all", st)
	}
	// The evicted program socket still works: its next datagram is a new flow.
	if _, err := conns[0].Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if n, err := conns[0].Read(buf); err != nil || string(buf[:n]) != "again" {
		t.Fatalf("after eviction: %q, %v", buf[:n], err)
	}
}

func TestTCP100Concurrent(t *testing.T) {
	const conns, size = 100, 64 << 10
	for name, link := range testLinks() {
		t.Run(name, func(t *testing.T) {
			ln := listenTCP(t, echoTCP)
			rec := newRecorder(ln.Addr().String())
			e := newEnv(t, Config{Dial: rec.Dial}, link)
			var wg sync.WaitGroup
			errs := make(chan error, conns)
			for i := range conns {
				wg.Go(func() {
					dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), uint16(1000+i))
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					c, err := e.dialTCP(ctx, dst)
					if err != nil {
						errs <- fmt.Errorf("connect %s: %w", dst, err)
						return
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(20 * time.Second))
					msg := pattern(uint64(i), size)
					go func() {
						c.Write(msg)
						c.CloseWrite()
					}()
					back, err := io.ReadAll(c)
					if err != nil || !bytes.Equal(back, msg) {
						errs <- fmt.Errorf("%s: echoed %d of %d bytes: %v", dst, len(back), size, err)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			seen := map[netip.AddrPort]bool{}
			for _, c := range rec.Calls() {
				seen[c.dst] = true
			}
			if len(seen) != conns {
				t.Fatalf("Dial saw %d destinations, want %d", len(seen), conns)
			}
			eventually(t, 5*time.Second, "all flows to end", func() bool { return e.tp.Stats().TCPOpen == 0 })
			if st := e.tp.Stats(); st.TCPTotal != conns || st.BytesOut != conns*size || st.BytesIn != conns*size {
				t.Fatalf("stats %+v, want %d flows of %d bytes each way", st, conns, size)
			}
		})
	}
}

// SYNs beyond MaxPendingDials are ignored, not refused; the program's retransmit gets in
// once a dial finishes.
func TestTCPPendingDialsBounded(t *testing.T) {
	ln := listenTCP(t, echoTCP)
	rec := newRecorder(ln.Addr().String())
	release := make(chan struct{})
	dial := func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return rec.Dial(ctx, network, src, dst)
	}
	e := newEnv(t, Config{Dial: dial, MaxPendingDials: 2}, channelLink)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := e.dialTCP(ctx, netip.AddrPortFrom(netip.MustParseAddr("203.0.113.50"), uint16(2000+i)))
			if err != nil {
				t.Errorf("connect %d: %v", i, err)
				return
			}
			c.Close()
		})
	}
	eventually(t, 5*time.Second, "a SYN to be dropped", func() bool { return e.tp.Stats().TCPDropped > 0 })
	close(release)
	wg.Wait()
	eventually(t, 5*time.Second, "3 flows", func() bool { return e.tp.Stats().TCPTotal == 3 })
}

// Close resets the program's connections, aborts pending dials, closes every host-side conn
// and leaves no goroutine behind.
func TestCloseEndsEverything(t *testing.T) {
	for name, link := range testLinks() {
		t.Run(name, func(t *testing.T) {
			// Warm up once, so that lazily started runtime and gVisor goroutines are not
			// counted as leaks.
			closeScenario(t, link)
			runtime.GC()
			before := runtime.NumGoroutine()
			closeScenario(t, link)
			const slack = 3
			deadline := time.Now().Add(10 * time.Second)
			for {
				n := runtime.NumGoroutine()
				if n <= before+slack {
					break
				}
				if time.Now().After(deadline) {
					buf := make([]byte, 1<<20)
					t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// closeScenario builds a stack with flows of every kind, closes it and checks each flow
// ended; all it started is gone when it returns.
func closeScenario(t *testing.T, link linkFunc) {
	t.Run("scenario", func(t *testing.T) {
		hostGone := make(chan string, 10)
		ln := listenTCP(t, func(c net.Conn) {
			// Streams until the stack closes its end.
			chunk := make([]byte, 64<<10)
			for {
				if _, err := c.Write(chunk); err != nil {
					hostGone <- "tcp"
					return
				}
			}
		})
		echo := listenUDPEcho(t)
		tcpRec, udpRec := newRecorder(ln.Addr().String()), newRecorder(echo.LocalAddr().String())
		pending := make(chan struct{}, 1)
		dial := func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error) {
			switch {
			case network == "udp":
				return udpRec.Dial(ctx, network, src, dst)
			case dst.Port() == 9:
				pending <- struct{}{}
				<-ctx.Done() // a dial that hangs until the stack gives up on it
				return nil, ctx.Err()
			}
			return tcpRec.Dial(ctx, network, src, dst)
		}
		e := newEnv(t, Config{Dial: dial}, link)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()

		var streams []net.Conn
		for i := range 2 {
			c, err := e.dialTCP(ctx, netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), uint16(100+i)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			streams = append(streams, c)
		}
		// Stream 0 is read (mid-transfer at Close); stream 1 is left full and stalled.
		streamDone := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, streams[0])
			streamDone <- err
		}()
		pendingDone := make(chan error, 1)
		go func() {
			c, err := e.dialTCP(ctx, netip.MustParseAddrPort("203.0.113.9:9"))
			if err == nil {
				c.Close()
			}
			pendingDone <- err
		}()
		u := e.dialUDP(t, netip.MustParseAddrPort("198.51.100.9:53"))
		u.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := u.Write([]byte("q")); err != nil {
			t.Fatal(err)
		}
		if _, err := u.Read(make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		<-pending
		eventually(t, 5*time.Second, "two TCP flows", func() bool { return e.tp.Stats().TCPOpen == 2 })

		start := time.Now()
		if err := e.tp.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("Close took %v", took)
		}
		if st := e.tp.Stats(); st.TCPOpen != 0 || st.UDPOpen != 0 {
			t.Fatalf("after Close: %+v", st)
		}
		select {
		case err := <-streamDone:
			if err == nil {
				t.Fatal("a stream ended cleanly at Close; want a reset")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a stream outlived Close")
		}
		streams[1].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, streams[1]); err == nil || isTimeout(err) {
			t.Fatalf("a stalled stream after Close: %v; want a reset", err)
		}
		if err := <-pendingDone; err == nil {
			t.Fatal("a connect whose dial was pending succeeded")
		}
		for range 2 {
			select {
			case <-hostGone:
			case <-time.After(5 * time.Second):
				t.Fatal("a host-side TCP conn outlived Close")
			}
		}
		select {
		case <-udpRec.closed:
		case <-time.After(5 * time.Second):
			t.Fatal("the host-side UDP conn outlived Close")
		}
		if err := e.tp.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := e.tp.attach(nil, nil); err == nil {
			t.Fatal("attach after Close succeeded")
		}
	})
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without Dial succeeded")
	}
	dial := func(context.Context, string, netip.AddrPort, netip.AddrPort) (net.Conn, error) { return nil, nil }
	if _, err := New(Config{Dial: dial, MTU: 576}); err == nil {
		t.Fatal("New with an MTU below IPv6's minimum succeeded")
	}
	e := newEnv(t, Config{Dial: dial}, channelLink)
	if err := e.tp.attach(nil, nil); err == nil || !strings.Contains(err.Error(), "already attached") {
		t.Fatalf("second attach: %v", err)
	}
	// A hook returning neither conn nor error is a failed dial, not a crash.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := e.dialTCP(ctx, netip.MustParseAddrPort("203.0.113.1:1")); err == nil {
		c.Close()
		t.Fatal("connect through a hook returning nil, nil succeeded")
	}
}

// A UDP program sees nothing when its flow's dial fails (no RST, no ICMP): the stack counts
// each failure and logs it where a user looks (at info level), a few lines per period
// however many datagrams retry.
func TestUDPDialFailureIsLoggedAndCounted(t *testing.T) {
	var logs testlog.Buffer
	dial := func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error) {
		return nil, remote.Errorf(remote.Refused, "connection refused by %s", dst)
	}
	e := newEnv(t, Config{Dial: dial, Log: logs.Logger()}, channelLink)
	const line = `level=INFO msg="netstack: dial failed" network=udp`
	const flows = 20
	for i := range flows {
		c := e.dialUDP(t, netip.AddrPortFrom(netip.MustParseAddr("10.96.0.10"), uint16(5300+i)))
		if _, err := c.Write([]byte("query")); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	eventually(t, 5*time.Second, "every failed dial counted", func() bool { return e.tp.Stats().FailedDials == flows })
	logs.Expect(t, line, 5, 5*time.Second)
	if n := logs.Count(line); n != 5 {
		t.Errorf("%d log lines for %d failed UDP dials in a moment, want 5 (the rest counted, not logged):\n%s", n, flows, logs.String())
	}
	if !strings.Contains(logs.String(), "connection refused by 10.96.0.10:5300") {
		t.Errorf("the log does not say what failed:\n%s", logs.String())
	}
}
