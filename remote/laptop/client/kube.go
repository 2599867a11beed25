package client

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tpdev/tp/localproxy/upstream"
	"github.com/tpdev/tp/remote"
)

// KubeFlags choose the cluster, as kubectl's do; empty means the kubeconfig's choice.
type KubeFlags struct {
	Kubeconfig, Context, Namespace string
}

// Kube is the cluster a command works on, chosen like kubectl does: KUBECONFIG (or
// ~/.kube/config), --kubeconfig, --context, --namespace.
type Kube struct {
	REST      *rest.Config
	Context   string
	Cluster   string // the API server's URL
	Namespace string
}

// LoadKube reads the kubeconfig; its failures are the user's to fix.
func LoadKube(f KubeFlags) (*Kube, error) {
	k, err := loadKube(f)
	return k, remote.UsageError(err)
}

func loadKube(f KubeFlags) (*Kube, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if f.Kubeconfig != "" {
		rules.ExplicitPath = f.Kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: f.Context}
	if f.Namespace != "" {
		overrides.Context.Namespace = f.Namespace
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig: %w", err)
	}
	ctxName := f.Context
	if ctxName == "" {
		ctxName = raw.CurrentContext
	}
	if _, ok := raw.Contexts[ctxName]; !ok {
		if ctxName == "" {
			return nil, fmt.Errorf("no kubeconfig context: set KUBECONFIG, or pass --kubeconfig or --context")
		}
		return nil, fmt.Errorf("no context %q in the kubeconfig (kubectl config get-contexts lists them)", ctxName)
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig context %q: %w", ctxName, err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig context %q: %w", ctxName, err)
	}
	cfg.UserAgent = "tp"
	// Quiet client-go's warnings; tp reports what matters itself.
	cfg.WarningHandler = rest.NoWarnings{}
	return &Kube{REST: cfg, Context: ctxName, Cluster: cfg.Host, Namespace: ns}, nil
}

// apiProxy keeps the API connection off tp's own proxy: a user who exported tp's
// HTTPS_PROXY and runs tp again would otherwise send tp's tunnel through tp. The API server
// is reached as kubectl would reach it: through the kubeconfig's proxy-url if it has one,
// else through the upstream proxy (the environment's, less tp itself: see
// resolveUpstream), else directly.
func apiProxy(cfg *rest.Config, up upstream.Settings, own ...string) {
	next := cfg.Proxy
	if next == nil {
		next = func(req *http.Request) (*url.URL, error) {
			port, err := strconv.Atoi(req.URL.Port())
			if err != nil {
				port = 443
				if req.URL.Scheme == "http" {
					port = 80
				}
			}
			return up.For(req.URL.Hostname(), port), nil
		}
	}
	cfg.Proxy = func(req *http.Request) (*url.URL, error) {
		u, err := next(req)
		if err != nil || u == nil {
			return u, err
		}
		for _, addr := range own {
			if u.Host == addr {
				return nil, nil
			}
		}
		return u, nil
	}
}
