// Package agentspec is the contract between the traffic agent and everything that places,
// configures or trusts it: the injector writes a container by these names, the agent reads
// its environment by them, the manager recognises an agent's pod and token by them, and the
// CLI looks for them. It imports the standard library only, so the agent's binary and the
// laptop's stay free of each other's code.
package agentspec

import (
	"net"
	"strings"
)

const (
	// Container is the agent's container in an injected pod; the manager trusts a token only
	// from a pod that carries it.
	Container = "tp-agent"
	// Audience is the audience of the projected service-account token the agent presents: a
	// token minted for the API server (or anything else) is no agent's.
	Audience = "tp-agent"

	// TokenVolume is the projected token's volume; it is mounted at TokenDir as TokenFile.
	TokenVolume = "tp-agent-token"
	// TokenDir is where the token volume is mounted.
	TokenDir = "/var/run/secrets/tp"
	// TokenPath is the token's default path inside the agent's container.
	TokenPath = TokenDir + "/token"

	// PortsEnv lists the agent's ports: name:agentPort:appPort, comma separated.
	PortsEnv = "TP_AGENT_PORTS"
	// ManagerEnv is the manager's agent API, host:port.
	ManagerEnv = "TP_MANAGER"
	// CAEnv is the CA bundle (PEM) the agent verifies the manager's certificate by.
	CAEnv = "TP_AGENT_CA"
	// TokenEnv overrides TokenPath.
	TokenEnv = "TP_AGENT_TOKEN"
	// PodNameEnv and PodNamespaceEnv carry the pod's identity (downward API).
	PodNameEnv      = "POD_NAME"
	PodNamespaceEnv = "POD_NAMESPACE"

	// FirstPort is where the injector's search for free agent ports starts.
	FirstPort = 9900
)

// PodsServiceSuffix names the manager's headless Service beside its Service: tp-manager's
// is tp-manager-pods. Its DNS name lists the ready manager pods; an agent keeps a
// connection to each, since each serves the intercepts of the clients connected to it.
const PodsServiceSuffix = "-pods"

// PodsAddress is the headless Service's host:port for the manager's Service address
// (TP_MANAGER, service.namespace.svc:port); "" when manager names no Service (an IP).
func PodsAddress(manager string) string {
	host, port, err := net.SplitHostPort(manager)
	if err != nil || net.ParseIP(host) != nil {
		return ""
	}
	service, rest, ok := strings.Cut(host, ".")
	if !ok || service == "" {
		return ""
	}
	return net.JoinHostPort(service+PodsServiceSuffix+"."+rest, port)
}
