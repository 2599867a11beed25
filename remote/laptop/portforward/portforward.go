// Package portforward opens TCP streams to a pod's ports through the Kubernetes API server,
// in-process with client-go: no kubectl, no local listener. Each stream is a net.Conn.
//
// One upgraded connection per pod and lane carries every stream to that pod on that lane;
// it is cached and evicted when it closes, and each stream is removed from it when closed
// (client-go keeps every stream it ever made otherwise).
package portforward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clientpf "k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// Transport chooses how the port-forward connection is upgraded.
type Transport string

const (
	// Auto tries WebSocket and falls back to SPDY when the server (or a proxy on the way)
	// refuses the WebSocket upgrade, as kubectl does.
	Auto Transport = ""
	// WebSocket tunnels the streams over one WebSocket (API servers from 1.30 on).
	WebSocket Transport = "websocket"
	// SPDY uses the older SPDY/3.1 upgrade, which every API server accepts.
	SPDY Transport = "spdy"
)

// ParseTransport reads a transport name as given on a command line.
func ParseTransport(s string) (Transport, error) {
	switch t := Transport(s); t {
	case Auto, WebSocket, SPDY:
		return t, nil
	case "auto":
		return Auto, nil
	}
	return Auto, fmt.Errorf("port-forward transport %q: want auto, websocket or spdy", s)
}

// Forwarder dials pods' ports through one API server.
type Forwarder struct {
	// upgrade makes a new port-forward connection to a pod.
	upgrade func(namespace, pod string) (httpstream.Connection, error)

	mu    sync.Mutex
	conns map[string]*podConn // by namespace/pod
}

// upgradeConnectTimeout bounds the TCP connect of a port-forward upgrade, and upgradeTimeout
// the whole upgrade: a request sent into a path that then died may wait for TCP's next
// retransmission long after the path is back, and meanwhile every stream of its lane waits.
const (
	upgradeConnectTimeout = 5 * time.Second
	upgradeTimeout        = 15 * time.Second
)

// streamTimeout bounds the creation of one stream. A connection whose path went silent is
// not closed by anyone (its TCP connection outlives a black hole), and client-go waits 30 s
// for each stream's reply on it; a connection that does not answer in time is closed, so
// that the next dial upgrades a new one.
const streamTimeout = 10 * time.Second

// createStream creates a stream on pc; on failure or timeout pc is evicted (and closed).
func (f *Forwarder) createStream(pc *podConn, hdr http.Header) (httpstream.Stream, error) {
	type result struct {
		s   httpstream.Stream
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := pc.conn.CreateStream(hdr)
		done <- result{s, err}
	}()
	t := time.NewTimer(streamTimeout)
	defer t.Stop()
	select {
	case r := <-done:
		if r.err != nil {
			f.evict(pc)
		}
		return r.s, r.err
	case <-t.C:
		f.evict(pc)
		_ = pc.conn.Close()
		return nil, fmt.Errorf("no answer within %s: the connection to the API server is gone", streamTimeout)
	}
}

// upgradeWithin runs an upgrade, giving up after timeout; a late connection is closed.
func (f *Forwarder) upgradeWithin(namespace, pod string, timeout time.Duration) (httpstream.Connection, error) {
	type result struct {
		conn httpstream.Connection
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := f.upgrade(namespace, pod)
		done <- result{conn, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-done:
		return r.conn, r.err
	case <-t.C:
		go func() {
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("the API server did not answer the upgrade within %s", timeout)
	}
}

// New makes a Forwarder for the API server in cfg.
func New(cfg *rest.Config, transport Transport) (*Forwarder, error) {
	if cfg.Dial == nil {
		// An upgrade has no context to end it, and every stream of its lane waits for it: a
		// connect whose SYNs a dead path drops must give up in seconds, not after the
		// kernel's two minutes of retries, so that the next attempt finds the path back.
		cfg = rest.CopyConfig(cfg)
		cfg.Dial = (&net.Dialer{Timeout: upgradeConnectTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("port-forward client: %w", err)
	}
	client := cs.CoreV1().RESTClient()
	upgrade := func(namespace, pod string) (httpstream.Connection, error) {
		dialer, err := upgradeDialer(cfg, client, transport, namespace, pod)
		if err != nil {
			return nil, err
		}
		conn, _, err := dialer.Dial(clientpf.PortForwardProtocolV1Name)
		return conn, err
	}
	return newForwarder(upgrade), nil
}

func newForwarder(upgrade func(namespace, pod string) (httpstream.Connection, error)) *Forwarder {
	return &Forwarder{upgrade: upgrade, conns: map[string]*podConn{}}
}

// podConn is one upgraded connection to a pod; ready closes when conn or err is set.
type podConn struct {
	key    string // in Forwarder.conns
	lane   int
	ready  chan struct{}
	conn   httpstream.Connection
	err    error
	nextID atomic.Int64
}

// DialPod opens a stream to port on the pod. The API server, kubelet and container runtime
// connect to the port inside the pod's network namespace; when nothing listens there, the
// returned conn's first Read fails with the runtime's message.
func (f *Forwarder) DialPod(ctx context.Context, namespace, pod string, port uint16) (net.Conn, error) {
	return f.DialPodOn(ctx, 0, namespace, pod, port)
}

// DialPodOn is DialPod on the pod's upgraded connection number lane: streams on different
// lanes share no connection (nor its buffers in the API server and kubelet).
func (f *Forwarder) DialPodOn(ctx context.Context, lane int, namespace, pod string, port uint16) (net.Conn, error) {
	pc, err := f.podConn(ctx, lane, namespace, pod)
	if err != nil {
		return nil, err
	}
	id := strconv.FormatInt(pc.nextID.Add(1), 10)
	hdr := http.Header{}
	hdr.Set(corev1.StreamType, corev1.StreamTypeError)
	hdr.Set(corev1.PortHeader, strconv.Itoa(int(port)))
	hdr.Set(corev1.PortForwardRequestIDHeader, id)
	errStream, err := f.createStream(pc, hdr)
	if err != nil {
		return nil, fmt.Errorf("port-forward to pod %s/%s port %d: error stream: %w", namespace, pod, port, err)
	}
	// The client never writes on the error stream.
	_ = errStream.Close()
	hdr.Set(corev1.StreamType, corev1.StreamTypeData)
	dataStream, err := f.createStream(pc, hdr)
	if err != nil {
		pc.conn.RemoveStreams(errStream)
		return nil, fmt.Errorf("port-forward to pod %s/%s port %d: data stream: %w", namespace, pod, port, err)
	}
	c := &streamConn{
		pc:     pc,
		data:   dataStream,
		errs:   errStream,
		remote: podAddr{namespace: namespace, pod: pod, port: port},
		errMsg: make(chan error, 1),
	}
	go c.readErrors()
	return c, nil
}

// podConn returns the cached connection to the pod or makes one; concurrent callers for the
// same pod share one upgrade.
func (f *Forwarder) podConn(ctx context.Context, lane int, namespace, pod string) (*podConn, error) {
	key := namespace + "/" + pod + "#" + strconv.Itoa(lane)
	f.mu.Lock()
	pc, ok := f.conns[key]
	if !ok {
		pc = &podConn{key: key, lane: lane, ready: make(chan struct{})}
		f.conns[key] = pc
		go f.connect(namespace, pod, pc)
	}
	f.mu.Unlock()
	select {
	case <-pc.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", namespace, pod, ctx.Err())
	}
	if pc.err != nil {
		return nil, pc.err
	}
	return pc, nil
}

// connect upgrades a connection for pc. It runs detached from any one caller's context, so
// a caller that gives up does not fail the others waiting on the same pod.
func (f *Forwarder) connect(namespace, pod string, pc *podConn) {
	defer close(pc.ready)
	conn, err := f.upgradeWithin(namespace, pod, upgradeTimeout)
	if err != nil {
		pc.err = fmt.Errorf("port-forward to pod %s/%s: %w", namespace, pod, err)
		f.evict(pc)
		return
	}
	pc.conn = conn
	go func() {
		<-pc.conn.CloseChan()
		f.evict(pc)
	}()
}

// Dialer is the upgrade dialer for a pod's portforward subresource, as kubectl uses it
// (client-go's PortForwarder takes one); tp itself uses DialPod.
func Dialer(cfg *rest.Config, transport Transport, namespace, pod string) (httpstream.Dialer, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("port-forward client: %w", err)
	}
	return upgradeDialer(cfg, cs.CoreV1().RESTClient(), transport, namespace, pod)
}

func upgradeDialer(cfg *rest.Config, client rest.Interface, transport Transport, namespace, pod string) (httpstream.Dialer, error) {
	u := client.Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward").URL()
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	spdyDialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	if transport == SPDY {
		return spdyDialer, nil
	}
	ws := &wsDialer{cfg: cfg, url: u}
	if transport == WebSocket {
		return ws, nil
	}
	return clientpf.NewFallbackDialer(ws, spdyDialer, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	}), nil
}

func (f *Forwarder) evict(pc *podConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns[pc.key] == pc {
		delete(f.conns, pc.key)
	}
}

// Close closes every cached connection and with them their streams.
func (f *Forwarder) Close() error {
	f.closeWhere(func(*podConn) bool { return true })
	return nil
}

// CloseLane closes the connections of one lane (to any pod) and with them their streams.
func (f *Forwarder) CloseLane(lane int) {
	f.closeWhere(func(pc *podConn) bool { return pc.lane == lane })
}

func (f *Forwarder) closeWhere(match func(*podConn) bool) {
	f.mu.Lock()
	var pcs []*podConn
	for key, pc := range f.conns {
		if match(pc) {
			pcs = append(pcs, pc)
			delete(f.conns, key)
		}
	}
	f.mu.Unlock()
	for _, pc := range pcs {
		go func() {
			<-pc.ready
			if pc.conn != nil {
				_ = pc.conn.Close()
			}
		}()
	}
}

// streamConn is one port-forward stream pair seen as a net.Conn.
type streamConn struct {
	pc         *podConn
	data, errs httpstream.Stream
	remote     podAddr
	errMsg     chan error // the runtime's message, or nil once the error stream ends quietly
	closeOnce  sync.Once
}

// errWait bounds how long a Read that met EOF waits for the error stream to say why: the
// runtime writes its message there before it ends the data stream, but the two streams
// arrive independently.
const errWait = 200 * time.Millisecond

func (c *streamConn) readErrors() {
	msg, err := io.ReadAll(c.errs)
	switch {
	case len(msg) > 0:
		c.errMsg <- fmt.Errorf("port-forward to %s: %s", c.remote, msg)
	case err != nil:
		c.errMsg <- fmt.Errorf("port-forward to %s: error stream: %w", c.remote, err)
	default:
		c.errMsg <- nil
	}
}

func (c *streamConn) Read(p []byte) (int, error) {
	n, err := c.data.Read(p)
	if errors.Is(err, io.EOF) {
		select {
		case e := <-c.errMsg:
			c.errMsg <- e // keep it for later reads
			if e != nil {
				return n, e
			}
		case <-time.After(errWait):
		}
	}
	return n, err
}

func (c *streamConn) Write(p []byte) (int, error) { return c.data.Write(p) }

// CloseWrite half-closes: the pod's side reads EOF and may go on writing.
func (c *streamConn) CloseWrite() error { return c.data.Close() }

func (c *streamConn) Close() error {
	c.closeOnce.Do(func() {
		_ = c.data.Reset()
		_ = c.errs.Reset()
		c.pc.conn.RemoveStreams(c.data, c.errs)
	})
	return nil
}

func (c *streamConn) LocalAddr() net.Addr  { return podAddr{} }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

// Port-forward streams carry no deadlines of their own; a deadline that is set is refused
// so that callers do not rely on timeouts that never fire. Clearing one is fine.
func (c *streamConn) SetDeadline(t time.Time) error      { return noDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return noDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return noDeadline(t) }

func noDeadline(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	return fmt.Errorf("port-forward stream deadline: %w", errors.ErrUnsupported)
}

// podAddr names the far end of a stream.
type podAddr struct {
	namespace, pod string
	port           uint16
}

func (a podAddr) Network() string { return "portforward" }
func (a podAddr) String() string {
	if a.pod == "" {
		return "local"
	}
	return fmt.Sprintf("pod %s/%s port %d", a.namespace, a.pod, a.port)
}
