package client

import (
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"runtime"
	"slices"

	"github.com/tpdev/tp/localproxy/upstream"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/session"
	"github.com/tpdev/tp/remote/laptop/shell"
)

// loopbackNoProxy are always in the NO_PROXY tp exports: this machine is never the
// cluster.
var loopbackNoProxy = []string{"localhost", "127.0.0.1", "::1"}

// ExportConfig is how tp connect and tp env print the variables.
type ExportConfig struct {
	// Shell is posix, fish, powershell, cmd or json; "" guesses from $SHELL and the OS.
	Shell string
	// Print false prints nothing (tp connect --print-env=false).
	Print bool
	// PACFile, when set, is where the connection's PAC file is written.
	PACFile string
}

// Env is tp env: the variables of the running connection name, for the shell named.
func (c *Client) Env(ctx context.Context, name, shellName string) error {
	kind, err := c.shellKind(shellName)
	if err != nil {
		return remote.Errorf(remote.Usage, "--shell: %v", err)
	}
	info, err := control.Status(ctx, name)
	if err != nil {
		return remote.Errorf(remote.Usage, "no connection %q is running (%v): start one with tp connect", name, err)
	}
	return printExports(c.Out, kind, info)
}

// shellKind is the shell the variables are printed for.
func (c *Client) shellKind(name string) (shell.Dialect, error) {
	return shellKindFor(name, c.getenv, runtime.GOOS)
}

func shellKindFor(name string, getenv func(string) string, goos string) (shell.Dialect, error) {
	if name == "" {
		return shell.Detect(getenv, goos), nil
	}
	return shell.Parse(name)
}

// clusterOf is what decides which NO_PROXY entries a shell must lose: the cluster's domain
// and the ranges that go through the tunnel (--also-proxy's too), from a connection's
// status.
func clusterOf(info control.Info) (string, []netip.Prefix) {
	var st session.Status
	if json.Unmarshal(info.Session, &st) != nil {
		return "", nil
	}
	var ranges []netip.Prefix
	for _, c := range slices.Concat(st.ServiceCIDRs, st.PodCIDRs, info.AlsoProxy) {
		if p, err := netip.ParsePrefix(c); err == nil {
			ranges = append(ranges, p.Masked())
		}
	}
	return st.ClusterDomain, ranges
}

// exportedNoProxy is the user's NO_PROXY, minus entries that would send cluster names and
// addresses around tp (".svc", ".cluster.local", a CIDR over the pod range: common on
// laptops that already use clusters), plus loopback. Nothing is lost: tp itself still
// dials the user's entries directly.
func exportedNoProxy(user, domain string, ranges []netip.Prefix, also ...string) string {
	keep := func(entry string) bool { return !upstream.CoversCluster(entry, domain, ranges) }
	return upstream.MergeNoProxy(user, keep, append(slices.Clone(loopbackNoProxy), also...)...)
}

// exportVars are the variables that send a shell's programs through the proxy on listen
// (credentials never printed: see noteCredentials), keeping the user's NO_PROXY.
func exportVars(info control.Info) []shell.Var {
	listen := clientAddr(info.Listen)
	domain, ranges := clusterOf(info)
	noProxy := exportedNoProxy(info.NoProxy, domain, ranges)
	socks, httpProxy := "socks5h://"+listen, "http://"+listen
	return []shell.Var{
		{Name: "ALL_PROXY", Value: socks}, {Name: "all_proxy", Value: socks},
		{Name: "HTTP_PROXY", Value: httpProxy}, {Name: "http_proxy", Value: httpProxy},
		{Name: "HTTPS_PROXY", Value: httpProxy}, {Name: "https_proxy", Value: httpProxy},
		{Name: "NO_PROXY", Value: noProxy}, {Name: "no_proxy", Value: noProxy},
		// Node.js (24 and later) reads the variables above only when told to.
		{Name: "NODE_USE_ENV_PROXY", Value: "1"},
	}
}

// printExports prints what a shell needs to use the connection: eval "$(tp connect)".
func printExports(w io.Writer, kind shell.Dialect, info control.Info) error {
	return shell.Write(w, kind, exportVars(info))
}
