package client

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"runtime"
	"strings"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/intercept"
	httproute "github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/localproxy/dnsshim"
	"github.com/tpdev/tp/localproxy/peer"
	"github.com/tpdev/tp/localproxy/upstream"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/session"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Connection is one running connection: the tunnel session and the local front ends on
// their listeners. The daemon runs one; tp run and tp intercept -- CMD open one for their
// command when they cannot use a running one.
type Connection struct {
	k      *Kube
	o      Options
	sess   *session.Session
	router *localproxy.Router
	// namespaces are the cluster's, for the PAC file's name.namespace rule.
	namespaces *namespaceList
	proxy      *localproxy.Server
	shim       *dnsshim.Server
	// Listen and DNSListen are the addresses actually bound.
	Listen, DNSListen string
	errc              chan error
	cancel            context.CancelFunc
}

// Open listens, connects the session and serves the proxy and the DNS server (on
// o.DNSListen, or a free loopback port: tp run's namespaces resolve through it). It is
// the one way every command opens a connection.
func Open(ctx context.Context, k *Kube, o Options, log *slog.Logger) (*Connection, error) {
	apiProxy(k.REST, o.upstream, o.Listen, o.DNSListen)
	// Listen before connecting: a taken port is the user's to fix, and fails fast.
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, remote.Errorf(remote.Usage, "cannot listen on %s (%v): another tp session or program has it? choose another with --listen", o.Listen, err)
	}
	dnsUDP, dnsTCP, err := listenDNS(o.DNSListen)
	if err != nil {
		ln.Close()
		return nil, err
	}
	closeAll := func() { ln.Close(); dnsUDP.Close(); dnsTCP.Close() }

	cctx, ccancel := context.WithTimeout(ctx, o.Timeout)
	sess, err := session.Connect(cctx, session.Config{
		REST: k.REST, Namespace: k.Namespace, ManagerNamespace: o.ManagerNamespace,
		ManagerSelector: deploy.ManagerLabelSelector, ManagerPort: deploy.ClientPort,
		Transport: o.transport, FlowLanes: o.Lanes, Version: o.Version, Egress: o.egress, Log: log,
	})
	ccancel()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("connecting to context %q (%s): %w%s", k.Context, k.Cluster, err, viaUpstream(err, k, o.upstream))
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &Connection{k: k, o: o, sess: sess, Listen: ln.Addr().String(), DNSListen: dnsUDP.LocalAddr().String(), errc: make(chan error, 3), cancel: cancel}
	routes := func() []netip.Prefix { return append(sess.Routes(), o.also...) }
	// Destinations outside the cluster go through the user's upstream proxy, if any, as
	// they would without tp.
	direct := &upstream.Dialer{Settings: o.upstream, Direct: &net.Dialer{}, Log: log}
	c.router = &localproxy.Router{Tunnel: sess, Direct: direct, Names: sess, Routes: routes, Never: o.never, Bypass: o.upstream.IsProxy, Log: log}
	peers := peer.New(peer.Config{AllowOtherUsers: o.AllowOtherUsers, Log: log})
	if !peers.Checks() {
		log.Info("every user of this machine can use the proxy and DNS ports", "why", othersWhy(o.AllowOtherUsers))
	}
	c.namespaces = &namespaceList{k: k, fallback: []string{k.Namespace, o.ManagerNamespace}, log: log}
	c.proxy = localproxy.New(localproxy.Config{Dialer: c.router, Log: log, Credentials: o.creds, Peers: peers,
		Upstream: plainUpstream(c.router, o.upstream), PAC: c.pac})
	c.shim = dnsshim.New(dnsshim.Config{Cluster: sess, Upstream: hostResolver(log, c.DNSListen), Routes: routes, Log: log, Peers: peers})
	go func() { c.errc <- c.proxy.Serve(ctx, ln) }()
	go func() { c.errc <- c.shim.ServeUDP(ctx, dnsUDP) }()
	go func() { c.errc <- c.shim.ServeTCP(ctx, dnsTCP) }()
	return c, nil
}

// Dialer reaches what the proxy reaches, in process and counted in its stats: cluster
// destinations through the tunnel, the rest directly from this machine.
func (c *Connection) Dialer() remote.Dialer { return c.proxy.Dialer() }

// DNSDialer asks the DNS server in process (see dnsshim.Server.Dialer).
func (c *Connection) DNSDialer() remote.Dialer { return c.shim.Dialer() }

// Done reports a front end's end (its error, nil when it just stopped).
func (c *Connection) Done() <-chan error { return c.errc }

// viaUpstream explains an API server that could not be reached through the upstream proxy,
// the way kubectl would reach it: the user may need it in NO_PROXY.
func viaUpstream(err error, k *Kube, up upstream.Settings) string {
	if up.Empty() || !strings.Contains(err.Error(), "proxyconnect") {
		return ""
	}
	host := k.Cluster
	if u, perr := url.Parse(k.Cluster); perr == nil {
		host = u.Hostname()
	}
	return fmt.Sprintf(" (the API server is reached through the upstream proxy %s; if this machine reaches %s directly, add it to NO_PROXY or --upstream-no-proxy)", up, host)
}

func othersWhy(allowed bool) string {
	if allowed {
		return "--allow-other-users"
	}
	return "tp cannot ask this system which user a loopback client is (Linux only, so far)"
}

// listenDNS binds UDP and TCP on one address; with none given, on one free loopback port.
func listenDNS(addr string) (net.PacketConn, net.Listener, error) {
	fixed := addr != ""
	if !fixed {
		addr = "127.0.0.1:0"
	}
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, remote.Errorf(remote.Usage, "cannot listen on %s/udp for DNS (%v): choose another with --dns-listen", addr, err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if fixed || try == 10 {
			return nil, nil, remote.Errorf(remote.Usage, "cannot listen on %s/tcp for DNS (%v): choose another with --dns-listen", addr, err)
		}
	}
}

// hostResolver answers names outside the cluster with this machine's own nameservers (not
// the DNS server itself, should the machine point at it).
func hostResolver(log *slog.Logger, self string) dnsshim.Upstream {
	servers, err := dnsshim.ReadResolvConf("/etc/resolv.conf")
	if err != nil {
		log.Info("no host resolver for names outside the cluster", "err", err)
		return nil
	}
	var keep []string
	for _, s := range servers {
		if s != self {
			keep = append(keep, s)
		}
	}
	f, err := dnsshim.NewForwarder(keep, 0)
	if err != nil {
		log.Info("no host resolver for names outside the cluster", "err", err)
		return nil
	}
	return f
}

// info describes the connection for tp status.
func (c *Connection) info() control.Info {
	i := control.Info{
		Version: c.o.Version, Context: c.k.Context, Cluster: c.k.Cluster, Namespace: c.k.Namespace,
		ManagerNamespace: c.o.ManagerNamespace, Listen: c.Listen, DNSListen: c.DNSListen, ProxyAuth: c.o.creds != nil,
		Goroutines: runtime.NumGoroutine(),
	}
	i.Session, _ = json.Marshal(c.sess.Status())
	i.Upstream, i.NoProxy = upstreamInfo(c.o.upstream), c.o.upstream.NoProxy
	for _, p := range c.o.also {
		i.AlsoProxy = append(i.AlsoProxy, p.String())
	}
	i.Proxy, _ = json.Marshal(c.proxy.Stats())
	i.DNS, _ = json.Marshal(c.shim.Stats())
	return i
}

// Close stops the front ends and the session.
func (c *Connection) Close() {
	c.cancel()
	_ = c.sess.Close()
}

// api is the daemon's control API over this connection.
func (c *Connection) api(info func() control.Info, quit func()) control.API {
	return control.API{
		Info: info, Quit: quit,
		Intercept: c.sess.Intercept,
		Leave:     c.sess.Leave,
		List: func(ctx context.Context, namespace string) (control.Intercepts, error) {
			all, err := c.sess.ListIntercepts(ctx, namespace)
			return control.Intercepts{Held: c.sess.Intercepts(), All: interceptsOf(all)}, err
		},
	}
}

// interceptsOf converts the manager's answer at the session's boundary: the control
// socket's JSON is tp's own, not the wire protocol's.
func interceptsOf(in []*tunnelpb.InterceptInfo) []control.InterceptInfo {
	if in == nil {
		return nil
	}
	out := make([]control.InterceptInfo, 0, len(in))
	for _, it := range in {
		out = append(out, control.InterceptInfo{
			Name: it.GetName(), Namespace: it.GetNamespace(), Kind: intercept.CanonicalKind(it.GetKind()), Workload: it.GetWorkload(),
			Port: it.GetPort(), Client: it.GetClient(), SinceUnix: it.GetSinceUnix(), Agents: it.GetAgents(),
			Holder: it.GetHolder(), Grant: it.GetGrant(), Problem: it.GetProblem(), HTTP: httproute.FromProto(it.GetHttp()), Wiretap: it.GetWiretap(),
		})
	}
	return out
}
