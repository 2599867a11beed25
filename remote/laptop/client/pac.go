package client

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/localproxy/pac"
	"github.com/tpdev/tp/localproxy/upstream"
	"github.com/tpdev/tp/remote/laptop/control"
)

// namespacesTTL is how long the PAC file's namespace list is reused.
const namespacesTTL = time.Minute

// namespaceList is the cluster's namespaces, listed at most once a minute; where the user
// may not list them, the session's and the manager's.
type namespaceList struct {
	k        *Kube
	fallback []string
	log      *slog.Logger

	mu      sync.Mutex
	names   []string
	expires time.Time
	warned  bool
}

func (n *namespaceList) get(ctx context.Context) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if time.Now().Before(n.expires) {
		return n.names
	}
	names, err := n.list(ctx)
	if err != nil {
		if !n.warned {
			n.log.Info("the PAC file names only the session's and the manager's namespaces", "why", err)
			n.warned = true
		}
		names = n.fallback
	}
	n.names, n.expires = names, time.Now().Add(namespacesTTL)
	return names
}

func (n *namespaceList) list(ctx context.Context) ([]string, error) {
	cs, err := kubernetes.NewForConfig(n.k.REST)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	names := slices.Clone(n.fallback)
	for _, ns := range list.Items {
		if !slices.Contains(names, ns.Name) {
			names = append(names, ns.Name)
		}
	}
	return names, nil
}

// pac is the connection's proxy auto-config file: cluster names and ranges to this proxy,
// the rest to the upstream proxy or direct, as without tp.
func (c *Connection) pac(ctx context.Context) ([]byte, error) {
	st := c.sess.Status()
	return pac.Generate(pac.Config{
		Proxy:         clientAddr(c.Listen),
		ClusterDomain: st.ClusterDomain,
		Namespaces:    c.namespaces.get(ctx),
		Ranges:        c.router.Routes(),
		Upstream:      pac.Directive(pacUpstream(c.o.upstream)),
		NoProxy:       c.o.upstream.NoProxy,
	})
}

// pacUpstream is the upstream a browser uses for https, the common case; a PAC file has
// one answer per host, whatever the scheme.
func pacUpstream(s upstream.Settings) *url.URL {
	for _, u := range []*url.URL{s.HTTPS, s.All, s.HTTP} {
		if u != nil {
			return u
		}
	}
	return nil
}

// writePAC fetches the PAC file the connection serves into path (nothing for "").
func (c *Client) writePAC(ctx context.Context, path string, info control.Info) error {
	if path == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u := "http://" + clientAddr(info.Listen) + "/proxy.pac"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return fmt.Errorf("fetching the PAC file from %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching the PAC file from %s: %s %s %v", u, resp.Status, body, err)
	}
	if err := os.WriteFile(path, body, 0o644); err != nil {
		return fmt.Errorf("--pac: %w", err)
	}
	fmt.Fprintf(c.Err, "tp: wrote the PAC file %s (also served at %s)\n", path, u)
	return nil
}

// upstreamInfo describes s for tp status; nil when there is no upstream.
func upstreamInfo(s upstream.Settings) *control.Upstream {
	if s.Empty() {
		return nil
	}
	u := control.Upstream(s.Info())
	return &u
}
