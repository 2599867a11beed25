package intercept

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/agentspec"
)

// EnvVar is one variable of a container's environment.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// Source says where the value comes from, for people: "value", "configmap web key
	// LOG_LEVEL", "secret db (envFrom)", "field metadata.name", "service link", ...
	Source string `json:"source"`
}

// ErrNoReadyPod matches (errors.Is) PodOf's error when the workload has no ready pod.
var ErrNoReadyPod = errors.New("no ready pod")

// DefaultContainerAnnotation names a pod's default container, as kubectl reads it.
const DefaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

// PodOf returns a ready pod of the workload (the newest, when there are several), to read
// its environment from.
func PodOf(ctx context.Context, cs kubernetes.Interface, ref Ref) (*corev1.Pod, error) {
	ref, err := normalize(ref)
	if err != nil {
		return nil, err
	}
	w, err := getWorkload(ctx, cs, ref)
	if err != nil {
		return nil, err
	}
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil {
		return nil, fmt.Errorf("%s: selector: %w", ref.describe(), err)
	}
	pods, err := cs.CoreV1().Pods(ref.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, apiError(ctx, "list", "pods", ref.Namespace, "", err)
	}
	if len(pods.Items) == 0 {
		return nil, &remote.Error{Kind: remote.Usage, Msg: fmt.Sprintf("%s has no pods", ref.describe()), Err: ErrNoReadyPod,
			Hint: fmt.Sprintf("is it scaled to zero? (kubectl get %s -n %s)", ref.Kind+"/"+ref.Name, ref.Namespace)}
	}
	var ready []*corev1.Pod
	var states []string
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && podReady(p) {
			ready = append(ready, p)
			continue
		}
		states = append(states, p.Name+": "+podState(p))
	}
	if len(ready) == 0 {
		return nil, &remote.Error{Kind: remote.Cluster, Msg: fmt.Sprintf("no pod of %s is ready", ref.describe()), Err: ErrNoReadyPod,
			Hint:   fmt.Sprintf("look closer with kubectl describe pods -n %s -l %s", ref.Namespace, sel),
			Detail: strings.Join(states, "\n")}
	}
	newest := slices.MaxFunc(ready, func(a, b *corev1.Pod) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return newest.DeepCopy(), nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podState(p *corev1.Pod) string {
	s := string(p.Status.Phase)
	if p.DeletionTimestamp != nil {
		s = "terminating"
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Waiting != nil && c.State.Waiting.Reason != "" {
			s += fmt.Sprintf(", %s %s", c.Name, c.State.Waiting.Reason)
		}
	}
	return s
}

// containerOf picks the container: the named one, else the pod's default container
// (kubectl's annotation), else the only container that is not tp's agent.
func containerOf(pod *corev1.Pod, name string) (*corev1.Container, error) {
	if name == "" {
		name = pod.Annotations[DefaultContainerAnnotation]
	}
	var names []string
	var only *corev1.Container
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if name != "" && c.Name == name {
			return c, nil
		}
		if c.Name != agentspec.Container {
			names = append(names, c.Name)
			only = c
		}
	}
	for i := range pod.Spec.InitContainers {
		if c := &pod.Spec.InitContainers[i]; name != "" && c.Name == name {
			return c, nil
		}
	}
	if name == "" && len(names) == 1 {
		return only, nil
	}
	if name == "" {
		return nil, remote.Explain(remote.Usage, fmt.Sprintf("pod %q has containers %s: which one?", pod.Name, strings.Join(names, ", ")), "name the container (--container)")
	}
	return nil, remote.Explain(remote.Usage, fmt.Sprintf("pod %q has no container %q", pod.Name, name), "its containers: "+strings.Join(names, ", "))
}

// envResolver reads what a container's environment refers to, each object once, as the
// kubelet does when it starts the container.
type envResolver struct {
	ctx        context.Context
	cs         kubernetes.Interface
	pod        *corev1.Pod
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	node       *corev1.Node
	// reader names what reads the objects, for the errors: "the environment of pod web-1".
	reader string
	// needs is what a refusal's hint says the command takes.
	needs string
}

func newResolver(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, reader, needs string) *envResolver {
	return &envResolver{ctx: ctx, cs: cs, pod: pod, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		reader: reader, needs: needs}
}

func (r *envResolver) apiError(verb, resource, namespace, name string, err error) error {
	return apiErrorNeeding(r.ctx, r.needs, verb, resource, namespace, name, err)
}

// Env returns the environment container of pod starts with, computed as the kubelet does
// (pkg/kubelet makeEnvironmentVariables): envFrom sources in order (ConfigMap and Secret
// keys, with their prefix; optional ones may be missing), then env in order, later
// entries replacing earlier ones; a value's $(VAR) references expand to variables defined
// before it or to service links, $$ is a literal $, unknown references stay as written;
// valueFrom reads ConfigMap and Secret keys, pod fields (metadata.name, .namespace, .uid,
// labels['k'], annotations['k'], spec.nodeName, spec.serviceAccountName, status.hostIP(s),
// status.podIP(s)) and container resources (with divisor; an unset limit is the node's
// allocatable, as the kubelet has it). Last come the service links (NAME_SERVICE_HOST,
// ...) of the namespace's Services when enableServiceLinks is not false, and of the API
// server's Service in default when the user may read it. container "" picks the pod's
// default container. Variables keep the place they were first defined.
func Env(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, container string) ([]EnvVar, error) {
	c, err := containerOf(pod, container)
	if err != nil {
		return nil, err
	}
	r := newResolver(ctx, cs, pod, fmt.Sprintf("the environment of pod %q", pod.Name), interceptNeeds)
	services, err := r.serviceEnv()
	if err != nil {
		return nil, err
	}
	var env orderedEnv
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := r.configMap(from.ConfigMapRef.Name, from.ConfigMapRef.Optional)
			if err != nil {
				return nil, err
			}
			if cm == nil {
				continue
			}
			for _, k := range sortedKeys(cm.Data) {
				env.set(EnvVar{Name: from.Prefix + k, Value: cm.Data[k], Source: "configmap " + cm.Name + " (envFrom)"})
			}
		case from.SecretRef != nil:
			s, err := r.secret(from.SecretRef.Name, from.SecretRef.Optional)
			if err != nil {
				return nil, err
			}
			if s == nil {
				continue
			}
			for _, k := range sortedKeys(s.Data) {
				env.set(EnvVar{Name: from.Prefix + k, Value: string(s.Data[k]), Source: "secret " + s.Name + " (envFrom)"})
			}
		}
	}
	for _, e := range c.Env {
		v := EnvVar{Name: e.Name, Value: e.Value, Source: "value"}
		switch {
		case e.Value != "":
			v.Value = expand(e.Value, func(name string) (string, bool) {
				if x, ok := env.get(name); ok {
					return x, true
				}
				x, ok := services[name]
				return x, ok
			})
		case e.ValueFrom == nil:
		case e.ValueFrom.FieldRef != nil:
			v.Source = "field " + e.ValueFrom.FieldRef.FieldPath
			if v.Value, err = fieldValue(pod, e.ValueFrom.FieldRef); err != nil {
				return nil, remote.Explain(remote.Usage, fmt.Sprintf("env %s of container %q: %v", e.Name, c.Name, err), "")
			}
		case e.ValueFrom.ResourceFieldRef != nil:
			v.Source = "resource " + e.ValueFrom.ResourceFieldRef.Resource
			if v.Value, err = r.resourceValue(c, e.ValueFrom.ResourceFieldRef); err != nil {
				return nil, fmt.Errorf("env %s of container %q: %w", e.Name, c.Name, err)
			}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v.Source = "configmap " + ref.Name + " key " + ref.Key
			cm, err := r.configMap(ref.Name, ref.Optional)
			if err != nil {
				return nil, err
			}
			x, ok := "", false
			if cm != nil {
				x, ok = cm.Data[ref.Key]
			}
			if !ok && optional(ref.Optional) {
				continue
			}
			if !ok {
				return nil, &remote.Error{Kind: remote.Cluster, Msg: fmt.Sprintf("env %s of container %q: ConfigMap %q in namespace %q has no key %q", e.Name, c.Name, ref.Name, pod.Namespace, ref.Key),
					Hint: "the pod could not start like this today: fix the ConfigMap or the workload"}
			}
			v.Value = x
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v.Source = "secret " + ref.Name + " key " + ref.Key
			s, err := r.secret(ref.Name, ref.Optional)
			if err != nil {
				return nil, err
			}
			var x []byte
			ok := false
			if s != nil {
				x, ok = s.Data[ref.Key]
			}
			if !ok && optional(ref.Optional) {
				continue
			}
			if !ok {
				return nil, &remote.Error{Kind: remote.Cluster, Msg: fmt.Sprintf("env %s of container %q: Secret %q in namespace %q has no key %q", e.Name, c.Name, ref.Name, pod.Namespace, ref.Key),
					Hint: "the pod could not start like this today: fix the Secret or the workload"}
			}
			v.Value = string(x)
		default:
			return nil, remote.Explain(remote.Usage, fmt.Sprintf("env %s of container %q takes its value from a source tp does not know", e.Name, c.Name), "")
		}
		env.set(v)
	}
	for _, k := range sortedKeys(services) {
		if _, ok := env.get(k); !ok {
			env.set(EnvVar{Name: k, Value: services[k], Source: "service link"})
		}
	}
	return env.vars, nil
}

func optional(b *bool) bool { return b != nil && *b }

// orderedEnv keeps variables in the order they were first defined, with their last value.
type orderedEnv struct {
	vars  []EnvVar
	index map[string]int
}

func (e *orderedEnv) set(v EnvVar) {
	if e.index == nil {
		e.index = map[string]int{}
	}
	if i, ok := e.index[v.Name]; ok {
		e.vars[i] = v
		return
	}
	e.index[v.Name] = len(e.vars)
	e.vars = append(e.vars, v)
}

func (e *orderedEnv) get(name string) (string, bool) {
	i, ok := e.index[name]
	if !ok {
		return "", false
	}
	return e.vars[i].Value, true
}

// expand replaces $(VAR) references in s as the kubelet does (third_party/forked/golang/
// expansion): $$ is a literal $, a reference lookup does not know stays as written, a
// $ before anything else is kept with what follows, and an unclosed $( is kept.
func expand(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch next := s[i+1]; next {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			// The kubelet converts this one byte to a rune, so a multi-byte character after
			// a lone $ reaches the container mangled; the pod sees that, so tp does too.
			b.WriteByte('$')
			b.WriteString(string(rune(next)))
			i++
		}
	}
	return b.String()
}

func (r *envResolver) configMap(name string, opt *bool) (*corev1.ConfigMap, error) {
	// A missing optional object is remembered as nil; a required reference to it still fails.
	if cm, ok := r.configMaps[name]; ok && (cm != nil || optional(opt)) {
		return cm, nil
	}
	cm, err := r.cs.CoreV1().ConfigMaps(r.pod.Namespace).Get(r.ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && optional(opt):
		cm = nil
	case apierrors.IsNotFound(err):
		return nil, &remote.Error{Kind: remote.Cluster, Msg: fmt.Sprintf("the ConfigMap %q in namespace %q, which %s reads, does not exist", name, r.pod.Namespace, r.reader),
			Hint: "the pod could not start like this today: create the ConfigMap or fix the workload"}
	case err != nil:
		return nil, r.apiError("get", "configmaps", r.pod.Namespace, name, err)
	}
	r.configMaps[name] = cm
	return cm, nil
}

func (r *envResolver) secret(name string, opt *bool) (*corev1.Secret, error) {
	// A missing optional object is remembered as nil; a required reference to it still fails.
	if s, ok := r.secrets[name]; ok && (s != nil || optional(opt)) {
		return s, nil
	}
	s, err := r.cs.CoreV1().Secrets(r.pod.Namespace).Get(r.ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && optional(opt):
		s = nil
	case apierrors.IsNotFound(err):
		return nil, &remote.Error{Kind: remote.Cluster, Msg: fmt.Sprintf("the Secret %q in namespace %q, which %s reads, does not exist", name, r.pod.Namespace, r.reader),
			Hint: "the pod could not start like this today: create the Secret or fix the workload"}
	case err != nil:
		return nil, r.apiError("get", "secrets", r.pod.Namespace, name, err)
	}
	r.secrets[name] = s
	return s, nil
}

// serviceEnv is the service links the kubelet adds: for the namespace's Services when
// enableServiceLinks is not false, and always for the API server's Service "kubernetes"
// in default (skipped when the user may not read it).
func (r *envResolver) serviceEnv() (map[string]string, error) {
	byName := map[string]*corev1.Service{}
	if r.pod.Spec.EnableServiceLinks == nil || *r.pod.Spec.EnableServiceLinks {
		l, err := r.cs.CoreV1().Services(r.pod.Namespace).List(r.ctx, metav1.ListOptions{})
		if err != nil {
			return nil, r.apiError("list", "services", r.pod.Namespace, "", err)
		}
		for i := range l.Items {
			if s := &l.Items[i]; serviceIPSet(s) {
				byName[s.Name] = s
			}
		}
	}
	if _, ok := byName["kubernetes"]; !ok {
		s, err := r.cs.CoreV1().Services(metav1.NamespaceDefault).Get(r.ctx, "kubernetes", metav1.GetOptions{})
		switch {
		case err == nil && serviceIPSet(s):
			byName[s.Name] = s
		case err == nil, apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		default:
			return nil, r.apiError("get", "services", metav1.NamespaceDefault, "kubernetes", err)
		}
	}
	env := map[string]string{}
	for _, s := range byName {
		for _, v := range serviceLinks(s) {
			env[v.Name] = v.Value
		}
	}
	return env, nil
}

func serviceIPSet(s *corev1.Service) bool {
	return s.Spec.ClusterIP != corev1.ClusterIPNone && s.Spec.ClusterIP != "" && len(s.Spec.Ports) > 0
}

// serviceLinks are the variables the kubelet makes for s (pkg/kubelet/envvars), Docker
// link style included.
func serviceLinks(s *corev1.Service) []corev1.EnvVar {
	prefix := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
	ip := s.Spec.ClusterIP
	out := []corev1.EnvVar{
		{Name: prefix + "_SERVICE_HOST", Value: ip},
		{Name: prefix + "_SERVICE_PORT", Value: strconv.Itoa(int(s.Spec.Ports[0].Port))},
	}
	for _, p := range s.Spec.Ports {
		if p.Name != "" {
			out = append(out, corev1.EnvVar{Name: prefix + "_SERVICE_PORT_" + strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")), Value: strconv.Itoa(int(p.Port))})
		}
	}
	for i, p := range s.Spec.Ports {
		proto := strings.ToLower(string(protocol(p.Protocol)))
		url := proto + "://" + net.JoinHostPort(ip, strconv.Itoa(int(p.Port)))
		if i == 0 {
			out = append(out, corev1.EnvVar{Name: prefix + "_PORT", Value: url})
		}
		pp := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(proto))
		out = append(out,
			corev1.EnvVar{Name: pp, Value: url},
			corev1.EnvVar{Name: pp + "_PROTO", Value: proto},
			corev1.EnvVar{Name: pp + "_PORT", Value: strconv.Itoa(int(p.Port))},
			corev1.EnvVar{Name: pp + "_ADDR", Value: ip},
		)
	}
	return out
}

// fieldValue reads a downward-API field of pod as the kubelet does for env.
func fieldValue(pod *corev1.Pod, fs *corev1.ObjectFieldSelector) (string, error) {
	if fs.APIVersion != "" && fs.APIVersion != "v1" {
		return "", fmt.Errorf("fieldRef apiVersion %q is not supported", fs.APIVersion)
	}
	path := fs.FieldPath
	if strings.HasSuffix(path, "']") {
		if p, key, ok := strings.Cut(strings.TrimSuffix(path, "']"), "['"); ok && p != "" {
			switch p {
			case "metadata.labels":
				return pod.Labels[key], nil
			case "metadata.annotations":
				return pod.Annotations[key], nil
			}
			return "", fmt.Errorf("fieldPath %q does not support subscript", path)
		}
	}
	ips := func(l []string) string { return strings.Join(l, ",") }
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP":
		if len(pod.Status.HostIPs) > 0 {
			return pod.Status.HostIPs[0].IP, nil
		}
		return pod.Status.HostIP, nil
	case "status.hostIPs":
		var l []string
		for _, ip := range pod.Status.HostIPs {
			l = append(l, ip.IP)
		}
		if len(l) == 0 && pod.Status.HostIP != "" {
			l = []string{pod.Status.HostIP}
		}
		return ips(l), nil
	case "status.podIP":
		if len(pod.Status.PodIPs) > 0 {
			return pod.Status.PodIPs[0].IP, nil
		}
		return pod.Status.PodIP, nil
	case "status.podIPs":
		var l []string
		for _, ip := range pod.Status.PodIPs {
			l = append(l, ip.IP)
		}
		if len(l) == 0 && pod.Status.PodIP != "" {
			l = []string{pod.Status.PodIP}
		}
		return ips(l), nil
	}
	return "", fmt.Errorf("unsupported fieldPath %q", path)
}

// formatMap is the downward API's form of a whole map: key="value" lines, sorted.
func formatMap(m map[string]string) string {
	var l []string
	for _, k := range sortedKeys(m) {
		l = append(l, fmt.Sprintf("%v=%q", k, m[k]))
	}
	return strings.Join(l, "\n")
}

// resourceValue reads a container resource as the kubelet does: an unset (or zero) limit
// of CPU, memory or ephemeral storage is the node's allocatable; the value is divided by
// the divisor (default 1) and rounded up.
func (r *envResolver) resourceValue(c *corev1.Container, fs *corev1.ResourceFieldSelector) (string, error) {
	if fs.ContainerName != "" && fs.ContainerName != c.Name {
		other, err := containerOf(r.pod, fs.ContainerName)
		if err != nil {
			return "", err
		}
		c = other
	}
	kind, name, ok := strings.Cut(fs.Resource, ".")
	if !ok || kind != "limits" && kind != "requests" {
		return "", remote.Explain(remote.Usage, fmt.Sprintf("unsupported container resource %q", fs.Resource), "")
	}
	res := corev1.ResourceName(name)
	list := c.Resources.Requests
	if kind == "limits" {
		list = c.Resources.Limits
	}
	q, set := list[res]
	defaulted := res == corev1.ResourceCPU || res == corev1.ResourceMemory || res == corev1.ResourceEphemeralStorage
	hugePages := strings.HasPrefix(name, corev1.ResourceHugePagesPrefix)
	if !defaulted && !hugePages {
		return "", remote.Explain(remote.Usage, fmt.Sprintf("unsupported container resource %q", fs.Resource), "")
	}
	if kind == "limits" && defaulted && (!set || q.IsZero()) {
		alloc, err := r.allocatable(res, c.Name)
		if err != nil {
			return "", err
		}
		q = alloc
	}
	divisor := fs.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if res == corev1.ResourceCPU {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

// allocatable is the node's allocatable res: what an unset limit means to the kubelet.
func (r *envResolver) allocatable(res corev1.ResourceName, container string) (resource.Quantity, error) {
	if r.node == nil {
		if r.pod.Spec.NodeName == "" {
			return resource.Quantity{}, &remote.Error{Kind: remote.Cluster,
				Msg: fmt.Sprintf("container %q of pod %q has no %s limit, which means its node's allocatable, and the pod is on no node yet", container, r.pod.Name, res)}
		}
		n, err := r.cs.CoreV1().Nodes().Get(r.ctx, r.pod.Spec.NodeName, metav1.GetOptions{})
		if apierrors.IsForbidden(err) {
			return resource.Quantity{}, &remote.Error{Kind: remote.Access, Err: err,
				Msg:  fmt.Sprintf("container %q of pod %q has no %s limit, which means its node's allocatable, and you may not read node %q", container, r.pod.Name, res, r.pod.Spec.NodeName),
				Hint: "set the limit on the workload, or ask a cluster admin for get on nodes"}
		}
		if err != nil {
			return resource.Quantity{}, r.apiError("get", "nodes", "", r.pod.Spec.NodeName, err)
		}
		r.node = n
	}
	return r.node.Status.Allocatable[res], nil
}
