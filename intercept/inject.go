package intercept

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	imgref "github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"

	"github.com/tpdev/tp/deploy/pki"
	"github.com/tpdev/tp/remote"
)

// AgentConfig is how the injected agent runs.
type AgentConfig struct {
	// Image is the agent's image: the manager's image (tp's cluster image).
	Image string `json:"image"`
	// ManagerAddress is the manager's agent API, host:port (e.g. tp-manager.tp-system:8082).
	ManagerAddress string `json:"managerAddress"`
	// TokenAudience is the audience of the projected service-account token the agent
	// presents to the manager (e.g. "tp-agent").
	TokenAudience string `json:"tokenAudience"`
	// CABundle (PEM) is what the agent verifies the manager's certificate by: tp install's
	// CA bundle (deploy.AgentCA). When it changes, the next injection updates the agent.
	CABundle string `json:"caBundle"`
}

func (a AgentConfig) check() error {
	hint := "this is tp's own configuration: report it"
	if _, err := imgref.ParseReference(a.Image); err != nil || strings.TrimSpace(a.Image) != a.Image {
		return remote.Explain(remote.Usage, fmt.Sprintf("agent image %q is not an image reference", a.Image), hint)
	}
	switch {
	case a.TokenAudience == "":
		return remote.Explain(remote.Usage, "no token audience given for the agent", hint)
	}
	if _, port, err := net.SplitHostPort(a.ManagerAddress); err != nil || port == "" {
		return remote.Explain(remote.Usage, fmt.Sprintf("manager address %q is not host:port", a.ManagerAddress), hint)
	}
	if _, err := pki.Pool([]byte(a.CABundle)); err != nil {
		return remote.Explain(remote.Usage, fmt.Sprintf("the CA bundle for the agent is not usable: %v", err), "run tp install again to write it (ConfigMap tp-ca in tp's namespace)")
	}
	return nil
}

// Plan says what Inject or Restore changes (or, with dryRun, would change).
type Plan struct {
	Workload Ref
	// Before and After are the workload's pod template as YAML; equal when it stays.
	Before, After string
	// Pods (Inject) is the pod template as the workload's pods are admitted with the
	// agent, as YAML.
	Pods string
	// Services lists the Services whose ports change (numeric targetPorts).
	Services []ServiceChange
	// Changed: something changes (the workload, a Service, or pods are deleted).
	Changed bool
	// AlreadyInjected (Inject): the workload already had the agent for every target, with
	// the same configuration; it is left alone and its pods do not restart.
	AlreadyInjected bool
	// Targets (Inject): every port the agent serves afterwards, with its agent port.
	Targets []Target
	// DeletedPods are pods deleted so that they restart with the new template: a
	// ReplicaSet never replaces its pods by itself.
	DeletedPods []string
	// Warnings are things the user should know (a paused rollout, an edit undone).
	Warnings []string
}

// ServiceChange is a Service whose spec.ports change; Before and After are YAML.
type ServiceChange struct {
	Name          string
	Before, After string
}

func toYAML(v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		// Every value here comes from the API's own types.
		return fmt.Sprintf("# cannot show as YAML: %v\n", err)
	}
	return string(b)
}

// CheckAllowed refuses intercepts in a namespace annotated tp.dev/intercept=deny. Not
// being allowed to read the namespace (common for namespaced users) counts as allowed:
// the annotation guards against mistakes, RBAC is what enforces.
func CheckAllowed(ctx context.Context, cs kubernetes.Interface, namespace string) error {
	ns, err := cs.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return remote.Explain(remote.Usage, fmt.Sprintf("namespace %q does not exist", namespace), "check --namespace (kubectl get namespaces)")
	case apierrors.IsForbidden(err):
		return nil
	case err != nil:
		return apiError(ctx, "get", "namespaces", "", namespace, err)
	}
	if strings.TrimSpace(ns.Annotations[DenyAnnotation]) == "deny" {
		return remote.Explain(remote.Usage, fmt.Sprintf("intercepts are not allowed in namespace %q (it is annotated %s=deny)", namespace, DenyAnnotation),
			fmt.Sprintf("an admin of the namespace lifts it with: kubectl annotate namespace %s %s-", namespace, DenyAnnotation))
	}
	return nil
}

func checkTargets(targets []Target) error {
	if len(targets) == 0 {
		return remote.Explain(remote.Usage, "no port to intercept given", "pass --port LOCAL[:REMOTE]")
	}
	for _, t := range targets {
		switch {
		case t.Service == "" || t.ServicePort < 1 || t.ServicePort > 65535:
			return remote.Explain(remote.Usage, fmt.Sprintf("target %q has no Service port", t.TargetPortName), "resolve targets with Resolve")
		case len(validation.IsValidPortName(t.TargetPortName)) > 0:
			return remote.Explain(remote.Usage, fmt.Sprintf("target %q of Service %s: not a valid port name", t.TargetPortName, t.Service), "resolve targets with Resolve")
		case t.AppPort < 1 || t.AppPort > 65535:
			return remote.Explain(remote.Usage, fmt.Sprintf("target %q of Service %s: app port %d is out of range", t.TargetPortName, t.Service, t.AppPort), "resolve targets with Resolve")
		}
	}
	return nil
}

// Inject gives ref's pods the agent for targets (from Resolve): it writes the workload's
// agent record, which the manager's pod webhook reads when a pod of the workload is
// created, rolls the workload (the template's RestartAnnotation, the only change to it),
// and points the Services of numeric targets at the agent. It is idempotent: a workload
// whose record and pods already have the agent for these targets with this configuration
// is not touched (its pods do not restart); targets it does not have yet are added to the
// ones it has, which keep their agent ports. A workload injected by an older tp (the agent
// in its template) gets its original template back in the same update. With dryRun
// nothing changes and the Plan says what would.
func Inject(ctx context.Context, cs kubernetes.Interface, ref Ref, agent AgentConfig, targets []Target, dryRun bool) (*Plan, error) {
	ref, err := normalize(ref)
	if err != nil {
		return nil, err
	}
	if err := agent.check(); err != nil {
		return nil, err
	}
	if err := checkTargets(targets); err != nil {
		return nil, err
	}
	if err := CheckAllowed(ctx, cs, ref.Namespace); err != nil {
		return nil, err
	}
	plan := &Plan{Workload: ref}
	var w *workload
	var hash string
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		*plan = Plan{Workload: ref}
		var err error
		if w, err = getWorkload(ctx, cs, ref); err != nil {
			return err
		}
		switch {
		case w.ownerDep != "":
			return remote.Explain(remote.Usage, fmt.Sprintf("%s belongs to Deployment %q, which would undo the change", ref.describe(), w.ownerDep),
				"intercept deployment/"+w.ownerDep)
		case w.template.Spec.HostNetwork:
			return remote.Explain(remote.Usage, fmt.Sprintf("the pods of %s use the node's network", ref.describe()),
				"tp cannot add its agent to a pod on the host network: its ports would be the node's")
		}
		base, legacy, err := w.base()
		if err != nil {
			return err
		}
		rec, lease, err := getRecord(ctx, cs, ref)
		// Who may not read the record (a viewer) may still find the workload's pods running
		// the very agent asked for: then there is nothing to write, and the manager decides.
		unreadable := err != nil && remote.KindOf(err) == remote.Access
		if err != nil && !unreadable {
			return err
		}
		var existing []Target
		switch {
		case rec != nil:
			existing = rec.Targets
		case legacy != nil:
			existing = legacy.Targets
		}
		merged, err := assignAgentPorts(&base.Spec, existing, targets)
		if err != nil {
			return err
		}
		// What the pods get at admission: checked here, where the user sees the error.
		pods, err := inject(base, agent, merged)
		if err != nil {
			return err
		}
		hash = pods.Annotations[AgentHashAnnotation]
		want := Record{Agent: agent, Targets: merged}
		recordChanged := rec == nil || !equality.Semantic.DeepEqual(*rec, want)
		after := base.DeepCopy()
		restart := hash
		if v := w.template.Annotations[RestartAnnotation]; strings.HasPrefix(v, hash+".") {
			// A re-roll's value (below) stands for the same agent.
			restart = v
		}
		metav1.SetMetaDataAnnotation(&after.ObjectMeta, RestartAnnotation, restart)
		templateChanged := legacy != nil || !equality.Semantic.DeepEqual(w.template, after)
		if !templateChanged {
			stale, err := podsWithout(ctx, cs, w, hash)
			if err != nil {
				return err
			}
			switch {
			case len(stale) > 0:
				// Pods made while the manager could not admit them (or while the record
				// was missing, or by hand): a new value rolls the workload again.
				metav1.SetMetaDataAnnotation(&after.ObjectMeta, RestartAnnotation, hash+"."+strconv.FormatInt(time.Now().UnixNano(), 36))
				templateChanged = true
			case !recordChanged || unreadable:
				plan.Before, plan.After, plan.Pods, plan.Targets = toYAML(w.template), toYAML(w.template), toYAML(pods), merged
				plan.AlreadyInjected = true
				return nil
			}
		}
		plan.Before, plan.After, plan.Pods, plan.Targets = toYAML(w.template), toYAML(after), toYAML(pods), merged
		plan.Changed = true
		if dryRun {
			return nil
		}
		// The record first: the pods the template change makes are admitted with it.
		if recordChanged {
			if err := putRecord(ctx, cs, ref, want, lease); err != nil {
				return err
			}
		}
		if !templateChanged {
			return nil
		}
		unmark(w.meta, []string{OriginalTemplateAnnotation, StateAnnotation})
		*w.template = *after
		return w.update(ctx, cs)
	})
	if err != nil {
		return nil, conflictError(ref, err)
	}
	switch {
	case w.paused:
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s is paused: its pods get the agent once it is resumed (kubectl rollout resume)", ref.describe()))
	case w.onDelete:
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s updates its pods only when they are deleted (updateStrategy OnDelete): delete them for the agent to start", ref.describe()))
	}
	if w.ref.Kind == ReplicaSet && !plan.AlreadyInjected {
		if err := restartPods(ctx, cs, w, func(p *corev1.Pod) bool { return p.Annotations[AgentHashAnnotation] != hash }, dryRun, plan); err != nil {
			return plan, err
		}
	}
	// After the workload, so that the Service moves to a name its new pods carry; the old
	// pods drop out of the Service until they are replaced (see the package doc).
	bySvc := map[string][]Target{}
	for _, t := range plan.Targets {
		if t.Numeric {
			bySvc[t.Service] = append(bySvc[t.Service], t)
		}
	}
	for _, name := range sortedKeys(bySvc) {
		if err := pointService(ctx, cs, ref, name, bySvc[name], dryRun, plan); err != nil {
			return plan, err
		}
	}
	return plan, nil
}

// podsWithout lists the live pods of w that do not run the agent of hash.
func podsWithout(ctx context.Context, cs kubernetes.Interface, w *workload, hash string) ([]string, error) {
	pods, err := ownedPods(ctx, cs, w)
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, p := range pods {
		if p.DeletionTimestamp == nil && p.Annotations[AgentHashAnnotation] != hash {
			stale = append(stale, p.Name)
		}
	}
	return stale, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// conflictError explains an update that kept meeting newer versions of the object.
func conflictError(ref Ref, err error) error {
	if apierrors.IsConflict(err) {
		return &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("%s kept changing while tp updated it", ref.describe()), Err: err,
			Hint: "something else updates it continuously (a controller, a GitOps tool): try again, or pause that"}
	}
	return err
}

// pointService makes the Service's numeric targetPorts of targets name the agent's ports,
// saving its original ports first.
func pointService(ctx context.Context, cs kubernetes.Interface, ref Ref, name string, targets []Target, dryRun bool, plan *Plan) error {
	svcs := cs.CoreV1().Services(ref.Namespace)
	var change *ServiceChange
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		change = nil
		svc, err := svcs.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return remote.Explain(remote.Usage, fmt.Sprintf("the Service %q in namespace %q is gone", name, ref.Namespace), "run tp intercept again")
		}
		if err != nil {
			return apiError(ctx, "get", "services", ref.Namespace, name, err)
		}
		ports := slices.Clone(svc.Spec.Ports)
		changed := false
		for _, t := range targets {
			i := slices.IndexFunc(ports, func(p corev1.ServicePort) bool {
				return p.Port == t.ServicePort && protocol(p.Protocol) == corev1.ProtocolTCP
			})
			if i < 0 {
				return remote.Explain(remote.Usage, fmt.Sprintf("the Service %q has no TCP port %d any more", name, t.ServicePort), "run tp intercept again")
			}
			p := &ports[i]
			switch {
			case p.TargetPort.Type == intstr.String && p.TargetPort.StrVal == t.TargetPortName:
			case p.TargetPort.Type == intstr.Int && (p.TargetPort.IntVal == t.AppPort || p.TargetPort.IntVal == 0 && p.Port == t.AppPort):
				p.TargetPort, changed = intstr.FromString(t.TargetPortName), true
			default:
				return remote.Explain(remote.Usage, fmt.Sprintf("the Service %q port %d now targets %s, not %d", name, t.ServicePort, p.TargetPort.String(), t.AppPort),
					"the Service changed since the intercept was resolved: run tp intercept again")
			}
		}
		if !changed {
			return nil
		}
		if by := svc.Annotations[InjectedForAnnotation]; by != "" && by != ref.key() {
			return remote.Explain(remote.Usage, fmt.Sprintf("the Service %q already leads to the agent of %s", name, by),
				"intercept that workload, or restore it first (tp uninstall restores every workload)")
		}
		change = &ServiceChange{Name: name, Before: toYAML(svc.Spec.Ports), After: toYAML(ports)}
		if _, saved := svc.Annotations[OriginalPortsAnnotation]; !saved {
			raw, err := json.Marshal(svc.Spec.Ports)
			if err != nil {
				return fmt.Errorf("encode ports of Service %s: %w", name, err)
			}
			metav1.SetMetaDataAnnotation(&svc.ObjectMeta, OriginalPortsAnnotation, string(raw))
		}
		metav1.SetMetaDataAnnotation(&svc.ObjectMeta, InjectedForAnnotation, ref.key())
		metav1.SetMetaDataLabel(&svc.ObjectMeta, InjectedLabel, "true")
		svc.Spec.Ports = ports
		if dryRun {
			return nil
		}
		_, err = svcs.Update(ctx, svc, metav1.UpdateOptions{FieldManager: FieldManager})
		if err != nil && !apierrors.IsConflict(err) {
			return apiError(ctx, "update", "services", ref.Namespace, name, err)
		}
		return err
	})
	if err != nil {
		return conflictError(Ref{Namespace: ref.Namespace, Kind: "Service", Name: name}, err)
	}
	if change != nil {
		plan.Services = append(plan.Services, *change)
		plan.Changed = true
	}
	return nil
}

// restoreService puts back the targetPorts tp changed on svc and removes tp's marks.
func restoreService(ctx context.Context, cs kubernetes.Interface, namespace, name string, dryRun bool, plan *Plan) error {
	svcs := cs.CoreV1().Services(namespace)
	var change *ServiceChange
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		change = nil
		svc, err := svcs.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return apiError(ctx, "get", "services", namespace, name, err)
		}
		ports, _, err := originalPorts(svc)
		if err != nil {
			return err
		}
		change = &ServiceChange{Name: name, Before: toYAML(svc.Spec.Ports), After: toYAML(ports)}
		unmark(&svc.ObjectMeta, []string{OriginalPortsAnnotation, InjectedForAnnotation})
		svc.Spec.Ports = ports
		if dryRun {
			return nil
		}
		_, err = svcs.Update(ctx, svc, metav1.UpdateOptions{FieldManager: FieldManager})
		if err != nil && !apierrors.IsConflict(err) {
			return apiError(ctx, "update", "services", namespace, name, err)
		}
		return err
	})
	if err != nil {
		return conflictError(Ref{Namespace: namespace, Kind: "Service", Name: name}, err)
	}
	if change != nil {
		plan.Services = append(plan.Services, *change)
		plan.Changed = true
	}
	return nil
}

// unmark removes tp's label and the annotations from m, leaving no empty map behind, so
// that the object reads as it did before tp marked it.
func unmark(m *metav1.ObjectMeta, annotations []string) {
	for _, a := range annotations {
		delete(m.Annotations, a)
	}
	delete(m.Labels, InjectedLabel)
	if len(m.Annotations) == 0 {
		m.Annotations = nil
	}
	if len(m.Labels) == 0 {
		m.Labels = nil
	}
}

// restartPods deletes the pods of w that stale selects, so that w's controller makes them
// anew: a ReplicaSet never replaces its pods by itself, and a workload whose template
// does not change does not either.
func restartPods(ctx context.Context, cs kubernetes.Interface, w *workload, stale func(*corev1.Pod) bool, dryRun bool, plan *Plan) error {
	list, err := ownedPods(ctx, cs, w)
	if err != nil {
		return err
	}
	pods := cs.CoreV1().Pods(w.ref.Namespace)
	for i := range list {
		p := &list[i]
		if p.DeletionTimestamp != nil || !stale(p) {
			continue
		}
		plan.DeletedPods = append(plan.DeletedPods, p.Name)
		plan.Changed = true
		if dryRun {
			continue
		}
		err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return apiError(ctx, "delete", "pods", w.ref.Namespace, p.Name, err)
		}
	}
	return nil
}

// ownedPods lists the pods of w, sorted by name: those its selector matches that w
// controls (a Deployment through its ReplicaSets). A pod that merely matches the selector
// is not w's to judge or restart.
func ownedPods(ctx context.Context, cs kubernetes.Interface, w *workload) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil {
		return nil, fmt.Errorf("%s: selector: %w", w.ref.describe(), err)
	}
	list, err := cs.CoreV1().Pods(w.ref.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, apiError(ctx, "list", "pods", w.ref.Namespace, "", err)
	}
	owners := map[types.UID]bool{w.meta.UID: true}
	if w.ref.Kind == Deployment {
		// A Deployment's pods belong to its ReplicaSets.
		rss, err := cs.AppsV1().ReplicaSets(w.ref.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			return nil, apiError(ctx, "list", "replicasets.apps", w.ref.Namespace, "", err)
		}
		for _, rs := range rss.Items {
			if c := metav1.GetControllerOf(&rs); c != nil && c.UID == w.meta.UID {
				owners[rs.UID] = true
			}
		}
	}
	var owned []corev1.Pod
	for _, p := range list.Items {
		if c := metav1.GetControllerOf(&p); c != nil && owners[c.UID] {
			owned = append(owned, p)
		}
	}
	slices.SortFunc(owned, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return owned, nil
}

// Restore undoes what Inject did to ref: the Services it changed get their original
// targetPorts back (first, so traffic goes to the app's own port, which the injected pods
// still serve), the agent record is deleted (so pods made from then on come without the
// agent), and the pod template loses tp's RestartAnnotation, which rolls the workload to
// pods without the agent; when the template has nothing of tp's (a GitOps tool replaced
// it), the pods that run the agent are deleted instead. A workload injected by an older tp
// gets exactly its saved template back. A workload tp did not inject is left alone; one
// deleted while injected still has its Services and record cleaned up.
func Restore(ctx context.Context, cs kubernetes.Interface, ref Ref, dryRun bool) (*Plan, error) {
	ref, err := normalize(ref)
	if err != nil {
		return nil, err
	}
	plan := &Plan{Workload: ref}
	svcs, err := cs.CoreV1().Services(ref.Namespace).List(ctx, metav1.ListOptions{LabelSelector: InjectedLabel + "=true"})
	if err != nil {
		return nil, apiError(ctx, "list", "services", ref.Namespace, "", err)
	}
	cleaned := 0
	for _, s := range svcs.Items {
		if s.Annotations[InjectedForAnnotation] != ref.key() {
			continue
		}
		if err := restoreService(ctx, cs, ref.Namespace, s.Name, dryRun, plan); err != nil {
			return plan, err
		}
		cleaned++
	}
	rec, err := GetRecord(ctx, cs, ref)
	if err != nil {
		return plan, err
	}
	if rec != nil {
		plan.Changed = true
		cleaned++
		if !dryRun {
			if err := deleteRecord(ctx, cs, ref); err != nil {
				return plan, err
			}
		}
	}

	var w *workload
	var warnings []string
	templateChanged := false
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		warnings, templateChanged = nil, false
		obj, err := getObject(ctx, cs, ref)
		if apierrors.IsNotFound(err) && cleaned > 0 {
			w = nil
			return nil
		}
		if apierrors.IsNotFound(err) {
			return notFound(ctx, cs, ref)
		}
		if err != nil {
			return apiError(ctx, "get", resourceOf(ref.Kind), ref.Namespace, ref.Name, err)
		}
		w = wrap(ref, obj)
		orig, legacy, err := w.base()
		if err != nil {
			return err
		}
		plan.Before, plan.After = toYAML(w.template), toYAML(orig)
		_, restart := w.template.Annotations[RestartAnnotation]
		if legacy == nil && !restart && w.meta.Labels[InjectedLabel] == "" {
			return nil
		}
		if legacy != nil && len(legacy.Targets) > 0 {
			// Without a recorded state there is nothing to compare with: no warning.
			if want, err := inject(orig, legacy.Agent, legacy.Targets); err == nil && !equality.Semantic.DeepEqual(want, w.template) {
				warnings = append(warnings, fmt.Sprintf("the pod template of %s changed after tp injected the agent; restoring the saved original undoes that change", ref.describe()))
			}
		}
		*w.template = *orig
		unmark(w.meta, []string{OriginalTemplateAnnotation, StateAnnotation})
		plan.Changed, templateChanged = true, legacy != nil || restart
		if dryRun {
			return nil
		}
		return w.update(ctx, cs)
	})
	if err != nil {
		return plan, conflictError(ref, err)
	}
	plan.Warnings = append(plan.Warnings, warnings...)
	// A ReplicaSet never replaces its pods by itself, and a template without tp's mark
	// gives the others nothing to roll on.
	if w != nil && (ref.Kind == ReplicaSet || !templateChanged) {
		if err := restartPods(ctx, cs, w, func(p *corev1.Pod) bool { return p.Annotations[AgentHashAnnotation] != "" }, dryRun, plan); err != nil {
			return plan, err
		}
	}
	return plan, nil
}

// Injected lists the workloads tp injected in namespace ("" for all namespaces), sorted:
// those with an agent record, those an older tp injected in their template, and those
// deleted while injected whose Services still lead to their agent (Restore puts those
// Services back).
func Injected(ctx context.Context, cs kubernetes.Interface, namespace string) ([]Ref, error) {
	opts := metav1.ListOptions{LabelSelector: labels.Set{InjectedLabel: "true"}.String()}
	seen := map[Ref]bool{}
	recorded, err := recordRefs(ctx, cs, namespace)
	if err != nil {
		return nil, err
	}
	for _, r := range recorded {
		seen[r] = true
	}
	for _, kind := range []string{Deployment, StatefulSet, ReplicaSet} {
		names, err := workloadNames(ctx, cs, namespace, kind, opts)
		if err != nil {
			return nil, apiError(ctx, "list", resourceOf(kind), namespace, "", err)
		}
		for _, n := range names {
			ns, name, _ := strings.Cut(n, "/")
			seen[Ref{Namespace: ns, Kind: kind, Name: name}] = true
		}
	}
	svcs, err := cs.CoreV1().Services(namespace).List(ctx, opts)
	if err != nil {
		return nil, apiError(ctx, "list", "services", namespace, "", err)
	}
	for _, s := range svcs.Items {
		kind, name, ok := strings.Cut(s.Annotations[InjectedForAnnotation], "/")
		if r, err := normalize(Ref{Namespace: s.Namespace, Kind: kind, Name: name}); ok && err == nil {
			seen[r] = true
		}
	}
	refs := make([]Ref, 0, len(seen))
	for r := range seen {
		refs = append(refs, r)
	}
	slices.SortFunc(refs, func(a, b Ref) int {
		return strings.Compare(a.Namespace+"\x00"+a.Kind+"\x00"+a.Name, b.Namespace+"\x00"+b.Kind+"\x00"+b.Name)
	})
	return refs, nil
}
