package dnsshim

import (
	"context"
	"fmt"
	"net/netip"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/tpdev/tp/remote"
)

// ednsSize is the UDP payload size the shim advertises and the most it sends over UDP,
// whatever a client offers: 1232 (DNS flag day 2020) fits any path without fragmentation,
// and anything larger costs the client only a TCP retry.
const ednsSize = 1232

// safeAnswer is answer for the serve loops. miekg/dns parses untrusted bytes; should a
// packet find a panic in it, that packet is dropped instead of the user's whole session.
// The fuzz test calls answer directly so that such panics still surface.
func (s *Server) safeAnswer(ctx context.Context, raw []byte, tcp bool) (out []byte) {
	defer func() {
		if p := recover(); p != nil {
			s.stats.dropped.Add(1)
			s.log.Error("dns shim: panic answering a query, dropped it", "panic", p, "stack", string(debug.Stack()))
			out = nil
		}
	}()
	return s.answer(ctx, raw, tcp)
}

// noteGarbage logs a malformed message, or counts it toward the next line when one was
// logged less than garbageEvery ago.
func (s *Server) noteGarbage(err error) {
	s.garbageMu.Lock()
	defer s.garbageMu.Unlock()
	if time.Since(s.garbageLast) < garbageEvery {
		s.garbageQuiet++
		return
	}
	s.log.Info("dns shim: dropped a malformed message", "error", err, "also_dropped_since_last_line", s.garbageQuiet)
	s.garbageLast, s.garbageQuiet = time.Now(), 0
}

// answer returns the wire response to the wire query raw, or nil when nothing must be sent:
// raw is malformed or is not a query. Over UDP the response fits the client's buffer.
func (s *Server) answer(ctx context.Context, raw []byte, tcp bool) []byte {
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil {
		s.stats.dropped.Add(1)
		s.noteGarbage(err)
		return nil
	}
	if req.Response {
		// Answering a response invites two servers to bounce packets off each other.
		s.stats.dropped.Add(1)
		s.log.Debug("dns shim: dropping a response sent to the shim", "id", req.Id)
		return nil
	}

	resp := s.respond(ctx, req)
	limit := dns.MaxMsgSize
	if !tcp {
		limit = udpLimit(req)
	}
	resp.Truncate(limit)
	if resp.Truncated {
		s.stats.truncated.Add(1)
	}
	out, err := resp.Pack()
	if err != nil {
		// Something copied from the cluster or upstream does not pack: say SERVFAIL
		// rather than leave the client waiting.
		s.log.Warn("dns shim: cannot pack answer", "question", questionString(req), "error", err)
		fail := newReply(req)
		fail.Rcode = dns.RcodeServerFailure
		if out, err = fail.Pack(); err != nil {
			return nil
		}
	}
	return out
}

// udpLimit is the largest response the client of req accepts over UDP.
func udpLimit(req *dns.Msg) int {
	opt := req.IsEdns0()
	if opt == nil {
		return dns.MinMsgSize
	}
	// RFC 6891 6.2.5: sizes below 512 are treated as 512.
	return min(max(int(opt.UDPSize()), dns.MinMsgSize), ednsSize)
}

// newReply starts the response to req: same ID, opcode and question, exactly as the client
// sent them (some stubs compare the question byte for byte, case included), and an OPT
// record when the client sent one.
func newReply(req *dns.Msg) *dns.Msg {
	resp := &dns.Msg{
		MsgHdr: dns.MsgHdr{
			Id:                 req.Id,
			Response:           true,
			Opcode:             req.Opcode,
			RecursionDesired:   req.RecursionDesired,
			RecursionAvailable: true,
			CheckingDisabled:   req.CheckingDisabled,
		},
		Compress: true,
		Question: slices.Clone(req.Question),
	}
	if opt := req.IsEdns0(); opt != nil {
		// A fresh OPT: Pack writes the extended rcode into it, and it must not carry the
		// client's options back.
		resp.SetEdns0(ednsSize, opt.Do())
	}
	return resp
}

// respond answers req, which is a well-formed message that is not a response.
func (s *Server) respond(ctx context.Context, req *dns.Msg) *dns.Msg {
	resp := newReply(req)
	reject := func(rcode int, why string) *dns.Msg {
		s.stats.rejected.Add(1)
		s.log.Debug("dns shim: rejecting query", "question", questionString(req), "rcode", dns.RcodeToString[rcode], "why", why)
		resp.Rcode = rcode
		return resp
	}

	opts := 0
	for _, rr := range req.Extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			opts++
		}
	}
	switch {
	case opts > 1:
		return reject(dns.RcodeFormatError, "more than one OPT record") // RFC 6891 6.1.1
	case opts == 1 && req.IsEdns0().Version() != 0:
		return reject(dns.RcodeBadVers, "unsupported EDNS version") // RFC 6891 6.1.3
	case req.Opcode != dns.OpcodeQuery:
		return reject(dns.RcodeNotImplemented, "opcode "+dns.OpcodeToString[req.Opcode])
	case len(req.Question) != 1:
		// RFC 9619: a query has exactly one question. Echoing several back could itself
		// overflow a 512-byte answer, so none are.
		resp.Question = nil
		return reject(dns.RcodeFormatError, strconv.Itoa(len(req.Question))+" questions")
	}

	q := req.Question[0]
	switch {
	case q.Qclass != dns.ClassINET:
		return reject(dns.RcodeNotImplemented, "class "+dns.Class(q.Qclass).String())
	case q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR || q.Qtype == dns.TypeMAILA || q.Qtype == dns.TypeMAILB:
		return reject(dns.RcodeNotImplemented, "type "+dns.Type(q.Qtype).String())
	case q.Qtype == dns.TypeOPT:
		return reject(dns.RcodeFormatError, "question of type OPT")
	}

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	switch {
	case isReverse(q.Name):
		// The cluster knows the names of its own addresses and nothing else; for those it
		// is the authority, even when it says NXDOMAIN, so the host resolver (which may see
		// an office network in the same private range) is never asked about them.
		if addr, ok := reverseAddr(q.Name); ok && s.routed(addr) {
			if !s.askCluster(ctx, q, resp) {
				s.nxdomain(q, resp, "cluster address without a name")
			}
			return resp
		}
	case q.Name == ".":
		// The root is nobody's cluster name.
	default:
		if s.askCluster(ctx, q, resp) {
			return resp
		}
	}
	s.askUpstream(ctx, req, q, resp)
	return resp
}

// askCluster fills resp with the cluster's answer to q and reports true, or reports false
// when the cluster has no such name, so that someone else may answer.
func (s *Server) askCluster(ctx context.Context, q dns.Question, resp *dns.Msg) bool {
	if s.cluster == nil {
		return false
	}
	// Without the dot the name is relative, so the cluster applies the namespace's search
	// path to it as a pod's resolver would: "web-app" finds web-app.<ns>.svc.cluster.local.
	name := strings.TrimSuffix(q.Name, ".")
	raw, err := s.cluster.Query(ctx, name, q.Qtype)
	if err != nil {
		kind := remote.KindOf(err)
		if kind == remote.NoSuchHost {
			return false
		}
		var text string
		code := dns.ExtendedErrorCodeNetworkError
		switch kind {
		case remote.TunnelDown:
			if !clusterShaped(q.Name) {
				// No cluster name looks like www.example.com: the rest of the world stays
				// reachable while the tunnel reconnects.
				s.log.Debug("dns shim: the tunnel is down; asking upstream", "question", q.String())
				return false
			}
			text = "tp: the tunnel to the cluster is down"
		case remote.Timeout:
			text = "tp: the cluster did not answer in time"
			code = dns.ExtendedErrorCodeNoReachableAuthority
		default:
			text = "tp: the cluster could not answer: " + err.Error()
		}
		s.fail(q, resp, code, text, err)
		return true
	}
	var cm dns.Msg
	if err := cm.Unpack(raw); err != nil {
		s.fail(q, resp, dns.ExtendedErrorCodeInvalidData, "tp: unreadable answer from the cluster",
			fmt.Errorf("unpack cluster answer for %s: %w", q.Name, err))
		return true
	}
	if cm.Rcode == dns.RcodeNameError {
		return false
	}
	// NOERROR with no answers (NODATA: an AAAA question about an IPv4-only service) is
	// the cluster knowing the name, and stays NODATA; asking upstream would only invite
	// a wrong answer from outside.
	copyAnswer(resp, &cm, q)
	if !s.setRcode(resp, cm.Rcode) {
		return true
	}
	capTTLs(resp.Answer, s.ttl)
	capTTLs(resp.Ns, s.ttl)
	capTTLs(resp.Extra, s.ttl)
	s.stats.cluster.Add(1)
	s.log.Debug("dns shim: answered from the cluster", "question", q.String(), "rcode", dns.RcodeToString[resp.Rcode], "answers", len(resp.Answer))
	return true
}

// clusterShaped says whether name could be a cluster's, so that only the cluster may
// answer it: a service (NAME, NAME.NAMESPACE, NAME.NAMESPACE.svc[.DOMAIN]), a pod
// (IP.NAMESPACE.pod.DOMAIN), a reverse name, or any name of two labels, which may be
// NAME.NAMESPACE, unless its last is one of the oldest generic TLDs (example.com: no
// namespace is named com). www.example.com is none of these. A headless pod's name asked
// short (web-0.web.shop) is not caught: it goes upstream while the tunnel is down.
func clusterShaped(name string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	labels := strings.Split(name, ".")
	switch {
	case isReverse(name+".") || slices.Contains(labels, "svc") || slices.Contains(labels, "pod"):
		return true
	case len(labels) == 2:
		return !slices.Contains(genericTLDs, labels[1])
	}
	return len(labels) < 2
}

// genericTLDs are the TLDs whose two-label names are taken for public ones while the
// tunnel is down.
var genericTLDs = []string{"com", "net", "org", "edu", "gov", "mil", "int"}

// askUpstream fills resp with the upstream resolver's answer to q, or NXDOMAIN without one.
func (s *Server) askUpstream(ctx context.Context, req *dns.Msg, q dns.Question, resp *dns.Msg) {
	if s.upstream == nil {
		s.nxdomain(q, resp, "not a cluster name, no upstream")
		return
	}
	// A query of our own rather than the client's bytes: a fresh ID, one question, and
	// none of the client's EDNS options; only its DNSSEC wishes travel on.
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	uq := &dns.Msg{
		MsgHdr: dns.MsgHdr{
			Id:                dns.Id(),
			RecursionDesired:  true,
			CheckingDisabled:  req.CheckingDisabled,
			AuthenticatedData: req.AuthenticatedData,
		},
		Question: []dns.Question{q},
	}
	uq.SetEdns0(ednsSize, do)
	wire, err := uq.Pack()
	if err != nil {
		s.fail(q, resp, dns.ExtendedErrorCodeOther, "tp: cannot ask the upstream resolver",
			fmt.Errorf("pack upstream query for %s: %w", q.Name, err))
		return
	}
	raw, err := s.upstream.Exchange(ctx, wire)
	if err != nil {
		s.fail(q, resp, dns.ExtendedErrorCodeNoReachableAuthority, "tp: the upstream resolver did not answer", err)
		return
	}
	var um dns.Msg
	if err := um.Unpack(raw); err != nil {
		s.fail(q, resp, dns.ExtendedErrorCodeInvalidData, "tp: unreadable answer from the upstream resolver",
			fmt.Errorf("unpack upstream answer for %s: %w", q.Name, err))
		return
	}
	if um.Id != uq.Id || !um.Response || len(um.Question) != 1 || !sameQuestion(um.Question[0], q) {
		s.fail(q, resp, dns.ExtendedErrorCodeInvalidData, "tp: mismatched answer from the upstream resolver",
			fmt.Errorf("upstream answered %q (id %d) to %q (id %d)", questionString(&um), um.Id, q.String(), uq.Id))
		return
	}
	copyAnswer(resp, &um, q)
	if !s.setRcode(resp, um.Rcode) {
		return
	}
	// RFC 6840 5.8: AD only for clients that asked for DNSSEC; the shim does not validate
	// and relays the host resolver's verdict.
	resp.AuthenticatedData = um.AuthenticatedData && (do || req.AuthenticatedData)
	// Positive upstream TTLs stay: outside names do not churn. Negative ones are capped,
	// because the root zone says "no such name" for a day and a cluster service deployed a
	// minute later must not stay hidden behind that.
	capSOA(resp.Ns, s.ttl)
	s.stats.upstream.Add(1)
	s.log.Debug("dns shim: answered from upstream", "question", q.String(), "rcode", dns.RcodeToString[resp.Rcode], "answers", len(resp.Answer))
}

// copyAnswer moves src's records and TC bit into resp. Owners that are the question's name
// get the client's spelling of it, which the cluster or upstream may not have kept.
func copyAnswer(resp, src *dns.Msg, q dns.Question) {
	// A source that could not fit its whole answer says so, and so must the shim; Truncate
	// keeps the bit.
	resp.Truncated = src.Truncated
	resp.Answer = src.Answer
	resp.Ns = src.Ns
	for _, rr := range src.Extra {
		// Their OPT describes their transport, not ours; ours is already in resp.
		if rr.Header().Rrtype != dns.TypeOPT {
			resp.Extra = append(resp.Extra, rr)
		}
	}
	for _, rr := range resp.Answer {
		if h := rr.Header(); h.Name != q.Name && strings.EqualFold(h.Name, q.Name) {
			h.Name = q.Name
		}
	}
}

// setRcode sets resp's rcode to the one a source gave, unless it needs EDNS the client did
// not send, in which case resp becomes a SERVFAIL and setRcode reports false.
func (s *Server) setRcode(resp *dns.Msg, rcode int) bool {
	if rcode > 0xF && resp.IsEdns0() == nil {
		resp.Answer, resp.Ns, resp.Extra = nil, nil, nil
		resp.Truncated = false
		resp.Rcode = dns.RcodeServerFailure
		s.stats.failures.Add(1)
		return false
	}
	resp.Rcode = rcode
	return true
}

// nxdomain answers that no one has the name.
func (s *Server) nxdomain(q dns.Question, resp *dns.Msg, why string) {
	resp.Rcode = dns.RcodeNameError
	s.stats.nxdomain.Add(1)
	s.log.Debug("dns shim: no such name", "question", q.String(), "why", why)
}

// fail answers SERVFAIL. Clients that sent EDNS also get an extended error (RFC 8914) with
// text, which `dig` shows, so a user can tell "tunnel down" from "no such service".
func (s *Server) fail(q dns.Question, resp *dns.Msg, code uint16, text string, err error) {
	resp.Rcode = dns.RcodeServerFailure
	resp.Answer, resp.Ns = nil, nil
	resp.Extra = slices.DeleteFunc(resp.Extra, func(rr dns.RR) bool { return rr.Header().Rrtype != dns.TypeOPT })
	if opt := resp.IsEdns0(); opt != nil {
		opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: code, ExtraText: text})
	}
	s.stats.failures.Add(1)
	s.log.Debug("dns shim: servfail", "question", q.String(), "why", text, "error", err)
}

// capTTLs lowers every TTL in rrs to at most ttl, including an SOA's negative-caching TTL.
func capTTLs(rrs []dns.RR, ttl uint32) {
	for _, rr := range rrs {
		h := rr.Header()
		if h.Rrtype == dns.TypeOPT {
			continue // its "TTL" is flags and the extended rcode
		}
		h.Ttl = min(h.Ttl, ttl)
		if soa, ok := rr.(*dns.SOA); ok {
			soa.Minttl = min(soa.Minttl, ttl)
		}
	}
}

// capSOA caps the SOA records of rrs, which set how long a negative answer is cached
// (RFC 2308: the smaller of the SOA's TTL and its minimum).
func capSOA(rrs []dns.RR, ttl uint32) {
	for _, rr := range rrs {
		if soa, ok := rr.(*dns.SOA); ok {
			soa.Hdr.Ttl = min(soa.Hdr.Ttl, ttl)
			soa.Minttl = min(soa.Minttl, ttl)
		}
	}
}

func sameQuestion(a, b dns.Question) bool {
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

func questionString(m *dns.Msg) string {
	if len(m.Question) == 0 {
		return "(none)"
	}
	return m.Question[0].String()
}

// routed reports whether addr is in one of the cluster's CIDRs.
func (s *Server) routed(addr netip.Addr) bool {
	if s.routes == nil {
		return false
	}
	addr = addr.Unmap()
	for _, p := range s.routes() {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func isReverse(name string) bool {
	return hasSuffixFold(name, ".in-addr.arpa.") || hasSuffixFold(name, ".ip6.arpa.")
}

// reverseAddr returns the address a reverse-lookup name stands for, and false for names
// that name no single address (a zone, a DNS-SD name, a typo).
func reverseAddr(name string) (netip.Addr, bool) {
	switch {
	case hasSuffixFold(name, ".in-addr.arpa."):
		labels := strings.Split(name[:len(name)-len(".in-addr.arpa.")], ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		slices.Reverse(labels)
		// ParseAddr refuses leading zeros and out-of-range octets, as it should.
		a, err := netip.ParseAddr(strings.Join(labels, "."))
		return a, err == nil && a.Is4()
	case hasSuffixFold(name, ".ip6.arpa."):
		labels := strings.Split(name[:len(name)-len(".ip6.arpa.")], ".")
		if len(labels) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, l := range labels {
			if len(l) != 1 {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(l, 16, 4)
			if err != nil {
				return netip.Addr{}, false
			}
			// Labels run from the lowest nibble up.
			pos := 31 - i
			if pos%2 == 0 {
				b[pos/2] |= byte(v) << 4
			} else {
				b[pos/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}
