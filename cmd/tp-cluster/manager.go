package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/remote/manager"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

func managerCommand() *cli.Command {
	return &cli.Command{
		Name:  "manager",
		Usage: "run the traffic manager",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "client-listen", Value: "127.0.0.1:8081", Usage: "the client API; keep it on loopback: port-forward reaches it, other pods must not"},
			&cli.StringFlag{Name: "cluster-listen", Value: ":8082", Usage: "health endpoints (and later the agents' API) on the pod network"},
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
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return fmt.Errorf("manager: not running in a cluster: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	var managed []string
	for _, ns := range strings.Split(os.Getenv("TP_MANAGED_NAMESPACES"), ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			managed = append(managed, ns)
		}
	}
	ranges := manager.NewClusterRanges(ctx, cs, managed, 30*time.Second, log)
	svc, pods := ranges.Ranges()
	log.Info("traffic manager starting", "version", buildinfo.Version, "domain", domain, "dns", dnsAddr, "serviceCIDRs", svc, "podCIDRs", pods)

	srv := manager.New(manager.Config{Version: buildinfo.Version, Names: manager.NewNames(domain, dnsAddr), Ranges: ranges, Log: log})
	gs := grpc.NewServer(append(flowControl(),
		experimental.BufferPool(tunnel.BufferPool()),
		grpc.ForceServerCodecV2(tunnel.Codec()),
		// Clients ping every 10 s to notice a dead port-forward; allow it.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)...)
	tunnelpb.RegisterManagerServer(gs, srv)
	registry := manager.NewRegistry(manager.NewTokenVerifier(cs, manager.AgentAudience), log)
	go registry.Expire(ctx)
	tunnelpb.RegisterInterceptsServer(gs, registry.ClientAPI())
	ln, err := net.Listen("tcp", c.String("client-listen"))
	if err != nil {
		return fmt.Errorf("manager: client API: %w", err)
	}
	// The cluster port serves the probes (HTTP/1) and the agents (gRPC over cleartext HTTP/2)
	// on one listener: one Service port, one place for network policies.
	agents := grpc.NewServer(
		grpc.ForceServerCodecV2(tunnel.Codec()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	tunnelpb.RegisterAgentsServer(agents, registry.AgentAPI())
	probes := healthHandler(srv)
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	health := &http.Server{Addr: c.String("cluster-listen"), ReadHeaderTimeout: 5 * time.Second, Protocols: protocols,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				agents.ServeHTTP(w, r)
				return
			}
			probes.ServeHTTP(w, r)
		})}
	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(ln) }()
	go func() { errc <- health.ListenAndServe() }()
	log.Info("traffic manager serving", "clientAPI", ln.Addr().String(), "health", c.String("cluster-listen"))
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shut, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = health.Shutdown(shut)
	gs.Stop()
	agents.Stop()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("manager: %w", err)
	}
	return nil
}

func healthHandler(srv *manager.Server) http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, srv.Stats()) })
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

// flowControl sizes what the manager lets each client send ahead (uploads): smaller than
// the laptop's window, because the manager's memory is shared by every client; see the
// laptop side (remote/session) for why the windows are set at all.
func flowControl() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(4 << 20), grpc.InitialConnWindowSize(16 << 20),
		grpc.WriteBufferSize(256 << 10), grpc.ReadBufferSize(256 << 10),
	}
}
