package portforward

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	gwebsocket "github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	pfconst "k8s.io/apimachinery/pkg/util/portforward"
	"k8s.io/client-go/rest"
	clientpf "k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport"
	"k8s.io/client-go/transport/websocket"
)

// wsDialer upgrades a port-forward connection as client-go's SPDY-over-WebSocket dialer
// does (SPDY tunnelled in one WebSocket, API servers from 1.30 on), with two differences:
//   - it connects with the rest.Config's Dial. client-go's WebSocket round tripper makes a
//     gorilla dialer with no dial hook, so a Config's Dial is honoured on the SPDY path
//     only: tp's bounded connect did not apply to WebSocket upgrades, and a caller's own
//     network (a test's laptop namespace) was silently bypassed;
//   - a refused upgrade is an apimachinery UpgradeFailureError, the type the SPDY fallback
//     tests for (client-go's is k8s.io/streaming's, which that test does not match).
type wsDialer struct {
	cfg *rest.Config
	url *url.URL
}

func (d *wsDialer) Dial(protocols ...string) (httpstream.Connection, string, error) {
	tcfg, err := d.cfg.TransportConfig()
	if err != nil {
		return nil, "", err
	}
	tlsConfig, err := transport.TLSConfigFor(tcfg)
	if err != nil {
		return nil, "", err
	}
	proxy := d.cfg.Proxy
	if proxy == nil {
		proxy = utilnet.NewProxierWithNoProxyCIDR(http.ProxyFromEnvironment)
	}
	up := &wsUpgrader{tls: tlsConfig, proxy: proxy, dial: d.cfg.Dial}
	rt, err := transport.HTTPWrappersForConfig(tcfg, up) // credentials, user agent, impersonation
	if err != nil {
		return nil, "", err
	}
	req, err := http.NewRequest(http.MethodGet, d.url.String(), nil) // RFC 6455: a GET
	if err != nil {
		return nil, "", err
	}
	tunnelled := make([]string, len(protocols))
	for i, p := range protocols {
		tunnelled[i] = pfconst.WebsocketsSPDYTunnelingPrefix + p
	}
	ws, err := websocket.Negotiate(rt, up, req, tunnelled...)
	if err != nil {
		return nil, "", err
	}
	conn, err := spdy.NewClientConnectionWithPings(clientpf.NewTunnelingConnection("client", ws), clientpf.PingPeriod)
	if err != nil {
		_ = ws.Close()
		return nil, "", err
	}
	return conn, strings.TrimPrefix(ws.Subprotocol(), pfconst.WebsocketsSPDYTunnelingPrefix), nil
}

// wsUpgrader is the innermost round tripper of one upgrade: it makes the WebSocket and
// keeps it for websocket.Negotiate (a websocket.ConnectionHolder). One per upgrade.
type wsUpgrader struct {
	tls   *tls.Config
	proxy func(*http.Request) (*url.URL, error)
	dial  func(ctx context.Context, network, address string) (net.Conn, error)
	conn  *gwebsocket.Conn
}

// client-go's WebSocket sizes: a 32 KiB frame, and buffers with room for the channel byte.
const (
	wsFrame  = 32 << 10
	wsBuffer = wsFrame + 1024
)

func (u *wsUpgrader) Connection() *gwebsocket.Conn { return u.conn }
func (u *wsUpgrader) DataBufferSize() int          { return wsFrame }

func (u *wsUpgrader) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
	// Negotiate passes the subprotocols in this header; gorilla wants them on its dialer.
	protocols := req.Header[wsstream.WebSocketProtocolHeader]
	hdr := req.Header.Clone()
	delete(hdr, wsstream.WebSocketProtocolHeader)
	d := gwebsocket.Dialer{
		NetDialContext:  u.dial,
		Proxy:           u.proxy,
		TLSClientConfig: u.tls,
		Subprotocols:    protocols,
		ReadBufferSize:  wsBuffer,
		WriteBufferSize: wsBuffer,
	}
	target := *req.URL
	switch target.Scheme {
	case "https":
		target.Scheme = "wss"
	case "http":
		target.Scheme = "ws"
	default:
		return nil, fmt.Errorf("websocket upgrade: unknown URL scheme %q", target.Scheme)
	}
	ws, resp, err := d.DialContext(req.Context(), target.String(), hdr)
	if errors.Is(err, gwebsocket.ErrBadHandshake) {
		return nil, &httpstream.UpgradeFailureError{Cause: refusal(err, resp)}
	}
	if err != nil {
		return nil, err
	}
	if !slices.Contains(protocols, ws.Subprotocol()) {
		_ = ws.Close()
		return nil, &httpstream.UpgradeFailureError{Cause: fmt.Errorf("the API server chose protocol %q, want one of %q", ws.Subprotocol(), protocols)}
	}
	u.conn = ws
	return resp, nil
}

// refusal says why the API server refused the upgrade: its status and its own message.
func refusal(err error, resp *http.Response) error {
	if resp == nil {
		return err
	}
	defer resp.Body.Close()
	err = fmt.Errorf("%w (%s)", err, resp.Status)
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var st metav1.Status
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" && st.Message != "" {
		return fmt.Errorf("%w: %s", err, st.Message)
	}
	if msg := strings.TrimSpace(string(body)); msg != "" {
		return fmt.Errorf("%w: %s", err, msg)
	}
	return err
}
