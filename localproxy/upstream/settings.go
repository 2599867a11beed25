// Package upstream chains tp's direct connections to the proxy a corporate network makes
// everyone use. A laptop that reaches the internet only through such a proxy (HTTP_PROXY,
// HTTPS_PROXY, ALL_PROXY, or --upstream-proxy) would otherwise find every non-cluster
// destination unreachable once its programs point at tp's proxy instead of the corporate
// one. Settings says which upstream a destination takes (with Go's exact NO_PROXY
// semantics), and Dialer dials through it: HTTP CONNECT over http:// or https://, SOCKS5
// for socks5:// and socks5h://.
package upstream

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/net/http/httpproxy"

	"github.com/tpdev/tp/remote"
)

// Settings is the upstream proxy tp found: one URL per kind of destination, the
// destinations that skip it, and where they came from (for messages).
//
// Settings made by FromEnv or WithFlags build their NO_PROXY matcher once, on first use,
// and share it among copies; a Settings literal builds it at every For call, and a Dialer
// keeps its own.
type Settings struct {
	// HTTP is for destinations on port 80 (what Go's HTTP_PROXY covers), HTTPS for any
	// other port; All is for either when its own is nil. Nil everywhere means direct.
	HTTP, HTTPS, All *url.URL
	// NoProxy is a NO_PROXY list, with Go's semantics (golang.org/x/net/http/httpproxy).
	NoProxy string
	// Source says where the settings came from, for messages: the variables or flags
	// that were used, e.g. "HTTPS_PROXY, NO_PROXY".
	Source string

	// from names, per field, the variable or flag it came from; empty for a literal.
	from    sources
	matcher *matcherCache
}

type sources struct{ http, https, all, noProxy string }

// FromEnv reads HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY through getenv (os.Getenv
// in production), each in upper case first, then lower case, as Go's net/http does
// (golang.org/x/net v0.60's httpproxy.FromEnvironment prefers lower case; tp follows the
// standard library, which every Go tool on the laptop uses). As there, HTTP_PROXY is
// ignored when REQUEST_METHOD is set: in a CGI program it may come from a request's
// "Proxy:" header (httpoxy). A value without a scheme means http://.
//
// A value that is not a proxy URL tp can use is left out, and the error (kind Usage) names
// the variable, so the caller can stop or warn and go on with the rest. Error messages
// never contain a password.
func FromEnv(getenv func(string) string) (Settings, error) {
	s := Settings{matcher: &matcherCache{}}
	var errs []error
	read := func(upper, lower string) (*url.URL, string) {
		name, v := upper, getenv(upper)
		if v == "" {
			name, v = lower, getenv(lower)
		}
		if v == "" {
			return nil, ""
		}
		u, err := parseProxy(v)
		if err != nil {
			errs = append(errs, &remote.Error{Kind: remote.Usage, Msg: name + describeBad(v), Err: err})
			return nil, ""
		}
		return u, name
	}
	if getenv("REQUEST_METHOD") == "" {
		s.HTTP, s.from.http = read("HTTP_PROXY", "http_proxy")
	}
	s.HTTPS, s.from.https = read("HTTPS_PROXY", "https_proxy")
	s.All, s.from.all = read("ALL_PROXY", "all_proxy")
	if v := getenv("NO_PROXY"); v != "" {
		s.NoProxy, s.from.noProxy = v, "NO_PROXY"
	} else if v := getenv("no_proxy"); v != "" {
		s.NoProxy, s.from.noProxy = v, "no_proxy"
	}
	s.Source = s.from.summary()
	return s, errors.Join(errs...)
}

// describeBad is what an error shows of a bad value: "=" and the value with any password
// hidden, or nothing when the value does not even parse (its text could be anything).
func describeBad(v string) string {
	if u, err := url.Parse(v); err == nil && u.Scheme != "" && u.Opaque == "" {
		return "=" + u.Redacted()
	}
	if !strings.Contains(v, "@") {
		return "=" + v
	}
	return ""
}

// WithFlags applies --upstream-proxy and --upstream-no-proxy to s; an empty value means
// the flag was not given. proxyURL replaces all three URLs; "none" or "direct" means no
// upstream at all. noProxy replaces s.NoProxy.
func WithFlags(s Settings, proxyURL, noProxy string) (Settings, error) {
	const proxyFlag, noProxyFlag = "--upstream-proxy", "--upstream-no-proxy"
	s.matcher = &matcherCache{} // a copy's fields change: it must not share the old matcher
	switch strings.ToLower(strings.TrimSpace(proxyURL)) {
	case "":
	case "none", "direct":
		s.HTTP, s.HTTPS, s.All = nil, nil, nil
		s.from.http, s.from.https, s.from.all = "", "", ""
		s.Source = proxyFlag + " " + strings.TrimSpace(proxyURL)
		if noProxy != "" {
			s.NoProxy, s.from.noProxy = noProxy, noProxyFlag
		}
		return s, nil
	default:
		u, err := parseProxy(strings.TrimSpace(proxyURL))
		if err != nil {
			return s, &remote.Error{Kind: remote.Usage, Msg: proxyFlag + describeBad(proxyURL), Err: err}
		}
		s.HTTP, s.HTTPS, s.All = u, u, u
		s.from.http, s.from.https, s.from.all = proxyFlag, proxyFlag, proxyFlag
	}
	if noProxy != "" {
		s.NoProxy, s.from.noProxy = noProxy, noProxyFlag
	}
	s.Source = s.from.summary()
	return s, nil
}

// parseProxy parses a proxy value as httpproxy does (a value without a scheme, or that
// does not parse, is tried again with "http://" in front), then insists on a scheme tp can
// chain to and a host. Its errors never contain the value: it may hold a password.
func parseProxy(v string) (*url.URL, error) {
	u, err := url.Parse(v)
	// Unlike httpproxy, not when v has a scheme already: "http://" in front of a broken
	// URL parses as a proxy named "http".
	if (err != nil || u.Scheme == "" || u.Host == "") && !strings.Contains(v, "://") {
		if u2, err2 := url.Parse("http://" + v); err2 == nil {
			u, err = u2, nil
		}
	}
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // url.Error repeats the whole URL, password included
		}
		return nil, fmt.Errorf("not a proxy URL: %w", err)
	}
	if !slices.Contains([]string{"http", "https", "socks5", "socks5h"}, u.Scheme) {
		return nil, fmt.Errorf("unsupported scheme %s; tp chains to http, https, socks5 and socks5h proxies", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, errors.New("no proxy host in the URL")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return nil, fmt.Errorf("bad port %q", p)
		}
	}
	return u, nil
}

func (f sources) summary() string {
	var names []string
	for _, n := range []string{f.http, f.https, f.all, f.noProxy} {
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}

// Empty reports whether there is no upstream: every destination is dialed directly.
func (s Settings) Empty() bool { return s.HTTP == nil && s.HTTPS == nil && s.All == nil }

// For says which upstream a TCP connection to host:port takes; nil means direct. As Go's
// HTTP client would see it, port 80 is an http:// request (HTTP, else All) and any other
// port an https:// one (HTTPS, else All), and NO_PROXY applies with Go's semantics:
// domains and their subdomains, leading dots, "*.", IPs, CIDRs, ports, "*"; localhost
// and loopback IPs always go direct.
func (s Settings) For(host string, port int) *url.URL {
	c := s.matcher
	if c == nil {
		c = &matcherCache{}
	}
	return c.get(s).For(host, port)
}

// matcherCache holds the matcher built for the Settings that last asked, rebuilt when
// they differ (a field changed since).
type matcherCache struct{ p atomic.Pointer[matcher] }

type matcher struct {
	http, https *url.URL // with All's fallback applied
	all         *url.URL
	noProxy     string
	fn          func(*url.URL) (*url.URL, error)
	addrs       []string // Addrs(), for the Dialer's check at every dial
}

func (c *matcherCache) get(s Settings) *matcher {
	if m := c.p.Load(); m != nil && m.is(s) {
		return m
	}
	m := &matcher{http: cmp.Or(s.HTTP, s.All), https: cmp.Or(s.HTTPS, s.All), all: s.All, noProxy: s.NoProxy}
	cfg := httpproxy.Config{NoProxy: s.NoProxy}
	// httpproxy only says whether to use "the" proxy; which one is ours to pick (For), so
	// it gets a stand-in that always parses.
	const standIn = "http://upstream.invalid"
	if m.http != nil {
		cfg.HTTPProxy = standIn
	}
	if m.https != nil {
		cfg.HTTPSProxy = standIn
	}
	m.fn = cfg.ProxyFunc()
	m.addrs = s.Addrs()
	c.p.Store(m)
	return m
}

func (m *matcher) is(s Settings) bool {
	return m.http == cmp.Or(s.HTTP, s.All) && m.https == cmp.Or(s.HTTPS, s.All) && m.all == s.All && m.noProxy == s.NoProxy
}

// ForHTTP is the upstream of a plain http:// request to host:port: HTTP_PROXY's (or
// ALL_PROXY's) on any port, as a client that knows the scheme would choose; nil is direct.
func (s Settings) ForHTTP(host string, port int) *url.URL {
	c := s.matcher
	if c == nil {
		c = &matcherCache{}
	}
	return c.get(s).forScheme("http", host, port)
}

func (m *matcher) For(host string, port int) *url.URL {
	scheme := "https"
	if port == 80 {
		scheme = "http"
	}
	return m.forScheme(scheme, host, port)
}

func (m *matcher) forScheme(scheme, host string, port int) *url.URL {
	proxy := m.https
	if scheme == "http" {
		proxy = m.http
	}
	if proxy == nil {
		return nil
	}
	// A fully qualified name matches NO_PROXY as its usual spelling does.
	host = strings.TrimSuffix(host, ".")
	req := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	if p, err := m.fn(req); err != nil || p == nil {
		return nil
	}
	return proxy
}

// String describes s on one line, passwords hidden: "http://proxy.corp:8080
// (HTTPS_PROXY), except NO_PROXY=.corp,10.0.0.0/8".
func (s Settings) String() string {
	var b strings.Builder
	if s.Empty() {
		if strings.HasPrefix(s.Source, "--upstream-proxy ") {
			return "none (" + s.Source + ")"
		}
		return "none"
	}
	type entry struct{ label, url, from string }
	var es []entry
	for _, e := range []struct {
		label string
		u     *url.URL
		from  string
	}{{"http", s.HTTP, s.from.http}, {"https", s.HTTPS, s.from.https}, {"all", s.All, s.from.all}} {
		if e.u != nil {
			es = append(es, entry{e.label, e.u.Redacted(), e.from})
		}
	}
	same := true
	var froms []string
	for _, e := range es {
		same = same && e.url == es[0].url
		if e.from != "" && !slices.Contains(froms, e.from) {
			froms = append(froms, e.from)
		}
	}
	if len(froms) == 0 && s.Source != "" {
		froms = []string{s.Source}
	}
	if same {
		b.WriteString(es[0].url)
		if len(froms) > 0 {
			b.WriteString(" (" + strings.Join(froms, ", ") + ")")
		}
	} else {
		for i, e := range es {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(e.label + ": " + e.url)
			if e.from != "" {
				b.WriteString(" (" + e.from + ")")
			}
		}
	}
	if s.NoProxy != "" {
		b.WriteString(", except " + cmp.Or(s.from.noProxy, "NO_PROXY") + "=" + s.NoProxy)
	}
	return b.String()
}

// Info is Settings for display (tp status): URLs with passwords hidden.
type Info struct {
	HTTP    string `json:"http,omitempty"`
	HTTPS   string `json:"https,omitempty"`
	All     string `json:"all,omitempty"`
	NoProxy string `json:"noProxy,omitempty"`
	Source  string `json:"source,omitempty"`
}

// Info returns s for display, passwords hidden.
func (s Settings) Info() Info {
	red := func(u *url.URL) string {
		if u == nil {
			return ""
		}
		return u.Redacted()
	}
	return Info{HTTP: red(s.HTTP), HTTPS: red(s.HTTPS), All: red(s.All), NoProxy: s.NoProxy, Source: s.Source}
}

// Addrs returns the host:port of each upstream (default ports: http 80, https 443,
// socks5 and socks5h 1080), without duplicates, so a caller can tell a dial to the proxy
// itself from one through it.
func (s Settings) Addrs() []string {
	var out []string
	for _, u := range []*url.URL{s.HTTP, s.HTTPS, s.All} {
		if u == nil {
			continue
		}
		if a := proxyAddr(u); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// proxyAddr is the host:port to dial for u, host in normal form (see normalAddr).
func proxyAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "socks5", "socks5h":
			port = "1080"
		default:
			port = "80"
		}
	}
	return normalAddr(u.Hostname(), port)
}

// IsProxy reports whether address (host:port) is one of the upstream proxies: such a dial
// goes straight to it, never through the cluster, which must not see its credentials.
func (s Settings) IsProxy(address string) bool {
	host, port, err := net.SplitHostPort(address)
	return err == nil && s.at(normalAddr(host, port)) != nil
}

// at is the upstream whose address (normalAddr's spelling) is addr.
func (s Settings) at(addr string) *url.URL {
	for _, u := range []*url.URL{s.HTTPS, s.HTTP, s.All} {
		if u != nil && proxyAddr(u) == addr {
			return u
		}
	}
	return nil
}

// normalAddr spells host:port one way: lower case, no trailing dot, an IP as netip
// prints it.
func normalAddr(host, port string) string {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}
	return net.JoinHostPort(host, port)
}

// name is how messages name the upstream u: its URL, password hidden, and where it came
// from.
func (s Settings) name(u *url.URL) string {
	from := ""
	switch u {
	case s.HTTP:
		from = s.from.http
	case s.HTTPS:
		from = s.from.https
	case s.All:
		from = s.from.all
	}
	from = cmp.Or(from, s.Source)
	if from == "" {
		return u.Redacted()
	}
	return u.Redacted() + " (from " + from + ")"
}
