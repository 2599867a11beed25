package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/remote/cluster/server"
	"github.com/tpdev/tp/remote/managerspec"
)

func managerCommand() *cli.Command {
	return &cli.Command{
		Name:  "manager",
		Usage: "run the traffic manager",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "client-listen", Value: "127.0.0.1:" + strconv.Itoa(managerspec.ClientPort), Usage: "the client API; keep it on loopback: port-forward reaches it, other pods must not"},
			&cli.StringFlag{Name: "cluster-listen", Value: ":" + strconv.Itoa(managerspec.ClusterPort), Usage: "the agents' API and the health endpoints on the pod network, TLS only"},
			&cli.StringFlag{Name: "tls-cert", Usage: "the cluster port's certificate chain (PEM), issued by tp install's CA"},
			&cli.StringFlag{Name: "tls-key", Usage: "the cluster port's key (PEM)"},
			&cli.StringFlag{Name: "cluster-domain", Usage: "the cluster's DNS domain (default: from /etc/resolv.conf, else cluster.local)"},
			&cli.StringFlag{Name: "dns", Usage: "the cluster's DNS server host:port (default: from /etc/resolv.conf)"},
			&cli.BoolFlag{Name: "debug", Usage: "log every failed dial"},
		},
		Action: func(c *cli.Context) error {
			level := slog.LevelInfo
			if c.Bool("debug") {
				level = slog.LevelDebug
			}
			allowed, err := managerspec.ParseAllowedCIDRs(os.Getenv(managerspec.AllowedCIDRsEnv))
			if err != nil {
				return fmt.Errorf("manager: %s: %w (tp install --allow-cidr sets it)", managerspec.AllowedCIDRsEnv, err)
			}
			return server.Run(c.Context, server.Config{
				ClientListen: c.String("client-listen"), ClusterListen: c.String("cluster-listen"),
				TLSCert: c.String("tls-cert"), TLSKey: c.String("tls-key"),
				ClusterDomain: c.String("cluster-domain"), DNS: c.String("dns"),
				ManagedNamespaces: managerspec.ParseManagedNamespaces(os.Getenv(managerspec.ManagedNamespacesEnv)),
				AllowedCIDRs:      allowed,
				Namespace:         os.Getenv(managerspec.PodNamespaceEnv),
				Version:           buildinfo.Version,
				Log:               slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
			})
		},
	}
}
