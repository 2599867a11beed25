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
	if err := c.Connect(t.Context(), connectDefaults()); err != nil {
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
	err := c.Connect(t.Context(), connectDefaults())
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), `session "default" is connected to context "ctx", namespace "ns": run tp quit first`) {
		t.Errorf("another namespace: %v", err)
	}
}

func TestPrintExportsOnWindows(t *testing.T) {
	var out bytes.Buffer
	printExportsFor(&out, "127.0.0.1:1080", "windows")
	if !strings.Contains(out.String(), `$env:ALL_PROXY = "socks5h://127.0.0.1:1080"`) || strings.Contains(out.String(), "export ") {
		t.Errorf("PowerShell exports %q", out.String())
	}
}
