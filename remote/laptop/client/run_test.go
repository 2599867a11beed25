package client

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProxyEnvKeepsJavaOptions(t *testing.T) {
	env := envMap(proxyEnv([]string{"JAVA_TOOL_OPTIONS=-Xmx1g", "http_proxy=http://corp:3128"}, "127.0.0.1:1080", nil))
	if env["http_proxy"] != "http://127.0.0.1:1080" {
		t.Errorf("http_proxy %q: tp's replaces any other", env["http_proxy"])
	}
	java := env["JAVA_TOOL_OPTIONS"]
	if !strings.HasPrefix(java, "-Xmx1g -Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=1080 ") || !strings.Contains(java, "-DsocksProxyHost=127.0.0.1 -DsocksProxyPort=1080") {
		t.Errorf("JAVA_TOOL_OPTIONS %q: want the user's options, then tp's", java)
	}
	if env["NO_PROXY"] != "localhost,127.0.0.1,::1" || env["no_proxy"] != env["NO_PROXY"] {
		t.Errorf("NO_PROXY %q", env["NO_PROXY"])
	}
}

func TestRunRefusesBadInputBeforeTheCluster(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	c := New(KubeFlags{}, &bytes.Buffer{}, &bytes.Buffer{})
	for _, tt := range []struct {
		cfg  RunConfig
		want string
	}{
		{RunConfig{VIF: "auto"}, "name the command to run after --"},
		{RunConfig{Args: []string{"ls"}, VIF: "maybe"}, `--vif "maybe": want auto, on or off`},
		{RunConfig{Args: []string{"ls"}, VIF: "off", Transport: "tcp"}, "--transport: "},
		{RunConfig{Args: []string{"ls"}, VIF: "off", Transport: "auto"}, "kubeconfig"},
	} {
		if err := c.Run(t.Context(), tt.cfg); err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("tp run %+v: %v, want a user error with %q", tt.cfg, err, tt.want)
		}
	}
}

func TestChooseVIF(t *testing.T) {
	var msgs bytes.Buffer
	c := New(KubeFlags{}, &bytes.Buffer{}, &msgs)
	none := errors.New("no user namespaces")
	for _, tt := range []struct {
		vif         string
		unsupported error
		want        bool
		err, msg    string
	}{
		{"off", nil, false, "", ""},
		{"auto", nil, true, "", ""},
		{"on", nil, true, "", ""},
		{"auto", none, false, "", "tp: running without the VIF (proxy variables only): no user namespaces\n"},
		{"on", none, false, "--vif=on: no user namespaces", ""},
	} {
		msgs.Reset()
		got, err := c.chooseVIF(tt.vif, tt.unsupported)
		if got != tt.want || (err == nil) != (tt.err == "") || err != nil && (!strings.Contains(err.Error(), tt.err) || exitCode(err) != 2) || msgs.String() != tt.msg {
			t.Errorf("--vif=%s, unsupported %v: %v, %v, %q", tt.vif, tt.unsupported, got, err, msgs.String())
		}
	}
}

func TestVIFResolvConf(t *testing.T) {
	host := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(host, []byte("nameserver 10.0.0.1\nsearch corp.example lan\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := vifResolvConf(host)
	for _, want := range []string{"nameserver 198.18.0.1\n", "search corp.example lan\n", "options timeout:2 attempts:2\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "10.0.0.1") {
		t.Errorf("resolv.conf names the host's nameserver:\n%s", got)
	}
}
