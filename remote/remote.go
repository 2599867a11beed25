// Package remote is what both sides of tp's tunnel share, and the ground every other
// package stands on: the boundary between the laptop's front ends (SOCKS5, HTTP proxy, DNS
// shim, netstack) and the tunnel (Dialer, Resolver), and tp's one error taxonomy (Kind,
// Error), which every layer speaks and each edge maps once. It is stdlib only: front ends
// see these interfaces and kinds, never Kubernetes or gRPC.
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

// Kind says what went wrong, in terms a user can act on, and so who can fix it. It is tp's
// one error taxonomy: the tunnel, the front ends, install and intercept all speak it, and
// each edge maps it once (a SOCKS reply, an HTTP status, a DNS rcode, an exit code).
type Kind int

const (
	// Failed is any other failure: an answer tp does not know how to explain.
	Failed Kind = iota
	// Refused: the destination exists but nothing listens on the port.
	Refused
	// NoSuchHost: the cluster has no such name.
	NoSuchHost
	// Unreachable: no route to the address (e.g. a pod IP that no pod has), or the
	// Kubernetes API cannot be reached (kubeconfig, context, network, TLS).
	Unreachable
	// Timeout: the destination (or the cluster) did not get there in time.
	Timeout
	// TunnelDown: the tunnel to the cluster is not up (it may be reconnecting).
	TunnelDown
	// Forbidden: tp's dial policy does not let the manager dial the destination (outside
	// the cluster's ranges and names, or never dialed: link-local, loopback).
	Forbidden
	// Usage: what the user typed or chose is wrong (a flag, a name, a port, a missing
	// object where the command points).
	Usage
	// Access: the credentials are rejected, or RBAC does not grant what is needed.
	Access
	// Image: the manager image is not available to the cluster's nodes.
	Image
	// Crash: the manager starts and exits, or is killed.
	Crash
	// Cluster: the cluster refuses (admission, quota, a failed rollout, a terminating
	// namespace).
	Cluster
	// NotInstalled: there is no tp install where the command points.
	NotInstalled
)

var kindNames = map[Kind]string{
	Failed: "failed", Refused: "connection refused", NoSuchHost: "no such host",
	Unreachable: "unreachable", Timeout: "timed out", TunnelDown: "tunnel down",
	Forbidden: "not allowed by tp's dial policy", Usage: "bad input", Access: "access denied",
	Image: "image not available", Crash: "crashed", Cluster: "refused by the cluster",
	NotInstalled: "not installed",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// UserFault reports whether the user can fix the failure on their side: what they typed,
// their kubeconfig, their rights, the image they named. The other kinds point at the
// destination, the cluster or tp.
func (k Kind) UserFault() bool {
	switch k {
	case Usage, Unreachable, Access, Image, NotInstalled:
		return true
	}
	return false
}

// Error is a failure of a known kind, explained: what happened (Msg names the thing, e.g.
// `no service "web-ap" in namespace "default"`, and Err is the cause, shown after it), what
// to do (Hint), and evidence (Detail: pod status, events, log lines).
type Error struct {
	Kind   Kind
	Msg    string
	Hint   string
	Detail string
	Err    error
}

func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.Msg != "" && e.Err != nil:
		b.WriteString(e.Msg + ": " + e.Err.Error())
	case e.Msg != "":
		b.WriteString(e.Msg)
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	default:
		b.WriteString(e.Kind.String())
	}
	if e.Hint != "" {
		b.WriteString("; ")
		b.WriteString(e.Hint)
	}
	if d := strings.TrimRight(e.Detail, "\n"); d != "" {
		for line := range strings.SplitSeq(d, "\n") {
			b.WriteString("\n  ")
			b.WriteString(line)
		}
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, &Error{Kind: k}) match any *Error of kind k.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Msg == "" && t.Err == nil && t.Kind == e.Kind
}

// Sentinels for errors.Is.
var (
	ErrRefused      = &Error{Kind: Refused}
	ErrNoSuchHost   = &Error{Kind: NoSuchHost}
	ErrUnreachable  = &Error{Kind: Unreachable}
	ErrTimeout      = &Error{Kind: Timeout}
	ErrTunnelDown   = &Error{Kind: TunnelDown}
	ErrForbidden    = &Error{Kind: Forbidden}
	ErrUsage        = &Error{Kind: Usage}
	ErrNotInstalled = &Error{Kind: NotInstalled}
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

// Errorf makes an *Error of kind k with a formatted message; a %w verb keeps its cause.
func Errorf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Err: fmt.Errorf(format, args...)}
}

// Explain makes an *Error of kind k that says msg and what to do about it (hint).
func Explain(k Kind, msg, hint string) *Error {
	return &Error{Kind: k, Msg: msg, Hint: hint}
}

// UsageError marks err as the user's to fix by changing what they typed or chose.
func UsageError(err error) error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*Error](err); ok && e.Kind.UserFault() {
		return err
	}
	return &Error{Kind: Usage, Err: err}
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
