package client

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/session"
)

// daemonEnv marks the daemon's process: it prints no exports (nobody reads them).
const daemonEnv = "TP_DAEMON"

// Connect is tp connect: it reuses the running session of that name when it is for the
// same cluster and namespace, else runs the connection here (cfg.Foreground) or in a
// background daemon, and prints the variables to export as ex says.
func (c *Client) Connect(ctx context.Context, cfg ConnectConfig, ex ExportConfig) error {
	kind, err := c.shellKind(ex.Shell)
	if err != nil {
		return remote.Errorf(remote.Usage, "--shell: %v", err)
	}
	o, err := cfg.Options(c.getenv, c.log())
	if err != nil {
		return err
	}
	o.Version = c.Version
	k, err := c.cluster()
	if err != nil {
		return err
	}
	exports := func(info control.Info) error {
		if err := c.writePAC(ctx, ex.PACFile, info); err != nil {
			return err
		}
		if !ex.Print {
			return nil
		}
		return printExports(c.Out, kind, info)
	}
	// A running session for the same cluster and namespace is reused.
	if info, err := control.Status(ctx, o.Name); err == nil {
		if info.Context == k.Context && info.Namespace == k.Namespace && info.Cluster == k.Cluster {
			fmt.Fprintf(c.Err, "tp: already connected to context %q, namespace %q (session %q)\n", info.Context, info.Namespace, o.Name)
			if info.ProxyAuth {
				noteCredentials(c.Err, info.Listen)
			}
			noteOtherUpstream(c.Err, info.Upstream, upstreamInfo(o.upstream))
			return exports(info)
		}
		return remote.Errorf(remote.Usage, "session %q is connected to context %q, namespace %q: run tp quit first, or connect another with --name and --listen",
			o.Name, info.Context, info.Namespace)
	}
	if cfg.Foreground {
		return c.serve(ctx, o, k, exports)
	}
	info, err := c.spawnDaemon(ctx, c.Kube, o)
	if err != nil {
		return err
	}
	return exports(info)
}

// spawnDaemon starts `tp connect --foreground` detached, with its output in the session's
// log, and waits until it serves or fails.
func (c *Client) spawnDaemon(ctx context.Context, kf KubeFlags, o Options) (control.Info, error) {
	exe, err := os.Executable()
	if err != nil {
		return control.Info{}, fmt.Errorf("finding tp's own binary: %w", err)
	}
	logPath, err := control.LogPath(o.Name)
	if err != nil {
		return control.Info{}, err
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return control.Info{}, fmt.Errorf("session folder: %w", err)
	}
	logFile, err := openDaemonLog(logPath)
	if err != nil {
		return control.Info{}, fmt.Errorf("session log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(exe, DaemonArgs(kf, o.ConnectConfig)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), DaemonEnv(o.ConnectConfig)...)
	cmd.SysProcAttr = detached()
	if err := cmd.Start(); err != nil {
		return control.Info{}, fmt.Errorf("starting the connection daemon: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(o.Timeout + 10*time.Second)
	for {
		select {
		case <-exited:
			return control.Info{}, daemonFailed(logPath)
		case <-deadline:
			_ = cmd.Process.Kill()
			return control.Info{}, fmt.Errorf("the connection daemon did not become ready within %s; its log: %s", o.Timeout+10*time.Second, logPath)
		case <-time.After(100 * time.Millisecond):
		}
		info, err := control.Status(ctx, o.Name)
		if err != nil {
			continue
		}
		c.reportDaemon(info, o, logPath)
		return info, nil
	}
}

// reportDaemon tells the user about the daemon that now serves, and prints the exports.
func (c *Client) reportDaemon(info control.Info, o Options, logPath string) {
	fmt.Fprintf(c.Err, "tp: connected to context %q, namespace %q; proxy on %s", info.Context, info.Namespace, info.Listen)
	if info.DNSListen != "" {
		fmt.Fprintf(c.Err, ", DNS on %s", info.DNSListen)
	}
	fmt.Fprintf(c.Err, " (session %q, log %s)\n", o.Name, logPath)
	var st session.Status
	if err := json.Unmarshal(info.Session, &st); err == nil {
		warnBeyondPolicy(c.Err, o.also, st)
	}
	if info.ProxyAuth {
		noteCredentials(c.Err, info.Listen)
	}
	noteUpstream(c.Err, info.Upstream)
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

// serve is the daemon (or a --foreground connection): the connection, its control
// socket, until a signal or tp quit.
func (c *Client) serve(ctx context.Context, o Options, k *Kube, exports func(control.Info) error) error {
	log, logPath := c.log(), ""
	if w, path, ok := daemonLog(o.Name); ok {
		// The daemon's log, bounded (sizeCapped); tp status tells where it is.
		log, logPath = NewLog(w, o.Debug, false), path
		c.Log = log
	}
	if c.getenv("GOMEMLIMIT") == "" {
		// A laptop daemon should stay small: past this the collector works harder rather
		// than letting a transfer's garbage pile up (it is a soft limit, never an OOM).
		debug.SetMemoryLimit(daemonMemoryLimit)
	}
	ctx, cancel := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer cancel()

	conn, err := Open(ctx, k, o, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	started := time.Now()
	info := func() control.Info {
		i := conn.info()
		i.Name, i.PID, i.Started, i.LogPath = o.Name, os.Getpid(), started, logPath
		return i
	}
	// Before the control socket answers: a tp connect from a shell with this session's
	// variables, right after this one returns, must find it.
	if err := saveUpstream(o.Name, conn.Listen, o.upstream); err != nil {
		log.Info("the next tp connect from a shell with tp's variables will not know the upstream proxy", "err", err)
	}
	ctlErr := make(chan error, 1)
	go func() { ctlErr <- control.Serve(ctx, o.Name, conn.api(info, cancel)) }()

	st := conn.sess.Status()
	log.Info("connected", "context", k.Context, "namespace", k.Namespace, "manager", st.ManagerVersion, "proxy", conn.Listen, "dns", conn.DNSListen)
	if c.getenv(daemonEnv) == "" {
		fmt.Fprintf(c.Err, "tp: connected to context %q, namespace %q; proxy on %s; Ctrl-C ends it\n", k.Context, k.Namespace, conn.Listen)
		warnBeyondPolicy(c.Err, o.also, st)
		if o.creds != nil {
			noteCredentials(c.Err, conn.Listen)
		}
		i := info()
		noteUpstream(c.Err, i.Upstream)
		if err := exports(i); err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
	case err = <-conn.Done():
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

// noteUpstream tells where destinations outside the cluster go.
func noteUpstream(w io.Writer, up *control.Upstream) {
	if up == nil {
		return
	}
	fmt.Fprintf(w, "tp: destinations outside the cluster go through the upstream proxy %s\n", describeUpstream(up))
}

// noteOtherUpstream tells a user who asked for another upstream than the running session
// chains to that nothing changed.
func noteOtherUpstream(w io.Writer, running, asked *control.Upstream) {
	if reflect.DeepEqual(running, asked) {
		return
	}
	describe := func(u *control.Upstream) string {
		if u == nil {
			return "no upstream proxy"
		}
		return describeUpstream(u)
	}
	fmt.Fprintf(w, "tp: note: the running session chains to %s, not to %s: to change it, tp quit, then tp connect again\n", describe(running), describe(asked))
}

// describeUpstream is an upstream in one line, e.g. "http://proxy.corp:8080 (from
// HTTPS_PROXY), except NO_PROXY=.corp", or where ports differ "port 80: direct, other
// ports: http://proxy.corp:8080 ...": it must not claim more than goes there.
func describeUpstream(up *control.Upstream) string {
	plain, other := cmp.Or(up.HTTP, up.All), cmp.Or(up.HTTPS, up.All)
	d := plain
	if plain != other {
		d = "port 80: " + cmp.Or(plain, "direct") + ", other ports: " + cmp.Or(other, "direct")
	}
	if up.Source != "" {
		d += " (from " + up.Source + ")"
	}
	if up.NoProxy != "" {
		d += ", except NO_PROXY=" + up.NoProxy
	}
	return d
}
