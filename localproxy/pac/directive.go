package pac

import (
	"net"
	"net/url"
	"strings"
)

// Directive is the PAC directive for an upstream proxy URL such as HTTPS_PROXY's:
// http → "PROXY host:port", https → "HTTPS host:port", socks5 and socks5h → "SOCKS5
// host:port; SOCKS host:port" (SOCKS for browsers that know no SOCKS5), socks4 and socks4a
// → "SOCKS host:port". A missing port is the scheme's usual one. Credentials are left
// out: a PAC file cannot carry them, and browsers ask for them themselves.
//
// nil, a URL without a host and an unknown scheme give "", which Config.Upstream takes
// for DIRECT: callers that must not bypass a proxy check for "".
func Directive(u *url.URL) string {
	if u == nil || u.Hostname() == "" {
		return ""
	}
	var typ, port string
	switch strings.ToLower(u.Scheme) {
	case "http":
		typ, port = "PROXY", "80"
	case "https":
		typ, port = "HTTPS", "443"
	case "socks5", "socks5h":
		typ, port = "SOCKS5", "1080"
	case "socks4", "socks4a":
		typ, port = "SOCKS", "1080"
	default:
		return ""
	}
	if p := u.Port(); p != "" {
		port = p
	}
	hostport := net.JoinHostPort(strings.ToLower(u.Hostname()), port)
	if typ == "SOCKS5" {
		return "SOCKS5 " + hostport + "; SOCKS " + hostport
	}
	return typ + " " + hostport
}
