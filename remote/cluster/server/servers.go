package server

import (
	"context"
	"crypto/tls"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/tpdev/tp/remote/cluster/manager"
	"github.com/tpdev/tp/remote/managerspec"
	"github.com/tpdev/tp/remote/ratelimit"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

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

func newServers(srv *manager.Server, registry *manager.Registry, admission http.Handler, lim limits, cert tls.Certificate, log *slog.Logger) *servers {
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
			if r.URL.Path == managerspec.WebhookPath && admission != nil {
				markServed(r.Context())
				admission.ServeHTTP(w, r)
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

// Drain timing: how long announced connections get to be taken, and how long the flows
// already open get to finish, before the pod stops. The manifest's
// terminationGracePeriodSeconds leaves room for both.
const (
	drainSettle = 2 * time.Second
	drainFlows  = 20 * time.Second
)

// drain hands the pod's clients and agents to the other manager pods (the pod was told to
// stop: a rollout, a node drain) and lets the flows open here finish, up to drainFlows.
// The probes say not ready from the start, so nothing new is sent here.
func (s *servers) drain(registry *manager.Registry, pod string) {
	s.log.Info("stopping: handing clients and agents to the other manager pods", "pod", pod)
	told, cancelTell := context.WithTimeout(context.Background(), 3*drainSettle)
	registry.Drain(told, pod, drainSettle)
	cancelTell()
	// New calls go elsewhere (GOAWAY); the streams open here go on until they end.
	ctx, cancel := context.WithTimeout(context.Background(), drainFlows)
	defer cancel()
	done := make(chan struct{})
	go func() {
		s.client.GracefulStop()
		close(done)
	}()
	_ = s.cluster.Shutdown(ctx)
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("stopping: flows still open are cut", "after", drainFlows)
	}
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
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if registry.Draining() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		ok(w, r)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		if v, ok := registry.VerifierStats(); ok {
			fmt.Fprintln(w, srv.Stats(), v)
			return
		}
		fmt.Fprintln(w, srv.Stats())
	})
	return mux
}
