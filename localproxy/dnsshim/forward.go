package dnsshim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Forwarder is an Upstream that asks a list of nameservers in turn, as the C library's stub
// resolver does: over UDP, again over TCP when the answer comes back truncated, and on to
// the next server when one fails or answers SERVFAIL, REFUSED or NOTIMP.
type Forwarder struct {
	servers []string // host:port
	timeout time.Duration
}

// NewForwarder returns a Forwarder to servers, each an IP address with an optional port
// ("10.0.0.2", "10.0.0.2:5353", "fe80::1%eth0", "[::1]:53"). timeout bounds each attempt on
// one server (default 2s); the ctx given to Exchange bounds them all.
func NewForwarder(servers []string, timeout time.Duration) (*Forwarder, error) {
	if len(servers) == 0 {
		return nil, errors.New("dns forwarder: no nameservers")
	}
	f := &Forwarder{timeout: timeout}
	if f.timeout <= 0 {
		f.timeout = 2 * time.Second
	}
	for _, s := range servers {
		addr, err := serverAddr(s)
		if err != nil {
			return nil, fmt.Errorf("dns forwarder: %w", err)
		}
		f.servers = append(f.servers, addr)
	}
	return f, nil
}

func serverAddr(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", fmt.Errorf("nameserver %q is not an IP address with an optional port", s)
	}
	return netip.AddrPortFrom(a, 53).String(), nil
}

// Servers returns the nameservers f asks, as host:port, in order.
func (f *Forwarder) Servers() []string { return append([]string(nil), f.servers...) }

// Exchange implements Upstream.
func (f *Forwarder) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	q := new(dns.Msg)
	if err := q.Unpack(query); err != nil {
		return nil, fmt.Errorf("dns forwarder: unpack query: %w", err)
	}
	var (
		errs     []error
		fallback *dns.Msg // a SERVFAIL-like answer, returned when no server does better
	)
	for _, server := range f.servers {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		r, err := f.exchange(ctx, q, server)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		switch r.Rcode {
		case dns.RcodeServerFailure, dns.RcodeRefused, dns.RcodeNotImplemented:
			if fallback == nil {
				fallback = r
			}
			errs = append(errs, fmt.Errorf("%s answered %s", server, dns.RcodeToString[r.Rcode]))
			continue
		}
		return packAnswer(r, server)
	}
	if fallback != nil {
		return packAnswer(fallback, "")
	}
	return nil, fmt.Errorf("dns forwarder: no answer to %s: %w", questionString(q), errors.Join(errs...))
}

// exchange asks one server, over UDP and then over TCP if the UDP answer was truncated.
func (f *Forwarder) exchange(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", Timeout: f.timeout}
	r, _, err := c.ExchangeContext(ctx, q, server)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, q, server)
	}
	if err != nil {
		return nil, fmt.Errorf("ask %s over %s: %w", server, c.Net, err)
	}
	return r, nil
}

func packAnswer(r *dns.Msg, server string) ([]byte, error) {
	out, err := r.Pack()
	if err != nil {
		return nil, fmt.Errorf("dns forwarder: repack answer from %s: %w", server, err)
	}
	return out, nil
}

// ReadResolvConf returns the nameservers of a resolv.conf file as host:port, ready for
// NewForwarder. `tp run` reads the host's file before it mounts its own over it.
func ReadResolvConf(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read resolv.conf: %w", err)
	}
	defer f.Close()
	servers, err := parseResolvConf(f)
	if err != nil {
		return nil, fmt.Errorf("read resolv.conf %s: %w", path, err)
	}
	if len(servers) == 0 {
		// The C library would fall back to 127.0.0.1 here; the shim may be listening there
		// itself, and forwarding to itself would loop, so the caller must decide.
		return nil, fmt.Errorf("read resolv.conf %s: no nameserver lines", path)
	}
	return servers, nil
}

func parseResolvConf(r io.Reader) ([]string, error) {
	var servers []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		// Like the C library, skip what it cannot parse rather than reject the file.
		if a, err := netip.ParseAddr(fields[1]); err == nil {
			servers = append(servers, netip.AddrPortFrom(a, 53).String())
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return servers, nil
}

// SearchDomains returns the search domains of a resolv.conf (its last search or domain
// line wins, as with the C library); none if it cannot be read.
func SearchDomains(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var search []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) >= 2 && (fields[0] == "search" || fields[0] == "domain") {
			search = fields[1:]
		}
	}
	return search
}
