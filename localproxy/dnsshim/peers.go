package dnsshim

import (
	"net"
	"runtime/debug"

	"github.com/miekg/dns"
)

// otherUser reports whether the Guard turns away a datagram from addr to pc. Only UDP
// sockets are checked: other kinds of PacketConn are tests'.
func (s *Server) otherUser(pc net.PacketConn, addr net.Addr) bool {
	a, ok := addr.(*net.UDPAddr)
	if !ok {
		return false
	}
	return s.peers.CheckDatagram(pc.LocalAddr(), a.AddrPort()) != nil
}

// refuse answers the wire query raw REFUSED (RFC 1035: "the name server refuses to
// perform the specified operation for policy reasons"), the rcode a stub shows as such;
// or returns nil, as answer does, when raw is malformed or not a query.
func (s *Server) refuse(raw []byte) (out []byte) {
	defer func() {
		if p := recover(); p != nil {
			s.stats.dropped.Add(1)
			s.log.Error("dns shim: panic refusing a query, dropped it", "panic", p, "stack", string(debug.Stack()))
			out = nil
		}
	}()
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil || req.Response {
		s.stats.dropped.Add(1)
		return nil
	}
	resp := newReply(req)
	resp.Rcode = dns.RcodeRefused
	out, err := resp.Pack()
	if err != nil {
		s.stats.dropped.Add(1)
		return nil
	}
	s.stats.refused.Add(1)
	return out
}
