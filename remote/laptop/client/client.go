// Package client is the laptop side of tp's commands: it opens a connection to the
// cluster (or reuses a running one) and runs, intercepts, lists and reports on it. The
// CLI turns its flags into this package's configs and makes one call per command.
package client

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/tpdev/tp/remote/laptop/control"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Client carries what every command shares: the cluster choice (loaded once, on first
// need: tp status and tp quit never read a kubeconfig), where messages go, and the
// process's environment.
type Client struct {
	Kube KubeFlags
	// Out is for what programs read (exports, tables, JSON), Err for "tp: " messages.
	Out, Err io.Writer
	// Stdio is what a command tp runs gets, and tp run's namespace.
	Stdio Stdio
	// Log is tp's own log (nil: none).
	Log *slog.Logger
	// Version is tp's own.
	Version string
	// Getenv reads the process's environment (nil: os.Getenv).
	Getenv func(string) string

	// clientset makes the Kubernetes client (nil: client-go's; tests give a fake).
	clientset func(*rest.Config) (kubernetes.Interface, error)

	kubeOnce sync.Once
	kube     *Kube
	kubeErr  error
}

// Stdio are a command's standard files.
type Stdio struct{ In, Out, Err *os.File }

// OSStdio are this process's own.
func OSStdio() Stdio { return Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr} }

// New is a client for the cluster kf chooses, printing to out and errOut.
func New(kf KubeFlags, out, errOut io.Writer) *Client {
	return &Client{Kube: kf, Out: out, Err: errOut, Stdio: OSStdio()}
}

// cluster loads the kubeconfig once; its failures are the user's to fix.
func (c *Client) cluster() (*Kube, error) {
	c.kubeOnce.Do(func() {
		c.kube, c.kubeErr = LoadKube(c.Kube)
	})
	return c.kube, c.kubeErr
}

// connectedCluster is cluster() in the namespace of the connection running for its
// context, when no namespace was given (-n) and the running connections of that context
// agree on one: a workload named without a namespace is then one of the connected
// namespace's, as its short DNS names are.
func (c *Client) connectedCluster(ctx context.Context) (*Kube, error) {
	k, err := c.cluster()
	if err != nil || c.Kube.Namespace != "" {
		return k, err
	}
	names, _ := control.Names()
	ns := ""
	for _, n := range names {
		info, err := control.Status(ctx, n)
		if err != nil || info.Context != k.Context || info.Cluster != k.Cluster {
			continue
		}
		if ns != "" && info.Namespace != ns {
			return k, nil // connected to several namespaces: the kubeconfig's stands
		}
		ns = info.Namespace
	}
	if ns == "" || ns == k.Namespace {
		return k, nil
	}
	in := *k
	in.Namespace = ns
	return &in, nil
}

// kubeClient is the Kubernetes client for k.
func (c *Client) kubeClient(k *Kube) (kubernetes.Interface, error) {
	if c.clientset != nil {
		return c.clientset(k.REST)
	}
	return kubernetes.NewForConfig(k.REST)
}

func (c *Client) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

func (c *Client) getenv(name string) string {
	if c.Getenv == nil {
		return os.Getenv(name)
	}
	return c.Getenv(name)
}

// NewLog is tp's log on w: Info and up, Debug too with debug; with quiet, nothing unless
// debug (a command's own output stays clean).
func NewLog(w io.Writer, debug, quiet bool) *slog.Logger {
	switch {
	case quiet && !debug:
		return slog.New(slog.DiscardHandler)
	case debug:
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
