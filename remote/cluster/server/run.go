// Package server runs the traffic manager: it builds the manager's services
// (remote/cluster/manager) from a Config, serves them on the manager's two ports, and
// guards those ports against what peers may send (serving limits, a log of dropped
// connections, refused calls). cmd/tp-cluster only turns flags and environment into a
// Config.
package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/cluster/manager"
	"github.com/tpdev/tp/remote/managerspec"
)

// Config is what the manager is run with: tp install's manifest sets it through
// tp-cluster's flags and environment (managerspec).
type Config struct {
	// ClientListen is the client API's address: keep it on loopback, where port-forward
	// reaches it and other pods do not.
	ClientListen string
	// ClusterListen is the cluster port's address (the agents' API and the probes, TLS
	// only), on the pod network.
	ClusterListen string
	// TLSCert and TLSKey are the files (PEM) of the cluster port's certificate chain and key.
	TLSCert, TLSKey string
	// ClusterDomain is the cluster's DNS domain; default from /etc/resolv.conf, else
	// cluster.local.
	ClusterDomain string
	// DNS is the cluster's DNS server, host:port; default the first nameserver of
	// /etc/resolv.conf.
	DNS string
	// ManagedNamespaces are the namespaces the manager may see; none: all.
	ManagedNamespaces []string
	// AllowedCIDRs are the ranges beyond the cluster's the manager may dial.
	AllowedCIDRs []netip.Prefix
	// Namespace is tp's, where the manager's pods share their intercepts; "" shares none
	// (one pod alone).
	Namespace string
	Version   string
	Log       *slog.Logger
}

// Run serves the manager until ctx ends or a port fails.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rc := readResolvConf("/etc/resolv.conf")
	domain := cfg.ClusterDomain
	if domain == "" {
		domain = rc.domain
	}
	dnsAddr := cfg.DNS
	if dnsAddr == "" {
		if rc.nameserver == "" {
			return errors.New("no DNS server: /etc/resolv.conf names none; pass --dns")
		}
		dnsAddr = net.JoinHostPort(rc.nameserver, "53")
	}
	cert, err := loadCertificate(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return err
	}
	cs, driftCS, err := inCluster()
	if err != nil {
		return err
	}
	ranges := manager.NewClusterRanges(ctx, cs, cfg.ManagedNamespaces, 30*time.Second, log)
	svc, pods := ranges.Ranges()
	log.Info("traffic manager starting", "version", cfg.Version, "domain", domain, "dns", dnsAddr, "serviceCIDRs", svc, "podCIDRs", pods, "allowedCIDRs", cfg.AllowedCIDRs,
		"certificate", cert.Leaf.DNSNames, "certificateExpires", cert.Leaf.NotAfter.UTC().Format(time.DateOnly))

	registry := manager.NewRegistry(manager.NewTokenVerifier(cs, agentspec.Audience), &manager.LeaseAuthorizer{CS: cs}, log)
	srv := manager.New(manager.Config{Version: cfg.Version, Names: manager.NewNames(domain, dnsAddr), Ranges: ranges, Allowed: cfg.AllowedCIDRs, Egress: registry, Log: log})
	registry.SetProbeDialer(srv.DialService)
	podName, _ := os.Hostname() // a pod's host name is its name
	if cfg.Namespace != "" {
		_, port, err := net.SplitHostPort(cfg.ClusterListen)
		if err != nil {
			return fmt.Errorf("manager: cluster port %q: %w", cfg.ClusterListen, err)
		}
		pods := &manager.ManagerPods{CS: cs, Namespace: cfg.Namespace, Selector: managerspec.Selector, Port: port}
		registry.SetClaims(&manager.Claims{CS: cs, Namespace: cfg.Namespace, Pod: podName, Pods: pods, Log: log})
	}
	go registry.Expire(ctx)
	go registry.SweepClaims(ctx)
	go registry.Drift(ctx, driftCS) // tells holders when the cluster no longer sends them the traffic
	ln, err := net.Listen("tcp", cfg.ClientListen)
	if err != nil {
		return fmt.Errorf("manager: client API: %w", err)
	}
	cl, err := net.Listen("tcp", cfg.ClusterListen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("manager: cluster port: %w", err)
	}
	admission := &manager.Admission{CS: cs, Namespaces: cfg.ManagedNamespaces, Log: log, Timeout: 4 * time.Second, Pod: podName}
	s := newServers(srv, registry, admission, servingLimits(), cert, log)
	errc := s.serve(ln, cl)
	log.Info("traffic manager serving", "clientAPI", ln.Addr().String(), "health", cl.Addr().String())
	select {
	case <-ctx.Done():
		s.drain(registry, podName)
	case err = <-errc:
	}
	s.stop()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("manager: %w", err)
	}
	return nil
}

// inCluster is the manager's client of the API server, as its pod's service account; and
// one for the drift check with a rate limit of its own (every held intercept costs it about
// one call a second: many intercepts must not queue the agents' token reviews).
func inCluster() (cs, drift *kubernetes.Clientset, err error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("manager: not running in a cluster: %w", err)
	}
	// client-go's default, 5 requests a second (burst 10), is a laptop tool's: the manager
	// reviews every new agent token (and reads its pod and owners, four calls), and a
	// rollout of a few dozen intercepted pods would queue them for seconds behind each
	// other and behind the address-range watches. The verifier itself bounds what bogus
	// agents can spend (no review for malformed or known-bad tokens, a few per source, four
	// at a time), so this is headroom for real work, not for garbage.
	cfg.QPS, cfg.Burst = 50, 100
	if cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, nil, fmt.Errorf("manager: %w", err)
	}
	dcfg := rest.CopyConfig(cfg)
	dcfg.QPS, dcfg.Burst = 20, 40
	if drift, err = kubernetes.NewForConfig(dcfg); err != nil {
		return nil, nil, fmt.Errorf("manager: %w", err)
	}
	return cs, drift, nil
}

// loadCertificate reads the cluster port's certificate chain and key, which tp install
// keeps in a Secret the manager's pod mounts.
func loadCertificate(certFile, keyFile string) (tls.Certificate, error) {
	if certFile == "" || keyFile == "" {
		return tls.Certificate{}, errors.New("manager: the cluster port serves TLS only: pass --tls-cert and --tls-key (tp install mounts them from Secret " + managerspec.TLSSecret + ")")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("manager: the cluster port's certificate: %w (tp install writes it: run it again)", err)
	}
	return cert, nil
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
