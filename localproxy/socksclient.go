package localproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/things-go/go-socks5/statute"

	"github.com/tpdev/tp/remote"
)

// SOCKSDialer dials through a SOCKS5 proxy (tp's own port): CONNECT for TCP, UDP ASSOCIATE
// for UDP. Names are sent unresolved (ATYP 3), so the proxy's side (the cluster, for
// cluster names) resolves them; IPs are sent as IPv4 or IPv6 addresses.
//
// Failures are *remote.Error: the proxy's reply code becomes the kind tp's own server
// derived it from (0x05 Refused, 0x04 NoSuchHost, 0x03 Unreachable, 0x06 Timeout, anything
// else Failed), and a proxy that isn't listening is TunnelDown.
//
// Only one method is offered: "no authentication", or username/password when Credentials
// are set. The greeting, the credentials and the request go out in one write (tp's server
// reads them buffered), so a dial costs one round trip to the proxy after the TCP
// handshake.
type SOCKSDialer struct {
	// Proxy is the host:port of the proxy.
	Proxy string
	// Credentials, when set, are given with username/password authentication (RFC 1929),
	// for a tp proxy that asks for them (Config.Credentials).
	Credentials *Credentials
	// Dial reaches the proxy: network "tcp" for the proxy connection, "udp" for its UDP
	// relay. nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DialContext connects to address (host:port) through the proxy. ctx bounds the whole
// dial, handshake included; once DialContext returns, ctx no longer matters.
//
// For "tcp" (also tcp4, tcp6) the result is the proxy connection itself after the
// handshake (a *net.TCPConn with the default Dial, so CloseWrite half-closes it); its
// RemoteAddr is the proxy's.
//
// For "udp" (also udp4, udp6) the result is one association: each Write is one datagram
// to address, each Read one datagram's payload from it (truncated to the buffer, as a UDP
// socket does). Close ends the association. If the proxy ends it (the control connection
// closes), Reads and Writes fail with a TunnelDown error.
func (d *SOCKSDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var cmd byte
	switch network {
	case "tcp", "tcp4", "tcp6":
		cmd = statute.CommandConnect
	case "udp", "udp4", "udp6":
		cmd = statute.CommandAssociate
	default:
		return nil, &remote.Error{Kind: remote.Failed,
			Msg: fmt.Sprintf("dialing %s via tp's proxy %s: network %q not supported (want tcp or udp)", address, d.Proxy, network)}
	}
	dst, err := parseSOCKSTarget(address)
	if err != nil {
		return nil, &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("dialing %q via tp's proxy %s: %v", address, d.Proxy, err)}
	}
	if d.Credentials != nil {
		if err := d.Credentials.Validate(); err != nil {
			return nil, &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("dialing %s via tp's proxy %s: proxy credentials: %v", address, d.Proxy, err)}
		}
	}
	if cmd == statute.CommandConnect {
		return d.connect(ctx, dst)
	}
	return d.associate(ctx, network, dst)
}

func (d *SOCKSDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.Dial != nil {
		return d.Dial(ctx, network, addr)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

// socksTargetAddr is a destination as SOCKS5 encodes it.
type socksTargetAddr struct {
	address string     // as the caller gave it
	ip      netip.Addr // valid for an IP target (unmapped, no zone)
	name    string     // set for a name target
	port    uint16
}

func parseSOCKSTarget(address string) (socksTargetAddr, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return socksTargetAddr{}, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return socksTargetAddr{}, fmt.Errorf("bad port %q", portStr)
	}
	t := socksTargetAddr{address: address, port: uint16(port)}
	if ip, err := netip.ParseAddr(host); err == nil {
		t.ip = ip.Unmap().WithZone("")
		return t, nil
	}
	switch {
	case host == "":
		return socksTargetAddr{}, errors.New("no host")
	case len(host) > 255:
		return socksTargetAddr{}, fmt.Errorf("host name is %d bytes long; SOCKS5 allows 255", len(host))
	}
	t.name = host
	return t, nil
}

// appendSOCKS appends ATYP, DST.ADDR and DST.PORT (RFC 1928 §4, §7).
func (t socksTargetAddr) appendSOCKS(b []byte) []byte {
	switch {
	case t.name != "":
		b = append(b, statute.ATYPDomain, byte(len(t.name)))
		b = append(b, t.name...)
	case t.ip.Is4():
		a := t.ip.As4()
		b = append(append(b, statute.ATYPIPv4), a[:]...)
	default:
		a := t.ip.As16()
		b = append(append(b, statute.ATYPIPv6), a[:]...)
	}
	return binary.BigEndian.AppendUint16(b, t.port)
}

// is reports whether host:port, as a SOCKS header named it, is t.
func (t socksTargetAddr) is(hostport string) bool {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil || portStr != strconv.Itoa(int(t.port)) {
		return false
	}
	if t.name != "" {
		return strings.EqualFold(host, t.name)
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap() == t.ip
}

func (t socksTargetAddr) netAddr(network string) net.Addr {
	if t.name != "" {
		return socksNameAddr{network: network, address: net.JoinHostPort(t.name, strconv.Itoa(int(t.port)))}
	}
	return &net.UDPAddr{IP: t.ip.AsSlice(), Port: int(t.port)}
}

// socksNameAddr is a destination given by name, as net.Addr.
type socksNameAddr struct{ network, address string }

func (a socksNameAddr) Network() string { return a.network }
func (a socksNameAddr) String() string  { return a.address }

// handshake dials the proxy and runs greeting and request for cmd to t, all within ctx.
// It returns the proxy connection, deadline cleared, and the reply's bound address.
func (d *SOCKSDialer) handshake(ctx context.Context, cmd byte, t socksTargetAddr, req []byte) (net.Conn, string, error) {
	if d.Proxy == "" {
		return nil, "", &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("dialing %s via tp's proxy: no proxy address", t.address)}
	}
	conn, err := d.dial(ctx, "tcp", d.Proxy)
	if err != nil {
		return nil, "", d.proxyDialError(ctx, t, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	bound, err := d.exchange(conn, cmd, t, req)
	if !stop() {
		// ctx ended: the connection is closed or about to be, whatever the exchange said.
		_ = conn.Close()
		return nil, "", d.handshakeError(ctx, t, ctx.Err())
	}
	if err != nil {
		_ = conn.Close()
		if _, ok := errors.AsType[*remote.Error](err); ok {
			return nil, "", err
		}
		return nil, "", d.handshakeError(ctx, t, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, bound, nil
}

// exchange writes the greeting and the request together, then reads both replies. It
// reads exactly the reply's bytes, so whatever the destination sends next stays unread.
func (d *SOCKSDialer) exchange(conn net.Conn, cmd byte, t socksTargetAddr, req []byte) (string, error) {
	if _, err := conn.Write(req); err != nil {
		return "", err
	}
	var b [5 + 255 + 2]byte
	if _, err := io.ReadFull(conn, b[:2]); err != nil {
		return "", err
	}
	if b[0] != statute.VersionSocks5 {
		return "", &remote.Error{Kind: remote.Failed,
			Msg: fmt.Sprintf("dialing %s: %s does not speak SOCKS5 (its first byte was %#02x)", t.address, d.Proxy, b[0])}
	}
	if _, err := d.authenticate(conn, t, b[1]); err != nil {
		return "", err
	}
	// VER REP RSV ATYP and the first byte of BND.ADDR, the fewest any reply has.
	n, err := io.ReadFull(conn, b[:5])
	if n >= 2 && b[0] == statute.VersionSocks5 && b[1] != statute.RepSuccess {
		return "", d.replyError(b[1], cmd, t)
	}
	if err != nil {
		return "", err
	}
	if b[0] != statute.VersionSocks5 {
		return "", &remote.Error{Kind: remote.Failed,
			Msg: fmt.Sprintf("dialing %s: tp's proxy %s sent a reply of version %#02x, not SOCKS5", t.address, d.Proxy, b[0])}
	}
	var host string
	var rest int
	switch b[3] {
	case statute.ATYPIPv4:
		rest = 4 - 1 + 2
	case statute.ATYPIPv6:
		rest = 16 - 1 + 2
	case statute.ATYPDomain:
		rest = int(b[4]) + 2
	default:
		return "", &remote.Error{Kind: remote.Failed,
			Msg: fmt.Sprintf("dialing %s: tp's proxy %s replied with unknown address type %#02x", t.address, d.Proxy, b[3])}
	}
	if _, err := io.ReadFull(conn, b[5:5+rest]); err != nil {
		return "", err
	}
	end := 5 + rest
	switch b[3] {
	case statute.ATYPIPv4:
		host = netip.AddrFrom4([4]byte(b[4:8])).String()
	case statute.ATYPIPv6:
		host = netip.AddrFrom16([16]byte(b[4:20])).Unmap().String()
	case statute.ATYPDomain:
		host = string(b[5 : end-2])
	}
	return net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(b[end-2:end])))), nil
}

// authenticate checks the method the proxy chose and, for username/password, reads the
// verdict on the credentials sent with the greeting; refused says the proxy refused them.
func (d *SOCKSDialer) authenticate(conn net.Conn, t socksTargetAddr, method byte) (refused bool, err error) {
	switch {
	case d.Credentials == nil && method != statute.MethodNoAuth:
		return false, &remote.Error{Kind: remote.Failed,
			Msg: fmt.Sprintf("dialing %s: the SOCKS5 proxy at %s wants authentication (method %#02x) and no proxy credentials were given", t.address, d.Proxy, method)}
	case d.Credentials == nil:
		return false, nil
	case method != statute.MethodUserPassAuth:
		return false, &remote.Error{Kind: remote.Failed,
			Msg: fmt.Sprintf("dialing %s: the SOCKS5 proxy at %s does not take username/password authentication (it chose method %#02x)", t.address, d.Proxy, method)}
	}
	var status [2]byte
	if _, err := io.ReadFull(conn, status[:]); err != nil {
		return false, err
	}
	if status[1] != statute.AuthSuccess {
		return true, &remote.Error{Kind: remote.Failed,
			Msg: fmt.Sprintf("dialing %s: the SOCKS5 proxy at %s refused the proxy credentials: wrong user or password", t.address, d.Proxy)}
	}
	return false, nil
}

// greetingBytes is the greeting: one method, no authentication or username/password
// followed by the credentials.
func (d *SOCKSDialer) greetingBytes() []byte {
	b := []byte{statute.VersionSocks5, 1, statute.MethodNoAuth}
	if c := d.Credentials; c != nil {
		b = []byte{statute.VersionSocks5, 1, statute.MethodUserPassAuth, statute.UserPassAuthVersion, byte(len(c.User))}
		b = append(append(b, c.User...), byte(len(c.Password)))
		b = append(b, c.Password...)
	}
	return b
}

// requestBytes is the greeting and the request for cmd to t.
func (d *SOCKSDialer) requestBytes(cmd byte, t socksTargetAddr) []byte {
	return t.appendSOCKS(append(d.greetingBytes(), statute.VersionSocks5, cmd, 0))
}

// ErrCredentialsRefused marks a proxy's refusal of the credentials given (errors.Is), in
// Authenticate's errors.
var ErrCredentialsRefused = errors.New("proxy credentials refused")

// Authenticate asks the proxy whether it takes the dialer's credentials (or none): a
// greeting and its verdict, no request. A program handed wrong credentials would only meet
// a refusal on its every connection; this says so once, before it runs.
func (d *SOCKSDialer) Authenticate(ctx context.Context) error {
	t := socksTargetAddr{address: d.Proxy}
	if d.Credentials != nil {
		if err := d.Credentials.Validate(); err != nil {
			return &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("tp's proxy %s: proxy credentials: %v", d.Proxy, err)}
		}
	}
	conn, err := d.dial(ctx, "tcp", d.Proxy)
	if err != nil {
		return d.proxyDialError(ctx, t, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if _, err := conn.Write(d.greetingBytes()); err != nil {
		return d.handshakeError(ctx, t, err)
	}
	var b [2]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return d.handshakeError(ctx, t, err)
	}
	if b[0] != statute.VersionSocks5 {
		return &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("%s does not speak SOCKS5 (its first byte was %#02x)", d.Proxy, b[0])}
	}
	refused, err := d.authenticate(conn, t, b[1])
	switch e, ok := errors.AsType[*remote.Error](err); {
	case refused:
		return &remote.Error{Kind: e.Kind, Msg: e.Msg, Err: ErrCredentialsRefused}
	case ok:
		return err
	case err != nil:
		return d.handshakeError(ctx, t, err)
	}
	return nil
}

func (d *SOCKSDialer) connect(ctx context.Context, t socksTargetAddr) (net.Conn, error) {
	conn, _, err := d.handshake(ctx, statute.CommandConnect, t, d.requestBytes(statute.CommandConnect, t))
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// proxyDialError explains a failure to reach the proxy at all.
func (d *SOCKSDialer) proxyDialError(ctx context.Context, t socksTargetAddr, err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return &remote.Error{Kind: remote.TunnelDown,
			Msg: fmt.Sprintf("dialing %s: tp's proxy at %s is not running (is `tp connect` running?)", t.address, d.Proxy)}
	case ctx.Err() != nil:
		return d.handshakeError(ctx, t, err)
	}
	if _, ok := errors.AsType[*remote.Error](err); ok {
		return err
	}
	if remote.KindOf(err) == remote.Timeout {
		return &remote.Error{Kind: remote.Timeout,
			Msg: fmt.Sprintf("dialing %s: no answer from tp's proxy at %s", t.address, d.Proxy), Err: err}
	}
	return &remote.Error{Kind: remote.Failed,
		Msg: fmt.Sprintf("dialing %s: reaching tp's proxy at %s", t.address, d.Proxy), Err: err}
}

// handshakeError explains an I/O failure (or ctx ending) during the handshake.
func (d *SOCKSDialer) handshakeError(ctx context.Context, t socksTargetAddr, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded), remote.KindOf(err) == remote.Timeout:
		// The connection's deadline is ctx's, and may fire a moment before ctx is done.
		if _, ok := ctx.Deadline(); ok || ctx.Err() != nil {
			err = context.DeadlineExceeded
		}
		return &remote.Error{Kind: remote.Timeout,
			Msg: fmt.Sprintf("dialing %s: no answer from tp's proxy at %s in time", t.address, d.Proxy), Err: err}
	case ctx.Err() != nil:
		return &remote.Error{Kind: remote.Failed,
			Msg: fmt.Sprintf("dialing %s via tp's proxy %s", t.address, d.Proxy), Err: ctx.Err()}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return &remote.Error{Kind: remote.Failed,
			Msg: fmt.Sprintf("dialing %s: tp's proxy at %s closed the connection during the SOCKS5 handshake", t.address, d.Proxy), Err: err}
	}
	return &remote.Error{Kind: remote.Failed,
		Msg: fmt.Sprintf("dialing %s: talking to tp's proxy at %s", t.address, d.Proxy), Err: err}
}

// replyError turns a SOCKS5 failure reply into the remote.Error tp's server derived it
// from (see socksReply).
func (d *SOCKSDialer) replyError(code, cmd byte, t socksTargetAddr) error {
	via := "via tp's proxy " + d.Proxy
	what := "CONNECT"
	if cmd == statute.CommandAssociate {
		what = "UDP ASSOCIATE"
	}
	var k remote.Kind
	var msg string
	switch code {
	case statute.RepConnectionRefused:
		k, msg = remote.Refused, fmt.Sprintf("connection refused by %s (%s)", t.address, via)
	case statute.RepHostUnreachable:
		k, msg = remote.NoSuchHost, fmt.Sprintf("no such host %s (%s: host unreachable)", t.address, via)
	case statute.RepNetworkUnreachable:
		k, msg = remote.Unreachable, fmt.Sprintf("no route to %s (%s: network unreachable)", t.address, via)
	case statute.RepTTLExpired:
		k, msg = remote.Timeout, fmt.Sprintf("%s did not answer in time (%s: TTL expired)", t.address, via)
	case statute.RepServerFailure:
		k, msg = remote.Failed, fmt.Sprintf("dialing %s failed (%s: general failure; its log says why)", t.address, via)
	case statute.RepRuleFailure:
		k, msg = remote.Failed, fmt.Sprintf("dialing %s is not allowed (%s: not allowed by ruleset; tp's proxy says that for a loop back into itself)", t.address, via)
	case statute.RepCommandNotSupported:
		k, msg = remote.Failed, fmt.Sprintf("dialing %s: the proxy does not support %s (%s: command not supported)", t.address, what, via)
	case statute.RepAddrTypeNotSupported:
		k, msg = remote.Failed, fmt.Sprintf("dialing %s: the proxy does not support its address type (%s: address type not supported)", t.address, via)
	default:
		k, msg = remote.Failed, fmt.Sprintf("dialing %s failed (%s: reply code %#02x)", t.address, via, code)
	}
	return &remote.Error{Kind: k, Msg: msg}
}

// associate opens a UDP association for datagrams to t.
func (d *SOCKSDialer) associate(ctx context.Context, network string, t socksTargetAddr) (net.Conn, error) {
	// DST.ADDR is where our datagrams will come from; we don't know yet (the UDP socket is
	// dialed after the reply), so it is 0.0.0.0:0. tp's server then takes the first sender
	// from the control connection's host as the client.
	unspecified := socksTargetAddr{ip: netip.IPv4Unspecified()}
	req := d.requestBytes(statute.CommandAssociate, unspecified)
	ctrl, relay, err := d.handshake(ctx, statute.CommandAssociate, t, req)
	if err != nil {
		return nil, err
	}
	relay = d.relayAddr(ctrl, relay)
	pc, err := d.dial(ctx, udpNetwork(network, relay), relay)
	if err != nil {
		_ = ctrl.Close()
		if _, ok := errors.AsType[*remote.Error](err); ok {
			return nil, err
		}
		return nil, &remote.Error{Kind: remote.Failed,
			Msg: fmt.Sprintf("dialing %s: reaching the UDP relay %s of tp's proxy %s", t.address, relay, d.Proxy), Err: err}
	}
	c := &socksUDPConn{
		d:        d,
		target:   t,
		hdr:      t.appendSOCKS([]byte{0, 0, 0}),
		remote:   t.netAddr("udp"),
		pc:       pc,
		ctrl:     ctrl,
		ctrlDone: make(chan struct{}),
	}
	go c.watchControl()
	return c, nil
}

// relayAddr is the relay address of an ASSOCIATE reply, with an unspecified host replaced
// by the proxy's.
func (d *SOCKSDialer) relayAddr(ctrl net.Conn, relay string) string {
	host, port, err := net.SplitHostPort(relay)
	if err != nil {
		return relay
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsUnspecified() {
		return relay
	}
	if a, ok := ctrl.RemoteAddr().(*net.TCPAddr); ok && a != nil && len(a.IP) > 0 {
		return net.JoinHostPort(a.IP.String(), port)
	}
	if h, _, err := net.SplitHostPort(d.Proxy); err == nil {
		return net.JoinHostPort(h, port)
	}
	return relay
}

// udpNetwork keeps the caller's udp4/udp6 unless the relay's address says otherwise.
func udpNetwork(network, relay string) string {
	host, _, _ := net.SplitHostPort(relay)
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Unmap().Is4() {
			return "udp4"
		}
		return "udp6"
	}
	return network
}

// socksMaxDatagram bounds one datagram on the relay socket, header included.
const socksMaxDatagram = 64 << 10

var socksDatagramPool = sync.Pool{New: func() any { b := make([]byte, socksMaxDatagram); return &b }}

// socksUDPConn is one UDP association, carrying datagrams to and from one destination.
type socksUDPConn struct {
	d        *SOCKSDialer
	target   socksTargetAddr
	hdr      []byte // RSV FRAG ATYP DST.ADDR DST.PORT for target
	remote   net.Addr
	pc       net.Conn // to the relay
	ctrl     net.Conn // the association lives as long as this does
	ctrlDone chan struct{}

	mu     sync.Mutex
	closed bool  // by Close
	dead   error // set when the proxy ended the association
}

// watchControl waits for the control connection to end (the proxy sends nothing on it
// after its reply), and then ends the association: the relay socket is closed, so Reads
// and Writes fail with the reason.
func (c *socksUDPConn) watchControl() {
	defer close(c.ctrlDone)
	var b [64]byte
	for {
		if _, err := c.ctrl.Read(b[:]); err != nil {
			c.mu.Lock()
			if !c.closed {
				c.dead = &remote.Error{Kind: remote.TunnelDown,
					Msg: fmt.Sprintf("tp's proxy %s ended the UDP association for %s (its control connection closed)", c.d.Proxy, c.target.address),
					Err: err}
			}
			c.mu.Unlock()
			_ = c.pc.Close()
			return
		}
	}
}

// ioErr is err, or why the association ended if the proxy ended it.
func (c *socksUDPConn) ioErr(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead != nil && !c.closed {
		return c.dead
	}
	return err
}

// Read reads one datagram from the destination into p, without the SOCKS header.
// Datagrams naming another source, fragments, and malformed ones are skipped.
func (c *socksUDPConn) Read(p []byte) (int, error) {
	buf := p
	if len(p) < socksMaxDatagram {
		// A small p must still receive the whole datagram, header and all, to strip it.
		pb := socksDatagramPool.Get().(*[]byte)
		defer socksDatagramPool.Put(pb)
		buf = *pb
	}
	for {
		n, err := c.pc.Read(buf)
		if err != nil {
			return 0, c.ioErr(err)
		}
		target, hdrLen, err := parseUDPHeader(buf[:n])
		if err != nil || !c.target.is(target) {
			continue
		}
		return copy(p, buf[hdrLen:n]), nil
	}
}

// Write sends p as one datagram to the destination.
func (c *socksUDPConn) Write(p []byte) (int, error) {
	var b []byte
	if n := len(c.hdr) + len(p); n <= socksMaxDatagram {
		pb := socksDatagramPool.Get().(*[]byte)
		defer socksDatagramPool.Put(pb)
		b = (*pb)[:0]
	} else {
		b = make([]byte, 0, n)
	}
	b = append(append(b, c.hdr...), p...)
	if _, err := c.pc.Write(b); err != nil {
		return 0, c.ioErr(err)
	}
	return len(p), nil
}

// Close ends the association: it closes the relay socket and the control connection.
func (c *socksUDPConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return &net.OpError{Op: "close", Net: "udp", Source: c.LocalAddr(), Addr: c.remote, Err: net.ErrClosed}
	}
	c.closed = true
	dead := c.dead != nil
	c.mu.Unlock()
	err := c.pc.Close()
	_ = c.ctrl.Close()
	<-c.ctrlDone
	if dead || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// LocalAddr is the local address of the socket to the relay.
func (c *socksUDPConn) LocalAddr() net.Addr { return c.pc.LocalAddr() }

// RemoteAddr is the destination as dialed: a *net.UDPAddr for an IP, else a name.
func (c *socksUDPConn) RemoteAddr() net.Addr { return c.remote }

func (c *socksUDPConn) SetDeadline(t time.Time) error      { return c.pc.SetDeadline(t) }
func (c *socksUDPConn) SetReadDeadline(t time.Time) error  { return c.pc.SetReadDeadline(t) }
func (c *socksUDPConn) SetWriteDeadline(t time.Time) error { return c.pc.SetWriteDeadline(t) }
