// Package netstack will hold the VIF of `tp run` on Linux: a gVisor network stack behind a TUN
// device in a private user+network namespace, so programs that ignore proxies reach the
// cluster without root. It never imports Kubernetes or gRPC.
package netstack
