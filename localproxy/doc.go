// Package localproxy holds tp's proxy front end on the developer's machine: one loopback
// port that serves SOCKS5 (CONNECT and UDP ASSOCIATE, via things-go/go-socks5) and HTTP
// proxying (absolute-URI requests and CONNECT, via elazarl/goproxy), told apart by the first
// byte a client sends (0x05 is SOCKS5, a letter is HTTP).
//
// Server sends every proxied connection or UDP flow to one remote.Dialer, passing names
// through unresolved so the cluster side resolves them (socks5h:// semantics). It maps the
// dialer's typed errors (remote.KindOf) to each protocol's vocabulary: a SOCKS5 reply code,
// or an HTTP status with a readable "tp: ..." body, so a user can tell "no such service"
// from "nothing listens" from "the tunnel is down".
//
// Router is the production Dialer: it decides per destination whether to go through the
// tunnel to the cluster or directly from this machine (cluster CIDRs and names the cluster
// can resolve go through the tunnel; everything else goes direct).
//
// With Config.Credentials every client must authenticate (SOCKS5 username/password, HTTP
// Proxy-Authorization: Basic), for a port that other machines reach; without, the port is
// meant for loopback. Either way Config.Peers turns away other users of this machine
// (package peer; on Linux), with a SOCKS5 0x02 reply or an HTTP 403 that says why.
//
// The DNS shim lives in the subpackage dnsshim. Nothing here imports Kubernetes or gRPC.
package localproxy
