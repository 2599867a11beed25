// Package intercept does the Kubernetes side of `tp intercept`: it finds what intercepting
// a workload's port means (Resolve), records that the workload's pods get the traffic
// agent and rolls them (Inject), with the pod admission that adds it (AdmitPod, which the
// manager's webhook applies), puts everything back (Restore), lists what tp changed
// (Injected), and reads a container's environment the way the kubelet builds it (Env) and
// the files of its ConfigMap, Secret, downwardAPI and projected volumes (Volumes, written
// under a root folder by package intercept/volume), so the laptop can run the code with the
// same settings. The agent itself is package
// intercept/agent; the manager routes intercepted connections.
//
// It runs on the laptop with the user's credentials: the manager's RBAC stays read-only.
//
// # Injection at admission
//
// tp never puts its agent in a workload's pod template, where a GitOps tool (Argo CD, Flux)
// with self-heal would see drift and revert it (and a client-side apply would leave two
// containers claiming one port name). Inject writes the workload's agent record (a Lease,
// see Record) and sets one annotation on the template (RestartAnnotation), which rolls the
// workload; the manager's mutating pod webhook (tp install registers it, failurePolicy
// Ignore) gives every pod the workload creates from then on the agent, with AdmitPod. A
// re-applied manifest thus finds nothing to revert (client-side and server-side apply keep
// an annotation they do not own; replace drops it, which only rolls the workload again, and
// its new pods are admitted with the agent too). A pod created while the manager is down
// starts without the agent; the manager reports it, and the next rollout gets it.
//
// # Redirection without privileges
//
// Nothing here needs NET_ADMIN or an init container rewriting iptables. A Service reaches
// a pod port either by name or by number, and each gets its own way:
//
// Named targetPort (targetPort: http, container port http:8080). In each pod, at
// admission, the app container's port is renamed ("tp-http"; RenamedPortName) and the agent container takes the original name
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
//     the targetPort, which ends the intercept (traffic goes to the app again); the manager
//     reports it within seconds (tp list, tp status), and tp intercept puts it back; tell
//     the tool to ignore spec.ports[].targetPort of that Service, or name the port;
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
// out, so that the admitted pod says exactly what tp meant.
//
// # What tp records
//
// The agent record of a workload is the Lease RecordName(ref) in its namespace, labelled
// RecordLabel; it holds the agent's configuration and the intercepted targets with their
// agent ports (so a later Inject adds ports without moving the earlier ones). An admission
// policy tp install adds lets only who may update the workload write it. The pods admitted
// with the agent carry AgentHashAnnotation, so pods of an outdated record can be told
// apart; a pod of a recorded workload the webhook could not give the agent carries
// SkippedAnnotation with the reason. A tp older than the records put the agent in the
// template and saved the original in tp.dev/original-template: Inject moves such a
// workload to a record in one update, and Restore still puts its template back.
//
// # Updates
//
// Workloads and Services are changed with update, guarded by the resourceVersion they
// were read with, and retried from a fresh read on a conflict; updates are recorded under
// the field manager "tp-intercept". Not server-side apply: Restore must put back exactly
// what was there (for a template an older tp injected, a whole-object replacement), and a
// guarded update writes exactly what was read plus tp's change, never overwriting a change
// it did not see. Rights needed: get, list and update on the workload kind and on
// services; get, list, create, update and delete on leases (the record); list pods and
// replicasets; delete pods (a ReplicaSet never follows a template change by itself, and a
// workload whose template has nothing of tp's left is restored by deleting its agent's
// pods).
//
// # Guard rails
//
// A namespace annotated tp.dev/intercept=deny refuses Inject (CheckAllowed). A user who
// may not read the namespace is not refused: the annotation guards against mistakes, RBAC
// is what enforces. Restore is always allowed. Pods on the host network, a ReplicaSet that
// a Deployment owns, and a pod template that already has a container named tp-agent are
// refused with a reason.
package intercept
