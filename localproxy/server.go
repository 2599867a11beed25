package localproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/things-go/go-socks5"

	"github.com/tpdev/tp/localproxy/peer"
	"github.com/tpdev/tp/remote"
)

// Defaults for the zero values in Config.
const (
	DefaultDialTimeout      = 30 * time.Second
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultUDPIdleTimeout   = 2 * time.Minute
)

// Config configures a Server.
type Config struct {
	// Dialer is where every proxied connection and UDP flow goes (a Router in production).
	// Addresses are passed as the client gave them: names stay unresolved.
	Dialer remote.Dialer
	// Log receives one line per failed dial or rejected client; nil discards.
	Log *slog.Logger
	// SelfAddrs are this proxy's own listen addresses, besides those of the listeners given
	// to Serve (which are added automatically). A request whose target is one of them is
	// refused: it could only loop back into the proxy.
	SelfAddrs []netip.AddrPort
	// DialTimeout bounds each dial, because neither go-socks5 nor a waiting client ever gives
	// up on a slow one; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// HandshakeTimeout is how long a new client has to send its SOCKS5 request or HTTP
	// request header; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// UDPIdleTimeout closes a UDP flow that carried no datagram either way for this long;
	// 0 means DefaultUDPIdleTimeout.
	UDPIdleTimeout time.Duration
	// Credentials, when set, are what every client must give: SOCKS5 username/password
	// authentication (RFC 1929; "no authentication" is then not offered) and, for HTTP,
	// Proxy-Authorization: Basic (else 407). A proxy that other machines reach needs them,
	// or anyone on the network could use it to reach the cluster. nil accepts every client,
	// with or without credentials, since some clients send whatever their proxy URL holds.
	// New panics if they are not valid (see Credentials.Validate).
	Credentials *Credentials
	// Peers turns away clients that are other users of this machine (see package peer):
	// the port carries this user's cluster rights. nil means peer.New with Log, which on
	// Linux lets in only the user this process runs as.
	Peers *peer.Guard
	// PAC, when set, makes the port answer GET /proxy.pac (and /wpad.dat) with a proxy
	// auto-config file, without asking for credentials: browsers fetch it before they know
	// any, and it holds no secret.
	PAC func(ctx context.Context) ([]byte, error)
	// Upstream, when set, names the proxy a plain (absolute-URI) HTTP request goes to
	// instead of its destination, as http.Transport.Proxy does (nil URL: none). Forwarding the
	// request, rather than a CONNECT tunnel, is what corporate proxies allow on port 80.
	Upstream func(*http.Request) (*url.URL, error)
}

// Stats are a Server's counters since New.
type Stats struct {
	// Open is the number of client connections open now.
	Open int64
	// Total is the number of client connections accepted.
	Total int64
	// BytesIn counts bytes received from destinations (downloads); BytesOut counts bytes
	// sent to them (uploads). For plain HTTP requests they include the HTTP framing.
	BytesIn, BytesOut int64
	// DialErrors counts dials that failed (including refused loops).
	DialErrors int64
	// OtherUsers counts client connections turned away as another user of this machine
	// (or one the kernel could not name); they are in Total too.
	OtherUsers int64
}

// Server is the SOCKS5 + HTTP proxy. Create it with New; Serve may be called on several
// listeners at once (e.g. 127.0.0.1 and ::1).
type Server struct {
	dialer        remote.Dialer
	log           *slog.Logger
	dialTimeout   time.Duration
	hsTimeout     time.Duration
	udpIdle       time.Duration
	creds         *credentialStore // nil: no credentials asked
	peers         *peer.Guard
	socks         *socks5.Server
	socksRefuse   *socks5.Server // answers clients the Guard turned away
	httpProxy     *goproxy.ProxyHttpServer
	httpTransport *http.Transport
	pac           func(ctx context.Context) ([]byte, error)

	selfMu sync.Mutex
	self   []netip.AddrPort

	open, total, bytesIn, bytesOut, dialErrors, otherUsers atomic.Int64
}

// New makes a Server. It panics if cfg.Dialer is nil, since such a server could serve
// nothing, or if cfg.Credentials are invalid, since no client could give them.
func New(cfg Config) *Server {
	if cfg.Dialer == nil {
		panic("localproxy: Config.Dialer is nil")
	}
	var creds *credentialStore
	if cfg.Credentials != nil {
		if err := cfg.Credentials.Validate(); err != nil {
			panic("localproxy: Config.Credentials: " + err.Error())
		}
		creds = newCredentialStore(*cfg.Credentials)
	}
	s := &Server{
		dialer:      cfg.Dialer,
		log:         cfg.Log,
		dialTimeout: orDefault(cfg.DialTimeout, DefaultDialTimeout),
		hsTimeout:   orDefault(cfg.HandshakeTimeout, DefaultHandshakeTimeout),
		udpIdle:     orDefault(cfg.UDPIdleTimeout, DefaultUDPIdleTimeout),
		creds:       creds,
		peers:       cfg.Peers,
		self:        slices.Clone(cfg.SelfAddrs),
		pac:         cfg.PAC,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.peers == nil {
		s.peers = peer.New(peer.Config{Log: s.log})
	}
	s.socks = s.newSOCKS()
	s.socksRefuse = s.newSOCKSRefusal()
	s.httpProxy, s.httpTransport = s.newHTTPProxy()
	s.httpTransport.Proxy = cfg.Upstream
	return s
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	return Stats{
		Open:       s.open.Load(),
		Total:      s.total.Load(),
		BytesIn:    s.bytesIn.Load(),
		BytesOut:   s.bytesOut.Load(),
		DialErrors: s.dialErrors.Load(),
		OtherUsers: s.otherUsers.Load(),
	}
}

func (s *Server) addSelf(ap netip.AddrPort) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	s.selfMu.Lock()
	defer s.selfMu.Unlock()
	if !slices.Contains(s.self, ap) {
		s.self = append(s.self, ap)
	}
}

// isSelf reports whether dialing address would reach this proxy.
func (s *Server) isSelf(address string) bool {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return false
	}
	local := isLocalhostName(host)
	var ip netip.Addr
	if !local {
		if ip, err = netip.ParseAddr(host); err != nil {
			return false
		}
		ip = ip.Unmap().WithZone("")
	}
	s.selfMu.Lock()
	defer s.selfMu.Unlock()
	for _, self := range s.self {
		if self.Port() != uint16(port) {
			continue
		}
		sip := self.Addr().Unmap()
		// A listener on the unspecified address is reached through every local address; of
		// those we can only recognise loopback without enumerating interfaces. Dialing the
		// unspecified address itself reaches loopback.
		wildcard := sip.IsUnspecified()
		switch {
		case local:
			if sip.IsLoopback() || wildcard {
				return true
			}
		case ip == sip,
			wildcard && ip.IsLoopback(),
			ip.IsUnspecified() && (sip.IsLoopback() || wildcard):
			return true
		}
	}
	return false
}

// loopError refuses a destination that is this proxy itself.
type loopError struct{ address string }

func (e *loopError) Error() string {
	return fmt.Sprintf("refusing to proxy to %s: that is tp's own proxy port (a loop)", e.address)
}

// Dialer is the Server's own way out (loop check, dial timeout, byte counting in Stats),
// for a front end in the same process, such as tp run's VIF (netstack.Config.Dialer):
// its flows then skip a SOCKS hop through the loopback port, and the dialer's errors reach
// it with their kind, which a SOCKS reply code can't always carry (TunnelDown and Failed
// share 0x01).
func (s *Server) Dialer() remote.Dialer { return remote.DialFunc(s.dial) }

// dial is the one way out for every front end: loop check, dial timeout, byte counting.
func (s *Server) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if s.isSelf(address) {
		s.dialErrors.Add(1)
		return nil, &loopError{address: address}
	}
	dctx, cancel := context.WithTimeout(ctx, s.dialTimeout)
	defer cancel()
	c, err := s.dialer.DialContext(dctx, network, address)
	if err == nil && c == nil {
		err = &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("dialing %s returned no connection", address)}
	}
	if err != nil {
		s.dialErrors.Add(1)
		// Our deadline fired but the dialer reported something else (e.g. "canceled"):
		// say what happened, in the kind every front end maps to its timeout answer.
		if ctx.Err() == nil && errors.Is(dctx.Err(), context.DeadlineExceeded) && remote.KindOf(err) != remote.Timeout {
			err = &remote.Error{Kind: remote.Timeout,
				Msg: fmt.Sprintf("no answer from %s within %s", address, s.dialTimeout), Err: err}
		}
		return nil, err
	}
	return remote.Count(c, &s.bytesIn, &s.bytesOut), nil
}
