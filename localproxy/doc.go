// Package localproxy will hold tp's front ends on the developer's machine: one loopback port
// serving SOCKS5 (things-go/go-socks5) and HTTP proxying (elazarl/goproxy), and the DNS shim
// (miekg/dns). They see only the remote Dialer and name lookup, never Kubernetes or gRPC.
package localproxy
