package manager

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	inj "github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Drift is "drift is never silent": an intercept can stop receiving its workload's traffic
// without anyone ending it. A GitOps tool reverts the Service's targetPort, someone deletes
// tp's agent record, pods start while the manager cannot admit them, a sidecar declares the
// agent's port name too. Every driftPeriod the manager looks at the cluster for each held
// intercept and tells its holder what is wrong (and again when it is fixed).
//
// Cost: the checks read the API server directly (the manager runs no informers, and its
// rights on leases are get only), memoized for one round and served from the API server's
// watch cache (resourceVersion "0"): per workload with held intercepts, a GET of its
// record (Lease), a GET of the workload and a LIST of its pods (label selector); per
// Service its targets name, a GET of it and a LIST of its EndpointSlices (label selector).
// One intercept on one Service is 5 calls every 5 s; more intercepts of one workload add
// only their Services'. No intercept, no call.
const driftPeriod = 5 * time.Second

// driftWait bounds one round of checks: many intercepts' calls queue behind the client's
// rate limit (a round that takes longer than driftPeriod delays the next).
const driftWait = 20 * time.Second

// cached reads serve from the API server's watch cache (resourceVersion "0") rather than
// etcd: a check a few seconds behind is as good, and far cheaper.
var cached = metav1.GetOptions{ResourceVersion: "0"}

// maxNamed is how many pods a problem names before "and N more".
const maxNamed = 3

// Drift checks the held intercepts against the cluster every driftPeriod until ctx ends;
// cs reads the cluster (the manager's own rights: get, list and watch on pods, services
// and endpointslices, get on workloads and leases).
func (r *Registry) Drift(ctx context.Context, cs kubernetes.Interface) {
	remote.Every(ctx, driftPeriod, func(time.Time) bool {
		cctx, cancel := context.WithTimeout(ctx, driftWait)
		r.checkDrift(cctx, cs)
		cancel()
		return true
	})
}

// checkDrift does one round: it computes every held intercept's problem outside the lock,
// then stores the changed ones and tells their holders.
func (r *Registry) checkDrift(ctx context.Context, cs kubernetes.Interface) {
	r.mu.Lock()
	keys := make([]interceptKey, 0, len(r.byKey))
	for k := range r.byKey {
		keys = append(keys, k)
	}
	r.mu.Unlock()
	d := &driftRound{cs: cs, workloads: map[interceptKey]*workloadState{}, services: map[string]*serviceState{}}
	problems := map[interceptKey]string{}
	for _, k := range keys {
		p, err := d.problem(ctx, k)
		if err != nil {
			// The API server did not say: the last known problem stands.
			r.log.Debug("intercept not checked", "workload", k, "err", err)
			continue
		}
		problems[k] = p
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, p := range problems {
		// A port's problem is every one of its intercepts': each holder hears of it.
		for _, it := range r.byKey[k] {
			r.setProblemLocked(it, p)
		}
	}
}

// setProblemLocked records p as the problem of it, and tells its holder when that changed.
func (r *Registry) setProblemLocked(it *intercept, p string) {
	if it.problem == p {
		return
	}
	it.problem = p
	if p == "" {
		r.log.Info("intercept delivers again", "name", it.name, "workload", it.key, "client", it.client.who)
	} else {
		r.log.Warn("intercept problem", "name", it.name, "workload", it.key, "client", it.client.who, "problem", p)
	}
	r.sendLocked(it.client, &tunnelpb.InterceptServerMsg{Kind: &tunnelpb.InterceptServerMsg_Result{Result: &tunnelpb.InterceptResult{
		Name: it.name, Agents: int32(r.agentsLocked(it.key)), Holder: it.holder, Problem: p, Report: true}}})
}

// driftRound memoizes what one round read, so that intercepts of one workload or Service
// cost the API server once.
type driftRound struct {
	cs        kubernetes.Interface
	workloads map[interceptKey]*workloadState // port ""
	services  map[string]*serviceState        // namespace/name
}

type workloadState struct {
	record        *inj.Record
	recordProblem string       // what is wrong with the record ("": it is there)
	recordCreated time.Time    // when the record's Lease was made
	rolling       bool         // the workload's rollout has not completed
	pods          []corev1.Pod // the live ones
	podsProblem   string       // what is wrong with the workload itself
	err           error        // the API server did not answer
}

type serviceState struct {
	svc    *corev1.Service // nil: not found
	slices []discoveryv1.EndpointSlice
	err    error
}

// problem is key's intercept's first problem ("" for none); an error when the API server
// could not be read.
func (d *driftRound) problem(ctx context.Context, key interceptKey) (string, error) {
	w := d.workload(ctx, key)
	if w.err != nil {
		return "", w.err
	}
	ref := key.kind + "/" + key.workload
	if w.recordProblem != "" {
		return w.recordProblem, nil
	}
	var targets []inj.Target
	for _, t := range w.record.Targets {
		if t.TargetPortName == key.port {
			targets = append(targets, t)
		}
	}
	if len(targets) == 0 {
		return fmt.Sprintf("the agent record of %s has no target for port %s: new pods will start without the agent for it; run tp intercept again", ref, key.port), nil
	}
	if w.podsProblem != "" {
		return w.podsProblem, nil
	}
	if p := withoutAgent(key, w.pods, w.recordCreated, w.rolling); p != "" {
		return p, nil
	}
	if p := sharedPortName(w.pods, key.port); p != "" {
		return p, nil
	}
	for _, t := range targets {
		s := d.service(ctx, key.namespace, t.Service)
		if s.err != nil {
			return "", s.err
		}
		if p := serviceProblem(key, t, s, w.pods); p != "" {
			return p, nil
		}
	}
	return "", nil
}

// workload reads key's workload once per round: its record and its live pods.
func (d *driftRound) workload(ctx context.Context, key interceptKey) *workloadState {
	wk := interceptKey{key.namespace, key.kind, key.workload, ""}
	if w, ok := d.workloads[wk]; ok {
		return w
	}
	w := &workloadState{}
	d.workloads[wk] = w
	ref := key.kind + "/" + key.workload
	name := inj.RecordName(inj.Ref{Namespace: key.namespace, Kind: key.kind, Name: key.workload})
	lease, err := d.cs.CoordinationV1().Leases(key.namespace).Get(ctx, name, cached)
	switch {
	case apierrors.IsNotFound(err):
		w.recordProblem = fmt.Sprintf("the agent record of %s is gone: new pods will start without the agent; run tp intercept again", ref)
		return w
	case err != nil:
		w.err = err
		return w
	}
	if w.record, err = inj.ParseRecord(lease); err != nil {
		w.recordProblem = fmt.Sprintf("the agent record of %s is unreadable (%v): new pods will start without the agent; run tp intercept again", ref, err)
		return w
	}
	w.recordCreated = lease.CreationTimestamp.Time
	sel, uid, rolling, err := d.selector(ctx, key)
	w.rolling = rolling
	if apierrors.IsNotFound(err) {
		w.podsProblem = fmt.Sprintf("%s is gone: no pod serves the intercept; tp leave it, or run tp intercept again once the workload is back", ref)
		return w
	}
	if err != nil {
		w.err = err
		return w
	}
	if sel == nil {
		w.podsProblem = fmt.Sprintf("%s selects no pods: nothing to intercept", ref)
		return w
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() {
		w.podsProblem = fmt.Sprintf("%s has a selector tp cannot use: nothing to check", ref)
		return w
	}
	pods, err := d.cs.CoreV1().Pods(key.namespace).List(ctx, metav1.ListOptions{ResourceVersion: "0", LabelSelector: s.String()})
	if err != nil {
		w.err = err
		return w
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || !ownedBy(&p, key.kind, uid) {
			continue
		}
		w.pods = append(w.pods, p)
	}
	return w
}

// selector reads the workload's pod selector and UID, and whether its rollout is still
// under way.
func (d *driftRound) selector(ctx context.Context, key interceptKey) (*metav1.LabelSelector, types.UID, bool, error) {
	apps := d.cs.AppsV1()
	switch key.kind {
	case "deployment":
		o, err := apps.Deployments(key.namespace).Get(ctx, key.workload, cached)
		if err != nil {
			return nil, "", false, err
		}
		st, want := o.Status, ptr.Deref(o.Spec.Replicas, 1)
		rolling := st.ObservedGeneration < o.Generation || st.UpdatedReplicas < want || st.Replicas > st.UpdatedReplicas
		return o.Spec.Selector, o.UID, rolling, nil
	case "statefulset":
		o, err := apps.StatefulSets(key.namespace).Get(ctx, key.workload, cached)
		if err != nil {
			return nil, "", false, err
		}
		st, want := o.Status, ptr.Deref(o.Spec.Replicas, 1)
		rolling := st.ObservedGeneration < o.Generation || st.UpdatedReplicas < want || st.CurrentRevision != st.UpdateRevision
		return o.Spec.Selector, o.UID, rolling, nil
	case "replicaset":
		o, err := apps.ReplicaSets(key.namespace).Get(ctx, key.workload, cached)
		if err != nil {
			return nil, "", false, err
		}
		return o.Spec.Selector, o.UID, false, nil
	}
	return nil, "", false, apierrors.NewNotFound(corev1.Resource(key.kind), key.workload)
}

// ownedBy tells, as far as the pod's own controller reference goes, whether it is the
// workload's: a StatefulSet's or a ReplicaSet's pod names it; a Deployment's names one of
// its ReplicaSets (which the manager may only get, so the selector decides). A pod with no
// controller that the selector takes counts (it receives the Service's traffic all the
// same).
func ownedBy(p *corev1.Pod, kind string, uid types.UID) bool {
	c := metav1.GetControllerOf(p)
	switch {
	case c == nil:
		return true
	case kind == "deployment":
		return c.Kind == "ReplicaSet"
	default:
		return c.UID == uid
	}
}

// withoutAgent names the live pods that run without tp's agent, and why (the first such
// pod's reason: its SkippedAnnotation, else how its age compares with the record's). While
// the workload rolls out, pods older than the record are on their way out (the rollout tp
// intercept started replaces them) and are not named.
func withoutAgent(key interceptKey, pods []corev1.Pod, recordCreated time.Time, rolling bool) string {
	var names []string
	skipped, older := "", false
	for _, p := range pods {
		before := !recordCreated.IsZero() && p.CreationTimestamp.Time.Before(recordCreated)
		if hasContainer(&p, agentspec.Container) || rolling && before {
			continue
		}
		if len(names) == 0 {
			skipped = p.Annotations[inj.SkippedAnnotation]
			older = before
		}
		names = append(names, p.Name)
	}
	if len(names) == 0 {
		return ""
	}
	what, they, were, them, get, are := "pods "+listNames(names)+" run", "they", "were", "them", "get", "are"
	if len(names) == 1 {
		what, they, were, them, get, are = "pod "+names[0]+" runs", "it", "was", "it", "gets", "is"
	}
	reason := skipped
	switch {
	case reason != "":
	case older:
		reason = fmt.Sprintf("%s %s created before tp's agent record and not replaced since", they, were)
	default:
		reason = fmt.Sprintf("%s %s created while tp's manager could not admit %s", they, were, them)
	}
	ref := key.kind + "/" + key.workload
	restart := fmt.Sprintf("kubectl rollout restart %s -n %s", ref, key.namespace)
	if key.kind == "replicaset" {
		restart = fmt.Sprintf("kubectl delete pod %s -n %s", strings.Join(names[:min(len(names), maxNamed)], " "), key.namespace)
	}
	return fmt.Sprintf("%s without tp's agent: %s; %s %s it when %s %s recreated (%s, or tp intercept again)",
		what, reason, they, get, they, are, restart)
}

// listNames is "a, b, c and N more".
func listNames(names []string) string {
	if len(names) <= maxNamed {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:maxNamed], ", "), len(names)-maxNamed)
}

func hasContainer(p *corev1.Pod, name string) bool {
	for _, c := range p.Spec.Containers {
		if c.Name == name {
			return true
		}
	}
	return false
}

// sharedPortName finds a pod where two containers (sidecars included) declare the port
// name the agent serves: the endpoints controller takes the first it finds, which may be
// the app's.
func sharedPortName(pods []corev1.Pod, port string) string {
	for _, p := range pods {
		var holders []string
		for _, cs := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
			for _, c := range cs {
				for _, cp := range c.Ports {
					if cp.Name == port {
						holders = append(holders, fmt.Sprintf("%s:%d", c.Name, cp.ContainerPort))
					}
				}
			}
		}
		if len(holders) > 1 {
			return fmt.Sprintf("pod %s has two containers with the port name %s (%s): the Service may pick the app's; rename the other container's port, then restart the workload (or tp intercept again)",
				p.Name, port, strings.Join(holders, ", "))
		}
	}
	return ""
}

// service reads a Service and its EndpointSlices once per round.
func (d *driftRound) service(ctx context.Context, ns, name string) *serviceState {
	k := ns + "/" + name
	if s, ok := d.services[k]; ok {
		return s
	}
	s := &serviceState{}
	d.services[k] = s
	svc, err := d.cs.CoreV1().Services(ns).Get(ctx, name, cached)
	if apierrors.IsNotFound(err) {
		return s
	}
	if err != nil {
		s.err = err
		return s
	}
	s.svc = svc
	slices, err := d.cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0", LabelSelector: discoveryv1.LabelServiceName + "=" + name})
	if err != nil {
		s.err = err
		return s
	}
	s.slices = slices.Items
	return s
}

// serviceProblem checks that t's Service port still leads to the agent: a numeric target's
// targetPort still names the agent's port, and the EndpointSlices give the workload's pods
// the agent's port number.
func serviceProblem(key interceptKey, t inj.Target, s *serviceState, pods []corev1.Pod) string {
	if s.svc == nil {
		return fmt.Sprintf("Service %s is gone: nothing sends the intercept traffic; tp leave it, or run tp intercept again once the Service is back", t.Service)
	}
	var sp *corev1.ServicePort
	for i := range s.svc.Spec.Ports {
		if p := &s.svc.Spec.Ports[i]; p.Port == t.ServicePort && (sp == nil || p.Name == t.ServicePortName) {
			sp = p
		}
	}
	if sp == nil {
		return fmt.Sprintf("Service %s has no port %d any more: nothing sends the intercept traffic; run tp intercept again", t.Service, t.ServicePort)
	}
	if t.Numeric && (sp.TargetPort.Type != intstr.String || sp.TargetPort.StrVal != t.TargetPortName) {
		return fmt.Sprintf("Service %s port %d targets %s again (changed back, e.g. by a GitOps tool): requests go to the app; run tp intercept again, and tell the GitOps tool to ignore spec.ports[].targetPort (README)",
			t.Service, t.ServicePort, sp.TargetPort.String())
	}
	ours := map[string]bool{}
	for _, p := range pods {
		ours[p.Name] = true
	}
	for _, sl := range s.slices {
		var port *int32
		for _, ep := range sl.Ports {
			if ep.Name == nil && sp.Name == "" || ep.Name != nil && *ep.Name == sp.Name {
				port = ep.Port
			}
		}
		if port == nil || *port == t.AgentPort {
			continue
		}
		for _, e := range sl.Endpoints {
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" && ours[e.TargetRef.Name] {
				return fmt.Sprintf("Service %s port %d routes to pod port %d, not to tp's agent (%d): requests go to the app (was the Service's targetPort changed?); run tp intercept again",
					t.Service, t.ServicePort, *port, t.AgentPort)
			}
		}
	}
	return ""
}
