package client

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/remote/laptop/portforward"
)

func connectDefaults() ConnectConfig {
	return ConnectConfig{Name: "default", Listen: "127.0.0.1:1080", ManagerNamespace: "tp-system", Transport: "auto", Lanes: DefaultLanes, Timeout: 30 * time.Second}
}

func TestConnectOptionsRefuseBadInput(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  func(*ConnectConfig)
		err  string
	}{
		{"empty name", func(c *ConnectConfig) { c.Name = "" }, `--name "": use letters, digits and dashes`},
		{"name with a slash", func(c *ConnectConfig) { c.Name = "a/b" }, `--name "a/b"`},
		{"name with a dot", func(c *ConnectConfig) { c.Name = ".." }, `--name ".."`},
		{"listen without port", func(c *ConnectConfig) { c.Listen = "127.0.0.1" }, `--listen "127.0.0.1": want IP:PORT`},
		{"listen by name", func(c *ConnectConfig) { c.Listen = "localhost:1080" }, `--listen "localhost:1080"`},
		{"dns-listen garbage", func(c *ConnectConfig) { c.DNSListen = "x" }, `--dns-listen "x": want IP:PORT`},
		{"transport", func(c *ConnectConfig) { c.Transport = "carrier-pigeon" }, "--transport: "},
		{"no lanes", func(c *ConnectConfig) { c.Lanes = 0 }, "--lanes 0: want 1 to 16"},
		{"too many lanes", func(c *ConnectConfig) { c.Lanes = MaxLanes + 1 }, "--lanes 17: want 1 to 16"},
		{"also-proxy", func(c *ConnectConfig) { c.AlsoProxy = []string{"10.0.0.0/8", "10.0.0.1"} }, `--also-proxy "10.0.0.1": want a CIDR`},
		{"never-proxy", func(c *ConnectConfig) { c.NeverProxy = []string{"nope"} }, `--never-proxy "nope": want a CIDR`},
	} {
		cfg := connectDefaults()
		tt.set(&cfg)
		_, err := cfg.Options(noEnv, nil)
		if err == nil || !strings.Contains(err.Error(), tt.err) || exitCode(err) != 2 {
			t.Errorf("%s: %v, want the user error %q", tt.name, err, tt.err)
		}
	}
}

func TestConnectOptions(t *testing.T) {
	cfg := connectDefaults()
	cfg.AlsoProxy, cfg.NeverProxy = []string{"10.1.2.3/8"}, []string{"192.168.0.0/16", "fd00::1/64"}
	cfg.Transport, cfg.Lanes, cfg.DNSListen = "spdy", MaxLanes, "[::1]:1053"
	o, err := cfg.Options(noEnv, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}; !slices.Equal(o.also, want) {
		t.Errorf("also %v, want %v (masked)", o.also, want)
	}
	if len(o.never) != 2 || o.never[1] != netip.MustParsePrefix("fd00::/64") {
		t.Errorf("never %v", o.never)
	}
	if o.transport != portforward.SPDY || o.Lanes != MaxLanes || o.creds != nil {
		t.Errorf("options %+v", o)
	}
	// The config is kept as given: the daemon gets it back as the user typed it.
	if !slices.Equal(o.AlsoProxy, cfg.AlsoProxy) || o.Transport != "spdy" {
		t.Errorf("config changed: %+v", o.ConnectConfig)
	}
}

func TestDaemonArgs(t *testing.T) {
	args := DaemonArgs(KubeFlags{Context: "ctx"}, ConnectConfig{Name: "default", Listen: "127.0.0.1:1080", Timeout: 30 * time.Second})
	want := []string{"connect", "--foreground", "--context", "ctx", "--name", "default", "--listen", "127.0.0.1:1080", "--timeout", "30s"}
	if !slices.Equal(args, want) {
		t.Errorf("daemon args %q, want %q (what is not set is left out, for the daemon's defaults)", args, want)
	}
	args = DaemonArgs(KubeFlags{}, ConnectConfig{AlsoProxy: []string{"10.0.0.0/8", "10.1.0.0/16"}, Debug: true, AllowOtherUsers: true, Lanes: 3})
	for _, w := range []string{"--also-proxy 10.0.0.0/8 --also-proxy 10.1.0.0/16", "--lanes 3", "--debug", "--allow-other-users"} {
		if !strings.Contains(strings.Join(args, " "), w) {
			t.Errorf("daemon args %q lack %q", args, w)
		}
	}
}

func TestPrivateConnection(t *testing.T) {
	o, err := private("mgr", portforward.WebSocket, time.Minute, noEnv, nil)
	// Only its command uses it: loopback, any port, no credentials, DNS on any port.
	if err != nil || o.Listen != "127.0.0.1:0" || o.DNSListen != "" || o.creds != nil || o.ManagerNamespace != "mgr" || o.transport != portforward.WebSocket || o.Timeout != time.Minute || !o.upstream.Empty() {
		t.Errorf("private options %+v, %v", o, err)
	}
	// The command's connection chains to the upstream proxy its environment names.
	env := map[string]string{"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": ".corp", UpstreamProxyEnv: ""}
	o, err = private("mgr", portforward.WebSocket, time.Minute, func(k string) string { return env[k] }, nil)
	if err != nil || o.upstream.HTTPS == nil || o.upstream.HTTPS.Host != "proxy.corp:3128" || o.upstream.NoProxy != ".corp" {
		t.Errorf("private options' upstream %+v, %v", o.upstream, err)
	}
	env[UpstreamProxyEnv] = "socks5h://s:1080"
	o, err = private("mgr", portforward.WebSocket, time.Minute, func(k string) string { return env[k] }, nil)
	if err != nil || o.upstream.HTTPS == nil || o.upstream.HTTPS.String() != "socks5h://s:1080" {
		t.Errorf("TP_UPSTREAM_PROXY: %+v, %v", o.upstream, err)
	}
}
