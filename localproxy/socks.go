package localproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/things-go/go-socks5"
	"github.com/things-go/go-socks5/statute"

	"github.com/tpdev/tp/remote"
)

// newSOCKS configures go-socks5 for tp: the library parses the handshake and request; tp's
// handlers do every dial, because the library would resolve names locally, dial with
// net.Dial, never time out, and pick reply codes by matching words in error text.
func (s *Server) newSOCKS() *socks5.Server {
	return socks5.NewServer(
		socks5.WithAuthMethods(s.socksAuthMethods()),
		socks5.WithResolver(passThroughResolver{}),
		socks5.WithConnectHandle(s.socksConnect),
		socks5.WithAssociateHandle(s.socksAssociate),
		socks5.WithLogger(socksLogger{s.log}),
	)
}

// socksAuthMethods are the methods a client may choose. With credentials, only
// username/password: were "no authentication" offered too, any client could choose it.
// Without, some clients always offer username/password (curl does when the proxy URL holds
// them); the port is then meant for loopback (tp connect refuses another address without
// credentials) and open anyway, so any credentials are accepted rather than refused.
func (s *Server) socksAuthMethods() []socks5.Authenticator {
	if s.creds != nil {
		return []socks5.Authenticator{socks5.UserPassAuthenticator{Credentials: s.creds}}
	}
	return []socks5.Authenticator{
		socks5.NoAuthAuthenticator{},
		socks5.UserPassAuthenticator{Credentials: anyCredentials{}},
	}
}

// serveSOCKS runs the library's handshake on fc; it closes fc when done.
func (s *Server) serveSOCKS(fc *frontConn) {
	err := s.socks.ServeConn(fc)
	switch {
	case err == nil:
	case errors.Is(err, statute.ErrUserAuthFailed):
		if wait := s.lockout(fc); wait > 0 {
			s.log.Info("socks5: rejected client: too many wrong passwords from its address", clientAttr(fc), "for", wait.Round(time.Second))
		} else {
			s.log.Info("socks5: rejected client: wrong user or password", clientAttr(fc))
		}
	case errors.Is(err, statute.ErrNoSupportedAuth) && s.creds != nil:
		s.log.Info("socks5: rejected client: it did not offer username/password authentication, which this proxy asks for",
			clientAttr(fc), "hint", "give the proxy as socks5h://USER:PASSWORD@HOST:PORT")
	default:
		s.log.Info("socks5: closing connection", clientAttr(fc), "err", err)
	}
}

// lockout is how long more the client's address is turned away for guessing passwords.
func (s *Server) lockout(fc *frontConn) time.Duration {
	if s.creds == nil {
		return 0
	}
	return s.creds.guesses.wait(fc.RemoteAddr().String())
}

// passThroughResolver leaves names unresolved: with an empty IP the library's AddrSpec
// stays a name, which the Dialer (the cluster side, for cluster names) resolves.
type passThroughResolver struct{}

func (passThroughResolver) Resolve(ctx context.Context, _ string) (context.Context, net.IP, error) {
	return ctx, nil, nil
}

type anyCredentials struct{}

func (anyCredentials) Valid(_, _, _ string) bool { return true }

type socksLogger struct{ log *slog.Logger }

func (l socksLogger) Errorf(format string, args ...any) {
	l.log.Debug("socks5: " + fmt.Sprintf(format, args...))
}

// connOf returns the client connection behind a handler's writer: go-socks5 passes the
// net.Conn given to ServeConn, which is always a *frontConn here.
func connOf(w io.Writer) (*frontConn, error) {
	fc, ok := w.(*frontConn)
	if !ok {
		return nil, fmt.Errorf("socks5: handler got a %T, not the client connection", w)
	}
	return fc, nil
}

// socksTarget is the destination as the client gave it: a name stays a name.
func socksTarget(a *statute.AddrSpec) string {
	if a.FQDN != "" {
		return net.JoinHostPort(a.FQDN, strconv.Itoa(a.Port))
	}
	return net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
}

func (s *Server) socksConnect(_ context.Context, w io.Writer, req *socks5.Request) error {
	fc, err := connOf(w)
	if err != nil {
		_ = socks5.SendReply(w, statute.RepServerFailure, nil)
		return err
	}
	target := socksTarget(req.RawDestAddr)
	if req.RawDestAddr.FQDN == "" && req.RawDestAddr.IP == nil {
		// An empty name: nothing to dial, and "<nil>" must not reach a resolver.
		s.log.Info("socks5: connect without a destination", clientAttr(fc))
		return socks5.SendReply(w, statute.RepAddrTypeNotSupported, nil)
	}
	dest, err := s.dial(fc.ctx, "tcp", target)
	if err != nil {
		code := socksReply(err)
		s.log.Info("socks5: connect failed", clientAttr(fc), "target", target,
			"reply", fmt.Sprintf("%#02x", code), "err", err)
		if err := socks5.SendReply(w, code, nil); err != nil {
			return fmt.Errorf("socks5: sending reply for %s: %w", target, err)
		}
		return nil
	}
	// The library turns any bind address that isn't a *net.TCPAddr (a tunnel stream has
	// none) into "address type not supported", so hand it one.
	if err := socks5.SendReply(w, statute.RepSuccess, tcpAddrOf(dest.LocalAddr())); err != nil {
		_ = dest.Close()
		return fmt.Errorf("socks5: sending reply for %s: %w", target, err)
	}
	_ = fc.SetDeadline(time.Time{})
	splice(fc.ctx, fc, req.Reader, dest)
	return nil
}

func tcpAddrOf(a net.Addr) *net.TCPAddr {
	if t, ok := a.(*net.TCPAddr); ok && t != nil {
		return t
	}
	return &net.TCPAddr{IP: net.IPv4zero}
}

// socksReply maps a dial error to a SOCKS5 reply code (RFC 1928 §6). The code is all a
// SOCKS client sees, so the kinds a user must tell apart get distinct codes:
//
//	refused      0x05 connection refused
//	no such host 0x04 host unreachable
//	unreachable  0x03 network unreachable
//	timeout      0x06 TTL expired: the only code left that means "gave up waiting"
//	             (Tor uses it for timeouts too); 0x04 would look like "no such host"
//	tunnel down  0x01 general failure; so is any other failure
//	a loop       0x02 not allowed by ruleset
//	forbidden    0x02 not allowed by ruleset: tp's dial policy refused the destination
func socksReply(err error) uint8 {
	if _, ok := errors.AsType[*loopError](err); ok {
		return statute.RepRuleFailure
	}
	switch remote.KindOf(err) {
	case remote.Refused:
		return statute.RepConnectionRefused
	case remote.NoSuchHost:
		return statute.RepHostUnreachable
	case remote.Unreachable:
		return statute.RepNetworkUnreachable
	case remote.Timeout:
		return statute.RepTTLExpired
	case remote.Forbidden:
		return statute.RepRuleFailure
	default:
		return statute.RepServerFailure
	}
}
