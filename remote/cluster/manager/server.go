// Package manager is the traffic manager's services. Server is the client API
// (tunnelpb.Manager): it dials cluster destinations for laptops, resolves names with the
// cluster's DNS in the laptop's namespace, and reports the cluster's address ranges.
// Registry serves both sides of intercepts: the agents' API (tunnelpb.Agents), whose
// callers it verifies by their projected tokens, and the clients' (tunnelpb.Intercepts).
// remote/cluster/server serves them on the manager's ports.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/tunnel"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Ranges reports the cluster's service and pod CIDRs.
type Ranges interface {
	Ranges() (services, pods []netip.Prefix)
}

// Config is what a Server needs; Dial and Names are injected so tests run without a cluster.
type Config struct {
	Version string
	Names   *Names
	Ranges  Ranges
	// Allowed are the ranges the admin allowed beyond the cluster's (tp install
	// --allow-cidr); the dial policy is built from them and Ranges.
	Allowed []netip.Prefix
	Dial    func(ctx context.Context, network, address string) (net.Conn, error)
	// Egress carries the connections clients open as a workload (Dial.via) from one of its
	// pods; without it they are refused.
	Egress      Egress
	DialTimeout time.Duration // default 10 s
	Log         *slog.Logger
}

// Server implements tunnelpb.ManagerServer.
type Server struct {
	tunnelpb.UnimplementedManagerServer
	cfg    Config
	policy *Policy

	open, total, failed atomic.Int64
	bytesIn, bytesOut   atomic.Int64
}

// New makes a Server.
func New(cfg Config) *Server {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, policy: &Policy{Ranges: cfg.Ranges, Allowed: cfg.Allowed}}
}

// Info describes the cluster.
func (s *Server) Info(ctx context.Context, _ *tunnelpb.InfoRequest) (*tunnelpb.InfoResponse, error) {
	resp := &tunnelpb.InfoResponse{Version: s.cfg.Version, ClusterDomain: s.cfg.Names.Domain}
	if s.cfg.Ranges != nil {
		svc, pods := s.cfg.Ranges.Ranges()
		for _, p := range svc {
			resp.ServiceCidrs = append(resp.ServiceCidrs, p.String())
		}
		for _, p := range pods {
			resp.PodCidrs = append(resp.PodCidrs, p.String())
		}
	}
	for _, p := range s.cfg.Allowed {
		resp.AllowedCidrs = append(resp.AllowedCidrs, p.String())
	}
	return resp, nil
}

// Resolve answers a DNS question about a cluster name.
func (s *Server) Resolve(ctx context.Context, req *tunnelpb.ResolveRequest) (*tunnelpb.ResolveResponse, error) {
	name := req.GetName()
	if len(name) == 0 || len(name) > 253 {
		return nil, status.Errorf(codes.InvalidArgument, "resolve: bad name %q", name)
	}
	if req.GetQtype() == 0 {
		fqdn, addrs, err := s.cfg.Names.LookupHost(ctx, name, req.GetNamespace())
		if err != nil && remote.KindOf(err) != remote.NoSuchHost {
			return nil, status.Errorf(codes.Unavailable, "resolve %s: %v", name, err)
		}
		resp := &tunnelpb.ResolveResponse{Fqdn: fqdn}
		if len(addrs) == 0 {
			resp.Fqdn = ""
		}
		for _, a := range addrs {
			resp.Addrs = append(resp.Addrs, a.String())
		}
		return resp, nil
	}
	fqdn, msg, err := s.cfg.Names.Query(ctx, name, req.GetNamespace(), uint16(req.GetQtype()))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "resolve %s: %v", name, err)
	}
	wire, err := msg.Pack()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "resolve %s: packing the answer: %v", name, err)
	}
	resp := &tunnelpb.ResolveResponse{Fqdn: fqdn, Response: wire}
	for _, rr := range msg.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			resp.Addrs = append(resp.Addrs, rr.A.String())
		case *dns.AAAA:
			resp.Addrs = append(resp.Addrs, rr.AAAA.String())
		}
	}
	return resp, nil
}

// Tunnel carries one connection or flow: dial, answer, then copy until both sides are done.
func (s *Server) Tunnel(stream tunnelpb.Manager_TunnelServer) error {
	d, err := tunnel.Accept(stream)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	s.total.Add(1)
	if d.GetVia() != nil {
		s.tunnelVia(stream, d)
		return nil
	}
	target, err := s.dial(stream.Context(), d)
	remoteAddr := ""
	if err == nil {
		remoteAddr = target.RemoteAddr().String()
	} else {
		s.failed.Add(1)
		s.cfg.Log.Debug("dial failed", "network", d.GetNetwork(), "address", d.GetAddress(), "namespace", d.GetNamespace(), "err", err)
	}
	if aerr := tunnel.Answer(stream, err, remoteAddr); aerr != nil || err != nil {
		if target != nil {
			target.Close()
		}
		return nil // the client has the answer (or is gone); the stream ends
	}
	if early := d.GetData(); len(early) > 0 {
		if _, err := target.Write(early); err != nil {
			target.Close()
			return nil
		}
		s.bytesOut.Add(int64(len(early)))
	}
	s.open.Add(1)
	defer s.open.Add(-1)
	// The stream ends when this handler returns, so the Conn's end is a no-op: Splice
	// returns once both directions are done or one failed.
	c := tunnel.NewConn(stream, func() {}, d.GetNetwork() == "udp", tunnel.Addr{Net: d.GetNetwork(), Address: "client"}, target.RemoteAddr())
	in, out, err := remote.Splice(c, target)
	s.bytesIn.Add(in)
	s.bytesOut.Add(out)
	if err != nil {
		s.cfg.Log.Debug("flow ended with an error", "address", d.GetAddress(), "err", err)
	}
	return nil
}

// DialService connects to address (a cluster name or an address, the name resolved with
// namespace's search path) as a client's dial would, under the same dial policy: the
// intercept registry's probes use it.
func (s *Server) DialService(ctx context.Context, address, namespace string) (net.Conn, error) {
	if _, _, err := net.SplitHostPort(address); err != nil {
		return nil, fmt.Errorf("probe address %q: %w", address, err)
	}
	return s.dial(ctx, &tunnelpb.Dial{Network: "tcp", Address: address, Namespace: namespace})
}

// dial resolves the destination (cluster names with the client namespace's search path),
// checks each address against the dial policy and connects to the first allowed one that
// answers. A destination with no allowed address is refused without a packet sent.
func (s *Server) dial(ctx context.Context, d *tunnelpb.Dial) (net.Conn, error) {
	var conn net.Conn
	err := s.eachAllowed(ctx, d, s.cfg.DialTimeout, func(ctx context.Context, hostport string) (err error) {
		conn, err = s.cfg.Dial(ctx, d.GetNetwork(), hostport)
		return err
	})
	return conn, err
}

// eachAllowed resolves d's destination and calls try with each of its addresses (ip:port)
// that the dial policy allows, in turn, until one succeeds; it returns the first refusal or
// the last failure, naming what was dialed. The whole takes at most timeout.
func (s *Server) eachAllowed(ctx context.Context, d *tunnelpb.Dial, timeout time.Duration, try func(ctx context.Context, hostport string) error) error {
	host, port, _ := net.SplitHostPort(d.GetAddress()) // validated by Accept
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fqdn, addrs, err := s.cfg.Names.LookupHost(ctx, host, d.GetNamespace())
	if err != nil {
		return err
	}
	byName := ""
	if fqdn != "" { // the cluster's DNS answered for the name
		byName = host
	}
	var last error
	for _, a := range addrs {
		if err := s.policy.Check(a, port, byName); err != nil {
			s.cfg.Log.Info("dial refused by the dial policy", "network", d.GetNetwork(), "address", d.GetAddress(), "ip", a.String(), "namespace", d.GetNamespace())
			if last == nil {
				last = err
			}
			continue
		}
		err := try(ctx, net.JoinHostPort(a.String(), port))
		if err == nil {
			return nil
		}
		if _, ok := errors.AsType[*remote.Error](err); ok {
			last = err // classified where it happened (an agent's dial)
			continue
		}
		what := d.GetAddress()
		if a.String() != host {
			what = fmt.Sprintf("%s (%s)", d.GetAddress(), net.JoinHostPort(a.String(), port))
		}
		last = remote.DialError(what, err)
	}
	if last == nil {
		last = remote.NoSuchHostError(host, d.GetNamespace())
	}
	return last
}

// Stats counts flows and bytes.
type Stats struct {
	Open, Total, Failed int64
	BytesIn, BytesOut   int64
}

// Stats returns the flow counters.
func (s *Server) Stats() Stats {
	return Stats{Open: s.open.Load(), Total: s.total.Load(), Failed: s.failed.Load(), BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load()}
}

func (s Stats) String() string {
	return "open=" + strconv.FormatInt(s.Open, 10) + " total=" + strconv.FormatInt(s.Total, 10) +
		" failed=" + strconv.FormatInt(s.Failed, 10) + " in=" + strconv.FormatInt(s.BytesIn, 10) + " out=" + strconv.FormatInt(s.BytesOut, 10)
}
