package client

import (
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/localproxy/upstream"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/portforward"
	"github.com/tpdev/tp/remote/laptop/session"
)

// ConnectConfig is tp connect's configuration as the user gave it (the CLI's flags); the
// cluster is the Client's. Options checks it.
type ConnectConfig struct {
	Name, Listen, DNSListen, ManagerNamespace string
	AlsoProxy, NeverProxy                     []string // CIDRs
	Transport                                 string
	Lanes                                     int // flow lanes; 0: session.DefaultFlowLanes
	Timeout                                   time.Duration
	Foreground, Debug                         bool
	// AllowOtherUsers turns off the check that local clients are this user (see
	// localproxy/peer). Failing closed is the default because a check that silently passes
	// everyone when the kernel cannot answer protects no one; this is the way out on such
	// kernels.
	AllowOtherUsers bool
	// CredentialsFile holds USER:PASSWORD for the proxy to ask clients for.
	CredentialsFile string
	// UpstreamProxy and UpstreamNoProxy override the proxy variables tp found (see
	// resolveUpstream). The URL may hold a password: the daemon gets it in its environment
	// (UpstreamProxyEnv), never on its command line.
	UpstreamProxy, UpstreamNoProxy string
}

// MaxLanes bounds --lanes: each lane is a connection the API server keeps open.
const MaxLanes = 16

// DefaultLanes is --lanes's default.
const DefaultLanes = session.DefaultFlowLanes

// Options are a ConnectConfig, checked: what a connection is opened with.
type Options struct {
	// ConnectConfig as given, but CredentialsFile made absolute for the daemon.
	ConnectConfig
	// Version is tp's, told to the manager and by tp status.
	Version     string
	also, never []netip.Prefix
	transport   portforward.Transport
	// creds are what the proxy asks clients for (from the file or TP_PROXY_CREDENTIALS),
	// nil for none.
	creds *localproxy.Credentials
	// upstream is where destinations outside the cluster go.
	upstream upstream.Settings
	// egress: the session's connections leave from this workload's pods (tp run --egress).
	egress *session.Egress
}

// Credentials are what the proxy asks its clients for; nil for none.
func (o Options) Credentials() *localproxy.Credentials { return o.creds }

// Options checks the configuration, with the environment getenv reads
// (TP_PROXY_CREDENTIALS, TP_UPSTREAM_PROXY and the proxy variables). Every error is the
// user's to fix, and none needs the cluster.
func (cfg ConnectConfig) Options(getenv func(string) string, log *slog.Logger) (Options, error) {
	o := Options{ConnectConfig: cfg}
	if o.UpstreamProxy == "" {
		o.UpstreamProxy = getenv(UpstreamProxyEnv)
	}
	if o.Name == "" || strings.ContainsAny(o.Name, `/\. `) {
		return o, remote.Errorf(remote.Usage, "--name %q: use letters, digits and dashes", o.Name)
	}
	listen, err := netip.ParseAddrPort(o.Listen)
	if err != nil {
		return o, remote.Errorf(remote.Usage, "--listen %q: want IP:PORT, e.g. 127.0.0.1:1080", o.Listen)
	}
	if o.CredentialsFile != "" {
		// Absolute, so that the daemon reads this file wherever it starts.
		if o.CredentialsFile, err = filepath.Abs(o.CredentialsFile); err != nil {
			return o, remote.Errorf(remote.Usage, "--%s: %w", CredentialsFileFlag, err)
		}
	}
	if o.creds, err = proxyCredentials(o.CredentialsFile, getenv(CredentialsEnv)); err != nil {
		return o, err
	}
	if err := requireCredentials(o.Listen, listen, o.creds); err != nil {
		return o, err
	}
	if err := checkDNSListen(o.DNSListen); err != nil {
		return o, err
	}
	if o.transport, err = portforward.ParseTransport(o.Transport); err != nil {
		return o, remote.Errorf(remote.Usage, "--transport: %v", err)
	}
	if o.Lanes < 1 || o.Lanes > MaxLanes {
		return o, remote.Errorf(remote.Usage, "--lanes %d: want 1 to %d", o.Lanes, MaxLanes)
	}
	if o.upstream, err = resolveUpstream(o.ConnectConfig, getenv, o.Listen, log); err != nil {
		return o, err
	}
	if o.also, err = parseCIDRs("also-proxy", o.AlsoProxy); err != nil {
		return o, err
	}
	o.never, err = parseCIDRs("never-proxy", o.NeverProxy)
	return o, err
}

func checkDNSListen(addr string) error {
	if addr == "" {
		return nil
	}
	dl, err := netip.ParseAddrPort(addr)
	if err != nil {
		return remote.Errorf(remote.Usage, "--dns-listen %q: want IP:PORT, e.g. 127.0.0.1:1053", addr)
	}
	if !dl.Addr().Unmap().IsLoopback() {
		// DNS has no way to ask for credentials: elsewhere it would tell anyone on the
		// network the cluster's names and resolve through this machine.
		return remote.Errorf(remote.Usage, "--dns-listen %s is reachable from other machines, and DNS cannot ask for credentials: use a loopback address, e.g. 127.0.0.1:1053", addr)
	}
	return nil
}

func parseCIDRs(flag string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, remote.Errorf(remote.Usage, "--%s %q: want a CIDR, e.g. 10.0.0.0/8", flag, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// private are the options of a connection one command opens for itself: on loopback, on
// any free port, without credentials, since only that command uses it; with the upstream
// proxy of the environment getenv reads.
func private(managerNS string, transport portforward.Transport, timeout time.Duration, getenv func(string) string, log *slog.Logger) (Options, error) {
	o := Options{ConnectConfig: ConnectConfig{Listen: "127.0.0.1:0", ManagerNamespace: managerNS, Timeout: timeout, UpstreamProxy: getenv(UpstreamProxyEnv)}, transport: transport}
	var err error
	o.upstream, err = resolveUpstream(o.ConnectConfig, getenv, o.Listen, log)
	return o, err
}

// DaemonArgs is the command line of the daemon that runs the connection kf and cfg
// describe: tp connect --foreground with every field of cfg that is set. It is the one
// way options reach the daemon (cmd/tp's round-trip test parses it back). The credentials
// reach the daemon as the file's path or in the environment it inherits, never on its
// command line.
func DaemonArgs(kf KubeFlags, cfg ConnectConfig) []string {
	args := []string{"connect", "--foreground"}
	for _, f := range []struct{ flag, value string }{
		{"kubeconfig", kf.Kubeconfig}, {"context", kf.Context}, {"namespace", kf.Namespace},
		{"name", cfg.Name}, {"listen", cfg.Listen}, {"dns-listen", cfg.DNSListen},
		{"manager-namespace", cfg.ManagerNamespace}, {"transport", cfg.Transport},
		{CredentialsFileFlag, cfg.CredentialsFile}, {"upstream-no-proxy", cfg.UpstreamNoProxy},
	} {
		if f.value != "" {
			args = append(args, "--"+f.flag, f.value)
		}
	}
	for _, p := range cfg.AlsoProxy {
		args = append(args, "--also-proxy", p)
	}
	for _, p := range cfg.NeverProxy {
		args = append(args, "--never-proxy", p)
	}
	if cfg.Lanes != 0 {
		args = append(args, "--lanes", strconv.Itoa(cfg.Lanes))
	}
	if cfg.Timeout != 0 {
		args = append(args, "--timeout", cfg.Timeout.String())
	}
	for flag, on := range map[string]bool{"debug": cfg.Debug, "allow-other-users": cfg.AllowOtherUsers} {
		if on {
			args = append(args, "--"+flag)
		}
	}
	return args
}

// DaemonEnv is what the daemon of cfg gets in its environment besides the caller's: the
// values that must not be on a command line, where every user of the machine reads them.
func DaemonEnv(cfg ConnectConfig) []string {
	env := []string{daemonEnv + "=1"}
	if cfg.UpstreamProxy != "" {
		env = append(env, UpstreamProxyEnv+"="+cfg.UpstreamProxy)
	}
	return env
}

// LanesUsage explains --lanes.
func LanesUsage() string {
	return fmt.Sprintf("at most this many port-forward connections to the manager carry flows (1-%d), opened as flows need them: on a lane of its own an interactive flow never waits behind a download", MaxLanes)
}
