package intercept

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/tpdev/tp/remote"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// Workload kinds tp can intercept.
const (
	Deployment  = "Deployment"
	StatefulSet = "StatefulSet"
	ReplicaSet  = "ReplicaSet"
)

// Ref names a workload. Kind is Deployment, StatefulSet or ReplicaSet; functions taking a
// Ref accept any case ("deployment") and the usual short forms ("deploy", "sts", "rs").
type Ref struct {
	Namespace string
	Kind      string
	Name      string
}

// String is kubectl's form with the namespace: "deployment/web -n default".
func (r Ref) String() string {
	s := strings.ToLower(r.Kind) + "/" + r.Name
	if r.Namespace != "" {
		s += " -n " + r.Namespace
	}
	return s
}

// describe names the workload in messages: `Deployment "web" in namespace "default"`.
func (r Ref) describe() string {
	return fmt.Sprintf("%s %q in namespace %q", r.Kind, r.Name, r.Namespace)
}

// key identifies the workload inside its namespace, in annotations on Services.
func (r Ref) key() string { return r.Kind + "/" + r.Name }

var kindAliases = map[string]string{
	"deploy": Deployment, "deployment": Deployment, "deployments": Deployment,
	"deployment.apps": Deployment, "deployments.apps": Deployment,
	"sts": StatefulSet, "statefulset": StatefulSet, "statefulsets": StatefulSet,
	"statefulset.apps": StatefulSet, "statefulsets.apps": StatefulSet,
	"rs": ReplicaSet, "replicaset": ReplicaSet, "replicasets": ReplicaSet,
	"replicaset.apps": ReplicaSet, "replicasets.apps": ReplicaSet,
}

// CanonicalKind spells a workload kind as Kubernetes does (Deployment, StatefulSet,
// ReplicaSet) from any of its aliases; the manager's records say "deployment". An unknown
// kind comes back as it is.
func CanonicalKind(kind string) string {
	if k, ok := kindAliases[strings.ToLower(kind)]; ok {
		return k
	}
	return kind
}

// ParseRef reads a workload as the user writes it: "web" (a Deployment), "deploy/web",
// "deployment/web", "sts/db", "statefulset/db", "rs/web-6d4f", in namespace.
func ParseRef(namespace, s string) (Ref, error) {
	kind, name, found := strings.Cut(strings.TrimSpace(s), "/")
	if !found {
		kind, name = Deployment, kind
	}
	return normalize(Ref{Namespace: namespace, Kind: kind, Name: name})
}

// normalize checks r and spells its Kind canonically.
func normalize(r Ref) (Ref, error) {
	kind, ok := kindAliases[strings.ToLower(r.Kind)]
	if !ok {
		return r, remote.Explain(remote.Usage, fmt.Sprintf("cannot intercept a %q: tp intercepts Deployments, StatefulSets and ReplicaSets", r.Kind),
			"name the workload as deploy/NAME, sts/NAME or rs/NAME (a bare NAME is a Deployment)")
	}
	r.Kind = kind
	if r.Name == "" {
		return r, remote.Explain(remote.Usage, "no workload name given", "name the workload as deploy/NAME, sts/NAME or rs/NAME")
	}
	if errs := validation.IsDNS1123Subdomain(r.Name); len(errs) > 0 {
		return r, remote.Explain(remote.Usage, fmt.Sprintf("%q is not a valid %s name: %s", r.Name, kind, strings.Join(errs, "; ")),
			"workload names are lowercase letters, digits, '-' and '.'")
	}
	if r.Namespace == "" {
		return r, remote.Explain(remote.Usage, "no namespace given for "+strings.ToLower(kind)+"/"+r.Name, "pass the workload's namespace")
	}
	if errs := validation.IsDNS1123Label(r.Namespace); len(errs) > 0 {
		return r, remote.Explain(remote.Usage, fmt.Sprintf("%q is not a valid namespace name: %s", r.Namespace, strings.Join(errs, "; ")),
			"namespaces are lowercase letters, digits and '-'")
	}
	return r, nil
}

// workload is a Deployment, StatefulSet or ReplicaSet seen through what tp changes: its
// metadata and its pod template, both pointers into obj.
type workload struct {
	ref      Ref
	obj      metav1.Object
	meta     *metav1.ObjectMeta
	template *corev1.PodTemplateSpec
	selector *metav1.LabelSelector
	// set for the kinds whose pods do not follow a template change by themselves
	onDelete bool   // a StatefulSet with updateStrategy OnDelete
	paused   bool   // a paused Deployment
	ownerDep string // a ReplicaSet's controlling Deployment
}

func wrap(ref Ref, obj any) *workload {
	w := &workload{ref: ref}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		w.obj, w.meta, w.template, w.selector, w.paused = o, &o.ObjectMeta, &o.Spec.Template, o.Spec.Selector, o.Spec.Paused
	case *appsv1.StatefulSet:
		w.obj, w.meta, w.template, w.selector = o, &o.ObjectMeta, &o.Spec.Template, o.Spec.Selector
		w.onDelete = o.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType
	case *appsv1.ReplicaSet:
		w.obj, w.meta, w.template, w.selector = o, &o.ObjectMeta, &o.Spec.Template, o.Spec.Selector
		if c := metav1.GetControllerOf(o); c != nil && c.Kind == Deployment {
			w.ownerDep = c.Name
		}
	}
	return w
}

// getWorkload reads ref (normalized); a missing workload is a Usage error naming what
// exists instead.
func getWorkload(ctx context.Context, cs kubernetes.Interface, ref Ref) (*workload, error) {
	obj, err := getObject(ctx, cs, ref)
	if apierrors.IsNotFound(err) {
		return nil, notFound(ctx, cs, ref)
	}
	if err != nil {
		return nil, apiError(ctx, "get", resourceOf(ref.Kind), ref.Namespace, ref.Name, err)
	}
	return wrap(ref, obj), nil
}

func getObject(ctx context.Context, cs kubernetes.Interface, ref Ref) (any, error) {
	apps := cs.AppsV1()
	switch ref.Kind {
	case Deployment:
		return apps.Deployments(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	case StatefulSet:
		return apps.StatefulSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	default:
		return apps.ReplicaSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	}
}

// update writes w back, guarded by the resourceVersion it was read with.
func (w *workload) update(ctx context.Context, cs kubernetes.Interface) error {
	apps := cs.AppsV1()
	opts := metav1.UpdateOptions{FieldManager: FieldManager}
	var err error
	switch o := w.obj.(type) {
	case *appsv1.Deployment:
		_, err = apps.Deployments(o.Namespace).Update(ctx, o, opts)
	case *appsv1.StatefulSet:
		_, err = apps.StatefulSets(o.Namespace).Update(ctx, o, opts)
	case *appsv1.ReplicaSet:
		_, err = apps.ReplicaSets(o.Namespace).Update(ctx, o, opts)
	}
	if err != nil && !apierrors.IsConflict(err) {
		return apiError(ctx, "update", resourceOf(w.ref.Kind), w.ref.Namespace, w.ref.Name, err)
	}
	return err
}

func resourceOf(kind string) string {
	return strings.ToLower(kind) + "s.apps"
}

// workloadNames lists the names of kind in namespace, sorted.
func workloadNames(ctx context.Context, cs kubernetes.Interface, namespace, kind string, opts metav1.ListOptions) ([]string, error) {
	var names []string
	apps := cs.AppsV1()
	switch kind {
	case Deployment:
		l, err := apps.Deployments(namespace).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, o := range l.Items {
			names = append(names, o.Namespace+"/"+o.Name)
		}
	case StatefulSet:
		l, err := apps.StatefulSets(namespace).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, o := range l.Items {
			names = append(names, o.Namespace+"/"+o.Name)
		}
	case ReplicaSet:
		l, err := apps.ReplicaSets(namespace).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, o := range l.Items {
			names = append(names, o.Namespace+"/"+o.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// notFound explains a missing workload: the workloads of that kind there are, and the
// other kinds that carry the name.
func notFound(ctx context.Context, cs kubernetes.Interface, ref Ref) error {
	e := &remote.Error{Kind: remote.Usage, Msg: fmt.Sprintf("there is no %s", ref.describe())}
	for _, kind := range []string{Deployment, StatefulSet, ReplicaSet} {
		if kind == ref.Kind {
			continue
		}
		if _, err := getObject(ctx, cs, Ref{Namespace: ref.Namespace, Kind: kind, Name: ref.Name}); err == nil {
			e.Hint = fmt.Sprintf("there is a %s of that name: intercept %s/%s", kind, strings.ToLower(kind), ref.Name)
			return e
		}
	}
	names, err := workloadNames(ctx, cs, ref.Namespace, ref.Kind, metav1.ListOptions{})
	switch {
	case err != nil:
		e.Hint = "check the name and namespace (kubectl get " + strings.ToLower(ref.Kind) + "s -n " + ref.Namespace + ")"
	case len(names) == 0:
		e.Hint = fmt.Sprintf("namespace %q has no %ss: check the namespace (--namespace)", ref.Namespace, ref.Kind)
	default:
		for i := range names {
			names[i] = names[i][len(ref.Namespace)+1:]
		}
		const most = 10
		list := strings.Join(names[:min(len(names), most)], ", ")
		if len(names) > most {
			list += fmt.Sprintf(" and %d more", len(names)-most)
		}
		e.Hint = fmt.Sprintf("the %ss there: %s", ref.Kind, list)
	}
	return e
}
