package client

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tpdev/tp/remote/laptop/control"
)

func TestConnectReusesTheRunningSession(t *testing.T) {
	shortHome(t)
	t.Setenv(CredentialsEnv, "")
	fakeDaemon(t, "default", control.Info{Name: "default", Context: "ctx", Cluster: "https://api.example:6443", Namespace: "ns",
		Listen: "127.0.0.1:1080", DNSListen: "127.0.0.1:1053", ProxyAuth: true})
	var out, msgs bytes.Buffer
	c := New(KubeFlags{Kubeconfig: kubeconfig(t, "ns")}, &out, &msgs)
	if err := c.Connect(t.Context(), connectDefaults(), ExportConfig{Print: true, Shell: "posix"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msgs.String(), `tp: already connected to context "ctx", namespace "ns" (session "default")`) || !strings.Contains(msgs.String(), "the proxy asks for the user and password") {
		t.Errorf("messages %q", msgs.String())
	}
	if !strings.Contains(out.String(), "socks5h://127.0.0.1:1080") {
		t.Errorf("exports %q", out.String())
	}
	// The same session name for another namespace is the user's to sort out.
	c = New(KubeFlags{Kubeconfig: kubeconfig(t, "other")}, &out, &msgs)
	err := c.Connect(t.Context(), connectDefaults(), ExportConfig{Print: true})
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), `session "default" is connected to context "ctx", namespace "ns": run tp quit first`) {
		t.Errorf("another namespace: %v", err)
	}
}

func TestExportsForTheShell(t *testing.T) {
	info := control.Info{Listen: "127.0.0.1:1080", NoProxy: ".corp,.svc"}
	for _, tt := range []struct {
		shell, goos, want string
	}{
		{"", "windows", `$env:ALL_PROXY = 'socks5h://127.0.0.1:1080'`},
		{"/usr/bin/fish", "linux", `set -gx NO_PROXY '.corp,localhost,127.0.0.1,::1'`},
		{"/bin/zsh", "darwin", `export HTTPS_PROXY='http://127.0.0.1:1080'`},
	} {
		getenv := func(name string) string {
			if name == "SHELL" {
				return tt.shell
			}
			return ""
		}
		kind, err := shellKindFor("", getenv, tt.goos)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := printExports(&out, kind, info); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), tt.want) {
			t.Errorf("SHELL=%q on %s: %q, want a line %q", tt.shell, tt.goos, out.String(), tt.want)
		}
	}
}
