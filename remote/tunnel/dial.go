package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Open runs the client's dial phase on a new stream: it sends the Dial frame and waits for
// the manager's DialResult. A refusal comes back as a *remote.Error of the matching kind.
// end must end the stream (cancel its context). On success the stream is a Conn.
func Open(ctx context.Context, s Stream, end func(), d *tunnelpb.Dial) (*Conn, error) {
	if err := ValidateDial(d); err != nil {
		end()
		return nil, err
	}
	return OpenFlow(ctx, s, end, d)
}

// OpenFlow is Open for the streams of intercepts, whose Dial names a port or a flow rather
// than host:port.
func OpenFlow(ctx context.Context, s Stream, end func(), d *tunnelpb.Dial) (*Conn, error) {
	if err := s.Send(&tunnelpb.Frame{Kind: &tunnelpb.Frame_Dial{Dial: d}}); err != nil {
		end()
		return nil, streamError(err)
	}
	f, err := s.Recv()
	if err != nil {
		end()
		if ctx.Err() != nil {
			return nil, &remote.Error{Kind: remote.Timeout, Msg: fmt.Sprintf("dial %s through the tunnel", d.GetAddress()), Err: ctx.Err()}
		}
		return nil, streamError(err)
	}
	res := f.GetDialResult()
	if res == nil {
		end()
		return nil, fmt.Errorf("tunnel: manager answered a dial with %T, not a result", f.GetKind())
	}
	if err := ResultError(res); err != nil {
		end()
		return nil, err
	}
	packet := d.GetNetwork() == "udp"
	return NewConn(s, end, packet, Addr{Net: d.GetNetwork(), Address: "tunnel"}, Addr{Net: d.GetNetwork(), Address: d.GetAddress()}), nil
}

// OpenEarly returns a Conn whose Dial frame goes out with its first Write (or before its
// first Read), carrying those bytes: the dial costs no round trip of its own. A refusal
// comes back as the *remote.Error of the first Read. end must end the stream.
func OpenEarly(s Stream, end func(), d *tunnelpb.Dial) (*Conn, error) {
	if err := ValidateDial(d); err != nil {
		end()
		return nil, err
	}
	c := newConn(s, end, d.GetNetwork() == "udp", Addr{Net: d.GetNetwork(), Address: "tunnel"}, Addr{Net: d.GetNetwork(), Address: d.GetAddress()})
	c.dial = d
	return c, nil
}

// Accept runs the manager's side of the dial phase: it reads the Dial frame and checks it.
func Accept(s Stream) (*tunnelpb.Dial, error) {
	d, err := First(s)
	if err != nil {
		return nil, err
	}
	return d, ValidateDial(d)
}

// First reads a stream's first frame, which must be a Dial; its address is left to the
// caller (an intercepted flow names a port or a flow, not host:port).
func First(s Stream) (*tunnelpb.Dial, error) {
	f, err := s.Recv()
	if err != nil {
		return nil, streamError(err)
	}
	d := f.GetDial()
	if d == nil {
		return nil, fmt.Errorf("tunnel: a stream must start with a dial, not %T", f.GetKind())
	}
	if len(d.GetAddress()) > 253 || len(d.GetData()) > MaxDatagram {
		return nil, fmt.Errorf("tunnel: dial of %d address bytes and %d data bytes is too big", len(d.GetAddress()), len(d.GetData()))
	}
	return d, nil
}

// Relay passes frames between two streams whose dial phases are over (an agent's flow and
// the client's Accept), each way, until either ends; frames, half-close included, pass
// unchanged. It returns the first end's error (nil for a clean end).
func Relay(a, b Stream) error {
	errc := make(chan error, 2)
	pump := func(src, dst Stream) {
		for {
			f, err := src.Recv()
			if err != nil {
				errc <- streamEnd(err)
				return
			}
			if err := dst.Send(f); err != nil {
				errc <- streamEnd(err)
				return
			}
		}
	}
	go pump(a, b)
	go pump(b, a)
	return <-errc
}

func streamEnd(err error) error {
	if err = streamError(err); errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Answer sends the DialResult for a dial that failed with err, or succeeded (err nil) to
// the address remote.
func Answer(s Stream, err error, remoteAddr string) error {
	res := &tunnelpb.DialResult{Code: CodeOf(err), RemoteAddr: remoteAddr}
	if err != nil {
		res.Message = err.Error()
	}
	if serr := s.Send(&tunnelpb.Frame{Kind: &tunnelpb.Frame_DialResult{DialResult: res}}); serr != nil {
		return streamError(serr)
	}
	return nil
}

// ValidateDial rejects what no honest client sends: the manager dials only what passes.
func ValidateDial(d *tunnelpb.Dial) error {
	if n := d.GetNetwork(); n != "tcp" && n != "udp" {
		return fmt.Errorf("tunnel: dial network %q: want tcp or udp", n)
	}
	host, port, err := net.SplitHostPort(d.GetAddress())
	if err != nil {
		return fmt.Errorf("tunnel: dial address %q: %w", d.GetAddress(), err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("tunnel: dial address %q: port must be 1-65535", d.GetAddress())
	}
	if host == "" || len(host) > 253 || strings.ContainsAny(host, " \t\r\n/\\") {
		return fmt.Errorf("tunnel: dial address %q: bad host", d.GetAddress())
	}
	if len(d.GetData()) > MaxDatagram {
		return fmt.Errorf("tunnel: dial carries %d bytes of data; at most %d", len(d.GetData()), MaxDatagram)
	}
	if ns := d.GetNamespace(); len(ns) > 63 || strings.ContainsAny(ns, " ./\\") {
		return fmt.Errorf("tunnel: dial namespace %q is not a namespace name", ns)
	}
	return nil
}

var codeKinds = map[tunnelpb.Code]remote.Kind{
	tunnelpb.Code_CODE_REFUSED:      remote.Refused,
	tunnelpb.Code_CODE_NO_SUCH_HOST: remote.NoSuchHost,
	tunnelpb.Code_CODE_UNREACHABLE:  remote.Unreachable,
	tunnelpb.Code_CODE_TIMEOUT:      remote.Timeout,
	tunnelpb.Code_CODE_FAILED:       remote.Failed,
	tunnelpb.Code_CODE_FORBIDDEN:    remote.Forbidden,
}

// ResultError is the error a DialResult reports, nil for CODE_OK.
func ResultError(r *tunnelpb.DialResult) error {
	if r.GetCode() == tunnelpb.Code_CODE_OK {
		return nil
	}
	kind, ok := codeKinds[r.GetCode()]
	if !ok {
		kind = remote.Failed
	}
	msg := r.GetMessage()
	if msg == "" {
		msg = kind.String()
	}
	return &remote.Error{Kind: kind, Msg: msg}
}

// CodeOf is the wire code for a dial error (CODE_OK for nil).
func CodeOf(err error) tunnelpb.Code {
	if err == nil {
		return tunnelpb.Code_CODE_OK
	}
	k := remote.KindOf(err)
	for code, kind := range codeKinds {
		if kind == k && code != tunnelpb.Code_CODE_FAILED {
			return code
		}
	}
	return tunnelpb.Code_CODE_FAILED
}

// Addr names one end of a tunnel flow.
type Addr struct{ Net, Address string }

func (a Addr) Network() string { return a.Net }
func (a Addr) String() string  { return a.Address }
