// Package remote is the boundary between tp's local front ends (SOCKS5, HTTP proxy, DNS shim,
// netstack) and the tunnel to the cluster. It is stdlib only: front ends see these
// interfaces and error kinds, never Kubernetes or gRPC.
package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Dialer opens connections. For the tunnel, address is host:port where host may be an
// unresolved cluster name (web-app, web-app.other-ns, ...) that is resolved cluster-side,
// as a pod in the session's namespace would resolve it. Errors are *Error where the cause
// is known, so each front end can tell the user which of its failures happened.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// DialFunc adapts a function to Dialer.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// DialContext calls f.
func (f DialFunc) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return f(ctx, network, address)
}

// Resolver answers questions about cluster names, as a pod in the session's namespace would
// get them answered (its search path applied), and about nothing else: a name outside the
// cluster is NoSuchHost, never resolved upstream.
type Resolver interface {
	// LookupHost returns the addresses of a cluster name.
	LookupHost(ctx context.Context, host string) ([]netip.Addr, error)
	// Query asks the cluster's DNS a question (qtype is a DNS type: 1 A, 28 AAAA, 33 SRV,
	// 12 PTR, ...) and returns the response in DNS wire format. The response's question and
	// answers carry the name as asked; the cluster's canonical name comes first as a CNAME
	// when it differs.
	Query(ctx context.Context, name string, qtype uint16) ([]byte, error)
}

// Kind says what went wrong with a remote operation, in terms a user can act on.
type Kind int

const (
	// Failed is any other failure.
	Failed Kind = iota
	// Refused: the destination exists but nothing listens on the port.
	Refused
	// NoSuchHost: the cluster has no such name.
	NoSuchHost
	// Unreachable: no route to the address (e.g. a pod IP that no pod has).
	Unreachable
	// Timeout: the destination did not answer in time.
	Timeout
	// TunnelDown: the tunnel to the cluster is not up (it may be reconnecting).
	TunnelDown
	// Forbidden: tp's dial policy does not let the manager dial the destination (outside
	// the cluster's ranges and names, or never dialed: link-local, loopback).
	Forbidden
)

var kindNames = map[Kind]string{
	Failed: "failed", Refused: "connection refused", NoSuchHost: "no such host",
	Unreachable: "unreachable", Timeout: "timed out", TunnelDown: "tunnel down",
	Forbidden: "not allowed by tp's dial policy",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is a remote failure of a known kind. Msg is the full user-facing text, e.g.
// `no service "web-ap" in namespace "default"`.
type Error struct {
	Kind Kind
	Msg  string
	Err  error // the underlying error, if any
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	if e.Err != nil {
		return e.Kind.String() + ": " + e.Err.Error()
	}
	return e.Kind.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, &Error{Kind: k}) match any *Error of kind k.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Msg == "" && t.Err == nil && t.Kind == e.Kind
}

// Sentinels for errors.Is.
var (
	ErrRefused     = &Error{Kind: Refused}
	ErrNoSuchHost  = &Error{Kind: NoSuchHost}
	ErrUnreachable = &Error{Kind: Unreachable}
	ErrTimeout     = &Error{Kind: Timeout}
	ErrTunnelDown  = &Error{Kind: TunnelDown}
	ErrForbidden   = &Error{Kind: Forbidden}
)

// KindOf returns the kind of err: that of the first *Error in its chain, Timeout for
// deadline errors, Failed otherwise.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return Timeout
	}
	return Failed
}

// Errorf makes an *Error of kind k with a formatted message.
func Errorf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// NoSuchHostError is the error for a name the cluster does not know, worded as the user would
// put it: web-ap in namespace default is `no service "web-ap" in namespace "default"`.
func NoSuchHostError(name, namespace string) error {
	labels := strings.Split(strings.TrimSuffix(name, "."), ".")
	var msg string
	switch {
	case len(labels) == 1 && namespace != "":
		msg = fmt.Sprintf("no service %q in namespace %q", labels[0], namespace)
	case len(labels) == 2, len(labels) == 3 && labels[2] == "svc":
		msg = fmt.Sprintf("no service %q in namespace %q", labels[0], labels[1])
	default:
		msg = fmt.Sprintf("no such host %q in the cluster", name)
	}
	return &Error{Kind: NoSuchHost, Msg: msg}
}

type earlyDataKey struct{}

// WithEarlyData marks a dial whose caller can take the dial's failure from the connection's
// first Read, as an HTTP client can (it writes its request, then reads the answer). A
// tunnel then sends the first bytes together with the dial and saves a round trip; a
// refusal arrives as the *Error of the first Read. SOCKS and CONNECT, which must answer
// before any data, dial without it.
func WithEarlyData(ctx context.Context) context.Context {
	return context.WithValue(ctx, earlyDataKey{}, true)
}

// EarlyData reports whether ctx allows an early-data dial.
func EarlyData(ctx context.Context) bool {
	v, _ := ctx.Value(earlyDataKey{}).(bool)
	return v
}
