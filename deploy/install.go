package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/managerspec"
)

// Installed describes the manager of one install.
type Installed struct {
	Namespace string
	// Image is the manager's image in the current revision.
	Image string
	// ManagedNamespaces are the namespaces whose workloads the manager sees; empty: all.
	ManagedNamespaces []string
	// AllowedCIDRs are the ranges beyond the cluster's that the manager may dial (tp
	// install --allow-cidr); empty: none.
	AllowedCIDRs []string
	// Replicas is the desired count; ReadyReplicas counts ready pods of any revision.
	Replicas, ReadyReplicas int32
	// Ready: the current revision is rolled out and its pod is Ready.
	Ready bool
	// Pod is a Ready manager pod of the current revision (port-forward to it); "" if none.
	Pod string
	// Problem says why the manager is not Ready, when Status can tell; nil when Ready.
	Problem error
}

const (
	// reachTimeout bounds the first request: an address that drops packets would otherwise
	// hold tp for the TCP connect timeout (minutes) before anything is said.
	reachTimeout = 15 * time.Second
	pollInterval = 500 * time.Millisecond
	revisionKey  = "deployment.kubernetes.io/revision"
	eventLines   = 10

	installNeeds = "the rights to apply namespaces, serviceaccounts, services, deployments, secrets, configmaps, " +
		"clusterroles, clusterrolebindings, roles, rolebindings, validatingadmissionpolicies and their bindings, " +
		"and mutatingwebhookconfigurations"
	uninstallNeeds = "the rights to delete namespaces, deployments, services, serviceaccounts, secrets, configmaps, " +
		"clusterroles, clusterrolebindings, roles, rolebindings, validatingadmissionpolicies, their bindings, " +
		"mutatingwebhookconfigurations and leases"
	statusNeeds = "read access to deployments, replicasets, pods and events in tp's namespace"
)

// installer holds the clients of one operation. Tests build it on a fake clientset.
type installer struct {
	cs    kubernetes.Interface
	apply func(ctx context.Context, obj *unstructured.Unstructured) error
	// reach checks that the API server answers at all; nil skips the check.
	reach func(ctx context.Context) error
	host  string // the API server's URL, for messages
	log   io.Writer
	poll  time.Duration
	// webhookWait bounds the wait for the API server to reach the pod webhook.
	webhookWait time.Duration
}

func newInstaller(cfg *rest.Config, log io.Writer) (*installer, error) {
	cfg = rest.CopyConfig(cfg)
	// Waiting polls a few objects twice a second; client-go's default of 5 requests per
	// second would throttle it and log about it.
	cfg.QPS, cfg.Burst = 50, 100
	host := cfg.Host
	if u, _, err := rest.DefaultServerUrlFor(cfg); err == nil {
		host = u.String()
	}
	kubeconfigErr := func(err error) error {
		return &remote.Error{Kind: remote.Usage, Msg: "the Kubernetes client configuration is not usable", Err: err,
			Hint: "check your kubeconfig and context (kubectl config view --minify)"}
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, kubeconfigErr(err)
	}
	a, err := NewApplier(cfg, FieldManager)
	if err != nil {
		return nil, kubeconfigErr(err)
	}
	return &installer{
		cs: cs, apply: a.Apply, host: host, log: log, poll: pollInterval, webhookWait: webhookWait,
		reach: reachFunc(cs.Discovery().RESTClient(), host, reachTimeout),
	}, nil
}

// reachFunc checks that the API server behind rc answers within timeout.
func reachFunc(rc rest.Interface, host string, timeout time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		tctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		// /version answers anyone, even without rights: a failure here is about the path
		// to the server or the credentials, nothing else.
		_, err := rc.Get().AbsPath("/version").DoRaw(tctx)
		if err != nil && ctx.Err() == nil && tctx.Err() != nil {
			return unreachable(host, fmt.Errorf("no answer within %s", timeout))
		}
		return err
	}
}

func (in *installer) logf(format string, args ...any) {
	fmt.Fprintf(in.log, format+"\n", args...)
}

// Install applies the manager's manifest (server-side apply: re-running it is harmless, and
// with another image or options it upgrades) and waits until the manager is Ready: the
// Deployment's rollout is complete and the new revision's pod is Ready. It fails fast,
// explained, when the pod cannot get its image or crashes; errors are *remote.Error.
func Install(ctx context.Context, cfg *rest.Config, opts Options) (*Installed, error) {
	opts, err := opts.withDefaults(true)
	if err != nil {
		return nil, err
	}
	in, err := newInstaller(cfg, opts.Log)
	if err != nil {
		return nil, err
	}
	return in.install(ctx, opts)
}

func (in *installer) install(ctx context.Context, opts Options) (*Installed, error) {
	start := time.Now()
	fail := func(what string, err error) error {
		if isContextErr(ctx, err) {
			return fmt.Errorf("install tp: %s: %w", what, err)
		}
		return APIError(Request{Host: in.host, Action: "install tp", What: what, Needs: installNeeds}, err)
	}
	if in.reach != nil {
		if err := in.reach(ctx); err != nil {
			return nil, fail("GET /version", err)
		}
	}

	// A namespace tp did not make (say, default) is installed into but never labelled as
	// tp's, so uninstall leaves it.
	ownNS := true
	ns, err := in.cs.CoreV1().Namespaces().Get(ctx, opts.Namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fail("get namespace "+opts.Namespace, err)
	case ns.DeletionTimestamp != nil:
		in.logf("namespace %s is being deleted; waiting for it to be gone first", opts.Namespace)
		if err := in.waitGone(ctx, opts, true); err != nil {
			return nil, err
		}
	case ns.Labels[ManagedByLabel] != ManagedByValue:
		in.logf("namespace %s exists and is not tp's: installing into it, and uninstall will leave it", opts.Namespace)
		ownNS = false
	}
	certs, err := in.planCerts(ctx, opts.Namespace, opts.RotateCA, time.Now())
	if err != nil {
		if isContextErr(ctx, err) {
			return nil, fail("read tp's certificates", err)
		}
		return nil, err
	}
	if opts.Replicas == 0 {
		// Kept: an upgrade or a change of options does not undo --replicas (or a scale).
		opts.Replicas = 1
		if dep, err := in.cs.AppsV1().Deployments(opts.Namespace).Get(ctx, ManagerName, metav1.GetOptions{}); err == nil && dep.Spec.Replicas != nil && *dep.Spec.Replicas > 0 {
			opts.Replicas = int(min(*dep.Spec.Replicas, MaxReplicas))
		} else if err != nil && !apierrors.IsNotFound(err) {
			return nil, fail("get deployment "+ManagerName, err)
		}
	}
	manifest, err := render(opts, certs.fingerprint, []byte(certs.bundle.Data[CABundleKey]))
	if err != nil {
		return nil, err
	}
	objs, err := Objects(manifest)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if !ownNS {
		objs = slices.DeleteFunc(objs, func(o *unstructured.Unstructured) bool { return o.GetKind() == "Namespace" })
	}

	in.logf("installing tp's manager in namespace %s (image %s)", opts.Namespace, opts.Image)
	for i, obj := range objs {
		// The certificates go in once the namespace is there, before the manager that
		// mounts them.
		if obj.GetKind() != "Namespace" && (i == 0 || objs[i-1].GetKind() == "Namespace") {
			if err := in.writeCerts(ctx, certs); err != nil {
				return nil, err
			}
			for _, n := range certs.notes {
				in.logf("  %s", n)
			}
		}
		what := fmt.Sprintf("apply %s %s", obj.GetKind(), objectName(obj))
		if err := in.apply(ctx, obj); err != nil {
			if apierrors.IsNotFound(err) && obj.GetNamespace() != "" && obj.GetNamespace() != opts.Namespace {
				return nil, &remote.Error{Kind: remote.Usage, Err: err,
					Msg:  fmt.Sprintf("managed namespace %q does not exist", obj.GetNamespace()),
					Hint: "create it first, or leave it out of --managed-namespaces"}
			}
			return nil, fail(what, err)
		}
	}
	if err := in.pruneRoles(ctx, opts); err != nil {
		return nil, fail("remove Roles of namespaces no longer managed", err)
	}
	in.logf("applied %d objects; waiting up to %s for the manager to be ready", len(objs), opts.Timeout)

	inst, err := in.waitReady(ctx, opts)
	if err != nil {
		return nil, err
	}
	in.waitWebhook(ctx, opts)
	in.logf("manager ready: pod %s in namespace %s (%s)", inst.Pod, opts.Namespace, time.Since(start).Round(100*time.Millisecond))
	return inst, nil
}

// pruneRoles removes the Roles and RoleBindings of this install in namespaces that are no
// longer managed (or all of them, when the manager now sees the whole cluster).
func (in *installer) pruneRoles(ctx context.Context, opts Options) error {
	sel := metav1.ListOptions{LabelSelector: instanceSelector(opts.Namespace)}
	roles, err := in.cs.RbacV1().Roles("").List(ctx, sel)
	if err != nil {
		return err
	}
	for _, r := range roles.Items {
		if r.Namespace == opts.Namespace && r.Name == ClaimsRoleName {
			continue
		}
		if !slices.Contains(opts.ManagedNamespaces, r.Namespace) {
			in.logf("removing Role %s/%s: namespace %s is no longer managed", r.Namespace, r.Name, r.Namespace)
			if err := in.cs.RbacV1().Roles(r.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
		}
	}
	bindings, err := in.cs.RbacV1().RoleBindings("").List(ctx, sel)
	if err != nil {
		return err
	}
	for _, b := range bindings.Items {
		if b.Namespace == opts.Namespace && b.Name == ClaimsRoleName {
			continue
		}
		if !slices.Contains(opts.ManagedNamespaces, b.Namespace) {
			if err := in.cs.RbacV1().RoleBindings(b.Namespace).Delete(ctx, b.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
		}
	}
	return nil
}

func objectName(obj *unstructured.Unstructured) string {
	if ns := obj.GetNamespace(); ns != "" {
		return ns + "/" + obj.GetName()
	}
	return obj.GetName()
}

// observation is one look at the rollout of the manager.
type observation struct {
	dep       *appsv1.Deployment // nil: no Deployment
	rs        *appsv1.ReplicaSet // the current revision's, once it exists
	pods      []corev1.Pod       // of rs
	done      bool
	state     string // what is missing, one line
	fail      *remote.Error
	failPod   *corev1.Pod // the pod that shows fail
	crashed   bool        // fail is a crash: failPod's logs explain it
	previous  bool        // ...those of the previous instance of its container
	installed *Installed
}

// observe looks at the manager's Deployment, its current ReplicaSet and that one's pods.
func (in *installer) observe(ctx context.Context, namespace string) (*observation, error) {
	obs := &observation{}
	dep, err := in.cs.AppsV1().Deployments(namespace).Get(ctx, ManagerName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		obs.state = fmt.Sprintf("Deployment %s/%s does not exist", namespace, ManagerName)
		return obs, nil
	}
	if err != nil {
		return nil, err
	}
	obs.dep = dep
	inst := &Installed{Namespace: namespace, ReadyReplicas: dep.Status.ReadyReplicas, Replicas: 1}
	if dep.Spec.Replicas != nil {
		inst.Replicas = *dep.Spec.Replicas
	}
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name != ManagerContainer {
			continue
		}
		inst.Image = c.Image
		for _, e := range c.Env {
			if e.Name == ManagedNamespacesEnv && e.Value != "" {
				inst.ManagedNamespaces = strings.Split(e.Value, ",")
			}
			if e.Name == AllowedCIDRsEnv && e.Value != "" {
				inst.AllowedCIDRs = strings.Split(e.Value, ",")
			}
		}
	}
	obs.installed = inst

	if dep.Status.ObservedGeneration < dep.Generation {
		obs.state = fmt.Sprintf("the Deployment controller has not picked up generation %d of Deployment %s yet", dep.Generation, ManagerName)
		return obs, nil
	}
	for _, c := range dep.Status.Conditions {
		if c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue {
			obs.fail = &remote.Error{Kind: remote.Cluster, Err: errors.New(reasonMessage(c.Reason, c.Message)),
				Msg:  fmt.Sprintf("the cluster does not let Deployment %s/%s create the manager's pod", namespace, ManagerName),
				Hint: "an admission policy (Pod Security, a webhook) or a quota rejects it: ask a cluster admin"}
			return obs, nil
		}
	}

	revision := dep.Annotations[revisionKey]
	sets, err := in.cs.AppsV1().ReplicaSets(namespace).List(ctx, metav1.ListOptions{LabelSelector: ManagerLabelSelector})
	if err != nil {
		return nil, err
	}
	for i, rs := range sets.Items {
		if rs.Annotations[revisionKey] == revision && ownedBy(rs.OwnerReferences, dep.UID) {
			obs.rs = &sets.Items[i]
		}
	}
	if obs.rs == nil {
		obs.state = fmt.Sprintf("the Deployment controller has not yet made the ReplicaSet of revision %s", revision)
		return obs, nil
	}
	pods, err := in.cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: ManagerLabelSelector})
	if err != nil {
		return nil, err
	}
	var states []string
	for _, p := range pods.Items {
		if !ownedBy(p.OwnerReferences, obs.rs.UID) {
			continue
		}
		obs.pods = append(obs.pods, p)
		v := judgePod(&p)
		if v.fail != nil && obs.fail == nil {
			obs.fail, obs.state, obs.failPod = v.fail, v.state, &p
			obs.crashed, obs.previous = v.crashed, v.previousLogs
		}
		if v.ready && p.DeletionTimestamp == nil && inst.Pod == "" {
			inst.Pod = p.Name
		}
		states = append(states, v.state)
	}
	if obs.fail != nil {
		return obs, nil
	}
	st := dep.Status
	switch {
	case len(obs.pods) == 0:
		obs.state = fmt.Sprintf("ReplicaSet %s has no pod yet", obs.rs.Name)
	case inst.Pod == "":
		obs.state = strings.Join(states, "; ")
	case st.UpdatedReplicas < inst.Replicas || st.AvailableReplicas < inst.Replicas:
		obs.state = fmt.Sprintf("the Deployment counts %d of %d pods updated and %d available", st.UpdatedReplicas, inst.Replicas, st.AvailableReplicas)
	case st.Replicas > st.UpdatedReplicas:
		obs.state = fmt.Sprintf("%d old manager pods are being replaced", st.Replicas-st.UpdatedReplicas)
	default:
		obs.done, inst.Ready = true, true
	}
	return obs, nil
}

func ownedBy(refs []metav1.OwnerReference, uid types.UID) bool {
	for _, r := range refs {
		if r.UID == uid {
			return true
		}
	}
	return false
}

// waitReady polls the rollout until it is done, fails, or opts.Timeout passes.
func (in *installer) waitReady(ctx context.Context, opts Options) (*Installed, error) {
	deadline := time.Now().Add(opts.Timeout)
	lastState := ""
	var lastErr error
	// Pods there before this wait may show a failure that is already fixed: an image loaded
	// since, under a kubelet back-off of up to five minutes. Each gets one fresh start.
	var earlier map[types.UID]bool
	for {
		obs, err := in.observe(ctx, opts.Namespace)
		if err == nil && earlier == nil {
			earlier = map[types.UID]bool{}
			for _, p := range obs.pods {
				earlier[p.UID] = true
			}
		}
		if err == nil && obs.fail != nil && obs.failPod != nil && earlier[obs.failPod.UID] {
			delete(earlier, obs.failPod.UID)
			in.logf("  %s, from before this install; replacing it to try again", obs.state)
			err = in.cs.CoreV1().Pods(opts.Namespace).Delete(ctx, obs.failPod.Name, metav1.DeleteOptions{
				Preconditions: &metav1.Preconditions{UID: &obs.failPod.UID}})
			if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
				continue
			}
			// Not allowed to: the failure stands as it is.
			err = nil
		}
		switch {
		case isContextErr(ctx, err):
			return nil, fmt.Errorf("install tp: waiting for the manager: %w", err)
		case err != nil && !IsTransport(err):
			return nil, APIError(Request{Host: in.host, Action: "install tp", What: "watch the manager's rollout", Needs: statusNeeds}, err)
		case err != nil:
			// The API server may blip (a restart, a load balancer): keep trying until the
			// deadline, and say so if it never comes back.
			lastErr = err
		case obs.fail != nil:
			in.addCrashLogs(ctx, obs)
			return nil, obs.fail
		case obs.done:
			return obs.installed, nil
		default:
			lastErr = nil
			if obs.state != lastState {
				in.logf("  %s", obs.state)
				lastState = obs.state
			}
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				return nil, unreachable(in.host, lastErr)
			}
			return nil, in.timeoutError(ctx, opts, obs)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("install tp: waiting for the manager: %w", ctx.Err())
		case <-time.After(in.poll):
		}
	}
}

// addCrashLogs replaces a crash's termination message with the crashed instance's log tail.
func (in *installer) addCrashLogs(ctx context.Context, obs *observation) {
	if !obs.crashed {
		return
	}
	tail := int64(logTail)
	raw, err := in.cs.CoreV1().Pods(obs.failPod.Namespace).GetLogs(obs.failPod.Name, &corev1.PodLogOptions{
		Container: ManagerContainer, Previous: obs.previous, TailLines: &tail,
	}).DoRaw(ctx)
	withLogs(obs.fail, string(raw), err)
}

// timeoutError says which condition was not met, with the pods' status and recent warnings.
func (in *installer) timeoutError(ctx context.Context, opts Options, obs *observation) *remote.Error {
	e := &remote.Error{
		Kind: remote.Timeout,
		Msg:  fmt.Sprintf("the manager was not ready within %s: %s", opts.Timeout, obs.state),
		Hint: fmt.Sprintf("look closer with kubectl -n %s describe pods -l %s; if the cluster is only slow, run tp install again with a longer --timeout",
			opts.Namespace, ManagerLabelSelector),
	}
	if obs.dep != nil && obs.dep.Status.ObservedGeneration < obs.dep.Generation {
		e.Hint = "the cluster's Deployment controller does not act: is kube-controller-manager running? (kubectl get --raw /readyz?verbose, and its logs)"
	}
	var d strings.Builder
	objects := map[string]bool{"Deployment/" + ManagerName: true}
	if obs.rs != nil {
		objects["ReplicaSet/"+obs.rs.Name] = true
	}
	for _, p := range obs.pods {
		objects["Pod/"+p.Name] = true
		d.WriteString(describePod(&p) + "\n")
	}
	if events, err := in.cs.CoreV1().Events(opts.Namespace).List(ctx, metav1.ListOptions{}); err == nil {
		if lines := warningEvents(events.Items, objects, eventLines, time.Now()); len(lines) > 0 {
			d.WriteString("recent warning events:\n")
			for _, l := range lines {
				d.WriteString("  " + l + "\n")
			}
		} else {
			d.WriteString("no warning events\n")
		}
	} else {
		fmt.Fprintf(&d, "(events could not be read: %v)\n", err)
	}
	e.Detail = d.String()
	return e
}

// Status reports on the install in namespace ("" for DefaultNamespace) without changing it.
// With no install there, the error is an *remote.Error of category NotInstalled.
func Status(ctx context.Context, cfg *rest.Config, namespace string) (*Installed, error) {
	in, namespace, err := reader(cfg, namespace)
	if err != nil {
		return nil, err
	}
	return in.status(ctx, namespace)
}

// reader is an installer for questions about the install in namespace ("" for
// DefaultNamespace), with the namespace checked and defaulted.
func reader(cfg *rest.Config, namespace string) (*installer, string, error) {
	opts, err := Options{Namespace: namespace}.withDefaults(false)
	if err != nil {
		return nil, "", err
	}
	in, err := newInstaller(cfg, opts.Log)
	return in, opts.Namespace, err
}

func (in *installer) status(ctx context.Context, namespace string) (*Installed, error) {
	fail := func(what string, err error) error {
		if isContextErr(ctx, err) {
			return fmt.Errorf("tp status: %s: %w", what, err)
		}
		return APIError(Request{Host: in.host, Action: "read tp's status", What: what, Needs: statusNeeds}, err)
	}
	if in.reach != nil {
		if err := in.reach(ctx); err != nil {
			return nil, fail("GET /version", err)
		}
	}
	obs, err := in.observe(ctx, namespace)
	if err != nil {
		return nil, fail("read the manager's Deployment, ReplicaSets and pods in namespace "+namespace, err)
	}
	if obs.dep == nil {
		return nil, in.notInstalled(ctx, namespace, "tp install installs it")
	}
	inst := obs.installed
	switch {
	case obs.done:
	case obs.fail != nil:
		in.addCrashLogs(ctx, obs)
		inst.Problem = obs.fail
	default:
		inst.Problem = fmt.Errorf("not ready: %s", obs.state)
	}
	return inst, nil
}

// notInstalled explains that namespace holds no install, naming those it finds elsewhere.
func (in *installer) notInstalled(ctx context.Context, namespace, hint string) *remote.Error {
	e := &remote.Error{Kind: remote.NotInstalled, Msg: fmt.Sprintf("tp is not installed in namespace %q", namespace), Hint: hint}
	deps, err := in.cs.AppsV1().Deployments("").List(ctx, metav1.ListOptions{LabelSelector: ManagerLabelSelector + "," + ManagedByLabel + "=" + ManagedByValue})
	if err != nil {
		return e
	}
	var elsewhere []string
	for _, d := range deps.Items {
		elsewhere = append(elsewhere, d.Namespace)
	}
	if len(elsewhere) > 0 {
		slices.Sort(elsewhere)
		where := fmt.Sprintf("it is installed in namespace %s: pass --namespace %s", strings.Join(elsewhere, ", "), elsewhere[0])
		if e.Hint != "" {
			where = e.Hint + "; " + where
		}
		e.Hint = where
	}
	return e
}

// Uninstall removes what Install made for opts.Namespace: the pod webhook first (no pod is
// sent to a manager on its way out), then the namespace (when tp made it; otherwise only
// tp's objects in it), the ClusterRole and ClusterRoleBinding, the admission policies, the
// Roles and RoleBindings in managed namespaces, and left-over intercept grants and agent
// records; then waits until they are gone, up to opts.Timeout. Only Namespace, Timeout and Log of opts matter. With nothing installed the
// error is an *remote.Error of category NotInstalled.
func Uninstall(ctx context.Context, cfg *rest.Config, opts Options) error {
	opts, err := opts.withDefaults(false)
	if err != nil {
		return err
	}
	in, err := newInstaller(cfg, opts.Log)
	if err != nil {
		return err
	}
	return in.uninstall(ctx, opts)
}

func (in *installer) uninstall(ctx context.Context, opts Options) error {
	start := time.Now()
	fail := func(what string, err error) error {
		if isContextErr(ctx, err) {
			return fmt.Errorf("uninstall tp: %s: %w", what, err)
		}
		return APIError(Request{Host: in.host, Action: "uninstall tp", What: what, Needs: uninstallNeeds}, err)
	}
	if in.reach != nil {
		if err := in.reach(ctx); err != nil {
			return fail("GET /version", err)
		}
	}
	nsName := opts.Namespace
	ns, err := in.cs.CoreV1().Namespaces().Get(ctx, nsName, metav1.GetOptions{})
	if ignoreMissing(err) != nil {
		return fail("get namespace "+nsName, err)
	}
	nsExists := err == nil
	ownNS := nsExists && ns.Labels[ManagedByLabel] == ManagedByValue
	var left leftovers
	if ownNS {
		left.found = append(left.found, "namespace "+nsName)
	}
	var inNS leftovers
	if nsExists && !ownNS {
		// Not tp's namespace: only what tp put there goes.
		if err := in.findInNamespace(ctx, nsName, &inNS); err != nil {
			return fail(err.what, err.err)
		}
		left.found = append(left.found, inNS.found...)
	}
	if err := in.findClusterWide(ctx, nsName, &left); err != nil {
		return fail(err.what, err.err)
	}
	if len(left.found) == 0 {
		return in.notInstalled(ctx, nsName, "nothing to remove")
	}
	in.logf("removing tp from namespace %s: %s", nsName, strings.Join(left.found, ", "))
	if ownNS && ns.DeletionTimestamp == nil {
		left.add("", "namespace "+nsName, func() error { return in.cs.CoreV1().Namespaces().Delete(ctx, nsName, metav1.DeleteOptions{}) })
	}
	left.remove = append(left.remove, inNS.remove...)
	for _, o := range left.remove {
		if err := ignoreMissing(o.del()); err != nil {
			return fail("delete "+o.what, err)
		}
	}
	if err := in.waitGone(ctx, opts, ownNS); err != nil {
		return err
	}
	in.logf("tp removed from namespace %s (%s)", nsName, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// leftovers is what uninstall found of an install: found names each thing in the order it
// was looked for, remove deletes them in an order that leaves no binding without its role.
type leftovers struct {
	found  []string
	remove []leftover
}

type leftover struct {
	what string
	del  func() error
}

// add records a thing found; found == "" records only its removal.
func (l *leftovers) add(found, what string, del func() error) {
	if found != "" {
		l.found = append(l.found, found)
	}
	l.remove = append(l.remove, leftover{what, del})
}

// failedLookup is a request that failed while uninstall looked for leftovers.
type failedLookup struct {
	what string
	err  error
}

func ignoreMissing(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// findInNamespace looks for tp's objects one by one in a namespace tp did not make (an
// install that failed halfway may have left any of them), told from others by their labels.
func (in *installer) findInNamespace(ctx context.Context, nsName string, left *leftovers) *failedLookup {
	deps, svcs, sas := in.cs.AppsV1().Deployments(nsName), in.cs.CoreV1().Services(nsName), in.cs.CoreV1().ServiceAccounts(nsName)
	secrets, cms := in.cs.CoreV1().Secrets(nsName), in.cs.CoreV1().ConfigMaps(nsName)
	del, get := metav1.DeleteOptions{}, metav1.GetOptions{}
	podsService := ManagerName + agentspec.PodsServiceSuffix
	// The manager's claims (it writes them; none outlives the install).
	leases := in.cs.CoordinationV1().Leases(nsName)
	claims, err := leases.List(ctx, metav1.ListOptions{LabelSelector: managerspec.ClaimLabel})
	if ignoreMissing(err) != nil {
		return &failedLookup{"list leases in " + nsName, err}
	}
	if err == nil {
		for _, l := range claims.Items {
			what := "Lease " + nsName + "/" + l.Name
			left.add(what, what, func() error { return ignoreMissing(leases.Delete(ctx, l.Name, del)) })
		}
	}
	for _, o := range []struct {
		kind, name string
		get        func() (metav1.Object, error)
		del        func() error
	}{
		{"Deployment", ManagerName,
			func() (metav1.Object, error) { return deps.Get(ctx, ManagerName, get) },
			func() error { return deps.Delete(ctx, ManagerName, del) }},
		{"Service", ManagerName,
			func() (metav1.Object, error) { return svcs.Get(ctx, ManagerName, get) },
			func() error { return svcs.Delete(ctx, ManagerName, del) }},
		{"Service", podsService,
			func() (metav1.Object, error) { return svcs.Get(ctx, podsService, get) },
			func() error { return svcs.Delete(ctx, podsService, del) }},
		{"ServiceAccount", ManagerName,
			func() (metav1.Object, error) { return sas.Get(ctx, ManagerName, get) },
			func() error { return sas.Delete(ctx, ManagerName, del) }},
		{"Secret", TLSSecret,
			func() (metav1.Object, error) { return secrets.Get(ctx, TLSSecret, get) },
			func() error { return secrets.Delete(ctx, TLSSecret, del) }},
		{"Secret", CASecret,
			func() (metav1.Object, error) { return secrets.Get(ctx, CASecret, get) },
			func() error { return secrets.Delete(ctx, CASecret, del) }},
		{"ConfigMap", CAConfigMap,
			func() (metav1.Object, error) { return cms.Get(ctx, CAConfigMap, get) },
			func() error { return cms.Delete(ctx, CAConfigMap, del) }},
	} {
		what := o.kind + " " + nsName + "/" + o.name
		obj, err := o.get()
		if ignoreMissing(err) != nil {
			return &failedLookup{"get " + what, err}
		}
		if err == nil && obj.GetLabels()[ManagedByLabel] == ManagedByValue {
			left.add(what, what, o.del)
		}
	}
	return nil
}

// findClusterWide looks for what install made outside its namespace: the pod webhook,
// RBAC, the admission policies, Roles in managed namespaces, and the intercept grants and
// agent records clients left (a crashed laptop's; a workload tp uninstall could not
// restore), which nothing honours once the manager is gone, and which a later install's
// webhook would otherwise act on.
func (in *installer) findClusterWide(ctx context.Context, nsName string, left *leftovers) *failedLookup {
	name, recordPolicy := RBACName(nsName), RecordPolicyName(nsName)
	rbac, admission := in.cs.RbacV1(), in.cs.AdmissionregistrationV1()
	get, del := metav1.GetOptions{}, metav1.DeleteOptions{}

	// The pod webhook goes before anything else: from then on no pod waits for, or is
	// changed by, a manager on its way out.
	webhooks := admission.MutatingWebhookConfigurations()
	_, err := webhooks.Get(ctx, name, get)
	if ignoreMissing(err) != nil {
		return &failedLookup{"get MutatingWebhookConfiguration " + name, err}
	}
	if err == nil {
		what := "MutatingWebhookConfiguration " + name
		left.found = append(left.found, what)
		left.remove = append([]leftover{{what, func() error { return webhooks.Delete(ctx, name, del) }}}, left.remove...)
	}

	var found []string
	var remove leftovers
	crs, crbs := rbac.ClusterRoles(), rbac.ClusterRoleBindings()
	vaps, vapbs := admission.ValidatingAdmissionPolicies(), admission.ValidatingAdmissionPolicyBindings()
	for _, o := range []struct {
		kind, name string
		get        func() error
		del        func() error
	}{
		{"ClusterRole", name, func() error { _, err := crs.Get(ctx, name, get); return err },
			func() error { return crs.Delete(ctx, name, del) }},
		{"ClusterRoleBinding", name, func() error { _, err := crbs.Get(ctx, name, get); return err },
			func() error { return crbs.Delete(ctx, name, del) }},
		{"ValidatingAdmissionPolicy", name, func() error { _, err := vaps.Get(ctx, name, get); return err },
			func() error { return vaps.Delete(ctx, name, del) }},
		{"ValidatingAdmissionPolicyBinding", name, func() error { _, err := vapbs.Get(ctx, name, get); return err },
			func() error { return vapbs.Delete(ctx, name, del) }},
		{"ValidatingAdmissionPolicy", recordPolicy, func() error { _, err := vaps.Get(ctx, recordPolicy, get); return err },
			func() error { return vaps.Delete(ctx, recordPolicy, del) }},
		{"ValidatingAdmissionPolicyBinding", recordPolicy, func() error { _, err := vapbs.Get(ctx, recordPolicy, get); return err },
			func() error { return vapbs.Delete(ctx, recordPolicy, del) }},
	} {
		err := o.get()
		if ignoreMissing(err) != nil {
			return &failedLookup{"get " + o.kind + " " + o.name, err}
		}
		if err == nil {
			found = append(found, o.kind+" "+o.name)
			// A binding goes before what it binds.
			remove.remove = append([]leftover{{o.kind + " " + o.name, o.del}}, remove.remove...)
		}
	}
	grants, err := in.cs.CoordinationV1().Leases("").List(ctx, metav1.ListOptions{LabelSelector: grant.Label})
	if err != nil {
		return &failedLookup{"list intercept grants (leases) in all namespaces", err}
	}
	records, err := in.cs.CoordinationV1().Leases("").List(ctx, metav1.ListOptions{LabelSelector: AgentRecordLabel})
	if err != nil {
		return &failedLookup{"list tp agent records (leases) in all namespaces", err}
	}
	sel := metav1.ListOptions{LabelSelector: instanceSelector(nsName)}
	roles, err := rbac.Roles("").List(ctx, sel)
	if err != nil {
		return &failedLookup{"list tp's Roles in all namespaces", err}
	}
	bindings, err := rbac.RoleBindings("").List(ctx, sel)
	if err != nil {
		return &failedLookup{"list tp's RoleBindings in all namespaces", err}
	}
	left.found = append(left.found, found...)
	for _, l := range append(grants.Items, records.Items...) {
		left.found = append(left.found, "Lease "+l.Namespace+"/"+l.Name)
	}
	for _, r := range roles.Items {
		left.found = append(left.found, "Role "+r.Namespace+"/"+r.Name)
	}
	for _, b := range bindings.Items {
		left.add("RoleBinding "+b.Namespace+"/"+b.Name, "RoleBinding "+b.Namespace+"/"+b.Name,
			func() error { return rbac.RoleBindings(b.Namespace).Delete(ctx, b.Name, del) })
	}
	for _, r := range roles.Items {
		left.add("", "Role "+r.Namespace+"/"+r.Name, func() error { return rbac.Roles(r.Namespace).Delete(ctx, r.Name, del) })
	}
	left.remove = append(left.remove, remove.remove...)
	for _, l := range grants.Items {
		left.add("", "intercept grant (Lease) "+l.Namespace+"/"+l.Name,
			func() error { return in.cs.CoordinationV1().Leases(l.Namespace).Delete(ctx, l.Name, del) })
	}
	for _, l := range records.Items {
		left.add("", "tp agent record (Lease) "+l.Namespace+"/"+l.Name,
			func() error { return in.cs.CoordinationV1().Leases(l.Namespace).Delete(ctx, l.Name, del) })
	}
	return nil
}

// waitGone waits until the namespace is gone (wholeNS) or else the manager's pods are.
func (in *installer) waitGone(ctx context.Context, opts Options, wholeNS bool) error {
	deadline := time.Now().Add(opts.Timeout)
	for {
		var state string
		if wholeNS {
			ns, err := in.cs.CoreV1().Namespaces().Get(ctx, opts.Namespace, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				return nil
			case isContextErr(ctx, err):
				return fmt.Errorf("waiting for namespace %s to be deleted: %w", opts.Namespace, err)
			case err != nil && !IsTransport(err):
				return APIError(Request{Host: in.host, Action: "uninstall tp", What: "get namespace " + opts.Namespace, Needs: uninstallNeeds}, err)
			case err != nil:
				state = err.Error()
			default:
				state = fmt.Sprintf("namespace %s is %s", opts.Namespace, ns.Status.Phase)
				for _, c := range ns.Status.Conditions {
					if c.Status == corev1.ConditionTrue {
						state += "; " + reasonMessage(c.Reason, c.Message)
					}
				}
			}
		} else {
			pods, err := in.cs.CoreV1().Pods(opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: ManagerLabelSelector})
			switch {
			case isContextErr(ctx, err):
				return fmt.Errorf("waiting for the manager's pods to go: %w", err)
			case err != nil && !IsTransport(err):
				return APIError(Request{Host: in.host, Action: "uninstall tp", What: "list the manager's pods", Needs: uninstallNeeds}, err)
			case err != nil:
				state = err.Error()
			case len(pods.Items) == 0:
				return nil
			default:
				state = fmt.Sprintf("%d manager pods are still there", len(pods.Items))
			}
		}
		if time.Now().After(deadline) {
			return &remote.Error{Kind: remote.Timeout, Msg: fmt.Sprintf("tp's objects were not gone within %s: %s", opts.Timeout, state),
				Hint: fmt.Sprintf("look at what remains with kubectl get namespace %s -o yaml; run tp uninstall again to keep waiting", opts.Namespace)}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for tp's objects to be gone: %w", ctx.Err())
		case <-time.After(in.poll):
		}
	}
}
