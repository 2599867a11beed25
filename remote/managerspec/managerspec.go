// Package managerspec is the contract between the traffic manager and what installs and
// reaches it: deploy writes the manager's manifest by these names, tp-cluster reads its
// flags and environment by them, and the laptop finds its ports by them. It imports the
// standard library only, so that the laptop's binary links no cluster-side code and the
// manager's none of the installer's (remote/agentspec is the agent's counterpart).
package managerspec

import "strings"

const (
	// ClientPort is the manager's client API, on the pod's loopback: reach it by
	// port-forward.
	ClientPort = 8081
	// ClusterPort is the manager's cluster-facing API (agents, probes), behind the Service.
	ClusterPort     = 8082
	ClusterPortName = "cluster"

	// WebhookPath is where the cluster port answers the API server's pod admission
	// reviews (AdmissionReview v1, JSON): pods of workloads with a tp agent record get the
	// agent. The API server reaches it through the manager's Service, port ClusterPort, and
	// verifies the manager's certificate against tp's CA (the webhook's caBundle).
	WebhookPath = "/mutate-pods"
	// WebhookName names the one webhook of the MutatingWebhookConfiguration tp install
	// makes (named like the install's other cluster-wide objects).
	WebhookName = "agent-injector.tp.dev"
	// WebhookProbeLabel marks the pod tp install creates in a server-side dry run to learn
	// that the API server reaches the webhook: the manager admits it with the annotation
	// WebhookProbeAnswerKey(its pod)=WebhookProbeAnswer (before, WebhookProbeLabel=
	// WebhookProbeAnswer), which the dry run's answer shows.
	WebhookProbeLabel  = "tp.dev/webhook-probe"
	WebhookProbeAnswer = "admitted"

	// TLSSecret holds the manager's server certificate (tls.crt: the certificate, then the
	// cross-signed CA after a rotation) and key (tls.key); the manager mounts it at TLSDir.
	TLSSecret = "tp-manager-tls"
	// TLSDir is where the manager's container mounts TLSSecret: the cluster port serves
	// TLSDir/tls.crt and TLSDir/tls.key.
	TLSDir = "/var/run/secrets/tp/tls"

	// ManagedNamespacesEnv tells the manager which namespaces it may see, comma separated
	// (empty: all).
	ManagedNamespacesEnv = "TP_MANAGED_NAMESPACES"
	// AllowedCIDRsEnv carries tp install --allow-cidr to the manager: a comma-separated
	// list of the ranges beyond the cluster's it may dial (see ParseAllowedCIDRs).
	AllowedCIDRsEnv = "TP_ALLOWED_CIDRS"
	// PodNamespaceEnv is the manager pod's namespace (downward API): tp's, where the
	// manager's pods share their intercepts (claims).
	PodNamespaceEnv = "POD_NAMESPACE"

	// ClaimLabel marks the manager's claims, Leases in its namespace (one per intercept a
	// manager pod serves; see remote/cluster/manager's Claims); its value hashes the port.
	ClaimLabel = "tp.dev/intercept-claim"

	// Name is the manager's Deployment, Service and service account; Selector selects its
	// pods.
	Name     = "tp-manager"
	Selector = "app.kubernetes.io/name=" + Name
)

// ParseManagedNamespaces reads ManagedNamespacesEnv: names, comma separated; blanks are
// dropped, and none means all namespaces.
func ParseManagedNamespaces(s string) []string {
	var out []string
	for _, ns := range strings.Split(s, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			out = append(out, ns)
		}
	}
	return out
}

// WebhookProbeAnswerKey is the annotation with which manager pod pod admits tp install's
// probe (value WebhookProbeAnswer): install waits for one of a pod of the revision it
// installed, as kube-proxy may send the API server to the pod it replaced for a while. A
// key per pod: the webhooks of several installs admit the same probe, and none must
// overwrite another's answer.
func WebhookProbeAnswerKey(pod string) string {
	if len(pod) > 63 { // an annotation name's limit; a manager pod's name is far shorter
		pod = pod[:63]
	}
	return WebhookProbeAnswerPrefix + pod
}

// WebhookProbeAnswerPrefix starts the keys of WebhookProbeAnswerKey.
const WebhookProbeAnswerPrefix = "webhook-probe.tp.dev/"

// WebhookProbeAnswerers are the manager pods that admitted a probe whose annotations are
// annotations; earlier says that a manager from before answers named their pod did.
func WebhookProbeAnswerers(annotations map[string]string) (pods []string, earlier bool) {
	for k, v := range annotations {
		if pod, ok := strings.CutPrefix(k, WebhookProbeAnswerPrefix); ok && v == WebhookProbeAnswer {
			pods = append(pods, pod)
		}
	}
	return pods, annotations[WebhookProbeLabel] == WebhookProbeAnswer
}
