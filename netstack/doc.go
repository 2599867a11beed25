// Package netstack is the host side of the VIF of `tp run`: a gVisor userspace TCP/IP stack
// that terminates every TCP connection and UDP flow a wrapped program opens, so that the
// program needs no proxy support and tp needs no root.
//
// The program runs in a private network namespace (made elsewhere) whose only route leads
// to a TUN device; the TUN's file descriptor is given to Stack.Attach. The stack accepts
// packets for any destination (promiscuous) and answers from any source (spoofing). For
// each new flow it calls Config.Dial with the flow's source and destination (or
// Config.Dialer with the destination); the returned net.Conn is the host side of the flow
// (through tp's tunnel in this process, through another tp's SOCKS port, or straight out;
// that choice is the caller's, the stack holds no policy). TCP is dialled before the handshake completes, so
// a failed Dial reaches the program as a RST to its SYN: connect() fails with
// ECONNREFUSED instead of succeeding and then being reset.
//
// A TCP flow is spliced with remote.Splice: a FIN on either side is passed on as a
// half-close, and a flow that fails on either side (or is cut by Close) is reset on both,
// so neither end takes a cut for a clean end of stream. A UDP flow is one (source,
// destination) pair; remote/relay relays its datagrams whole both ways until it has been
// idle for Config.UDPIdleTimeout.
//
// Attach works on Linux only; the rest of the package builds everywhere, so callers need no
// build tags of their own. The package never imports Kubernetes or gRPC.
package netstack
