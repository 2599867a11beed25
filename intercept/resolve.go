package intercept

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tpdev/tp/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// Target is what intercepting one port of a workload means: the Service port whose
// traffic is taken, the name the agent serves it under, and the ports in the pod.
type Target struct {
	// Service and its port (number and name) that carry the traffic.
	Service         string `json:"service"`
	ServicePort     int32  `json:"servicePort"`
	ServicePortName string `json:"servicePortName,omitempty"`
	// TargetPortName is the name the agent serves the port under: the Service's targetPort
	// name, or for a numeric targetPort the name tp gives it (NumericPortName). Agents and
	// the manager identify an intercepted port by it.
	TargetPortName string `json:"targetPortName"`
	// AppPort is where the app listens in the pod; the agent forwards there on 127.0.0.1.
	AppPort int32 `json:"appPort"`
	// AgentPort is where the agent listens. Resolve fills it in when the port is already
	// injected; otherwise Inject picks it (Plan.Targets has the result).
	AgentPort int32 `json:"agentPort,omitempty"`
	// Numeric: the Service's targetPort was a number, so Inject points the Service's
	// targetPort at the agent's port by name (the Service changes; see the package doc).
	Numeric bool `json:"numeric,omitempty"`
}

// sameAs reports whether t and o intercept the same Service port the same way.
func (t Target) sameAs(o Target) bool {
	return t.Service == o.Service && t.ServicePort == o.ServicePort && t.TargetPortName == o.TargetPortName
}

func (t Target) describe() string {
	s := t.Service + ":" + strconv.Itoa(int(t.ServicePort))
	if t.ServicePortName != "" {
		s += " (" + t.ServicePortName + ")"
	}
	if t.Numeric {
		return s + fmt.Sprintf(" → pod port %d", t.AppPort)
	}
	return s + fmt.Sprintf(" → pod port %s (%d)", t.TargetPortName, t.AppPort)
}

// saved returns the workload's pod template as it was before tp changed it (the current
// one if tp did not), and what tp injected (nil if nothing).
func (w *workload) saved() (*corev1.PodTemplateSpec, *Record, error) {
	raw, ok := w.meta.Annotations[OriginalTemplateAnnotation]
	if !ok {
		return w.template, nil, nil
	}
	var orig corev1.PodTemplateSpec
	if err := json.Unmarshal([]byte(raw), &orig); err != nil {
		return nil, nil, fmt.Errorf("%s: annotation %s: %w", w.ref.describe(), OriginalTemplateAnnotation, err)
	}
	st := &Record{}
	if raw := w.meta.Annotations[StateAnnotation]; raw != "" {
		if err := json.Unmarshal([]byte(raw), st); err != nil {
			return nil, nil, fmt.Errorf("%s: annotation %s: %w", w.ref.describe(), StateAnnotation, err)
		}
	}
	return &orig, st, nil
}

// originalPorts returns svc's ports with the targetPorts tp changed put back, and whether
// any was. A port someone else changed since, or added, stays as it is now.
// base is w's pod template without tp's marks (for a workload injected by a tp older than
// the agent records, the original it saved), and the state such a tp left (nil if none).
func (w *workload) base() (*corev1.PodTemplateSpec, *Record, error) {
	orig, legacy, err := w.saved()
	if err != nil {
		return nil, nil, err
	}
	t := orig.DeepCopy()
	delete(t.Annotations, RestartAnnotation)
	if len(t.Annotations) == 0 {
		t.Annotations = nil
	}
	return t, legacy, nil
}

func originalPorts(svc *corev1.Service) ([]corev1.ServicePort, bool, error) {
	ports := slices.Clone(svc.Spec.Ports)
	raw, ok := svc.Annotations[OriginalPortsAnnotation]
	if !ok {
		return ports, false, nil
	}
	var saved []corev1.ServicePort
	if err := json.Unmarshal([]byte(raw), &saved); err != nil {
		return nil, false, fmt.Errorf("service %s/%s: annotation %s: %w", svc.Namespace, svc.Name, OriginalPortsAnnotation, err)
	}
	changed := false
	for i := range ports {
		p := &ports[i]
		if p.TargetPort.Type != intstr.String || !strings.HasPrefix(p.TargetPort.StrVal, portPrefix) {
			continue
		}
		for _, o := range saved {
			if o.Port == p.Port && protocol(o.Protocol) == protocol(p.Protocol) && o.TargetPort != p.TargetPort {
				p.TargetPort, changed = o.TargetPort, true
			}
		}
	}
	return ports, changed, nil
}

func protocol(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// candidate is one Service port that selects the workload's pods.
type candidate struct {
	Target
	proto corev1.Protocol
	// unroutable says why the port cannot reach the pods ("" if it can).
	unroutable string
}

func (c candidate) describe() string {
	if c.unroutable != "" {
		return c.Service + ":" + strconv.Itoa(int(c.ServicePort)) + " (" + c.unroutable + ")"
	}
	s := c.Target.describe()
	if c.proto != corev1.ProtocolTCP {
		s += " " + string(c.proto)
	}
	return s
}

// Resolve finds what intercepting want on the workload means: want is a Service port
// number or name ("80", "http"), optionally with the Service ("web/80"); "" means the
// only TCP port the workload's Services have. The workload's Services are those whose
// selector matches its pod template's labels. An injected workload is resolved against
// its saved original, so resolving again gives the same Target.
func Resolve(ctx context.Context, cs kubernetes.Interface, ref Ref, want string) (*Target, error) {
	ref, err := normalize(ref)
	if err != nil {
		return nil, err
	}
	w, err := getWorkload(ctx, cs, ref)
	if err != nil {
		return nil, err
	}
	orig, st, err := w.base()
	if err != nil {
		return nil, err
	}
	if st == nil {
		// The record only tells the agent port already given out; who may not read it
		// (a viewer) still resolves.
		if st, err = GetRecord(ctx, cs, ref); err != nil && remote.KindOf(err) != remote.Access {
			return nil, err
		}
	}
	svcList, err := cs.CoreV1().Services(ref.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, apiError(ctx, "list", "services", ref.Namespace, "", err)
	}
	podLabels := labels.Set(orig.Labels)
	var svcs []*corev1.Service
	for i := range svcList.Items {
		s := &svcList.Items[i]
		if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			svcs = append(svcs, s)
		}
	}
	if len(svcs) == 0 {
		return nil, remote.Explain(remote.Usage, fmt.Sprintf("no Service in namespace %q selects the pods of %s (labels %s)", ref.Namespace, ref.describe(), podLabels),
			fmt.Sprintf("tp intercept takes the traffic that comes through a Service: create one (kubectl expose %s/%s -n %s --port PORT)",
				strings.ToLower(ref.Kind), ref.Name, ref.Namespace))
	}
	slices.SortFunc(svcs, func(a, b *corev1.Service) int { return strings.Compare(a.Name, b.Name) })

	var all []candidate
	svcByName := map[string]*corev1.Service{}
	for _, s := range svcs {
		svcByName[s.Name] = s
		ports, _, err := originalPorts(s)
		if err != nil {
			return nil, err
		}
		for _, sp := range ports {
			all = append(all, candidateFor(s.Name, sp, &orig.Spec))
		}
	}

	svcName, port, hasSvc := strings.Cut(want, "/")
	if !hasSvc {
		svcName, port = "", want
	}
	if hasSvc && svcByName[svcName] == nil {
		var names []string
		for _, s := range svcs {
			names = append(names, s.Name)
		}
		return nil, remote.Explain(remote.Usage, fmt.Sprintf("the Service %q does not select the pods of %s", svcName, ref.describe()),
			"the Services that do: "+strings.Join(names, ", "))
	}
	matches := filter(all, func(c candidate) bool {
		return (svcName == "" || c.Service == svcName) &&
			(port == "" || port == c.ServicePortName || port == strconv.Itoa(int(c.ServicePort)))
	})
	if len(matches) == 0 && port != "" {
		// People also think of the pod's port: its name or number.
		matches = filter(all, func(c candidate) bool {
			return (svcName == "" || c.Service == svcName) && c.unroutable == "" &&
				((!c.Numeric && port == c.TargetPortName) || port == strconv.Itoa(int(c.AppPort)))
		})
	}
	listPorts := func() string {
		var l []string
		for _, c := range all {
			l = append(l, c.describe())
		}
		return strings.Join(l, "; ")
	}
	if len(matches) == 0 {
		what := "port " + strconv.Quote(port)
		if svcName != "" {
			what += " of Service " + strconv.Quote(svcName)
		}
		return nil, remote.Explain(remote.Usage, fmt.Sprintf("no %s leads to the pods of %s", what, ref.describe()),
			"pass one of the Services' ports (number or name, or SERVICE/PORT): "+listPorts())
	}
	tcp := filter(matches, func(c candidate) bool { return c.proto == corev1.ProtocolTCP })
	if len(tcp) == 0 {
		return nil, remote.Explain(remote.Usage, fmt.Sprintf("%s is %s: intercepts carry TCP only", matches[0].describe(), matches[0].proto),
			"pass a TCP port: "+listPorts())
	}
	routable := filter(tcp, func(c candidate) bool { return c.unroutable == "" })
	if len(routable) == 0 {
		return nil, remote.Explain(remote.Usage, fmt.Sprintf("the Service port %s cannot reach the pods of %s", tcp[0].describe(), ref.describe()),
			"the Service's targetPort must name a port the pod template declares; fix the Service or the workload")
	}
	// Service ports that land on the same named pod port are one intercept: the agent
	// takes them all under that name. A numeric targetPort is changed per Service.
	chosen := routable[0]
	for _, c := range routable[1:] {
		if c.TargetPortName != chosen.TargetPortName || c.Numeric && c.Service != chosen.Service {
			var l []string
			for _, c := range routable {
				l = append(l, c.describe())
			}
			hint := "pass one of them by number or name, as SERVICE/PORT when two Services have it"
			if port == "" {
				hint = "pass the port to intercept (--port LOCAL:REMOTE), by number or name, as SERVICE/PORT when two Services have it"
			}
			return nil, remote.Explain(remote.Usage, fmt.Sprintf("which port of %s? %s", ref.describe(), strings.Join(l, "; ")), hint)
		}
	}
	t := chosen.Target
	if st != nil {
		for _, o := range st.Targets {
			if o.TargetPortName == t.TargetPortName {
				t.AgentPort = o.AgentPort
			}
		}
	}
	if t.Numeric {
		if err := onlyThisWorkload(ctx, cs, w, svcByName[t.Service], t); err != nil {
			return nil, err
		}
	}
	return &t, nil
}

func filter(cs []candidate, keep func(candidate) bool) []candidate {
	var out []candidate
	for _, c := range cs {
		if keep(c) {
			out = append(out, c)
		}
	}
	return out
}

// candidateFor resolves Service port sp against the (original) pod spec, as the endpoints
// controller does: a name is looked up in the containers, then in the sidecars.
func candidateFor(svc string, sp corev1.ServicePort, spec *corev1.PodSpec) candidate {
	c := candidate{Target: Target{Service: svc, ServicePort: sp.Port, ServicePortName: sp.Name}, proto: protocol(sp.Protocol)}
	tp := sp.TargetPort
	switch {
	case tp.Type == intstr.Int:
		n := tp.IntVal
		if n == 0 {
			n = sp.Port
		}
		c.Numeric, c.AppPort, c.TargetPortName = true, n, NumericPortName(n, spec)
	default:
		c.TargetPortName = tp.StrVal
		lists := [][]corev1.Container{spec.Containers, spec.InitContainers}
		for i, list := range lists {
			for _, ctr := range list {
				if i == 1 && !sidecar(&ctr) {
					continue
				}
				for _, p := range ctr.Ports {
					if c.AppPort == 0 && p.Name == tp.StrVal && protocol(p.Protocol) == c.proto {
						c.AppPort = p.ContainerPort
					}
				}
			}
		}
		if c.AppPort == 0 {
			c.unroutable = fmt.Sprintf("targetPort %q: no container port of that name", tp.StrVal)
		}
	}
	return c
}

// onlyThisWorkload refuses a numeric targetPort on a Service that also selects other
// workloads' pods: once the targetPort is a name only the agent carries, the endpoints
// controller would drop those pods from the Service.
func onlyThisWorkload(ctx context.Context, cs kubernetes.Interface, w *workload, svc *corev1.Service, t Target) error {
	if by := svc.Annotations[InjectedForAnnotation]; by != "" && by != w.ref.key() {
		return remote.Explain(remote.Usage, fmt.Sprintf("the Service %q already leads to the agent of %s", svc.Name, by),
			"intercept that workload, or restore it first (tp uninstall restores every workload)")
	}
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil {
		return fmt.Errorf("%s: selector: %w", w.ref.describe(), err)
	}
	pods, err := cs.CoreV1().Pods(svc.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(svc.Spec.Selector).String()})
	if err != nil {
		return apiError(ctx, "list", "pods", svc.Namespace, "", err)
	}
	for _, p := range pods.Items {
		if !sel.Matches(labels.Set(p.Labels)) {
			return remote.Explain(remote.Usage, fmt.Sprintf("the Service %q targets port %s by number and also selects pod %q, which is not of %s",
				svc.Name, strconv.Itoa(int(t.AppPort)), p.Name, w.ref.describe()),
				"tp would point the Service's targetPort at a name only the agent's pods carry, taking the other pods out of the Service: "+
					"give the container port a name and use it as the Service's targetPort, or narrow the Service's selector")
		}
	}
	return nil
}
