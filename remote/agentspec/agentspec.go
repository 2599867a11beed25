// Package agentspec is the contract between the traffic agent and everything that places,
// configures or trusts it: the injector writes a container by these names, the agent reads
// its environment by them, the manager recognises an agent's pod and token by them, and the
// CLI looks for them. It is constants only and imports nothing, so the agent's binary and
// the laptop's stay free of each other's code.
package agentspec

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
