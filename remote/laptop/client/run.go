package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/localproxy/dnsshim"
	"github.com/tpdev/tp/netstack"
	"github.com/tpdev/tp/netstack/ns"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/portforward"
	"github.com/tpdev/tp/remote/laptop/session"
)

// The VIF's addresses, from the benchmarking range (RFC 2544), which neither clusters nor
// office networks use: the namespace is 198.18.0.2, and 198.18.0.1 is the host: its
// loopback, and on port 53 tp's DNS server.
var (
	vifAddr = netip.MustParseAddr("198.18.0.2")
	vifHost = netip.MustParseAddr("198.18.0.1")
	// vifInbound is where intercepted connections come from, into the namespace.
	vifInbound = netip.MustParseAddr("198.18.0.3")
)

const vifMTU = 65520

// RunConfig is tp run's configuration.
type RunConfig struct {
	Args []string // the command and its arguments
	// VIF is auto, on or off: whether the command runs in a private network namespace.
	VIF              string
	ManagerNamespace string
	Transport        string        // for a connection opened for the command
	Timeout          time.Duration // for such a connection, and an intercept's agents
	// Intercept and Port: a workload to intercept for the command's lifetime, and
	// LOCAL[:REMOTE].
	Intercept, Port string
	// CredentialsFile holds USER:PASSWORD for a running connection whose proxy asks.
	CredentialsFile string
	// As is a workload ([KIND/]NAME) whose container the command runs as: it gets that
	// container's environment, resolved as the kubelet does (KUBERNETES_SERVICE_HOST and
	// PORT included, so in-cluster clients find the API server). Container picks the
	// container (default: kubectl's default container, else the only one); with Intercept,
	// As may only name the same workload.
	As, Container string
	// NoMount leaves out --as's files (tp run --mount=false): without it the container's
	// ConfigMap, Secret, downwardAPI and projected volumes are written under a temporary
	// folder, $TP_ROOT, kept current while the command runs and removed after it.
	NoMount bool
	// Egress is where the command's cluster-bound connections leave from: "manager" (the
	// default: tp's manager's pod) or "workload" (a pod of As's or Intercept's workload,
	// through its traffic agent, so that network policies and allow-lists see that
	// workload; the agent is added when the workload has none).
	Egress string
}

// route is how a command reaches the cluster: a proxy (with the credentials it asks for),
// the DNS server, and what the VIF dials through: the connection itself when it runs in this
// process (dnsDialer then asks its DNS server without a port), else the proxy's SOCKS5 port.
type route struct {
	listen, dns string
	creds       *localproxy.Credentials
	dialer      remote.Dialer
	dnsDialer   remote.Dialer
	// domain and ranges are the cluster's: NO_PROXY entries that cover them are dropped
	// from the command's environment.
	domain string
	ranges []netip.Prefix
}

// Run is tp run: the command, attached to the cluster through the running connection for
// the context and namespace or one opened for it, and with an intercept for its lifetime
// when asked. The command's own exit status comes back as an *ExitError.
func (c *Client) Run(ctx context.Context, cfg RunConfig) error {
	if len(cfg.Args) == 0 {
		return remote.Errorf(remote.Usage, "name the command to run after --, e.g. tp run -- curl http://web-app/")
	}
	if cfg.VIF != "auto" && cfg.VIF != "on" && cfg.VIF != "off" {
		return remote.Errorf(remote.Usage, "--vif %q: want auto, on or off", cfg.VIF)
	}
	transport, err := portforward.ParseTransport(cfg.Transport)
	if err != nil {
		return remote.Errorf(remote.Usage, "--transport: %v", err)
	}
	k, err := c.connectedCluster(ctx)
	if err != nil {
		return err
	}
	useVIF, err := c.chooseVIF(cfg.VIF, ns.Supported())
	if err != nil {
		return err
	}
	if err := checkRunFlags(k, cfg); err != nil {
		return err
	}
	// Before the environment and files: adding the agent replaces the workload's pods.
	egress, err := c.runEgress(ctx, k, cfg)
	if err != nil {
		return err
	}
	in, env, err := c.runIntercept(ctx, k, cfg)
	if err != nil {
		return err
	}
	var mounts []ns.Mount // the files at their real paths, in the VIF
	if (cfg.As != "" || in != nil) && !cfg.NoMount {
		files, err := c.asFiles(ctx, k, cfg, in)
		switch {
		case err != nil && cfg.As != "":
			return err
		case err != nil:
			// --intercept's files are a courtesy: the intercept goes on without them.
			fmt.Fprintf(c.Err, "tp: the workload's files are not written under $%s: %v\n", RootEnv, err)
		default:
			defer files.Close()
			env = withEnv(env, []intercept.EnvVar{{Name: RootEnv, Value: files.Root}})
			if useVIF {
				mounts = files.VIFMounts(c.Err)
			}
		}
	}
	// The running connection for this cluster and namespace, or one for this command (always
	// with an intercept, which must end with the command, and for egress as a workload).
	r, conn, err := c.runRoute(ctx, k, cfg, transport, in == nil && egress == nil, egress)
	if err != nil {
		return err
	}
	if conn != nil {
		defer conn.Close()
	}
	started := func(*netstack.Stack) error { return nil }
	if in != nil {
		started = in.holdFor(ctx, c.Err, cfg.Timeout, conn)
		defer in.leaveAll(conn.sess.Leave)
	}
	if useVIF {
		return c.runInVIF(cfg.Args, env, mounts, r, c.log(), started)
	}
	return c.runWithProxy(cfg.Args, env, r, started)
}

// checkRunFlags refuses flags that do not go together, before anything changes in the
// cluster.
func checkRunFlags(k *Kube, cfg RunConfig) error {
	switch cfg.Egress {
	case "", EgressManager:
	case EgressWorkload:
		if cfg.As == "" && cfg.Intercept == "" {
			return remote.Errorf(remote.Usage, "--egress workload leaves from the pods of the workload the command runs as: add --as [KIND/]WORKLOAD")
		}
	default:
		return remote.Errorf(remote.Usage, "--egress %q: want %s (connections leave from tp's manager, the default) or %s (from a pod of --as's workload)", cfg.Egress, EgressManager, EgressWorkload)
	}
	if cfg.Intercept == "" {
		switch {
		case cfg.Port != "":
			return remote.Errorf(remote.Usage, "--port goes with --intercept WORKLOAD")
		case cfg.As == "" && cfg.Container != "":
			return remote.Errorf(remote.Usage, "--container goes with --as WORKLOAD or --intercept WORKLOAD")
		}
		return nil
	}
	if cfg.As == "" {
		return nil
	}
	as, err := intercept.ParseRef(k.Namespace, cfg.As)
	if err != nil {
		return remote.Errorf(remote.Usage, "--as: %w", err)
	}
	in, err := intercept.ParseRef(k.Namespace, cfg.Intercept)
	if err != nil {
		return remote.Errorf(remote.Usage, "--intercept: %w", err)
	}
	if as != in {
		return remote.Errorf(remote.Usage, "--as %s and --intercept %s name two workloads: the command runs as the one it intercepts (leave out --as)", as, in)
	}
	return nil
}

// runIntercept puts the agent in the workload tp run --intercept names, and returns the
// command's environment: the workload's container's (--intercept's or --as's) over this
// process's. The intercept itself is held once the command runs.
func (c *Client) runIntercept(ctx context.Context, k *Kube, cfg RunConfig) (*pendingIntercept, []string, error) {
	if cfg.Intercept == "" {
		if cfg.As == "" {
			return nil, os.Environ(), nil
		}
		vars, err := c.workloadEnv(ctx, k, cfg.As, cfg.Container)
		if err != nil {
			return nil, nil, err
		}
		return nil, withEnv(os.Environ(), vars), nil
	}
	ic := InterceptConfig{Workload: cfg.Intercept, ManagerNamespace: cfg.ManagerNamespace, Timeout: cfg.Timeout}
	if cfg.Port != "" {
		ic.Ports = []string{cfg.Port}
	}
	in, err := c.prepareIntercept(ctx, k, ic)
	if err != nil {
		return nil, nil, err
	}
	vars, err := remoteEnv(ctx, in.cs, in.ref, in.target, cfg.Container)
	if err != nil {
		return nil, nil, err
	}
	return in, withEnv(os.Environ(), vars), nil
}

// workloadEnv is the environment of the container of a ready pod of workload (tp run --as).
func (c *Client) workloadEnv(ctx context.Context, k *Kube, workload, container string) ([]intercept.EnvVar, error) {
	ref, err := intercept.ParseRef(k.Namespace, workload)
	if err != nil {
		return nil, remote.Errorf(remote.Usage, "--as: %w", err)
	}
	cs, err := c.kubeClient(k)
	if err != nil {
		return nil, err
	}
	vars, err := remoteEnv(ctx, cs, ref, nil, container)
	if err != nil {
		return nil, err
	}
	c.log().Debug("running as a workload's container", "workload", ref.String(), "container", container, "variables", len(vars))
	return vars, nil
}

// asFiles writes the files of --as's container (or of the intercepted one) under a
// temporary folder, kept current until Close.
func (c *Client) asFiles(ctx context.Context, k *Kube, cfg RunConfig, in *pendingIntercept) (*podFiles, error) {
	if in != nil {
		return writePodFiles(ctx, c.Err, in.cs, in.ref, in.target, cfg.Container, c.log())
	}
	ref, err := intercept.ParseRef(k.Namespace, cfg.As)
	if err != nil {
		return nil, remote.Errorf(remote.Usage, "--as: %w", err)
	}
	cs, err := c.kubeClient(k)
	if err != nil {
		return nil, err
	}
	return writePodFiles(ctx, c.Err, cs, ref, nil, cfg.Container, c.log())
}

// runRoute is the running connection's route when reuse allows it and one is usable, else
// that of a connection opened for the command (returned, for the caller to close).
func (c *Client) runRoute(ctx context.Context, k *Kube, cfg RunConfig, transport portforward.Transport, reuse bool, egress *session.Egress) (route, *Connection, error) {
	if reuse {
		r, ok, err := c.runningRoute(ctx, k, cfg.CredentialsFile)
		if err != nil || ok {
			return r, nil, err
		}
	}
	conn, err := c.openPrivate(ctx, k, cfg.ManagerNamespace, transport, cfg.Timeout, egress)
	if err != nil {
		return route{}, nil, err
	}
	// In process: the VIF's flows skip a SOCKS5 hop over loopback, and their failures keep
	// their kind (a SOCKS5 reply cannot tell a tunnel that is down from other failures).
	domain, ranges := clusterOf(conn.info())
	return route{listen: conn.Listen, dns: conn.DNSListen, dialer: conn.Dialer(), dnsDialer: conn.DNSDialer(), domain: domain, ranges: ranges}, conn, nil
}

// holdFor holds the intercept on conn once the command runs; in the VIF, intercepted
// connections come into the namespace, where the command listens.
func (in *pendingIntercept) holdFor(ctx context.Context, w io.Writer, timeout time.Duration, conn *Connection) func(*netstack.Stack) error {
	return func(stack *netstack.Stack) error {
		if stack != nil {
			conn.sess.SetLocalDial(func(ctx context.Context, addr string) (net.Conn, error) {
				_, port, _ := net.SplitHostPort(addr)
				p, _ := strconv.Atoi(port)
				return stack.DialNamespace(ctx, netip.AddrPortFrom(vifAddr, uint16(p)))
			})
		}
		return in.hold(ctx, w, timeout, conn.sess.Intercept, conn.sess.Leave)
	}
}

// chooseVIF says whether the command runs in the VIF: on asks for it (and fails without
// it), auto takes it where it works, saying so where it does not.
func (c *Client) chooseVIF(vif string, unsupported error) (bool, error) {
	if vif == "off" {
		return false, nil
	}
	if unsupported == nil {
		return true, nil
	}
	if vif == "on" {
		return false, remote.Errorf(remote.Usage, "--vif=on: %v", unsupported)
	}
	fmt.Fprintf(c.Err, "tp: running without the VIF (proxy variables only): %v\n", unsupported)
	return false, nil
}

// openPrivate opens the connection one command uses alone.
func (c *Client) openPrivate(ctx context.Context, k *Kube, managerNS string, transport portforward.Transport, timeout time.Duration, egress *session.Egress) (*Connection, error) {
	o, err := private(managerNS, transport, timeout, c.getenv, c.log())
	if err != nil {
		return nil, err
	}
	o.egress = egress
	o.Version = c.Version
	return Open(ctx, k, o, c.log())
}

// runningRoute is the route through the running connection for k, when tp run can use
// it: one whose proxy asks for credentials is usable only with them, from credsFile
// (--proxy-credentials-file) or TP_PROXY_CREDENTIALS.
func (c *Client) runningRoute(ctx context.Context, k *Kube, credsFile string) (route, bool, error) {
	info, creds, ok, err := runningProxy(ctx, k, credsFile, c.getenv(CredentialsEnv), c.log())
	if err != nil || !ok {
		return route{}, false, err
	}
	r := route{listen: clientAddr(info.Listen), dns: info.DNSListen, creds: creds}
	r.domain, r.ranges = clusterOf(info)
	socks := &localproxy.SOCKSDialer{Proxy: r.listen, Credentials: creds}
	r.dialer = socks
	if creds != nil {
		// Wrong credentials would reach the command as a refusal of its every connection.
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := socks.Authenticate(actx)
		cancel()
		switch {
		case errors.Is(err, localproxy.ErrCredentialsRefused):
			from := "$" + CredentialsEnv
			if credsFile != "" {
				from = credsFile
			}
			return route{}, false, remote.Errorf(remote.Usage, "the running connection %q refused the proxy credentials from %s: give the ones its tp connect was given, or tp quit it and tp run opens a connection of its own",
				info.Name, from)
		case err != nil:
			return route{}, false, fmt.Errorf("the running connection %q: %w", info.Name, err)
		}
	}
	c.log().Debug("using the running connection", "name", info.Name, "proxy", r.listen, "dns", r.dns, "credentials", creds != nil)
	return r, true, nil
}

// runningProxy is the running connection for k that tp run can use, with the credentials
// its proxy asks for (nil for none): one that asks for credentials is usable only with
// them, from credsFile (--proxy-credentials-file) or env (TP_PROXY_CREDENTIALS's value).
func runningProxy(ctx context.Context, k *Kube, credsFile, env string, log *slog.Logger) (control.Info, *localproxy.Credentials, bool, error) {
	info, ok := runningConnection(ctx, k)
	if !ok || !info.ProxyAuth {
		return info, nil, ok, nil
	}
	creds, err := proxyCredentials(credsFile, env)
	if err != nil {
		return info, nil, false, err
	}
	if creds == nil {
		log.Debug("not using the running connection: its proxy asks for credentials and none were given", "name", info.Name)
		return info, nil, false, nil
	}
	return info, creds, true, nil
}

// runningConnection finds a running daemon for the cluster, context and namespace of k.
func runningConnection(ctx context.Context, k *Kube) (control.Info, bool) {
	names, _ := control.Names()
	for _, n := range names {
		info, err := control.Status(ctx, n)
		if err == nil && info.Context == k.Context && info.Cluster == k.Cluster && info.Namespace == k.Namespace && info.DNSListen != "" {
			return info, true
		}
	}
	return control.Info{}, false
}

// runWithProxy runs the command with the proxy variables set; started runs once it runs.
func (c *Client) runWithProxy(args, env []string, r route, started func(*netstack.Stack) error) error {
	cmd, err := startCommand(args, proxyEnv(env, r.listen, r), c.Stdio)
	if err != nil {
		return err
	}
	if err := started(nil); err != nil {
		return abort(cmd, err)
	}
	return waitCommand(cmd)
}

// proxyEnv adds the variables that make programs use tp's proxy on listen: the de-facto
// standard ones (upper and lower case: programs read one or the other), Node.js's switch
// for them, and the JVM's properties. The user's NO_PROXY is kept, less what would send
// cluster destinations around tp. r.creds, when the proxy asks for them, go into the URLs
// (the command's own environment, printed nowhere) but not into JAVA_TOOL_OPTIONS, which
// every JVM prints to stderr.
func proxyEnv(env []string, listen string, r route, alsoDirect ...string) []string {
	host, port, _ := net.SplitHostPort(listen)
	socks, httpProxy := proxyURL("socks5h", listen, r.creds), proxyURL("http", listen, r.creds)
	noProxy := exportedNoProxy(envValue(env, "NO_PROXY", "no_proxy"), r.domain, r.ranges, alsoDirect...)
	vars := map[string]string{
		"ALL_PROXY": socks, "all_proxy": socks,
		"HTTP_PROXY": httpProxy, "http_proxy": httpProxy,
		"HTTPS_PROXY": httpProxy, "https_proxy": httpProxy,
		"NO_PROXY": noProxy, "no_proxy": noProxy,
		"NODE_USE_ENV_PROXY": "1",
	}
	java := fmt.Sprintf("-Dhttp.proxyHost=%s -Dhttp.proxyPort=%s -Dhttps.proxyHost=%s -Dhttps.proxyPort=%s "+
		"-Dhttp.nonProxyHosts=%s -DsocksProxyHost=%s -DsocksProxyPort=%s", host, port, host, port, javaNonProxyHosts(noProxy), host, port)
	var out []string
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		if _, ours := vars[name]; ours {
			continue
		}
		if name == "JAVA_TOOL_OPTIONS" {
			java = strings.TrimSpace(value + " " + java)
			continue
		}
		out = append(out, kv)
	}
	for name, value := range vars {
		out = append(out, name+"="+value)
	}
	return append(out, "JAVA_TOOL_OPTIONS="+java)
}

// envValue is the first of names set in env (upper case first, as Go reads them).
func envValue(env []string, names ...string) string {
	for _, n := range names {
		for _, kv := range env {
			if k, v, _ := strings.Cut(kv, "="); k == n && v != "" {
				return v
			}
		}
	}
	return ""
}

// hasProxyVars says whether env sends programs to a proxy.
func hasProxyVars(env []string) bool {
	return envValue(env, "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") != ""
}

// javaNonProxyHosts is a NO_PROXY list in http.nonProxyHosts' form: host patterns joined
// by "|", a leading dot as "*." (CIDRs have no form there and are left out; tp dials those
// directly anyway).
func javaNonProxyHosts(noProxy string) string {
	var out []string
	for _, e := range strings.Split(noProxy, ",") {
		e = strings.TrimSpace(e)
		switch {
		case e == "" || strings.Contains(e, "/") || strings.ContainsAny(e, ` |"'`):
		case e == "::1":
			out = append(out, "[::1]")
		case strings.HasPrefix(e, "."):
			out = append(out, "*"+e)
		default:
			out = append(out, e)
		}
	}
	return strings.Join(out, "|")
}

// proxyURL is scheme://[user:password@]listen, the credentials escaped as URLs need.
func proxyURL(scheme, listen string, creds *localproxy.Credentials) string {
	u := url.URL{Scheme: scheme, Host: listen}
	if creds != nil {
		u.User = url.UserPassword(creds.User, creds.Password)
	}
	return u.String()
}

// runInVIF runs the command in a private network namespace whose traffic tp's network
// stack takes: the host's address 198.18.0.1 is this machine's loopback (port 53: tp's DNS
// server), everything else goes through r's dialer, which sends cluster destinations
// through the tunnel and dials the rest from here.
func (c *Client) runInVIF(args, env []string, mounts []ns.Mount, r route, log *slog.Logger, started func(*netstack.Stack) error) error {
	dir, err := os.MkdirTemp("", "tp-run-")
	if err != nil {
		return fmt.Errorf("vif: %w", err)
	}
	defer os.RemoveAll(dir)
	_, dnsPort, _ := net.SplitHostPort(r.dns)
	_, proxyPort, _ := net.SplitHostPort(r.listen)
	dial := func(ctx context.Context, network string, _, dst netip.AddrPort) (net.Conn, error) {
		if dst.Addr() == vifHost && strconv.Itoa(int(dst.Port())) == proxyPort && network == "tcp" {
			// tp's proxy, wherever it listens ([::1], a LAN address): the variables inside
			// point here.
			return (&net.Dialer{}).DialContext(ctx, network, r.listen)
		}
		if dst.Addr() == vifHost {
			if dst.Port() == 53 && r.dnsDialer != nil {
				return r.dnsDialer.DialContext(ctx, network, dst.String())
			}
			port := strconv.Itoa(int(dst.Port()))
			if dst.Port() == 53 {
				port = dnsPort
			}
			return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		}
		return r.dialer.DialContext(ctx, network, dst.String())
	}
	stack, err := netstack.New(netstack.Config{Dial: dial, MTU: vifMTU, Address: vifInbound, Log: log})
	if err != nil {
		return fmt.Errorf("vif: %w", err)
	}
	defer stack.Close()
	if hasProxyVars(env) {
		// The user's programs use a proxy (a corporate one, or tp's own): inside the
		// namespace its loopback address is not this machine's. tp's proxy, at the host's
		// address, chains to the user's upstream.
		_, port, _ := net.SplitHostPort(r.listen)
		// The host's loopback, seen from inside, is no destination for a proxy either.
		env = proxyEnv(env, net.JoinHostPort(vifHost.String(), port), r, vifHost.String())
	}
	link := ns.Link{Name: "tp0", Addr: vifAddr, MTU: vifMTU, Resolv: vifResolvConf("/etc/resolv.conf"), HostDir: dir, Mounts: mounts}
	cmd, err := ns.Start(link, args, env, c.Stdio.In, c.Stdio.Out, c.Stdio.Err)
	if err != nil {
		return err
	}
	err = stack.Attach(int(cmd.TUN.Fd())) // the stack keeps its own copy of the descriptor
	cmd.TUN.Close()
	if err != nil {
		return abort(cmd.Cmd, fmt.Errorf("vif: %w", err))
	}
	if err := cmd.Release(); err != nil {
		return abort(cmd.Cmd, err)
	}
	if err := started(stack); err != nil {
		return abort(cmd.Cmd, err)
	}
	return waitCommand(cmd.Cmd)
}

// vifResolvConf points the namespace's resolver at tp's DNS server, keeping the host's
// search domains (from hostConf) and options that make a lost answer cost seconds, not
// tens of them.
func vifResolvConf(hostConf string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by tp run: tp's DNS server, which answers cluster names and asks this machine's resolver for the rest\n")
	fmt.Fprintf(&b, "nameserver %s\n", vifHost)
	if search := dnsshim.SearchDomains(hostConf); len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	b.WriteString("options timeout:2 attempts:2\n")
	return b.String()
}
