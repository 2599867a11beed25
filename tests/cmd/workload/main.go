// Command workload runs the e2e suites' test workload (package tests/workload):
//
//	workload -http :8080 -https :8443 -tcp-echo :9000 -udp-echo :9001
//
// The pod name it reports comes from $POD_NAME, else the hostname.
//
//	workload flood-agents -target tp-manager.tp-system.svc:8082 -n 2000 -duration 10s [-tls]
//
// registers as a traffic agent n times with forged tokens (package tests/flood), prints
// "flood started", then the manager's answers as one line of JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tpdev/tp/tests/flood"
	"github.com/tpdev/tp/tests/workload"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "flood-agents" {
		floodAgents(os.Args[2:])
		return
	}
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

func floodAgents(args []string) {
	fs := flag.NewFlagSet("flood-agents", flag.ExitOnError)
	var cfg flood.Config
	fs.StringVar(&cfg.Target, "target", "", "host:port of the manager's agent API")
	fs.IntVar(&cfg.N, "n", 2000, "registrations to send")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "spread over this long")
	fs.IntVar(&cfg.Conns, "conns", 8, "gRPC connections")
	fs.IntVar(&cfg.Workers, "workers", 200, "calls in flight at most")
	fs.BoolVar(&cfg.TLS, "tls", false, "dial with TLS, without verifying the manager's certificate")
	fs.StringVar(&cfg.Namespace, "namespace", "default", "the namespace the forged tokens claim")
	fs.StringVar(&cfg.Audience, "audience", "tp-agent", "the audience the well-formed forgeries claim")
	_ = fs.Parse(args)
	if cfg.Target == "" {
		fmt.Fprintln(os.Stderr, "workload flood-agents: give -target host:port")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fmt.Println("flood started")
	res, err := flood.Agents(ctx, cfg)
	if err != nil {
		log.Fatalf("workload flood-agents: %v", err)
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}
