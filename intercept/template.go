package intercept

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/agentspec"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Names tp gives the things it adds to or marks on workloads and Services.
const (
	// RestartAnnotation on a workload's pod template is the one change tp makes to it:
	// its value (the agent's hash) rolls the workload when the agent record changes, so
	// that the new pods are admitted with the agent. Restore removes it.
	RestartAnnotation = "tp.dev/agent-restart"
	// InjectedLabel marks workloads (and Services) tp changed, so they can be listed.
	InjectedLabel = "tp.dev/injected"
	// OriginalTemplateAnnotation holds the workload's pod template as it was before the
	// first injection (JSON); Restore puts it back.
	OriginalTemplateAnnotation = "tp.dev/original-template"
	// StateAnnotation holds what is injected (JSON: the agent's configuration and the
	// targets with their agent ports), so later injections keep the ports they gave out.
	StateAnnotation = "tp.dev/intercept-state"
	// AgentHashAnnotation, on the injected pod template, digests the agent's configuration:
	// pods that carry another value (or none) run an outdated agent.
	AgentHashAnnotation = "tp.dev/agent-hash"
	// SkippedAnnotation on a pod says why tp's webhook admitted it without the agent
	// although its workload has an agent record (e.g. the record names a port the pod does
	// not have). A pod of such a workload without either was not admitted by tp at all
	// (the manager was unreachable when it was created).
	SkippedAnnotation = "tp.dev/agent-skipped"
	// OriginalPortsAnnotation on a Service holds its spec.ports before tp pointed a numeric
	// targetPort at the agent (JSON).
	OriginalPortsAnnotation = "tp.dev/original-ports"
	// InjectedForAnnotation on a Service names the workload (Kind/name) whose agent it
	// now targets.
	InjectedForAnnotation = "tp.dev/injected-for"
	// DenyAnnotation with the value "deny" on a namespace forbids intercepts there.
	DenyAnnotation = "tp.dev/intercept"

	// FieldManager is the name tp's updates are recorded under in managedFields.
	FieldManager = "tp-intercept"

	agentUID          = 65532
	tokenExpiry       = 3600
	portPrefix        = "tp-"
	maxPortNameLength = 15
)

// agentPort is one port of the agent: the name a Service's targetPort uses, where the agent
// listens, and where the app listens.
type agentPort struct {
	name        string
	agent, app  int32
	numericOnly bool
}

// agentPorts folds targets (several Services may share a name) into the agent's ports,
// sorted by name; a name bound to two different port pairs is a bug.
func agentPorts(targets []Target) ([]agentPort, error) {
	byName := map[string]agentPort{}
	for _, t := range targets {
		p := agentPort{name: t.TargetPortName, agent: t.AgentPort, app: t.AppPort, numericOnly: t.Numeric}
		if old, ok := byName[t.TargetPortName]; ok {
			if old.agent != p.agent || old.app != p.app || old.numericOnly != p.numericOnly {
				return nil, fmt.Errorf("agent port %q is bound to %d→%d and to %d→%d", p.name, old.agent, old.app, p.agent, p.app)
			}
			continue
		}
		byName[t.TargetPortName] = p
	}
	out := make([]agentPort, 0, len(byName))
	for _, p := range byName {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b agentPort) int { return cmp.Compare(a.name, b.name) })
	return out, nil
}

// podPortNames is every container port name of the template (init containers too).
func podPortNames(spec *corev1.PodSpec) map[string]bool {
	names := map[string]bool{}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				if p.Name != "" {
					names[p.Name] = true
				}
			}
		}
	}
	return names
}

// shortHash is 4 hex digits of s's digest: enough to tell apart the few long port names
// of one pod, short enough to fit a port name.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:2])
}

// fitName makes a valid port name "tp-"+base, shortened to "tp-PREFIX-HASH" when too long
// or already taken; the result depends only on base and taken, so it is the same on every
// injection of the same template.
func fitName(base string, taken map[string]bool) string {
	if n := portPrefix + base; len(n) <= maxPortNameLength && !taken[n] && len(validation.IsValidPortName(n)) == 0 {
		return n
	}
	for i := 0; ; i++ {
		seed := base
		if i > 0 {
			seed += "#" + strconv.Itoa(i)
		}
		h := shortHash(seed)
		room := maxPortNameLength - len(portPrefix) - 1 - len(h)
		prefix := strings.TrimRight(base[:min(len(base), room)], "-")
		n := portPrefix + h
		if prefix != "" {
			n = portPrefix + prefix + "-" + h
		}
		if !taken[n] && len(validation.IsValidPortName(n)) == 0 {
			return n
		}
	}
}

// RenamedPortName is the name the app's port named name gets while the agent carries name.
func RenamedPortName(name string, spec *corev1.PodSpec) string {
	return fitName(name, podPortNames(spec))
}

// NumericPortName is the name the agent's port gets when a Service targets port by number.
func NumericPortName(port int32, spec *corev1.PodSpec) string {
	return fitName(strconv.Itoa(int(port)), podPortNames(spec))
}

// usedPorts are the ports the pod is known to use: declared container ports and the
// numeric ports of probes and lifecycle hooks (apps do not always declare what they serve).
func usedPorts(spec *corev1.PodSpec) map[int32]bool {
	used := map[int32]bool{}
	num := func(p intstr.IntOrString) {
		if p.Type == intstr.Int && p.IntVal > 0 {
			used[p.IntVal] = true
		}
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				used[p.ContainerPort] = true
			}
			for _, h := range handlers(&c) {
				if h.http != nil {
					num(h.http.Port)
				}
				if h.tcp != nil {
					num(h.tcp.Port)
				}
				if h.grpc != nil {
					used[h.grpc.Port] = true
				}
			}
		}
	}
	return used
}

// handler is one place a container names a port of its own: a probe or a lifecycle hook.
type handler struct {
	http *corev1.HTTPGetAction
	tcp  *corev1.TCPSocketAction
	grpc *corev1.GRPCAction
}

func handlers(c *corev1.Container) []handler {
	var hs []handler
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p != nil {
			hs = append(hs, handler{p.HTTPGet, p.TCPSocket, p.GRPC})
		}
	}
	if c.Lifecycle != nil {
		for _, h := range []*corev1.LifecycleHandler{c.Lifecycle.PostStart, c.Lifecycle.PreStop} {
			if h != nil {
				hs = append(hs, handler{http: h.HTTPGet, tcp: h.TCPSocket})
			}
		}
	}
	return hs
}

// sidecar reports whether c is a restartable init container: the endpoints controller
// looks for a Service's named targetPort there too, after the containers.
func sidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// inject returns original with the agent added for targets: the app's ports the targets
// name renamed (probes and hooks that used those names now use the numbers), the agent
// container carrying every target's name at its agent port, and the token volume.
func inject(original *corev1.PodTemplateSpec, agent AgentConfig, targets []Target) (*corev1.PodTemplateSpec, error) {
	ports, err := agentPorts(targets)
	if err != nil {
		return nil, err
	}
	t := original.DeepCopy()
	spec := &t.Spec
	for _, c := range spec.Containers {
		if c.Name == agentspec.Container {
			return nil, remote.Explain(remote.Usage, fmt.Sprintf("the pod template already has a container named %q that tp did not add", agentspec.Container),
				"rename that container, or remove it, to intercept this workload")
		}
	}
	for _, v := range spec.Volumes {
		if v.Name == agentspec.TokenVolume {
			return nil, remote.Explain(remote.Usage, fmt.Sprintf("the pod template already has a volume named %q that tp did not add", agentspec.TokenVolume),
				"rename that volume to intercept this workload")
		}
	}
	taken := podPortNames(&original.Spec)
	for _, p := range ports {
		if p.numericOnly {
			continue
		}
		renamed := fitName(p.name, taken)
		found := false
		for _, cs := range []struct {
			list    []corev1.Container
			sidecar bool
		}{{spec.Containers, false}, {spec.InitContainers, true}} {
			for i := range cs.list {
				c := &cs.list[i]
				if cs.sidecar && !sidecar(c) {
					continue
				}
				if renamePort(c, p.name, renamed) {
					found = true
				}
			}
		}
		if !found {
			return nil, remote.Explain(remote.Usage, fmt.Sprintf("the pod template has no TCP container port named %q any more", p.name),
				"the workload changed since the intercept was resolved: run tp intercept again")
		}
	}

	var portList []string
	agentCPorts := make([]corev1.ContainerPort, 0, len(ports))
	for _, p := range ports {
		portList = append(portList, fmt.Sprintf("%s:%d:%d", p.name, p.agent, p.app))
		agentCPorts = append(agentCPorts, corev1.ContainerPort{Name: p.name, ContainerPort: p.agent, Protocol: corev1.ProtocolTCP})
	}
	spec.Containers = append(spec.Containers, agentContainer(agent, agentCPorts, strings.Join(portList, ",")))
	spec.Volumes = append(spec.Volumes, corev1.Volume{
		Name: agentspec.TokenVolume,
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: agent.TokenAudience, ExpirationSeconds: new(int64(tokenExpiry)), Path: path.Base(agentspec.TokenPath),
			}}},
			// The API server's default, spelled out so that the template read back equals
			// the one written and a second injection sees nothing to change.
			DefaultMode: new(int32(corev1.ProjectedVolumeSourceDefaultMode)),
		}},
	})
	if t.Annotations == nil {
		t.Annotations = map[string]string{}
	}
	t.Annotations[AgentHashAnnotation] = agentHash(agent, ports)
	return t, nil
}

// renamePort renames c's TCP port from→to and points c's probes and hooks that named it at
// its number instead; it reports whether c had the port.
func renamePort(c *corev1.Container, from, to string) bool {
	var number int32
	for i := range c.Ports {
		p := &c.Ports[i]
		if p.Name == from && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
			p.Name, number = to, p.ContainerPort
		}
	}
	if number == 0 {
		return false
	}
	for _, h := range handlers(c) {
		if h.http != nil && h.http.Port.Type == intstr.String && h.http.Port.StrVal == from {
			h.http.Port = intstr.FromInt32(number)
		}
		if h.tcp != nil && h.tcp.Port.Type == intstr.String && h.tcp.Port.StrVal == from {
			h.tcp.Port = intstr.FromInt32(number)
		}
		// gRPC probes name their port by number only.
	}
	return true
}

func agentContainer(agent AgentConfig, ports []corev1.ContainerPort, portList string) corev1.Container {
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
	}
	// Fields the API server would default are set here, so that what is read back equals
	// what was written: that equality is how a repeated injection knows it has nothing to do.
	return corev1.Container{
		Name:    agentspec.Container,
		Image:   agent.Image,
		Command: []string{"/tp-agent"},
		Ports:   ports,
		Env: []corev1.EnvVar{
			fieldEnv(agentspec.PodNameEnv, "metadata.name"),
			fieldEnv(agentspec.PodNamespaceEnv, "metadata.namespace"),
			{Name: agentspec.ManagerEnv, Value: agent.ManagerAddress},
			{Name: agentspec.CAEnv, Value: agent.CABundle},
			{Name: agentspec.PortsEnv, Value: portList},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("16Mi"),
			},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		VolumeMounts: []corev1.VolumeMount{{Name: agentspec.TokenVolume, MountPath: agentspec.TokenDir, ReadOnly: true}},
		// A crash's last log lines land in the pod's status, where the CLI can show them.
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		ImagePullPolicy:          corev1.PullIfNotPresent,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             new(true),
			RunAsUser:                new(int64(agentUID)),
			RunAsGroup:               new(int64(agentUID)),
			ReadOnlyRootFilesystem:   new(true),
			AllowPrivilegeEscalation: new(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// agentHash digests what the agent runs with; it changes when pods must restart.
func agentHash(agent AgentConfig, ports []agentPort) string {
	var b strings.Builder
	b.WriteString(agent.Image + "\n" + agent.ManagerAddress + "\n" + agent.TokenAudience + "\n" + agent.CABundle + "\n")
	for _, p := range ports {
		fmt.Fprintf(&b, "%s:%d:%d:%t\n", p.name, p.agent, p.app, p.numericOnly)
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:8])
}

// assignAgentPorts merges add into existing: a target already there keeps its entry, a
// new name gets the lowest free port from agentspec.FirstPort up (free: not used by the
// original pod, not given to another name).
func assignAgentPorts(original *corev1.PodSpec, existing, add []Target) ([]Target, error) {
	merged := slices.Clone(existing)
	used := usedPorts(original)
	byName := map[string]int32{}
	for _, t := range existing {
		used[t.AgentPort] = true
		byName[t.TargetPortName] = t.AgentPort
	}
	next := int32(agentspec.FirstPort)
	for _, t := range add {
		if slices.ContainsFunc(merged, func(o Target) bool { return o.sameAs(t) }) {
			continue
		}
		if p, ok := byName[t.TargetPortName]; ok {
			t.AgentPort = p
		} else {
			for used[next] {
				next++
			}
			if next > 65535 {
				return nil, fmt.Errorf("no free port for the agent from %d up", agentspec.FirstPort)
			}
			t.AgentPort = next
			used[next] = true
			byName[t.TargetPortName] = next
		}
		merged = append(merged, t)
	}
	return merged, nil
}

// templateJSON is the saved form of a pod template.
func templateJSON(t *corev1.PodTemplateSpec) (string, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return "", fmt.Errorf("encode pod template: %w", err)
	}
	return string(b), nil
}
