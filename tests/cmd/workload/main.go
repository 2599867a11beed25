// Command workload runs the e2e suites' test workload (package tests/workload):
//
//	workload -http :8080 -https :8443 -tcp-echo :9000 -udp-echo :9001
//
// The pod name it reports comes from $POD_NAME, else the hostname.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/tpdev/tp/tests/workload"
)

func main() {
	httpAddr := flag.String("http", "", "address for the HTTP server (e.g. :8080)")
	httpsAddr := flag.String("https", "", "address for the HTTPS server (e.g. :8443)")
	tcpAddr := flag.String("tcp-echo", "", "address for the TCP echo server (e.g. :9000)")
	udpAddr := flag.String("udp-echo", "", "address for the UDP echo server (e.g. :9001)")
	flag.Parse()
	if *httpAddr == "" && *httpsAddr == "" && *tcpAddr == "" && *udpAddr == "" {
		fmt.Fprintln(os.Stderr, "workload: give at least one of -http, -https, -tcp-echo, -udp-echo")
		os.Exit(2)
	}
	name := os.Getenv("POD_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 4)
	if *httpAddr != "" {
		go func() { errc <- workload.ServeHTTP(ctx, *httpAddr, name, nil) }()
	}
	if *httpsAddr != "" {
		cert, err := workload.SelfSigned(name)
		if err != nil {
			log.Fatalf("workload: %v", err)
		}
		go func() { errc <- workload.ServeHTTP(ctx, *httpsAddr, name, cert) }()
	}
	if *tcpAddr != "" {
		go func() { errc <- workload.ServeTCPEcho(ctx, *tcpAddr) }()
	}
	if *udpAddr != "" {
		go func() { errc <- workload.ServeUDPEcho(ctx, *udpAddr) }()
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil {
			log.Fatalf("workload: %v", err)
		}
	}
}
