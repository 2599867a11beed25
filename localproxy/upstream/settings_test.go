package upstream

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tpdev/tp/remote"
)

// env is an environment for FromEnv.
type env map[string]string

func (e env) get(k string) string { return e[k] }

func str(u *url.URL) string {
	if u == nil {
		return "<nil>"
	}
	return u.String()
}

func TestFromEnv(t *testing.T) {
	tests := []struct {
		name               string
		env                env
		http, https, all   string
		noProxy, source    string
		wantErr            string
		wantErrNotContains string
	}{
		{name: "nothing", env: env{}, http: "<nil>", https: "<nil>", all: "<nil>"},
		{
			name: "upper case wins",
			env: env{"HTTP_PROXY": "http://UP:1", "http_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2",
				"https_proxy": "http://low:2", "ALL_PROXY": "socks5://up:3", "all_proxy": "socks5://low:3",
				"NO_PROXY": ".up", "no_proxy": ".low"},
			http: "http://UP:1", https: "http://up:2", all: "socks5://up:3", noProxy: ".up",
			source: "HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY",
		},
		{
			name: "lower case when upper is empty",
			env:  env{"HTTP_PROXY": "", "http_proxy": "http://low:1", "https_proxy": "http://low:2", "all_proxy": "socks5h://low:3", "no_proxy": ".low"},
			http: "http://low:1", https: "http://low:2", all: "socks5h://low:3", noProxy: ".low",
			source: "http_proxy, https_proxy, all_proxy, no_proxy",
		},
		{
			name: "CGI: HTTP_PROXY ignored, in either case",
			env:  env{"REQUEST_METHOD": "GET", "HTTP_PROXY": "http://evil:1", "http_proxy": "http://evil:1", "HTTPS_PROXY": "http://ok:2"},
			http: "<nil>", https: "http://ok:2", all: "<nil>", source: "HTTPS_PROXY",
		},
		{
			name: "no scheme means http",
			env:  env{"HTTPS_PROXY": "proxy.corp:8080", "HTTP_PROXY": "127.0.0.1:3128", "ALL_PROXY": "localhost"},
			http: "http://127.0.0.1:3128", https: "http://proxy.corp:8080", all: "http://localhost",
			source: "HTTP_PROXY, HTTPS_PROXY, ALL_PROXY",
		},
		{
			name: "bad scheme: left out, the rest kept",
			env:  env{"HTTPS_PROXY": "ftp://x", "HTTP_PROXY": "http://ok:1"},
			http: "http://ok:1", https: "<nil>", all: "<nil>", source: "HTTP_PROXY",
			wantErr: "HTTPS_PROXY=ftp://x: unsupported scheme ftp; tp chains to http, https, socks5 and socks5h proxies",
		},
		{
			name: "bad scheme: password hidden",
			env:  env{"ALL_PROXY": "socks4://bob:hunter2@x:1080"},
			http: "<nil>", https: "<nil>", all: "<nil>",
			wantErr:            "ALL_PROXY=socks4://bob:xxxxx@x:1080: unsupported scheme socks4; tp chains to http, https, socks5 and socks5h proxies",
			wantErrNotContains: "hunter2",
		},
		{
			name: "unparsable: value not shown",
			env:  env{"https_proxy": "http://bob:hunter2@proxy:notaport"},
			http: "<nil>", https: "<nil>", all: "<nil>",
			wantErr:            `https_proxy: not a proxy URL: invalid port ":notaport" after host`,
			wantErrNotContains: "hunter2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := FromEnv(tt.env.get)
			if got := str(s.HTTP) + " " + str(s.HTTPS) + " " + str(s.All); got != tt.http+" "+tt.https+" "+tt.all {
				t.Errorf("HTTP HTTPS All = %s, want %s %s %s", got, tt.http, tt.https, tt.all)
			}
			if s.NoProxy != tt.noProxy || s.Source != tt.source {
				t.Errorf("NoProxy, Source = %q, %q; want %q, %q", s.NoProxy, s.Source, tt.noProxy, tt.source)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
				t.Fatalf("err = %v, want %s", err, tt.wantErr)
			case err != nil && remote.KindOf(err) != remote.Usage:
				t.Errorf("kind = %v, want Usage", remote.KindOf(err))
			}
			if tt.wantErrNotContains != "" && strings.Contains(err.Error(), tt.wantErrNotContains) {
				t.Errorf("err %q shows %q", err, tt.wantErrNotContains)
			}
		})
	}
}

func TestWithFlags(t *testing.T) {
	base, err := FromEnv(env{"HTTPS_PROXY": "http://env:1", "NO_PROXY": ".corp"}.get)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, proxy, noProxy string
		want                 string // String()
		wantErr              string
	}{
		{name: "no flags", want: "http://env:1 (HTTPS_PROXY), except NO_PROXY=.corp"},
		{name: "proxy overrides all", proxy: "socks5h://bob:pw@sock:1080",
			want: "socks5h://bob:xxxxx@sock:1080 (--upstream-proxy), except NO_PROXY=.corp"},
		{name: "no proxy overrides", noProxy: ".other,10.0.0.0/8",
			want: "http://env:1 (HTTPS_PROXY), except --upstream-no-proxy=.other,10.0.0.0/8"},
		{name: "none", proxy: "none", want: "none (--upstream-proxy none)"},
		{name: "direct", proxy: "DIRECT", noProxy: ".x", want: "none (--upstream-proxy DIRECT)"},
		{name: "bad", proxy: "ftp://x", want: "http://env:1 (HTTPS_PROXY), except NO_PROXY=.corp",
			wantErr: "--upstream-proxy=ftp://x: unsupported scheme ftp; tp chains to http, https, socks5 and socks5h proxies"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := WithFlags(base, tt.proxy, tt.noProxy)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || remote.KindOf(err) != remote.Usage {
					t.Fatalf("err = %v, want Usage %s", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := s.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
	// The flag's URL applies to every port.
	s, _ := WithFlags(base, "http://flag:3128", "")
	for _, port := range []int{80, 443, 22} {
		if got := str(s.For("example.com", port)); got != "http://flag:3128" {
			t.Errorf("For(example.com, %d) = %s, want the flag's", port, got)
		}
	}
	if str(base.For("example.com", 443)) != "http://env:1" {
		t.Errorf("WithFlags changed its argument")
	}
}

func TestFor(t *testing.T) {
	s, err := FromEnv(env{"HTTP_PROXY": "http://h:1", "HTTPS_PROXY": "http://s:2",
		"NO_PROXY": " .corp, 10.0.0.0/8,192.168.1.1 ,example.org:8443,fd00::/8, *.wild.test,exact.test"}.get)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host string
		port int
		want string
	}{
		{"example.com", 80, "http://h:1"},
		{"example.com", 443, "http://s:2"},
		{"example.com", 22, "http://s:2"},
		{"git.corp", 443, "<nil>"},
		{"git.corp.", 443, "<nil>"},
		{"GIT.CORP", 80, "<nil>"},
		{"corp", 443, "http://s:2"}, // a leading dot matches subdomains only
		{"notcorp", 443, "http://s:2"},
		{"10.1.2.3", 443, "<nil>"},
		{"11.0.0.1", 443, "http://s:2"},
		{"192.168.1.1", 80, "<nil>"},
		{"192.168.1.2", 80, "http://h:1"},
		{"example.org", 8443, "<nil>"},
		{"example.org", 443, "http://s:2"},
		{"fd00::1", 443, "<nil>"},
		{"2001:db8::1", 443, "http://s:2"},
		{"a.wild.test", 443, "<nil>"},
		{"exact.test", 443, "<nil>"},
		{"sub.exact.test", 443, "<nil>"}, // no dot: the name and its subdomains
		{"localhost", 80, "<nil>"},
		{"127.0.0.1", 443, "<nil>"},
		{"::1", 443, "<nil>"},
	}
	for _, tt := range tests {
		if got := str(s.For(tt.host, tt.port)); got != tt.want {
			t.Errorf("For(%s, %d) = %s, want %s", tt.host, tt.port, got, tt.want)
		}
	}

	star, _ := FromEnv(env{"HTTPS_PROXY": "http://s:2", "NO_PROXY": "*"}.get)
	if got := star.For("example.com", 443); got != nil {
		t.Errorf(`NO_PROXY=*: For = %s, want nil`, got)
	}

	all, _ := FromEnv(env{"ALL_PROXY": "socks5h://a:1080", "HTTPS_PROXY": "http://s:2"}.get)
	for port, want := range map[int]string{80: "socks5h://a:1080", 443: "http://s:2", 5432: "http://s:2"} {
		if got := str(all.For("db.example.com", port)); got != want {
			t.Errorf("ALL_PROXY fallback: For(db.example.com, %d) = %s, want %s", port, got, want)
		}
	}
	httpOnly, _ := FromEnv(env{"HTTP_PROXY": "http://h:1"}.get)
	if got := httpOnly.For("example.com", 443); got != nil {
		t.Errorf("HTTP_PROXY only: For(443) = %s, want nil (direct)", got)
	}
}

func TestForLiteralAndChangedSettings(t *testing.T) {
	h, _ := url.Parse("http://h:1")
	s := Settings{HTTPS: h, NoProxy: ".corp"}
	if got := s.For("x.corp", 443); got != nil {
		t.Errorf("literal: For(x.corp) = %s, want nil", got)
	}
	if got := s.For("x.org", 443); got != h {
		t.Errorf("literal: For(x.org) = %v, want %v", got, h)
	}
	// A copy changed after first use must not answer with the old matcher.
	e, _ := FromEnv(env{"HTTPS_PROXY": "http://h:1", "NO_PROXY": ".corp"}.get)
	_ = e.For("x.corp", 443)
	e2 := e
	e2.NoProxy = ""
	if got := e2.For("x.corp", 443); got == nil {
		t.Error("changed NoProxy: For(x.corp) = nil, want the proxy")
	}
	if got := e.For("x.corp", 443); got != nil {
		t.Errorf("original: For(x.corp) = %s, want nil", got)
	}
}

func TestForConcurrent(t *testing.T) {
	s, _ := FromEnv(env{"HTTPS_PROXY": "http://h:1", "NO_PROXY": ".corp"}.get)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				if (s.For("a.corp", 443+i) == nil) != true || s.For("a.org", 443) == nil {
					t.Error("wrong answer")
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestStringInfoAddrs(t *testing.T) {
	same, _ := FromEnv(env{"HTTPS_PROXY": "http://alice:s3cr3t@proxy.corp:8080", "HTTP_PROXY": "http://alice:s3cr3t@proxy.corp:8080",
		"NO_PROXY": ".corp,10.0.0.0/8"}.get)
	if got, want := same.String(), "http://alice:xxxxx@proxy.corp:8080 (HTTP_PROXY, HTTPS_PROXY), except NO_PROXY=.corp,10.0.0.0/8"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	mixed, _ := FromEnv(env{"HTTP_PROXY": "http://a:1", "https_proxy": "https://b", "ALL_PROXY": "socks5h://Bob:pw@C.example."}.get)
	if got, want := mixed.String(), "http: http://a:1 (HTTP_PROXY), https: https://b (https_proxy), all: socks5h://Bob:xxxxx@C.example. (ALL_PROXY)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := (Settings{}).String(), "none"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := mixed.Addrs(), []string{"a:1", "b:443", "c.example:1080"}; !slices.Equal(got, want) {
		t.Errorf("Addrs() = %q, want %q", got, want)
	}
	if got, want := same.Addrs(), []string{"proxy.corp:8080"}; !slices.Equal(got, want) {
		t.Errorf("Addrs() = %q, want %q", got, want)
	}
	b, err := json.Marshal(same.Info())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"http":"http://alice:xxxxx@proxy.corp:8080","https":"http://alice:xxxxx@proxy.corp:8080","noProxy":".corp,10.0.0.0/8","source":"HTTP_PROXY, HTTPS_PROXY, NO_PROXY"}`; got != want {
		t.Errorf("Info JSON = %s, want %s", got, want)
	}
}

// A plain http:// request takes HTTP_PROXY's upstream on any port; a CONNECT to the same
// port takes HTTPS_PROXY's.
func TestForHTTP(t *testing.T) {
	s, err := FromEnv(func(k string) string {
		return map[string]string{"HTTP_PROXY": "http://plain:3128", "HTTPS_PROXY": "http://secure:3128", "NO_PROXY": ".corp"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		host        string
		port        int
		http, https string
	}{
		{"example.com", 8080, "http://plain:3128", "http://secure:3128"},
		{"example.com", 80, "http://plain:3128", "http://plain:3128"},
		{"wiki.corp", 8080, "", ""},
	} {
		str := func(u *url.URL) string {
			if u == nil {
				return ""
			}
			return u.String()
		}
		if got := str(s.ForHTTP(tt.host, tt.port)); got != tt.http {
			t.Errorf("ForHTTP(%s, %d) = %q, want %q", tt.host, tt.port, got, tt.http)
		}
		if got := str(s.For(tt.host, tt.port)); got != tt.https {
			t.Errorf("For(%s, %d) = %q, want %q", tt.host, tt.port, got, tt.https)
		}
	}
}

func TestIsProxy(t *testing.T) {
	s, err := FromEnv(func(k string) string {
		return map[string]string{"HTTP_PROXY": "http://Proxy.Corp:3128", "ALL_PROXY": "socks5h://127.0.0.1"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{"proxy.corp:3128": true, "proxy.corp.:3128": true, "127.0.0.1:1080": true, "proxy.corp:80": false, "example.com:443": false, "bogus": false} {
		if got := s.IsProxy(addr); got != want {
			t.Errorf("IsProxy(%q) = %v, want %v", addr, got, want)
		}
	}
}
