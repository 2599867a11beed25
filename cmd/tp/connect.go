package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/portforward"
	"github.com/tpdev/tp/remote/laptop/session"
)

// kubeFlags choose the cluster, as kubectl's do.
func kubeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "kubeconfig", Usage: "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)"},
		&cli.StringFlag{Name: "context", Usage: "kubeconfig context (default: the current one)"},
		&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "namespace for short names (default: the context's)"},
	}
}

func connectCommand() *cli.Command {
	return &cli.Command{
		Name:  "connect",
		Usage: "connect this machine to the cluster: a SOCKS5 + HTTP proxy (and a DNS server) on loopback",
		Description: `Starts a background connection (a daemon of your own user, no root) and prints the
variables to export. Cluster names (web-app, web-app.other-ns, *.svc.cluster.local), ClusterIPs
and pod IPs go through the tunnel; everything else is dialed directly from this machine.

   eval "$(tp connect)"; curl web-app
   ALL_PROXY=socks5h://127.0.0.1:1080 curl http://web-app.default

The proxy listens on loopback, where only this machine reaches it; on Linux only your own
user may use it and its DNS port (tp asks the kernel who each local client is and refuses
other users; --allow-other-users turns that off). To let other machines use it, give it credentials that every client must then send (SOCKS5 username/password, HTTP
Proxy-Authorization: Basic):

   TP_PROXY_CREDENTIALS=user:password tp connect --listen 0.0.0.0:1080
   ALL_PROXY=socks5h://user:password@laptop:1080 curl http://web-app.default`,
		Flags: append(kubeFlags(),
			&cli.StringFlag{Name: "name", Value: "default", Usage: "session name; a second, independent connection needs its own (and its own --listen)"},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:1080", Usage: "address of the SOCKS5 + HTTP proxy (one port serves both); beyond loopback only with proxy credentials"},
			proxyCredentialsFlag("file holding USER:PASSWORD that proxy clients must give (default: $"+credentialsEnv+"); needed for a --listen other machines reach"),
			&cli.StringFlag{Name: "dns-listen", Usage: "also serve cluster DNS here (UDP and TCP), e.g. 127.0.0.1:1053"},
			&cli.StringFlag{Name: "manager-namespace", Value: deploy.DefaultNamespace, Usage: "where tp install put the traffic manager"},
			&cli.StringSliceFlag{Name: "also-proxy", Usage: "send this CIDR through the tunnel too (repeatable)"},
			&cli.StringSliceFlag{Name: "never-proxy", Usage: "never send this CIDR through the tunnel (repeatable)"},
			&cli.StringFlag{Name: "transport", Value: "auto", Usage: "port-forward transport: auto (WebSocket, falling back to SPDY), websocket or spdy"},
			&cli.IntFlag{Name: "lanes", Value: session.DefaultFlowLanes, Usage: fmt.Sprintf("at most this many port-forward connections to the manager carry flows (1-%d), opened as flows need them: on a lane of its own an interactive flow never waits behind a download", maxLanes)},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "how long to wait for the connection"},
			&cli.BoolFlag{Name: "foreground", Usage: "stay attached instead of leaving a background daemon (Ctrl-C ends it)"},
			&cli.BoolFlag{Name: "debug", Usage: "log every failed dial"},
			&cli.BoolFlag{Name: "allow-other-users", Usage: "let every user of this machine use the proxy and DNS ports, which carry your cluster rights (Linux serves only you unless given this; needed where the kernel cannot say who a client is: no sock_diag)"},
		),
		Action: connect,
	}
}

// connectOptions are connect's flags, checked.
type connectOptions struct {
	kubeconfig, context, namespace     string // as given on the command line
	name, listen, dnsListen, managerNS string
	also, never                        []netip.Prefix
	transport                          portforward.Transport
	lanes                              int // flow lanes; 0: session.DefaultFlowLanes
	timeout                            time.Duration
	debug                              bool
	// allowOthers turns off the check that local clients are this user (see localproxy/peer).
	// Failing closed is the default because a check that silently passes everyone when
	// the kernel cannot answer protects no one; this flag is the way out on such kernels.
	allowOthers bool
	// credsFile is --proxy-credentials-file, made absolute for the daemon; creds are what
	// the proxy asks clients for (from it or TP_PROXY_CREDENTIALS), nil for none.
	credsFile string
	creds     *localproxy.Credentials
}

// daemonArgs is the command line of the daemon that runs the connection o describes.
func (o connectOptions) daemonArgs() []string {
	args := []string{"connect", "--foreground", "--name", o.name, "--listen", o.listen,
		"--manager-namespace", o.managerNS, "--timeout", o.timeout.String()}
	// The credentials reach the daemon as the file's path or in the environment it
	// inherits, never on its command line.
	for flag, v := range map[string]string{"--kubeconfig": o.kubeconfig, "--context": o.context, "--namespace": o.namespace,
		"--dns-listen": o.dnsListen, "--transport": string(o.transport), "--" + credentialsFileFlag: o.credsFile} {
		if v != "" {
			args = append(args, flag, v)
		}
	}
	for _, p := range o.also {
		args = append(args, "--also-proxy", p.String())
	}
	for _, p := range o.never {
		args = append(args, "--never-proxy", p.String())
	}
	if o.lanes != 0 {
		args = append(args, "--lanes", strconv.Itoa(o.lanes))
	}
	if o.debug {
		args = append(args, "--debug")
	}
	if o.allowOthers {
		args = append(args, "--allow-other-users")
	}
	return args
}

// maxLanes bounds --lanes: each lane is a connection the API server keeps open.
const maxLanes = 16

func parseConnectOptions(c *cli.Context) (connectOptions, error) {
	o := connectOptions{
		kubeconfig: c.String("kubeconfig"), context: c.String("context"), namespace: c.String("namespace"),
		name: c.String("name"), listen: c.String("listen"), dnsListen: c.String("dns-listen"),
		managerNS: c.String("manager-namespace"), timeout: c.Duration("timeout"), debug: c.Bool("debug"),
		allowOthers: c.Bool("allow-other-users"),
	}
	if o.name == "" || strings.ContainsAny(o.name, `/\. `) {
		return o, remote.Errorf(remote.Usage, "--name %q: use letters, digits and dashes", o.name)
	}
	listen, err := netip.ParseAddrPort(o.listen)
	if err != nil {
		return o, remote.Errorf(remote.Usage, "--listen %q: want IP:PORT, e.g. 127.0.0.1:1080", o.listen)
	}
	if o.credsFile = c.String(credentialsFileFlag); o.credsFile != "" {
		// Absolute, so that the daemon reads this file wherever it starts.
		if o.credsFile, err = filepath.Abs(o.credsFile); err != nil {
			return o, remote.Errorf(remote.Usage, "--%s: %w", credentialsFileFlag, err)
		}
	}
	if o.creds, err = proxyCredentials(o.credsFile, os.Getenv(credentialsEnv)); err != nil {
		return o, err
	}
	if err := requireCredentials(o.listen, listen, o.creds); err != nil {
		return o, err
	}
	if o.dnsListen != "" {
		dl, err := netip.ParseAddrPort(o.dnsListen)
		if err != nil {
			return o, remote.Errorf(remote.Usage, "--dns-listen %q: want IP:PORT, e.g. 127.0.0.1:1053", o.dnsListen)
		}
		if !dl.Addr().Unmap().IsLoopback() {
			// DNS has no way to ask for credentials: elsewhere it would tell anyone on the
			// network the cluster's names and resolve through this machine.
			return o, remote.Errorf(remote.Usage, "--dns-listen %s is reachable from other machines, and DNS cannot ask for credentials: use a loopback address, e.g. 127.0.0.1:1053", o.dnsListen)
		}
	}
	if o.transport, err = portforward.ParseTransport(c.String("transport")); err != nil {
		return o, remote.Errorf(remote.Usage, "--transport: %v", err)
	}
	if o.lanes = c.Int("lanes"); o.lanes < 1 || o.lanes > maxLanes {
		return o, remote.Errorf(remote.Usage, "--lanes %d: want 1 to %d", o.lanes, maxLanes)
	}
	for _, f := range []struct {
		flag string
		dst  *[]netip.Prefix
	}{{"also-proxy", &o.also}, {"never-proxy", &o.never}} {
		for _, s := range c.StringSlice(f.flag) {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return o, remote.Errorf(remote.Usage, "--%s %q: want a CIDR, e.g. 10.0.0.0/8", f.flag, s)
			}
			*f.dst = append(*f.dst, p.Masked())
		}
	}
	return o, nil
}

func connect(c *cli.Context) error {
	o, err := parseConnectOptions(c)
	if err != nil {
		return err
	}
	k, err := loadKube(c.String("kubeconfig"), c.String("context"), c.String("namespace"))
	if err != nil {
		return remote.UsageError(err)
	}
	// A running session for the same cluster and namespace is reused.
	if info, err := control.Status(c.Context, o.name); err == nil {
		if info.Context == k.context && info.Namespace == k.namespace && info.Cluster == k.cluster {
			fmt.Fprintf(c.App.ErrWriter, "tp: already connected to context %q, namespace %q (session %q)\n", info.Context, info.Namespace, o.name)
			if info.ProxyAuth {
				noteCredentials(c.App.ErrWriter, info.Listen)
			}
			printExports(c.App.Writer, info.Listen)
			return nil
		}
		return remote.Errorf(remote.Usage, "session %q is connected to context %q, namespace %q: run tp quit first, or connect another with --name and --listen",
			o.name, info.Context, info.Namespace)
	}
	if c.Bool("foreground") {
		return runConnection(c, o, k)
	}
	return spawnDaemon(c, o, c.App.Writer)
}

// spawnDaemon starts `tp connect --foreground` detached, with its output in the session's
// log, and waits until it serves or fails.
func spawnDaemon(c *cli.Context, o connectOptions, exports io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding tp's own binary: %w", err)
	}
	logPath, err := control.LogPath(o.name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return fmt.Errorf("session folder: %w", err)
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("session log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(exe, o.daemonArgs()...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "TP_DAEMON=1")
	cmd.SysProcAttr = detached()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the connection daemon: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(o.timeout + 10*time.Second)
	for {
		select {
		case <-exited:
			return daemonFailed(logPath)
		case <-deadline:
			_ = cmd.Process.Kill()
			return fmt.Errorf("the connection daemon did not become ready within %s; its log: %s", o.timeout+10*time.Second, logPath)
		case <-time.After(100 * time.Millisecond):
		}
		info, err := control.Status(c.Context, o.name)
		if err != nil {
			continue
		}
		fmt.Fprintf(c.App.ErrWriter, "tp: connected to context %q, namespace %q; proxy on %s", info.Context, info.Namespace, info.Listen)
		if info.DNSListen != "" {
			fmt.Fprintf(c.App.ErrWriter, ", DNS on %s", info.DNSListen)
		}
		fmt.Fprintf(c.App.ErrWriter, " (session %q, log %s)\n", o.name, logPath)
		var st session.Status
		if err := json.Unmarshal(info.Session, &st); err == nil {
			warnBeyondPolicy(c.App.ErrWriter, o.also, st)
		}
		if info.ProxyAuth {
			noteCredentials(c.App.ErrWriter, info.Listen)
		}
		printExports(exports, info.Listen)
		return nil
	}
}

// daemonFailed reports why a daemon exited during start: its own last "tp: " line.
func daemonFailed(logPath string) error {
	data, _ := os.ReadFile(logPath)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if msg, ok := strings.CutPrefix(lines[i], "tp: "); ok {
			return errors.New(msg)
		}
	}
	return fmt.Errorf("the connection daemon exited during start; its log (%s) ends:\n%s", logPath, strings.Join(lines[max(0, len(lines)-10):], "\n"))
}

// daemonMemoryLimit is the daemon's soft memory limit unless GOMEMLIMIT says otherwise.
const daemonMemoryLimit = 128 << 20

// runConnection is the daemon (or a --foreground connection): the connection, its control
// socket, until a signal or tp quit.
func runConnection(c *cli.Context, o connectOptions, k *kube) error {
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))
	if os.Getenv("GOMEMLIMIT") == "" {
		// A laptop daemon should stay small: past this the collector works harder rather
		// than letting a transfer's garbage pile up (it is a soft limit, never an OOM).
		debug.SetMemoryLimit(daemonMemoryLimit)
	}
	ctx, cancel := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer cancel()

	conn, err := openConnection(ctx, o, k, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	started := time.Now()
	info := func() control.Info {
		i := conn.info()
		i.Name, i.PID, i.Started = o.name, os.Getpid(), started
		return i
	}
	ctlErr := make(chan error, 1)
	go func() { ctlErr <- control.Serve(ctx, o.name, conn.api(info, cancel)) }()

	st := conn.sess.Status()
	log.Info("connected", "context", k.context, "namespace", k.namespace, "manager", st.ManagerVersion, "proxy", conn.listen, "dns", conn.dnsListen)
	if os.Getenv("TP_DAEMON") == "" {
		fmt.Fprintf(c.App.ErrWriter, "tp: connected to context %q, namespace %q; proxy on %s; Ctrl-C ends it\n", k.context, k.namespace, conn.listen)
		warnBeyondPolicy(c.App.ErrWriter, o.also, st)
		if o.creds != nil {
			noteCredentials(c.App.ErrWriter, conn.listen)
		}
		printExports(c.App.Writer, conn.listen)
	}
	select {
	case <-ctx.Done():
	case err = <-conn.errc:
	case err = <-ctlErr:
	}
	cancel()
	log.Info("disconnecting")
	return err
}

// warnBeyondPolicy names the --also-proxy ranges the manager's dial policy does not cover:
// they go through the tunnel, and the manager refuses every dial there.
func warnBeyondPolicy(w io.Writer, also []netip.Prefix, st session.Status) {
	for _, p := range st.BeyondPolicy(also) {
		fmt.Fprintf(w, "tp: warning: --also-proxy %s is outside what tp's manager may dial (its dial policy: the cluster's service and pod ranges and names, and ranges the admin allowed); "+
			"connections there will be refused unless a cluster admin runs tp install --allow-cidr %s\n", p, p)
	}
}

// printExports prints what a shell needs to use the proxy: eval "$(tp connect)". Proxy
// credentials are never printed (see noteCredentials).
func printExports(w io.Writer, listen string) {
	listen = clientAddr(listen)
	vars := [][2]string{
		{"ALL_PROXY", "socks5h://" + listen}, {"all_proxy", "socks5h://" + listen},
		{"HTTP_PROXY", "http://" + listen}, {"http_proxy", "http://" + listen},
		{"HTTPS_PROXY", "http://" + listen}, {"https_proxy", "http://" + listen},
		{"NO_PROXY", "localhost,127.0.0.1,::1"}, {"no_proxy", "localhost,127.0.0.1,::1"},
	}
	for _, v := range vars {
		if runtime.GOOS == "windows" {
			fmt.Fprintf(w, "$env:%s = %q\n", v[0], v[1])
		} else {
			fmt.Fprintf(w, "export %s=%s\n", v[0], v[1])
		}
	}
}
