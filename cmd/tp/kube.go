package main

import (
	"fmt"
	"net/http"
	"net/url"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kube is the cluster a command works on, chosen like kubectl does: KUBECONFIG (or
// ~/.kube/config), --kubeconfig, --context, --namespace.
type kube struct {
	cfg       *rest.Config
	context   string
	cluster   string // the API server's URL
	namespace string
}

func loadKube(kubeconfig, context, namespace string) (*kube, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: context}
	if namespace != "" {
		overrides.Context.Namespace = namespace
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig: %w", err)
	}
	ctxName := context
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
	return &kube{cfg: cfg, context: ctxName, cluster: cfg.Host, namespace: ns}, nil
}

// avoidProxyLoop keeps the API connection off tp's own proxy: a user who exported tp's
// HTTPS_PROXY and runs tp again would otherwise send tp's tunnel through tp. Other proxies
// in the environment (a corporate one) are still used, as kubectl would.
func avoidProxyLoop(cfg *rest.Config, own ...string) {
	next := cfg.Proxy
	if next == nil {
		next = http.ProxyFromEnvironment
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
