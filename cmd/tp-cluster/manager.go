package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/deploy/managerspec"
	"github.com/tpdev/tp/intercept/agentspec"
	"github.com/tpdev/tp/remote/cluster/manager"
	"github.com/tpdev/tp/remote/ratelimit"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

func managerCommand() *cli.Command {
	return &cli.Command{
		Name:  "manager",
		Usage: "run the traffic manager",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "client-listen", Value: "127.0.0.1:8081", Usage: "the client API; keep it on loopback: port-forward reaches it, other pods must not"},
			&cli.StringFlag{Name: "cluster-listen", Value: ":8082", Usage: "the agents' API and the health endpoints on the pod network, TLS only"},
			&cli.StringFlag{Name: "tls-cert", Usage: "the cluster port's certificate chain (PEM), issued by tp install's CA"},
			&cli.StringFlag{Name: "tls-key", Usage: "the cluster port's key (PEM)"},
			&cli.StringFlag{Name: "cluster-domain", Usage: "the cluster's DNS domain (default: from /etc/resolv.conf, else cluster.local)"},
			&cli.StringFlag{Name: "dns", Usage: "the cluster's DNS server host:port (default: from /etc/resolv.conf)"},
			&cli.BoolFlag{Name: "debug", Usage: "log every failed dial"},
		},
		Action: func(c *cli.Context) error {
			level := slog.LevelInfo
			if c.Bool("debug") {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			return runManager(c.Context, c, log)
		},
	}
}

func runManager(ctx context.Context, c *cli.Context, log *slog.Logger) error {
	rc := readResolvConf("/etc/resolv.conf")
	domain := c.String("cluster-domain")
	if domain == "" {
		domain = rc.domain
	}
	dnsAddr := c.String("dns")
	if dnsAddr == "" {
		if rc.nameserver == "" {
			return errors.New("no DNS server: /etc/resolv.conf names none; pass --dns")
		}
		dnsAddr = net.JoinHostPort(rc.nameserver, "53")
	}
	cert, err := loadCertificate(c.String("tls-cert"), c.String("tls-key"))
	if err != nil {
		return err
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return fmt.Errorf("manager: not running in a cluster: %w", err)
	}
	// client-go's default, 5 requests a second (burst 10), is a laptop tool's: the manager
	// reviews every new agent token (and reads its pod and owners, four calls), and a
	// rollout of a few dozen intercepted pods would queue them for seconds behind each
	// other and behind the address-range watches. The verifier itself bounds what bogus
	// agents can spend (no review for malformed or known-bad tokens, a few per source, four
	// at a time), so this is headroom for real work, not for garbage.
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	managed := managerspec.ParseManagedNamespaces(os.Getenv(managerspec.ManagedNamespacesEnv))
	allowed, err := managerspec.ParseAllowedCIDRs(os.Getenv(managerspec.AllowedCIDRsEnv))
	if err != nil {
		return fmt.Errorf("manager: %s: %w (tp install --allow-cidr sets it)", managerspec.AllowedCIDRsEnv, err)
	}
	ranges := manager.NewClusterRanges(ctx, cs, managed, 30*time.Second, log)
	svc, pods := ranges.Ranges()
	log.Info("traffic manager starting", "version", buildinfo.Version, "domain", domain, "dns", dnsAddr, "serviceCIDRs", svc, "podCIDRs", pods, "allowedCIDRs", allowed,
		"certificate", cert.Leaf.DNSNames, "certificateExpires", cert.Leaf.NotAfter.UTC().Format(time.DateOnly))

	srv := manager.New(manager.Config{Version: buildinfo.Version, Names: manager.NewNames(domain, dnsAddr), Ranges: ranges, Allowed: allowed, Log: log})
	registry := manager.NewRegistry(manager.NewTokenVerifier(cs, agentspec.Audience), manager.LeaseAuthorizer{CS: cs}, log)
	go registry.Expire(ctx)
	ln, err := net.Listen("tcp", c.String("client-listen"))
	if err != nil {
		return fmt.Errorf("manager: client API: %w", err)
	}
	cl, err := net.Listen("tcp", c.String("cluster-listen"))
	if err != nil {
		ln.Close()
		return fmt.Errorf("manager: cluster port: %w", err)
	}
	s := newServers(srv, registry, servingLimits(), cert, log)
	errc := s.serve(ln, cl)
	log.Info("traffic manager serving", "clientAPI", ln.Addr().String(), "health", cl.Addr().String())
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.stop()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("manager: %w", err)
	}
	return nil
}

// limits bound what a peer can make the manager hold, on the client API (reached by
// port-forward) and on the cluster port (open to every pod).
type limits struct {
	// clientHandshake is how long a client API connection has to send the HTTP/2 preface
	// and settings: gRPC's default, 120 s, lets connections that say nothing pile up.
	clientHandshake time.Duration
	// clusterHeaders is how long a cluster port connection has to send a request's
	// headers (HTTP/1) or the HTTP/2 preface.
	clusterHeaders time.Duration
	// clusterIdle closes a cluster port connection with no request in flight (an agent
	// always has its Watch in flight); without it an HTTP/2 connection that only sent
	// its preface stays open for good.
	clusterIdle time.Duration
	// refusalLines of plaintext clients and failed TLS handshakes on the cluster port are
	// logged per refusalPeriod; the rest are counted.
	refusalLines  int
	refusalPeriod time.Duration
}

func servingLimits() limits {
	return limits{clientHandshake: 10 * time.Second, clusterHeaders: 5 * time.Second, clusterIdle: 2 * time.Minute,
		refusalLines: 5, refusalPeriod: 10 * time.Second}
}

// loadCertificate reads the cluster port's certificate chain and key, which tp install
// keeps in a Secret the manager's pod mounts.
func loadCertificate(certFile, keyFile string) (tls.Certificate, error) {
	if certFile == "" || keyFile == "" {
		return tls.Certificate{}, errors.New("manager: the cluster port serves TLS only: pass --tls-cert and --tls-key (tp install mounts them from Secret tp-manager-tls)")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("manager: the cluster port's certificate: %w (tp install writes it: run it again)", err)
	}
	return cert, nil
}

// servers are the manager's two ports: the client API (Manager and Intercepts) and the
// cluster port, which serves the probes (HTTP/1.1) and the agents (gRPC over HTTP/2) on one
// listener, over TLS (ALPN picks the protocol): one Service port, one place for network
// policies.
//
// Agent and manager are verified on both ends, each by what it can check: the agent
// verifies the manager's certificate against the CA tp install made (given to the agent by
// tp intercept) and the Service's name, so its token goes to no one else and intercepted
// requests cross the pod network encrypted; the manager verifies the agent by its
// projected service-account token, reviewed by the API server (TokenReview) and bound to a
// pod of the workload. Client certificates would prove no more than the token, which the
// kubelet already issues, rotates and binds to the pod, and would need a CA that signs
// for every injected pod.
type servers struct {
	client, agents *grpc.Server
	cluster        *http.Server
	refusals       *ratelimit.Limiter // of plaintext clients and failed handshakes on the cluster port
	log            *slog.Logger
}

func newServers(srv *manager.Server, registry *manager.Registry, lim limits, cert tls.Certificate, log *slog.Logger) *servers {
	opts := append(tunnel.ServerOptions(),
		grpc.ConnectionTimeout(lim.clientHandshake),
		grpc.UnknownServiceHandler(unknownMethod),
	)
	client := grpc.NewServer(append(opts, refusals{api: "client API", log: log}.options()...)...)
	tunnelpb.RegisterManagerServer(client, srv)
	tunnelpb.RegisterInterceptsServer(client, registry.ClientAPI())
	agents := grpc.NewServer(append(append(tunnel.AgentServerOptions(),
		grpc.UnknownServiceHandler(unknownMethod),
	), refusals{api: "agent API", log: log}.options()...)...)
	tunnelpb.RegisterAgentsServer(agents, registry.AgentAPI())
	probes := healthHandler(srv, registry)
	// HTTP/2 only over TLS: a client speaking h2c (prior knowledge) or HTTP/1 in the clear
	// fails the handshake and is closed.
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	refused := ratelimit.New(lim.refusalLines, lim.refusalPeriod)
	cluster := &http.Server{
		Protocols: protocols,
		// The agents are tp's own: TLS 1.3 only. The kubelet's probes speak it too.
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13},
		// Bounds the TLS handshake too.
		ReadHeaderTimeout: lim.clusterHeaders,
		IdleTimeout:       lim.clusterIdle,
		MaxHeaderBytes:    tunnel.MaxHeaders,
		ConnContext:       withConn,
		ErrorLog:          stdlog.New(handshakeLog{log: log, s: refused}, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				markServed(r.Context())
				agents.ServeHTTP(w, r)
				return
			}
			if _, pattern := probes.Handler(r); pattern != "" {
				markServed(r.Context())
			}
			probes.ServeHTTP(w, r)
		}),
	}
	return &servers{client: client, agents: agents, cluster: cluster, refusals: refused, log: log}
}

// serve serves the client API on client and the cluster port on cluster; the channel
// has the first server's end.
func (s *servers) serve(client, cluster net.Listener) <-chan error {
	errc := make(chan error, 2)
	go func() { errc <- s.client.Serve(watchGRPC(client, "client API", tunnel.ServerKeepaliveTimeout, s.log)) }()
	go func() { errc <- s.cluster.ServeTLS(watchTLS(cluster, "cluster port", s.refusals, s.log), "", "") }()
	return errc
}

func (s *servers) stop() {
	shut, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = s.cluster.Shutdown(shut)
	s.client.Stop()
	s.agents.Stop()
}

func healthHandler(srv *manager.Server, registry *manager.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		if v, ok := registry.VerifierStats(); ok {
			fmt.Fprintln(w, srv.Stats(), v)
			return
		}
		fmt.Fprintln(w, srv.Stats())
	})
	return mux
}

type resolvConf struct{ nameserver, domain string }

// readResolvConf takes the first nameserver and the cluster domain from a pod's resolv.conf,
// whose search path is "NS.svc.DOMAIN svc.DOMAIN DOMAIN".
func readResolvConf(path string) resolvConf {
	rc := resolvConf{domain: "cluster.local"}
	f, err := os.Open(path)
	if err != nil {
		return rc
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if rc.nameserver == "" {
				rc.nameserver = fields[1]
			}
		case "search":
			for _, s := range fields[1:] {
				if d, ok := strings.CutPrefix(s, "svc."); ok {
					rc.domain = d
					break
				}
			}
		}
	}
	return rc
}
