package main

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
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/localproxy/dnsshim"
	"github.com/tpdev/tp/netstack"
	"github.com/tpdev/tp/netstack/ns"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/portforward"
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

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run one command attached to the cluster",
		ArgsUsage: "-- CMD [ARGS...]",
		Description: `Runs CMD with the cluster's names and addresses reachable, using the running connection for
the context and namespace, or one opened for the command's lifetime. Exit status, signals,
stdin, stdout and stderr are the command's own.

With the VIF (Linux; --vif=on, or auto where possible) the command runs in a private network
namespace made without root: all its traffic, whatever program it is, goes through tp; cluster
names resolve through tp's DNS server; everything else still reaches the internet and LAN from
this machine; this machine's loopback is at 198.18.0.1 inside. Without it (--vif=off), the
command gets the proxy variables (ALL_PROXY, HTTP(S)_PROXY, JAVA_TOOL_OPTIONS, ...).

A running connection whose proxy asks for credentials (tp connect with TP_PROXY_CREDENTIALS)
is used with the same credentials, from TP_PROXY_CREDENTIALS or --proxy-credentials-file:
they go into the command's proxy variables (not JAVA_TOOL_OPTIONS, which the JVM prints).
Without them, tp run opens a connection of its own, on loopback and without credentials.

   tp run -- ./myservice
   tp run --vif=off -- curl http://web-app/
   tp run --namespace other -- psql -h db`,
		Flags: append(kubeFlags(),
			&cli.StringFlag{Name: "vif", Value: "auto", Usage: "auto, on or off: run the command in a private network namespace"},
			&cli.StringFlag{Name: "manager-namespace", Value: deploy.DefaultNamespace, Usage: "where tp install put the traffic manager"},
			&cli.StringFlag{Name: "transport", Value: "auto", Usage: "port-forward transport, for a connection opened for this command"},
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute, Usage: "how long to wait for a connection opened for this command (and an intercept's agents)"},
			&cli.StringFlag{Name: "intercept", Usage: "also intercept this workload for the command's lifetime (with --port); the command gets its app container's environment"},
			&cli.StringFlag{Name: "port", Usage: "with --intercept: LOCAL[:REMOTE], the command's port and the Service's port"},
			proxyCredentialsFlag("file holding USER:PASSWORD for a running connection whose proxy asks for them (default: $"+credentialsEnv+")"),
			&cli.BoolFlag{Name: "debug", Usage: "log tp's own work to stderr"},
		),
		Action: runAction,
	}
}

// exitStatus carries the command's own exit status (or deadly signal) out of tp run.
type exitStatus struct {
	code   int
	signal os.Signal
}

func (e exitStatus) Error() string { return fmt.Sprintf("the command exited with status %d", e.code) }

func runAction(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) == 0 {
		return remote.Errorf(remote.Usage, "name the command to run after --, e.g. tp run -- curl http://web-app/")
	}
	vif := c.String("vif")
	if vif != "auto" && vif != "on" && vif != "off" {
		return remote.Errorf(remote.Usage, "--vif %q: want auto, on or off", vif)
	}
	transport, err := portforward.ParseTransport(c.String("transport"))
	if err != nil {
		return remote.Errorf(remote.Usage, "--transport: %v", err)
	}
	k, err := loadKube(c.String("kubeconfig"), c.String("context"), c.String("namespace"))
	if err != nil {
		return remote.UsageError(err)
	}
	useVIF := vif == "on"
	if vif != "off" {
		if why := ns.Supported(); why != nil {
			if vif == "on" {
				return remote.Errorf(remote.Usage, "--vif=on: %v", why)
			}
			fmt.Fprintf(c.App.ErrWriter, "tp: running without the VIF (proxy variables only): %v\n", why)
		} else {
			useVIF = true
		}
	}
	logOut := io.Discard
	if c.Bool("debug") {
		logOut = c.App.ErrWriter
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// An intercept for the command's lifetime: its agent first, then the command with the
	// app's environment, then the intercept itself, held by this process.
	var in *pendingIntercept
	var env []string
	if c.String("intercept") != "" {
		if in, err = prepareIntercept(c, k, c.String("intercept"), c.String("port"), "", false); err != nil {
			return err
		}
		vars, err := remoteEnv(c.Context, in.cs, in.ref, in.target)
		if err != nil {
			return err
		}
		env = withEnv(os.Environ(), vars)
	} else if c.String("port") != "" {
		return remote.Errorf(remote.Usage, "--port goes with --intercept WORKLOAD")
	}

	// The running connection for this cluster and namespace, or one for this command (always
	// with an intercept, which must end with the command).
	listen, dnsAddr := "", ""
	var conn *connection
	var info control.Info
	var creds *localproxy.Credentials
	ok := false
	if in == nil {
		if info, creds, ok, err = runningProxy(c.Context, k, c.String(credentialsFileFlag), os.Getenv(credentialsEnv), log); err != nil {
			return err
		}
	}
	if ok {
		listen, dnsAddr = clientAddr(info.Listen), info.DNSListen
		log.Debug("using the running connection", "name", info.Name, "proxy", listen, "dns", dnsAddr, "credentials", creds != nil)
	} else {
		// On loopback and without credentials: only this command uses it.
		o := connectOptions{listen: "127.0.0.1:0", managerNS: c.String("manager-namespace"), transport: transport, timeout: c.Duration("timeout")}
		if conn, err = openConnection(c.Context, o, k, log); err != nil {
			return err
		}
		defer conn.Close()
		listen, dnsAddr = conn.listen, conn.dnsListen
	}
	if env == nil {
		env = os.Environ()
	}
	started := func(*netstack.Stack) error { return nil }
	if in != nil {
		started = func(stack *netstack.Stack) error {
			if stack != nil {
				// Intercepted connections come into the namespace, where the command listens.
				conn.sess.SetLocalDial(func(ctx context.Context, addr string) (net.Conn, error) {
					_, port, _ := net.SplitHostPort(addr)
					p, _ := strconv.Atoi(port)
					return stack.DialNamespace(ctx, netip.AddrPortFrom(vifAddr, uint16(p)))
				})
			}
			return in.hold(c, conn.sess.Intercept, conn.sess.Leave)
		}
		defer func() { _ = conn.sess.Leave(in.spec.Name) }()
	}
	if useVIF {
		return runInVIF(c, args, env, listen, creds, dnsAddr, log, started)
	}
	return runWithProxy(c, args, env, listen, creds, started)
}

// runningProxy is the running connection for k that tp run can use, with the credentials
// its proxy asks for (nil for none): one that asks for credentials is usable only with
// them, from credsFile (--proxy-credentials-file) or env (TP_PROXY_CREDENTIALS's value).
func runningProxy(ctx context.Context, k *kube, credsFile, env string, log *slog.Logger) (control.Info, *localproxy.Credentials, bool, error) {
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
func runningConnection(ctx context.Context, k *kube) (control.Info, bool) {
	names, _ := control.Names()
	for _, n := range names {
		info, err := control.Status(ctx, n)
		if err == nil && info.Context == k.context && info.Cluster == k.cluster && info.Namespace == k.namespace && info.DNSListen != "" {
			return info, true
		}
	}
	return control.Info{}, false
}

// runWithProxy runs the command with the proxy variables set; started runs once it runs.
func runWithProxy(c *cli.Context, args, env []string, listen string, creds *localproxy.Credentials, started func(*netstack.Stack) error) error {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = proxyEnv(env, listen, creds)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return remote.Errorf(remote.Usage, "running %s: %v", args[0], err)
	}
	if err := started(nil); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return err
	}
	return waitCommand(cmd)
}

// proxyEnv adds the variables that make programs use tp's proxy: the de-facto standard
// ones (upper and lower case: programs read one or the other) and the JVM's properties.
// creds, when the proxy asks for them, go into the URLs (the command's own environment,
// printed nowhere) but not into JAVA_TOOL_OPTIONS, which every JVM prints to stderr.
func proxyEnv(env []string, listen string, creds *localproxy.Credentials) []string {
	host, port, _ := net.SplitHostPort(listen)
	socks, httpProxy := proxyURL("socks5h", listen, creds), proxyURL("http", listen, creds)
	vars := map[string]string{
		"ALL_PROXY": socks, "all_proxy": socks,
		"HTTP_PROXY": httpProxy, "http_proxy": httpProxy,
		"HTTPS_PROXY": httpProxy, "https_proxy": httpProxy,
		"NO_PROXY": "localhost,127.0.0.1,::1", "no_proxy": "localhost,127.0.0.1,::1",
	}
	java := fmt.Sprintf("-Dhttp.proxyHost=%s -Dhttp.proxyPort=%s -Dhttps.proxyHost=%s -Dhttps.proxyPort=%s "+
		"-Dhttp.nonProxyHosts=localhost|127.0.0.1 -DsocksProxyHost=%s -DsocksProxyPort=%s", host, port, host, port, host, port)
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
// server), everything else goes through the connection's proxy, which sends cluster
// destinations through the tunnel and dials the rest from here.
func runInVIF(c *cli.Context, args, env []string, listen string, creds *localproxy.Credentials, dnsAddr string, log *slog.Logger, started func(*netstack.Stack) error) error {
	dir, err := os.MkdirTemp("", "tp-run-")
	if err != nil {
		return fmt.Errorf("vif: %w", err)
	}
	defer os.RemoveAll(dir)
	_, dnsPort, _ := net.SplitHostPort(dnsAddr)
	socks := &localproxy.SOCKSDialer{Proxy: listen, Credentials: creds}
	dial := func(ctx context.Context, network string, _, dst netip.AddrPort) (net.Conn, error) {
		if dst.Addr() == vifHost {
			port := strconv.Itoa(int(dst.Port()))
			if dst.Port() == 53 {
				port = dnsPort
			}
			return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		}
		return socks.DialContext(ctx, network, dst.String())
	}
	stack, err := netstack.New(netstack.Config{Dial: dial, MTU: vifMTU, Address: vifInbound, Log: log})
	if err != nil {
		return fmt.Errorf("vif: %w", err)
	}
	defer stack.Close()
	link := ns.Link{Name: "tp0", Addr: vifAddr, MTU: vifMTU, Resolv: vifResolvConf(), HostDir: dir}
	cmd, err := ns.Start(link, args, env, os.Stdin, os.Stdout, os.Stderr)
	if err != nil {
		return err
	}
	err = stack.Attach(int(cmd.TUN.Fd())) // the stack keeps its own copy of the descriptor
	cmd.TUN.Close()
	if err != nil {
		_ = cmd.Cmd.Process.Kill()
		_ = cmd.Cmd.Wait()
		return fmt.Errorf("vif: %w", err)
	}
	if err := cmd.Release(); err != nil {
		_ = cmd.Cmd.Process.Kill()
		_ = cmd.Cmd.Wait()
		return err
	}
	if err := started(stack); err != nil {
		_ = cmd.Cmd.Process.Kill()
		_ = cmd.Cmd.Wait()
		return err
	}
	return waitCommand(cmd.Cmd)
}

// vifResolvConf points the namespace's resolver at tp's DNS server, keeping the host's
// search domains and options that make a lost answer cost seconds, not tens of them.
func vifResolvConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by tp run: tp's DNS server, which answers cluster names and asks this machine's resolver for the rest\n")
	fmt.Fprintf(&b, "nameserver %s\n", vifHost)
	if search := dnsshim.SearchDomains("/etc/resolv.conf"); len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	b.WriteString("options timeout:2 attempts:2\n")
	return b.String()
}

// waitCommand waits for the command, passing on the signals tp receives, and returns its
// exit status as an exitStatus.
func waitCommand(cmd *exec.Cmd) error {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			_ = cmd.Process.Signal(sig)
		case err := <-done:
			var ee *exec.ExitError
			if err == nil {
				return nil
			}
			if !errors.As(err, &ee) {
				return err
			}
			if sig := exitSignal(ee); sig != nil {
				return exitStatus{code: 128 + signalNumber(sig), signal: sig}
			}
			return exitStatus{code: ee.ExitCode()}
		}
	}
}
