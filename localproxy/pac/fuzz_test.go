package pac

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzGenerate checks that no input changes the PAC file's code: the header is comment
// lines only, and below it each line is the script's, with valid JSON where the script
// has %s.
func FuzzGenerate(f *testing.F) {
	f.Add("ns", ".corp,10.0.0.0/8", "PROXY p:1", "cluster.local")
	f.Add(`x"];alert(1);//`, "a\u2028b,*,[::1]:80", "SOCKS5 s:1; DIRECT", "")
	f.Add("default", "evil.corp\"), alert(\"x", `PROXY h:1"; alert(1)`, "x\n//")
	f.Fuzz(func(t *testing.T, ns, noProxy, upstream, domain string) {
		pac, err := Generate(Config{
			Proxy: "127.0.0.1:1080", ClusterDomain: domain, Namespaces: strings.Split(ns, ","),
			Upstream: upstream, NoProxy: noProxy,
		})
		if err != nil {
			return
		}
		header, body, ok := strings.Cut(string(pac), "\nfunction FindProxyForURL")
		if !ok {
			t.Fatalf("no FindProxyForURL in\n%s", pac)
		}
		for line := range strings.SplitSeq(header, "\n") {
			if line != "" && !strings.HasPrefix(line, "//") {
				t.Fatalf("header line %q is not a comment", line)
			}
		}
		got := strings.Split("function FindProxyForURL"+body, "\n")
		want := strings.Split(script, "\n")
		if len(got) != len(want) {
			t.Fatalf("%d lines of code, want %d:\n%s", len(got), len(want), pac)
		}
		for i, w := range want {
			before, after, hole := strings.Cut(w, "%s")
			if !hole {
				if got[i] != w {
					t.Fatalf("line %q, want %q", got[i], w)
				}
				continue
			}
			v, ok := strings.CutPrefix(got[i], before)
			if ok {
				v, ok = strings.CutSuffix(v, after)
			}
			if !ok || !json.Valid([]byte(v)) {
				t.Fatalf("line %q does not fill %q with JSON", got[i], w)
			}
		}
	})
}
