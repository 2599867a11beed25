// Command tpcluster runs the project's local test cluster (package tests/cluster); the
// Makefile's cluster-* targets call it. It needs root.
//
//	tpcluster up [--images DIR]   start, or reuse a healthy cluster; write .cluster/kubeconfig
//	tpcluster down                stop it and leave nothing behind
//	tpcluster load TAR...         import image tarballs into the cluster's runtime
//	tpcluster cycle               up, up (quick), down (nothing left), up: the lifecycle test
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/tests/cluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "tpcluster:", err)
		os.Exit(1)
	}
}

func app() *cli.App {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "repo", Value: ".", Usage: "the checkout (gets .cluster/kubeconfig and .cluster/logs)"},
		&cli.StringFlag{Name: "state", EnvVars: []string{"TP_CLUSTER_STATE"}, Usage: "runtime folder (default /var/lib/tp-cluster)"},
		&cli.StringFlag{Name: "cache", EnvVars: []string{"TP_CACHE"}, Usage: "cache of built binaries (default ~/.cache/tp)"},
	}
	open := func(c *cli.Context, images []string) (*cluster.Cluster, error) {
		return cluster.New(cluster.Config{
			Repo: c.String("repo"), State: c.String("state"), Cache: c.String("cache"),
			Images: images, Log: os.Stderr,
		})
	}
	return &cli.App{
		Name:            "tpcluster",
		Usage:           "the local single-node Kubernetes cluster tp's e2e tests run against",
		Flags:           flags,
		HideHelpCommand: true,
		Commands: []*cli.Command{
			{
				Name:  "up",
				Usage: "start the cluster, or reuse a healthy one, and load the images",
				Flags: []cli.Flag{&cli.StringFlag{Name: "images", Usage: "folder of image tarballs (*.tar) to load; must hold the pause image"}},
				Action: func(c *cli.Context) error {
					var images []string
					if dir := c.String("images"); dir != "" {
						images, _ = filepath.Glob(filepath.Join(dir, "*.tar"))
						if len(images) == 0 {
							return fmt.Errorf("no image tarballs in %s (run make images)", dir)
						}
					}
					cl, err := open(c, images)
					if err != nil {
						return err
					}
					return cl.Up(c.Context)
				},
			},
			{
				Name:  "cycle",
				Usage: "prove the lifecycle: up, up again (must be quick), down (must leave nothing), up",
				Flags: []cli.Flag{&cli.StringFlag{Name: "images", Usage: "folder of image tarballs (*.tar) to load"}},
				Action: func(c *cli.Context) error {
					images, _ := filepath.Glob(filepath.Join(c.String("images"), "*.tar"))
					cl, err := open(c, images)
					if err != nil {
						return err
					}
					if err := cl.Up(c.Context); err != nil {
						return err
					}
					start := time.Now()
					if err := cl.Up(c.Context); err != nil {
						return err
					}
					if again := time.Since(start); again > 10*time.Second {
						return fmt.Errorf("cycle: up on a healthy cluster took %s; it must reuse it in seconds", again)
					}
					if err := cl.Down(c.Context); err != nil {
						return fmt.Errorf("cycle: down: %w", err)
					}
					fmt.Fprintln(os.Stderr, "cycle: down left nothing behind")
					return cl.Up(c.Context)
				},
			},
			{
				Name:      "kubectl",
				Usage:     "run the kubectl built with the cluster, on the cluster",
				ArgsUsage: "-- ARGS...",
				Action: func(c *cli.Context) error {
					cl, err := open(c, nil)
					if err != nil {
						return err
					}
					return cl.Kubectl(c.Context, c.Args().Slice()...)
				},
			},
			{
				Name:  "kubectl-path",
				Usage: "print the path of the kubectl built with the cluster",
				Action: func(c *cli.Context) error {
					cl, err := open(c, nil)
					if err != nil {
						return err
					}
					path, err := cl.KubectlPath(c.Context)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintln(c.App.Writer, path)
					return err
				},
			},
			{
				Name:  "down",
				Usage: "stop the cluster and remove everything it made",
				Action: func(c *cli.Context) error {
					cl, err := open(c, nil)
					if err != nil {
						return err
					}
					if err := cl.Down(c.Context); err != nil {
						return err
					}
					fmt.Fprintln(os.Stderr, "cluster: down; nothing of it is left on the machine")
					return nil
				},
			},
			{
				Name:      "load",
				Usage:     "import image tarballs into the cluster's container runtime",
				ArgsUsage: "TAR...",
				Action: func(c *cli.Context) error {
					if c.NArg() == 0 {
						return fmt.Errorf("load: name at least one image tarball")
					}
					cl, err := open(c, nil)
					if err != nil {
						return err
					}
					return cl.Load(c.Context, c.Args().Slice()...)
				},
			},
		},
	}
}
