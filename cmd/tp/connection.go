package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/localproxy/dnsshim"
	"github.com/tpdev/tp/localproxy/peer"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/session"
)

// connection is one running connection: the tunnel session and the local front ends on
// their listeners. The daemon runs one; tp run opens one for its command when none runs.
type connection struct {
	k                 *kube
	o                 connectOptions
	sess              *session.Session
	proxy             *localproxy.Server
	shim              *dnsshim.Server
	listen, dnsListen string // the addresses actually bound
	errc              chan error
	cancel            context.CancelFunc
}

// openConnection listens, connects the session and serves the proxy and the DNS server
// (on o.dnsListen, or a free loopback port: tp run's namespaces resolve through it).
func openConnection(ctx context.Context, o connectOptions, k *kube, log *slog.Logger) (*connection, error) {
	avoidProxyLoop(k.cfg, o.listen, o.dnsListen)
	// Listen before connecting: a taken port is the user's to fix, and fails fast.
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, remote.Errorf(remote.Usage, "cannot listen on %s (%v): another tp session or program has it? choose another with --listen", o.listen, err)
	}
	dnsUDP, dnsTCP, err := listenDNS(o.dnsListen)
	if err != nil {
		ln.Close()
		return nil, err
	}
	closeAll := func() { ln.Close(); dnsUDP.Close(); dnsTCP.Close() }

	cctx, ccancel := context.WithTimeout(ctx, o.timeout)
	sess, err := session.Connect(cctx, session.Config{
		REST: k.cfg, Namespace: k.namespace, ManagerNamespace: o.managerNS,
		ManagerSelector: deploy.ManagerLabelSelector, ManagerPort: deploy.ClientPort,
		Transport: o.transport, FlowLanes: o.lanes, Version: buildinfo.Version, Log: log,
	})
	ccancel()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("connecting to context %q (%s): %w", k.context, k.cluster, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &connection{k: k, o: o, sess: sess, listen: ln.Addr().String(), dnsListen: dnsUDP.LocalAddr().String(), errc: make(chan error, 3), cancel: cancel}
	routes := func() []netip.Prefix { return append(sess.Routes(), o.also...) }
	router := &localproxy.Router{Tunnel: sess, Direct: &net.Dialer{}, Names: sess, Routes: routes, Never: o.never, Log: log}
	peers := peer.New(peer.Config{AllowOtherUsers: o.allowOthers, Log: log})
	if !peers.Checks() {
		log.Info("every user of this machine can use the proxy and DNS ports", "why", othersWhy(o.allowOthers))
	}
	c.proxy = localproxy.New(localproxy.Config{Dialer: router, Log: log, Credentials: o.creds, Peers: peers})
	c.shim = dnsshim.New(dnsshim.Config{Cluster: sess, Upstream: hostResolver(log, c.dnsListen), Routes: routes, Log: log, Peers: peers})
	go func() { c.errc <- c.proxy.Serve(ctx, ln) }()
	go func() { c.errc <- c.shim.ServeUDP(ctx, dnsUDP) }()
	go func() { c.errc <- c.shim.ServeTCP(ctx, dnsTCP) }()
	return c, nil
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
func (c *connection) info() control.Info {
	i := control.Info{
		Version: buildinfo.Version, Context: c.k.context, Cluster: c.k.cluster, Namespace: c.k.namespace,
		ManagerNamespace: c.o.managerNS, Listen: c.listen, DNSListen: c.dnsListen, ProxyAuth: c.o.creds != nil,
		Goroutines: runtime.NumGoroutine(),
	}
	i.Session, _ = json.Marshal(c.sess.Status())
	i.Proxy, _ = json.Marshal(c.proxy.Stats())
	i.DNS, _ = json.Marshal(c.shim.Stats())
	return i
}

// Close stops the front ends and the session.
func (c *connection) Close() {
	c.cancel()
	_ = c.sess.Close()
}

// api is the daemon's control API over this connection.
func (c *connection) api(info func() control.Info, quit func()) control.API {
	return control.API{
		Info: info, Quit: quit,
		Intercept: c.sess.Intercept,
		Leave:     c.sess.Leave,
		List: func(ctx context.Context, namespace string) (control.Intercepts, error) {
			all, err := c.sess.ListIntercepts(ctx, namespace)
			return control.Intercepts{Held: c.sess.Intercepts(), All: all}, err
		},
	}
}
