package pac

import (
	"context"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const tpDirective = "PROXY 127.0.0.1:1080; SOCKS5 127.0.0.1:1080"

// needNode finds node, which CI has; without it the test fails, unless
// TP_PAC_TESTS_OPTIONAL=1 lets it skip.
func needNode(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("TP_PAC_TESTS_OPTIONAL") == "1" {
			t.Skip("no node on PATH (TP_PAC_TESTS_OPTIONAL=1)")
		}
		t.Fatal("no node on PATH: install nodejs (apt-get install nodejs), or set TP_PAC_TESTS_OPTIONAL=1 to skip the PAC tests")
	}
	return path
}

func evalCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustPrefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

func generate(t *testing.T, c Config) []byte {
	t.Helper()
	pac, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	return pac
}

// check evaluates pac on each URL as Chrome would (with isInNetEx) and as Firefox would
// (without), and compares with want, or for Firefox with firefox's answer where it has one.
func check(t *testing.T, node string, pac []byte, want map[string]string, firefox map[string]string) {
	t.Helper()
	var cases []evalCase
	for u := range want {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, evalCase{u, parsed.Hostname()})
	}
	for _, browser := range []string{"chrome", "firefox"} {
		got, err := eval(evalCtx(t), node, pac, cases, browser == "firefox")
		if err != nil {
			t.Fatalf("%s: %v\n%s", browser, err, pac)
		}
		for i, c := range cases {
			w := want[c.URL]
			if f, ok := firefox[c.URL]; ok && browser == "firefox" {
				w = f
			}
			if got[i] != w {
				t.Errorf("%s: %s → %q, want %q", browser, c.URL, got[i], w)
			}
		}
	}
}

func TestGenerate(t *testing.T) {
	node := needNode(t)
	pac := generate(t, Config{
		Proxy:      "127.0.0.1:1080",
		Namespaces: []string{"ns", "default", "dev"},
		Ranges:     mustPrefixes(t, "10.96.0.0/12", "10.244.0.0/16", "fd00:10:96::/108"),
		Upstream:   "PROXY proxy.corp:8080",
		NoProxy:    "localhost,127.0.0.1,::1, .corp, *.example.org,10.0.0.0/8,192.0.2.7:8080,[2001:db8::7]:443,fe80::/10,plain",
	})
	up := "PROXY proxy.corp:8080"
	check(t, node, pac, map[string]string{
		"http://web/":                            tpDirective,
		"http://web:8080/x":                      tpDirective,
		"http://web.ns/":                         tpDirective,
		"http://web.default:80/":                 tpDirective,
		"http://web.ns.svc/":                     tpDirective,
		"http://web.ns.svc.cluster.local/":       tpDirective,
		"http://WEB.NS.SVC.CLUSTER.LOCAL./":      tpDirective,
		"http://pod.cluster.local/":              tpDirective,
		"http://10.96.0.10/":                     tpDirective,
		"http://10.111.255.255/":                 tpDirective,
		"http://10.244.1.7:8080/":                tpDirective,
		"http://[fd00:10:96::a]/":                tpDirective,
		"http://[FD00:10:96:0:0:0:0:A]/":         tpDirective,
		"http://[fd00:10:96::1:0:0]/":            up, // outside the /108
		"http://example.com/":                    up,
		"https://www.google.dev/":                up, // "dev" is a namespace, but two dots
		"http://google.dev/":                     tpDirective,
		"http://web.other/":                      up, // not a namespace
		"http://ns/":                             tpDirective,
		"http://intranet.corp/":                  "DIRECT",
		"http://corp/":                           tpDirective, // a plain name first
		"http://a.b.corp./":                      "DIRECT",
		"http://www.example.org/":                "DIRECT",
		"http://example.org/":                    "DIRECT",
		"http://notexample.org/":                 up,
		"http://plain.com/":                      up,
		"http://x.plain/":                        "DIRECT",
		"http://10.1.2.3/":                       "DIRECT", // NO_PROXY's 10/8, not a cluster range
		"http://11.1.2.3/":                       up,
		"http://192.0.2.7/":                      "DIRECT", // the :8080 is dropped
		"http://192.0.2.8/":                      up,
		"http://[2001:db8::7]/":                  "DIRECT",
		"http://[2001:db8:0::7]/":                "DIRECT",
		"http://[fe80::1]/":                      "DIRECT",
		"http://[2001:db8::8]/":                  up,
		"http://localhost:3000/":                 "DIRECT",
		"http://LOCALHOST./":                     "DIRECT",
		"http://app.localhost/":                  "DIRECT",
		"http://127.0.0.1:8080/":                 "DIRECT",
		"http://127.8.9.10/":                     "DIRECT",
		"http://[::1]:8080/":                     "DIRECT",
		"http://[0:0::1]/":                       "DIRECT",
		"http://999.1.1.1/":                      up,
		"ftp://files.example.com/":               up,
		"https://web.ns.svc.cluster.local:8443/": tpDirective,
	}, map[string]string{
		// Firefox has no isInNetEx: IPv6 ranges are not matched, except by equality.
		"http://[fd00:10:96::a]/":        up,
		"http://[FD00:10:96:0:0:0:0:A]/": up,
		"http://[2001:db8:0::7]/":        up,
		"http://[fe80::1]/":              up,
		"http://[0:0::1]/":               up,
	})

	// Hosts as other browsers pass them: IPv6 in brackets, upper case.
	got, err := eval(evalCtx(t), node, pac, []evalCase{
		{"http://[fd00:10:96::a]/", "[fd00:10:96::a]"},
		{"http://[::1]/", "[::1]"},
		{"http://WEB/", "WEB"},
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{tpDirective, "DIRECT", tpDirective}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("bracketed and upper-case hosts: %q, want %q", got, want)
	}
}

func TestGenerateDirect(t *testing.T) {
	node := needNode(t)
	pac := generate(t, Config{Proxy: "127.0.0.1:1080", Ranges: mustPrefixes(t, "10.96.0.0/12")})
	check(t, node, pac, map[string]string{
		"http://example.com/":          "DIRECT",
		"http://10.1.2.3/":             "DIRECT",
		"http://10.96.0.1/":            tpDirective,
		"http://web.ns/":               "DIRECT", // no namespaces given
		"http://web.svc.cluster.local": tpDirective,
		"http://web":                   tpDirective,
	}, nil)

	// NO_PROXY=* sends all but the cluster direct.
	pac = generate(t, Config{Proxy: "[::1]:1080", ClusterDomain: "Corp.Example.", Upstream: "SOCKS5 s:1080; SOCKS s:1080", NoProxy: "*"})
	tp6 := "PROXY [::1]:1080; SOCKS5 [::1]:1080"
	check(t, node, pac, map[string]string{
		"http://example.com/":              "DIRECT",
		"http://web.svc.corp.example/":     tp6,
		"http://web.svc.cluster.local/":    "DIRECT",
		"http://db.ns.svc/":                tp6,
		"http://host.corp.example:8080/x/": tp6,
	}, nil)

	pac = generate(t, Config{Proxy: "localhost:1080", Upstream: "socks5 s:1080; socks s:1080;direct"})
	check(t, node, pac, map[string]string{
		"http://example.com/": "SOCKS5 s:1080; SOCKS s:1080; DIRECT",
		"http://web/":         "PROXY localhost:1080; SOCKS5 localhost:1080",
	}, nil)
}

// An attempt to inject JavaScript through the namespaces or NO_PROXY is dropped or quoted:
// the PAC still evaluates, calls nothing, and routes as without it.
func TestGenerateInjection(t *testing.T) {
	node := needNode(t)
	attacks := []string{
		`x"];alert("ns");//`,
		`x'];alert('ns');//`,
		"x\u2028alert(1)",
		"x\nalert(1)",
		"</script><script>alert(1)</script>",
		`\";alert(1);//`,
		"*/alert(1)/*",
		"a b",
		"ns; return 'PROXY evil:1'",
		"evil:1'",
		"evil.corp\"), alert(\"x",
		"Default",
		"-bad",
		"__proto__",
	}
	pac := generate(t, Config{
		Proxy:      "127.0.0.1:1080",
		Namespaces: append([]string{"ns"}, attacks...),
		Ranges:     mustPrefixes(t, "10.96.0.0/12"),
		Upstream:   "PROXY up:3128",
		NoProxy:    strings.Join(append([]string{".corp"}, attacks...), ","),
	})
	// NO_PROXY is split at spaces and commas, so words such as "evil" may stay, quoted.
	for _, bad := range []string{"alert", "script", "Default", `var namespaces = ["ns"];`} {
		if strings.Contains(string(pac), bad) != (bad[0] == 'v') {
			t.Errorf("the PAC file holds %q, or not:\n%s", bad, pac)
		}
	}
	check(t, node, pac, map[string]string{
		"http://web.ns/":        tpDirective,
		"http://intranet.corp/": "DIRECT",
		"http://example.com/":   "PROXY up:3128",
		"http://web.x/":         "PROXY up:3128",
	}, nil)
}

func TestGenerateRefuses(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "no proxy address"},
		{Config{Proxy: "127.0.0.1"}, "want host:port"},
		{Config{Proxy: "127.0.0.1:0"}, "port"},
		{Config{Proxy: "127.0.0.1:http"}, "port"},
		{Config{Proxy: "127.0.0.1:99999"}, "port"},
		{Config{Proxy: "0.0.0.0:1080"}, "not one to connect to"},
		{Config{Proxy: "[::]:1080"}, "not one to connect to"},
		{Config{Proxy: "[fe80::1%eth0]:1080"}, "zone"},
		{Config{Proxy: `a";alert(1);"b:1080`}, "neither an IP address nor a host name"},
		{Config{Proxy: "a b:1080"}, "neither"},
		{Config{Proxy: "127.0.0.1:1080", ClusterDomain: "a..b"}, "cluster domain"},
		{Config{Proxy: "127.0.0.1:1080", ClusterDomain: `x"`}, "cluster domain"},
		{Config{Proxy: "127.0.0.1:1080", Ranges: []netip.Prefix{{}}}, "not a CIDR"},
		{Config{Proxy: "127.0.0.1:1080", Upstream: "PROXY"}, "want DIRECT or TYPE host:port"},
		{Config{Proxy: "127.0.0.1:1080", Upstream: "FTP f:21"}, "want PROXY"},
		{Config{Proxy: "127.0.0.1:1080", Upstream: "PROXY h"}, "want host:port"},
		{Config{Proxy: "127.0.0.1:1080", Upstream: `PROXY h:1"; alert(1)`}, "upstream"},
		{Config{Proxy: "127.0.0.1:1080", Upstream: ";"}, "no directive"},
	} {
		_, err := Generate(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Generate(%+v): %v, want an error with %q", c.cfg, err, c.want)
		}
	}
}

func TestGenerateHeader(t *testing.T) {
	pac := string(generate(t, Config{Proxy: "127.0.0.1:1080", Upstream: "PROXY p:1"}))
	for _, want := range []string{
		"// Proxy auto-config (PAC) file generated by tp for its proxy at 127.0.0.1:1080.",
		"everything else goes to: PROXY p:1.",
		"automatic proxy configuration (PAC) URL",
		`var tp = "PROXY 127.0.0.1:1080; SOCKS5 127.0.0.1:1080";`,
		`var clusterDomains = [".svc",".svc.cluster.local",".cluster.local"];`,
		"var namespaces = [];",
	} {
		if !strings.Contains(pac, want) {
			t.Errorf("no %q in\n%s", want, pac)
		}
	}
	for _, bad := range []string{"dnsResolve", "isResolvable", "myIpAddress", "null"} {
		if strings.Contains(pac, bad) {
			t.Errorf("the PAC file holds %q", bad)
		}
	}
	// The same input, the same file.
	if again := string(generate(t, Config{Proxy: "127.0.0.1:1080", Upstream: "PROXY p:1"})); again != pac {
		t.Error("Generate is not deterministic")
	}
}

func TestDirective(t *testing.T) {
	for in, want := range map[string]string{
		"http://proxy.corp:8080":              "PROXY proxy.corp:8080",
		"http://user:secret@proxy.corp:8080/": "PROXY proxy.corp:8080",
		"HTTP://Proxy.Corp":                   "PROXY proxy.corp:80",
		"https://p.corp":                      "HTTPS p.corp:443",
		"https://u:p@p.corp:8443":             "HTTPS p.corp:8443",
		"socks5://s:1081":                     "SOCKS5 s:1081; SOCKS s:1081",
		"socks5h://u:p@s":                     "SOCKS5 s:1080; SOCKS s:1080",
		"socks4a://s:9":                       "SOCKS s:9",
		"http://[2001:db8::1]:3128":           "PROXY [2001:db8::1]:3128",
		"ftp://f:21":                          "",
		"proxy.corp:8080":                     "", // no scheme: the caller adds http://
		"http://":                             "",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		got := Directive(u)
		if got != want {
			t.Errorf("Directive(%s) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "secret") || strings.Contains(got, "u:p") {
			t.Errorf("Directive(%s) = %q shows the credentials", in, got)
		}
		if got != "" {
			if _, err := Generate(Config{Proxy: "127.0.0.1:1", Upstream: got}); err != nil {
				t.Errorf("Generate does not take Directive(%s): %v", in, err)
			}
		}
	}
	if got := Directive(nil); got != "" {
		t.Errorf("Directive(nil) = %q", got)
	}
}

func TestEval(t *testing.T) {
	node := needNode(t)
	ctx := evalCtx(t)
	got, err := Eval(ctx, node, []byte(`function FindProxyForURL(url, host) { return url + " " + host; }`),
		[]string{"http://a.b:80/x", "http://[::1]:8/"})
	if err != nil {
		t.Fatal(err)
	}
	if got["http://a.b:80/x"] != "http://a.b:80/x a.b" || got["http://[::1]:8/"] != "http://[::1]:8/ ::1" {
		t.Errorf("Eval: %q", got)
	}
	for pac, want := range map[string]string{
		`function FindProxyForURL(url, host) { return dnsResolve(host) ? "PROXY a:1" : "DIRECT"; }`:                       `resolves ["x.y"]`,
		`function FindProxyForURL(url, host) { return isInNet(host, "10.0.0.0", "255.0.0.0") ? "PROXY a:1" : "DIRECT"; }`: `resolves ["x.y"]`,
		`function FindProxyForURL(url, host) { return isResolvable(host) ? "PROXY a:1" : "DIRECT"; }`:                     `resolves ["x.y"]`,
		`function FindProxyForURL(url, host) { alert("hi"); return "DIRECT"; }`:                                           `alert(["hi"])`,
		`function FindProxyForURL(url, host) { return null; }`:                                                            "returned a object",
		`function FindProxyForURL(url, host) { while (true) {} }`:                                                         "timed out",
		`function FindProxyForURL(url, host) { return "DIRECT"`:                                                           "SyntaxError",
		`var x = 1;`: "no FindProxyForURL",
		`function FindProxyForURL(url, host) { return typeof require + typeof process; }`: "", // checked below
	} {
		res, err := Eval(ctx, node, []byte(pac), []string{"http://x.y/"})
		if want == "" {
			if err != nil || res["http://x.y/"] != "undefinedundefined" {
				t.Errorf("the PAC sees node's require or process: %q, %v", res, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Eval(%s): %v, want an error with %q", pac, err, want)
		}
	}
	if _, err := Eval(ctx, node, []byte(`function FindProxyForURL(u, h) { return "DIRECT"; }`), []string{"/relative"}); err == nil {
		t.Error("Eval took a URL without a host")
	}
	if _, err := Eval(ctx, "/nonexistent/node", []byte(""), nil); err == nil {
		t.Error("Eval ran without node")
	}
}

func TestParseNoProxy(t *testing.T) {
	np := parseNoProxy(" Localhost, .Corp ,*.x.org\t*,10.0.0.0/8 192.0.2.1:80 [2001:db8::1]:443 ::1 fd00::/8 bad$name ,, a..b .:80 x.y:1' x.z:65536 x.w:0")
	if !np.all {
		t.Error("* not seen")
	}
	if got := strings.Join(np.names, " "); got != "localhost corp x.org x.w" {
		t.Errorf("names %q", got)
	}
	if got := strings.Join(np.ips, " "); got != "192.0.2.1 2001:db8::1 ::1" {
		t.Errorf("ips %q", got)
	}
	if len(np.v4) != 1 || np.v4[0] != [2]string{"10.0.0.0", "255.0.0.0"} {
		t.Errorf("v4 %q", np.v4)
	}
	if got := strings.Join(np.v6, " "); got != "2001:db8::1/128 ::1/128 fd00::/8" {
		t.Errorf("v6 %q", got)
	}
}
