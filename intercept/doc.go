// Package intercept does the Kubernetes side of `tp intercept`: it finds what intercepting
// a workload's port means (Resolve), adds the traffic agent to the workload's pod template
// and points the Service's traffic at it (Inject), puts everything back (Restore), lists
// what tp changed (Injected), and reads a container's environment the way the kubelet
// builds it (Env), so the laptop can run the code with the same settings. The agent itself
// is package intercept/agent; the manager routes intercepted connections.
//
// It runs on the laptop with the user's credentials: the manager's RBAC stays read-only.
//
// # Redirection without privileges
//
// Nothing here needs NET_ADMIN or an init container rewriting iptables. A Service reaches
// a pod port either by name or by number, and each gets its own way:
//
// Named targetPort (targetPort: http, container port http:8080). The app container's port
// is renamed ("tp-http"; RenamedPortName) and the agent container takes the original name
// at its own port (AgentPort), so the endpoints controller now resolves the Service's
// targetPort to the agent. The Service does not change. Probes and lifecycle hooks of the
// app that named the port now use its number, so they keep reaching the app directly and
// the pods stay ready while intercepted. Every container (and sidecar) port of that name
// is renamed, since the endpoints controller takes the first it finds. Port names are
// IANA service names (at most 15 characters, lowercase letters, digits and '-'): when
// "tp-"+name does not fit or is taken, the name becomes "tp-" + up to 7 characters of it +
// "-" + 4 hex digits of its SHA-256, the same every time for the same pod template.
//
// Numeric targetPort (targetPort: 8080). No renaming can move a port number, so the
// Service itself changes: its targetPort becomes a name only the agent carries
// ("tp-8080"; NumericPortName). Its ports as they were are saved in the Service's
// annotation tp.dev/original-ports; tp.dev/injected-for names the workload and the label
// tp.dev/injected=true lets tp find it again. Restore puts back exactly the targetPorts
// tp changed (a port edited or added since by someone else is left as it is now). The
// trade-offs, which a named targetPort avoids:
//   - the Service object changes: a GitOps tool (Argo CD, Flux) that owns it may revert
//     the targetPort, which silently ends the intercept (traffic goes to the app again);
//   - clients that reach the pod's port by number (pod IP:8080, another Service with a
//     numeric targetPort, a headless Service's DNS with the port) bypass the agent;
//   - a Service that also selects other workloads' pods would lose them (they do not carry
//     the name), so Resolve refuses it;
//   - until the workload's new pods are ready, its old pods (which lack the name) are out
//     of the Service: a short gap while the intercept starts, where a named targetPort has
//     none.
//
// Giving the container port a name and using it as the Service's targetPort is the way to
// avoid all of this, and costs nothing.
//
// # The agent
//
// A container named "tp-agent" (image AgentConfig.Image, command /tp-agent) listening from
// port 9900 up on ports the pod does not declare or probe; TP_AGENT_PORTS lists
// name:agentPort:appPort for every intercepted port, and the agent passes connections to
// 127.0.0.1:appPort when not intercepted. It presents a projected service-account token
// (audience AgentConfig.TokenAudience, one hour, mounted at /var/run/secrets/tp/token) to
// the manager at TP_MANAGER. It runs as 65532 with a read-only root file system, no
// privilege escalation, no capabilities and the runtime's seccomp profile, and asks for
// 10m CPU and 16Mi memory (64Mi limit). Fields the API server would default are written
// out, so the template read back equals the one written: a repeated Inject compares the
// two and changes nothing (no rollout) when they agree.
//
// # What tp records on the workload
//
// Before the first injection the pod template is saved whole (JSON) in the annotation
// tp.dev/original-template; tp.dev/intercept-state holds the agent's configuration and
// the intercepted targets with their agent ports (so a later Inject adds ports without
// moving the earlier ones), and the label tp.dev/injected=true lets Injected list the
// workloads with one selector. The injected template carries tp.dev/agent-hash, so pods of
// an outdated template can be told apart. Restore sets the template back to the saved one
// (equal to it after the API server's round trip), removes these marks, and warns when
// the template was edited while injected (that edit is undone).
//
// # Updates
//
// Workloads and Services are changed with update, guarded by the resourceVersion they
// were read with, and retried from a fresh read on a conflict; updates are recorded under
// the field manager "tp-intercept". Not server-side apply: Restore must put back exactly
// the saved template, a whole-object replacement, while apply merges intent per field
// owner. Renaming a port or a probe's port that another manager owns would need forced
// ownership, and after Restore those fields would stay owned by tp, so the owner's next
// apply would conflict or drop them. A guarded update writes exactly what was read plus
// tp's change, and never overwrites a change it did not see. Rights needed: get, list and
// update on the workload kind and on services (plus list pods; delete pods for a
// ReplicaSet, whose pods never follow a template change by themselves, so Inject and
// Restore delete the outdated ones).
//
// # Guard rails
//
// A namespace annotated tp.dev/intercept=deny refuses Inject (CheckAllowed). A user who
// may not read the namespace is not refused: the annotation guards against mistakes, RBAC
// is what enforces. Restore is always allowed. Pods on the host network, a ReplicaSet that
// a Deployment owns, and a pod template that already has a container named tp-agent are
// refused with a reason.
package intercept
