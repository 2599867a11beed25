// Package pac writes a proxy auto-config (PAC) file for browsers: cluster names and
// addresses go to tp's proxy, localhost and the user's NO_PROXY hosts go direct, and the
// rest goes where it went before tp (the user's own upstream proxy, or direct).
//
// Browsers do not read HTTP_PROXY, and pointing them at tp for everything would send all
// their traffic through tp; a PAC file keeps tp to the cluster. The file never calls
// dnsResolve or isResolvable: a browser blocks on them, and this machine's resolver cannot
// resolve cluster names anyway, so only names and IP literals are matched.
//
// Every string that goes into the JavaScript is validated (host names, DNS labels, IP
// ranges, PAC directives) and then written as a JSON string literal inside a fixed
// script, so no input can change the script's code.
package pac

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Config says what the PAC file routes where.
type Config struct {
	// Proxy is tp's proxy, host:port, e.g. 127.0.0.1:1080: an address a browser on this
	// machine connects to (not 0.0.0.0).
	Proxy string
	// ClusterDomain is the cluster's DNS domain; "" means cluster.local.
	ClusterDomain string
	// Namespaces are the cluster's namespaces: "name.ns" (exactly two labels, the second
	// one of these) goes to tp. Names that are not DNS labels, which Kubernetes never
	// gives, are left out.
	Namespaces []string
	// Ranges are the cluster's service and pod CIDRs, IPv4 and IPv6. IPv6 ranges work
	// only in browsers with isInNetEx (Chrome, Edge); Firefox has none.
	Ranges []netip.Prefix
	// Upstream is the PAC directive for everything else, e.g. "PROXY proxy.corp:8080" or
	// "SOCKS5 s:1080" (see Directive); "" means DIRECT.
	Upstream string
	// NoProxy is the user's NO_PROXY (or no_proxy) list: those hosts go DIRECT even when
	// Upstream is set. Entries: "*", domains (corp, .corp and *.corp all match corp and
	// its subdomains), IP addresses, and CIDRs; a :port is ignored, as a PAC file does not
	// see ports. Entries it cannot read are left out, as curl and Go leave them.
	NoProxy string
}

// script is the PAC file after its header comment; %s are JSON values, in the order of
// the data in Generate. Its code is fixed: inputs only ever become string literals.
const script = `function FindProxyForURL(url, host) {
	var tp = %s;
	var upstream = %s;
	var clusterDomains = %s;
	var namespaces = %s;
	var clusterV4 = %s;
	var clusterV6 = %s;
	var noProxyAll = %s;
	var noProxyNames = %s;
	var noProxyIPs = %s;
	var noProxyV4 = %s;
	var noProxyV6 = %s;
	var i;

	host = host.toLowerCase();
	if (host.charAt(0) == "[" && host.charAt(host.length - 1) == "]") {
		host = host.substring(1, host.length - 1);
	}
	if (host.charAt(host.length - 1) == ".") {
		host = host.substring(0, host.length - 1);
	}
	// IP literals are told by their look: resolving a name would block the browser.
	var v4 = /^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$/.test(host);
	var v6 = !v4 && /^[0-9a-f]*:[0-9a-f:.]*$/.test(host);
	// Only Chrome and Edge match IPv6 ranges (isInNetEx); Firefox has no such function.
	var ex = typeof isInNetEx === "function";

	if (host == "localhost" || dnsDomainIs(host, ".localhost") || host == "::1" ||
		(v4 && isInNet(host, "127.0.0.0", "255.0.0.0")) || (v6 && ex && isInNetEx(host, "::1/128"))) {
		return "DIRECT";
	}

	// The cluster's names and addresses.
	if (!v4 && !v6 && isPlainHostName(host)) {
		return tp;
	}
	for (i = 0; i < clusterDomains.length; i++) {
		if (dnsDomainIs(host, clusterDomains[i])) {
			return tp;
		}
	}
	// "name.namespace" only: a namespace such as "dev" is also a top-level domain.
	if (!v4 && !v6 && dnsDomainLevels(host) == 1) {
		for (i = 0; i < namespaces.length; i++) {
			if (dnsDomainIs(host, "." + namespaces[i])) {
				return tp;
			}
		}
	}
	for (i = 0; v4 && i < clusterV4.length; i++) {
		if (isInNet(host, clusterV4[i][0], clusterV4[i][1])) {
			return tp;
		}
	}
	for (i = 0; v6 && ex && i < clusterV6.length; i++) {
		if (isInNetEx(host, clusterV6[i])) {
			return tp;
		}
	}

	// NO_PROXY.
	if (noProxyAll) {
		return "DIRECT";
	}
	for (i = 0; i < noProxyNames.length; i++) {
		if (host == noProxyNames[i] || dnsDomainIs(host, "." + noProxyNames[i])) {
			return "DIRECT";
		}
	}
	for (i = 0; i < noProxyIPs.length; i++) {
		if (host == noProxyIPs[i]) {
			return "DIRECT";
		}
	}
	for (i = 0; v4 && i < noProxyV4.length; i++) {
		if (isInNet(host, noProxyV4[i][0], noProxyV4[i][1])) {
			return "DIRECT";
		}
	}
	for (i = 0; v6 && ex && i < noProxyV6.length; i++) {
		if (isInNetEx(host, noProxyV6[i])) {
			return "DIRECT";
		}
	}

	return upstream;
}
`

// Generate writes the PAC file for c. Rules, first match wins, on the host lower-cased
// and without a trailing dot (or IPv6 brackets):
//
//  1. localhost, *.localhost, 127.0.0.0/8 and ::1: DIRECT;
//  2. to tp ("PROXY <Proxy>; SOCKS5 <Proxy>"): plain names ("web"), *.svc,
//     *.svc.<domain>, *.<domain>, "name.ns" for each namespace ns, and IP literals in
//     Ranges;
//  3. NO_PROXY's hosts: DIRECT;
//  4. everything else: Upstream, or DIRECT.
func Generate(c Config) ([]byte, error) {
	if err := checkProxy(c.Proxy); err != nil {
		return nil, err
	}
	domain := strings.ToLower(strings.Trim(c.ClusterDomain, "."))
	if domain == "" {
		domain = "cluster.local"
	}
	if !isHostName(domain) {
		return nil, fmt.Errorf("cluster domain %q is not a DNS name", c.ClusterDomain)
	}
	upstream := "DIRECT"
	if strings.TrimSpace(c.Upstream) != "" {
		var err error
		if upstream, err = checkDirective(c.Upstream); err != nil {
			return nil, fmt.Errorf("upstream %q: %w", c.Upstream, err)
		}
	}
	clusterV4, clusterV6 := [][2]string{}, []string{}
	for _, p := range c.Ranges {
		if !p.IsValid() {
			return nil, fmt.Errorf("cluster range %q is not a CIDR", p)
		}
		clusterV4, clusterV6 = addRange(clusterV4, clusterV6, p)
	}
	np := parseNoProxy(c.NoProxy)

	tp := "PROXY " + c.Proxy + "; SOCKS5 " + c.Proxy
	var b bytes.Buffer
	fmt.Fprintf(&b, `// Proxy auto-config (PAC) file generated by tp for its proxy at %s.
//
// Cluster names go to tp: plain names ("web"), "name.namespace" for the cluster's
// namespaces, *.svc and *.%s, and IP addresses in the cluster's service and pod ranges.
// localhost and the NO_PROXY hosts go DIRECT; everything else goes to: %s.
//
// To use it, set it as the automatic proxy configuration (PAC) URL of your browser or of
// your operating system's network settings. Cluster names answer while tp connect runs.
// Generate it again when the cluster's namespaces change: tp writes it from a snapshot.

`, c.Proxy, domain, upstream)
	fmt.Fprintf(&b, script,
		js(tp), js(upstream),
		js([]string{".svc", ".svc." + domain, "." + domain}),
		js(namespaces(c.Namespaces)),
		js(clusterV4), js(clusterV6),
		js(np.all), js(np.names), js(np.ips), js(np.v4), js(np.v6))
	return b.Bytes(), nil
}

// js encodes v as a JavaScript literal: JSON is one (json.Marshal also escapes U+2028 and
// U+2029, which older JavaScript took for line ends, and <, > and &).
func js(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // strings, bools and slices of them always encode
	}
	return b
}

// checkProxy accepts host:port where host is an IP address or DNS name a client can
// connect to, so that the directive cannot break in the browser.
func checkProxy(proxy string) error {
	if proxy == "" {
		return fmt.Errorf("no proxy address")
	}
	if err := checkHostPort(proxy); err != nil {
		return fmt.Errorf("proxy %q: %w", proxy, err)
	}
	host, _, _ := net.SplitHostPort(proxy)
	if a, err := netip.ParseAddr(host); err == nil && a.IsUnspecified() {
		return fmt.Errorf("proxy %q: %s is an address to listen on, not one to connect to", proxy, host)
	}
	return nil
}

func checkHostPort(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port != strconv.Itoa(n) {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return fmt.Errorf("%s has a zone, which PAC directives cannot carry", host)
		}
		if a.Is6() && !strings.HasPrefix(hostport, "[") {
			return fmt.Errorf("want the IPv6 address in brackets")
		}
		return nil
	}
	if !isHostName(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	return nil
}

// checkDirective reads a PAC return value ("PROXY h:p; SOCKS5 h:p; DIRECT") and returns
// it written the usual way.
func checkDirective(d string) (string, error) {
	var parts []string
	for part := range strings.SplitSeq(d, ";") {
		fields := strings.Fields(part)
		switch {
		case len(fields) == 0:
			continue
		case len(fields) == 1 && strings.EqualFold(fields[0], "DIRECT"):
			parts = append(parts, "DIRECT")
			continue
		case len(fields) != 2:
			return "", fmt.Errorf("%q: want DIRECT or TYPE host:port", strings.TrimSpace(part))
		}
		typ := strings.ToUpper(fields[0])
		switch typ {
		case "PROXY", "HTTP", "HTTPS", "SOCKS", "SOCKS4", "SOCKS5":
		default:
			return "", fmt.Errorf("%q: want PROXY, HTTP, HTTPS, SOCKS, SOCKS4, SOCKS5 or DIRECT", fields[0])
		}
		if err := checkHostPort(fields[1]); err != nil {
			return "", fmt.Errorf("%s: %w", fields[1], err)
		}
		parts = append(parts, typ+" "+strings.ToLower(fields[1]))
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("no directive")
	}
	return strings.Join(parts, "; "), nil
}

// isHostName accepts lower-case DNS names: dot-separated labels of letters, digits, '-'
// and '_' (which some private names hold), 1 to 63 bytes each, not starting or ending
// with '-'.
func isHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// isLabel accepts RFC 1123 labels, which is what Kubernetes namespace names are.
func isLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// namespaces keeps the valid, distinct names, in order.
func namespaces(names []string) []string {
	out := []string{}
	seen := map[string]bool{}
	for _, n := range names {
		if isLabel(n) && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// addRange adds p to the IPv4 ranges as isInNet's (address, mask) or to the IPv6 ones as
// isInNetEx's "address/bits".
func addRange(v4 [][2]string, v6 []string, p netip.Prefix) ([][2]string, []string) {
	p = p.Masked()
	if p.Addr().Is4() {
		mask := net.IP(net.CIDRMask(p.Bits(), 32)).String()
		r := [2]string{p.Addr().String(), mask}
		for _, have := range v4 {
			if have == r {
				return v4, v6
			}
		}
		return append(v4, r), v6
	}
	s := p.String()
	for _, have := range v6 {
		if have == s {
			return v4, v6
		}
	}
	return v4, append(v6, s)
}

// noProxy is a NO_PROXY list as the PAC file's data.
type noProxy struct {
	all   bool
	names []string    // host == n or a subdomain of it
	ips   []string    // host == ip
	v4    [][2]string // isInNet
	v6    []string    // isInNetEx
}

// parseNoProxy reads list the way curl and Go's httpproxy do, loosely: entries are
// separated by commas or spaces, matched without case, and skipped when unreadable.
func parseNoProxy(list string) noProxy {
	np := noProxy{names: []string{}, ips: []string{}, v4: [][2]string{}, v6: []string{}}
	seen := map[string]bool{}
	add := func(dst *[]string, s string) {
		if !seen[s] {
			seen[s] = true
			*dst = append(*dst, s)
		}
	}
	for _, e := range strings.FieldsFunc(strings.ToLower(list), func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if e == "*" {
			np.all = true
			continue
		}
		if p, err := netip.ParsePrefix(e); err == nil {
			np.v4, np.v6 = addRange(np.v4, np.v6, p)
			continue
		}
		host := e
		if h, port, err := net.SplitHostPort(e); err == nil {
			if _, err := strconv.ParseUint(port, 10, 16); err != nil {
				continue
			}
			host = h
		} else if strings.HasPrefix(e, "[") && strings.HasSuffix(e, "]") {
			host = e[1 : len(e)-1]
		}
		if a, err := netip.ParseAddr(host); err == nil {
			a = a.WithZone("")
			add(&np.ips, a.String())
			if a.Is6() {
				np.v4, np.v6 = addRange(np.v4, np.v6, netip.PrefixFrom(a, 128))
			}
			continue
		}
		host = strings.TrimPrefix(host, "*")
		host = strings.Trim(host, ".")
		if isHostName(host) {
			add(&np.names, host)
		}
	}
	return np
}
