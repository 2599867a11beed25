// Command tp-agent is tp's traffic agent, the sidecar `tp intercept` adds to a workload's
// pods (package intercept/agent). It ships in tp's cluster image beside tp-cluster, as its
// own small program: a sidecar sits in every pod of an intercepted workload, and this one
// carries no Kubernetes client (about 10 MiB resident, against 30 in tp-cluster).
//
// It is configured by its environment, which tp's injection sets: TP_MANAGER,
// TP_AGENT_PORTS (name:listen:app,...), POD_NAME, POD_NAMESPACE, TP_AGENT_CA (the PEM bundle
// the manager's certificate must chain to), and TP_AGENT_TOKEN (the projected token's path,
// default /var/run/secrets/tp/token).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/intercept/agent"
	"github.com/tpdev/tp/remote/agentspec"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Printf("tp-agent %s\n", buildinfo.Version)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "tp-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	ports, err := agent.ParsePorts(os.Getenv(agentspec.PortsEnv))
	if err != nil {
		return err
	}
	cfg := agent.Config{
		Pod: os.Getenv(agentspec.PodNameEnv), Namespace: os.Getenv(agentspec.PodNamespaceEnv), Manager: os.Getenv(agentspec.ManagerEnv),
		CA:        []byte(os.Getenv(agentspec.CAEnv)),
		TokenFile: os.Getenv(agentspec.TokenEnv), Ports: ports, Version: buildinfo.Version,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	if cfg.TokenFile == "" {
		cfg.TokenFile = agentspec.TokenPath
	}
	if cfg.Pod == "" || cfg.Namespace == "" || cfg.Manager == "" {
		return fmt.Errorf("%s, %s and %s must be set", agentspec.PodNameEnv, agentspec.PodNamespaceEnv, agentspec.ManagerEnv)
	}
	return agent.Run(ctx, cfg)
}
