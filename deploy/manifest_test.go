package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/grant"
)

// rendered is a rendered manifest read back as typed objects.
type rendered struct {
	kinds        []string
	namespace    *corev1.Namespace
	sa           *corev1.ServiceAccount
	clusterRole  *rbacv1.ClusterRole
	clusterBind  *rbacv1.ClusterRoleBinding
	roles        []*rbacv1.Role // in the managed namespaces
	roleBindings []*rbacv1.RoleBinding
	claimsRole   *rbacv1.Role // in tp's namespace
	claimsBind   *rbacv1.RoleBinding
	svc          *corev1.Service
	pods         *corev1.Service // headless: the agents find every manager pod by it
	dep          *appsv1.Deployment
	policy       *admissionv1.ValidatingAdmissionPolicy
	policyBind   *admissionv1.ValidatingAdmissionPolicyBinding
	recordPolicy *admissionv1.ValidatingAdmissionPolicy
	recordBind   *admissionv1.ValidatingAdmissionPolicyBinding
	webhook      *admissionv1.MutatingWebhookConfiguration
}

func renderObjects(t *testing.T, opts Options) rendered {
	t.Helper()
	manifest, err := Render(opts)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return readRendered(t, manifest)
}

// readRendered reads a rendered manifest back, strictly.
func readRendered(t *testing.T, manifest []byte) rendered {
	t.Helper()
	objs, err := Objects(manifest)
	if err != nil {
		t.Fatalf("objects: %v\n%s", err, manifest)
	}
	var r rendered
	for _, o := range objs {
		r.kinds = append(r.kinds, o.GetKind())
		for _, key := range []string{ManagedByLabel, InstanceLabel} {
			if o.GetLabels()[key] == "" {
				t.Errorf("%s %s lacks label %s", o.GetKind(), o.GetName(), key)
			}
		}
		switch o.GetKind() {
		case "Namespace":
			r.namespace = convert[corev1.Namespace](t, o)
		case "ServiceAccount":
			r.sa = convert[corev1.ServiceAccount](t, o)
		case "ClusterRole":
			r.clusterRole = convert[rbacv1.ClusterRole](t, o)
		case "ClusterRoleBinding":
			r.clusterBind = convert[rbacv1.ClusterRoleBinding](t, o)
		case "Role":
			if o.GetName() == ClaimsRoleName {
				r.claimsRole = convert[rbacv1.Role](t, o)
				break
			}
			r.roles = append(r.roles, convert[rbacv1.Role](t, o))
		case "RoleBinding":
			if o.GetName() == ClaimsRoleName {
				r.claimsBind = convert[rbacv1.RoleBinding](t, o)
				break
			}
			r.roleBindings = append(r.roleBindings, convert[rbacv1.RoleBinding](t, o))
		case "Service":
			if svc := convert[corev1.Service](t, o); svc.Spec.ClusterIP == corev1.ClusterIPNone {
				r.pods = svc
			} else {
				r.svc = svc
			}
		case "Deployment":
			r.dep = convert[appsv1.Deployment](t, o)
		case "ValidatingAdmissionPolicy":
			if strings.HasSuffix(o.GetName(), "-agent-records") {
				r.recordPolicy = convert[admissionv1.ValidatingAdmissionPolicy](t, o)
			} else {
				r.policy = convert[admissionv1.ValidatingAdmissionPolicy](t, o)
			}
		case "ValidatingAdmissionPolicyBinding":
			if strings.HasSuffix(o.GetName(), "-agent-records") {
				r.recordBind = convert[admissionv1.ValidatingAdmissionPolicyBinding](t, o)
			} else {
				r.policyBind = convert[admissionv1.ValidatingAdmissionPolicyBinding](t, o)
			}
		case "MutatingWebhookConfiguration":
			r.webhook = convert[admissionv1.MutatingWebhookConfiguration](t, o)
		default:
			t.Errorf("unexpected kind %s", o.GetKind())
		}
	}
	return r
}

func convert[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	v := new(T)
	// Strict: a misspelt field in the template must fail here, not be dropped silently.
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, v, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return v
}

// renderedKinds are the kinds of the manifest, in order.
var renderedKinds = []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
	"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
	"Service", "Service", "Deployment", "MutatingWebhookConfiguration"}

func TestRenderDefaults(t *testing.T) {
	r := renderObjects(t, Options{Image: "localhost/tp/tp:v1"})
	if want := renderedKinds; !slices.Equal(r.kinds, want) {
		t.Fatalf("kinds %v, want %v (namespace first: the rest lives in it; the webhook last: it calls the manager)", r.kinds, want)
	}
	if r.namespace.Name != DefaultNamespace || r.namespace.Labels[ManagedByLabel] != "tp" {
		t.Errorf("namespace %s labels %v", r.namespace.Name, r.namespace.Labels)
	}
	if r.clusterRole.Name != "tp-manager-tp-system" || r.clusterBind.Name != r.clusterRole.Name || r.clusterBind.RoleRef.Name != r.clusterRole.Name {
		t.Errorf("cluster RBAC names: role %s, binding %s -> %s", r.clusterRole.Name, r.clusterBind.Name, r.clusterBind.RoleRef.Name)
	}
	if s := r.clusterBind.Subjects; len(s) != 1 || s[0].Kind != "ServiceAccount" || s[0].Name != ManagerName || s[0].Namespace != DefaultNamespace {
		t.Errorf("binding subjects %+v", s)
	}
	// The manager writes only in its own namespace: its claims.
	for _, rule := range r.clusterRole.Rules {
		for _, v := range rule.Verbs {
			if v != "get" && v != "list" && v != "watch" && !slices.Equal(rule.Resources, []string{"tokenreviews"}) {
				t.Errorf("ClusterRole lets the manager %s %v", v, rule.Resources)
			}
		}
	}
	if cr, cb := r.claimsRole, r.claimsBind; cr == nil || cb == nil || cr.Namespace != DefaultNamespace || cb.Namespace != DefaultNamespace ||
		cb.RoleRef.Name != cr.Name || len(cb.Subjects) != 1 || cb.Subjects[0].Name != ManagerName || len(cr.Rules) != 2 ||
		!slices.Equal(cr.Rules[0].Resources, []string{"leases"}) || !slices.Equal(cr.Rules[1].Resources, []string{"pods"}) || !slices.Equal(cr.Rules[1].Verbs, []string{"list"}) {
		t.Errorf("claims role %+v, binding %+v", cr, cb)
	}
	// Cluster-wide: the workload rules are in the ClusterRole.
	for _, want := range []string{"nodes", "namespaces", "servicecidrs", "services", "pods", "endpointslices"} {
		if !grants(r.clusterRole.Rules, want) {
			t.Errorf("ClusterRole does not grant reading %s", want)
		}
	}
	readOnly(t, "ClusterRole", r.clusterRole.Rules)
	if !slices.ContainsFunc(r.clusterRole.Rules, func(p rbacv1.PolicyRule) bool {
		return slices.Equal(p.APIGroups, []string{"coordination.k8s.io"}) && slices.Equal(p.Resources, []string{"leases"}) && slices.Equal(p.Verbs, []string{"get"})
	}) {
		t.Errorf("ClusterRole does not let the manager read intercept grants (leases, get)")
	}

	// Intercept grants: the admission policy holds a grant's holder to its writer.
	p := r.policy
	if p.Name != r.clusterRole.Name || *p.Spec.FailurePolicy != admissionv1.Fail || len(p.Spec.Validations) != 1 ||
		!strings.Contains(p.Spec.Validations[0].Expression, "object.spec.holderIdentity == request.userInfo.username") {
		t.Errorf("grant policy %s: %+v", p.Name, p.Spec)
	}
	if sel := p.Spec.MatchConstraints.ObjectSelector; sel == nil || len(sel.MatchExpressions) != 1 || sel.MatchExpressions[0].Key != grant.Label {
		t.Errorf("grant policy selects %+v, want leases labelled %s", sel, grant.Label)
	}
	if rules := p.Spec.MatchConstraints.ResourceRules; len(rules) != 1 || !slices.Equal(rules[0].Resources, []string{"leases"}) ||
		!slices.Equal(rules[0].Operations, []admissionv1.OperationType{admissionv1.Create, admissionv1.Update}) {
		t.Errorf("grant policy rules %+v", rules)
	}
	if b := r.policyBind; b.Spec.PolicyName != p.Name || !slices.Equal(b.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("grant policy binding %+v", b.Spec)
	}

	svc := r.svc
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || len(svc.Spec.Ports) != 1 {
		t.Fatalf("service: %+v", svc.Spec)
	}
	if p := svc.Spec.Ports[0]; p.Port != ClusterPort || p.Name != ClusterPortName || p.TargetPort.String() != ClusterPortName {
		t.Errorf("service port %+v", p)
	}
	if svc.Spec.Selector["app.kubernetes.io/name"] != ManagerName {
		t.Errorf("service selector %v", svc.Spec.Selector)
	}
	// The agents derive the headless Service's name from the Service's (agentspec).
	pods := r.pods
	if pods == nil || pods.Name != ManagerName+"-pods" || len(pods.Spec.Ports) != 1 || pods.Spec.Ports[0].Port != ClusterPort ||
		pods.Spec.Selector["app.kubernetes.io/name"] != ManagerName || pods.Spec.PublishNotReadyAddresses {
		t.Fatalf("headless service: %+v", pods)
	}
	if got := agentspec.PodsAddress(fmt.Sprintf("%s.%s.svc:%d", svc.Name, svc.Namespace, ClusterPort)); got != fmt.Sprintf("%s.%s.svc:%d", pods.Name, pods.Namespace, ClusterPort) {
		t.Errorf("agents look up %s, the headless service is %s", got, pods.Name)
	}

	dep := r.dep
	if dep.Name != ManagerName || *dep.Spec.Replicas != 1 {
		t.Errorf("deployment %s replicas %d", dep.Name, *dep.Spec.Replicas)
	}
	if dep.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != ManagerName || dep.Spec.Template.Labels["app.kubernetes.io/name"] != ManagerName ||
		dep.Spec.Template.Labels["app.kubernetes.io/part-of"] != "tp" {
		t.Errorf("selector %v, pod labels %v", dep.Spec.Selector.MatchLabels, dep.Spec.Template.Labels)
	}
	pod := dep.Spec.Template.Spec
	// The drain needs its 20 s and a margin, and not much more: a stuck pod holds a rollout.
	if pod.ServiceAccountName != ManagerName || pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds != 30 {
		t.Errorf("pod: service account %q, grace %v", pod.ServiceAccountName, pod.TerminationGracePeriodSeconds)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Name != ManagerContainer || c.Image != "localhost/tp/tp:v1" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("container %s image %s policy %s", c.Name, c.Image, c.ImagePullPolicy)
	}
	if want := []string{"manager", "--client-listen=127.0.0.1:8081", "--cluster-listen=:8082",
		"--tls-cert=/var/run/secrets/tp/tls/tls.crt", "--tls-key=/var/run/secrets/tp/tls/tls.key"}; !slices.Equal(c.Args, want) {
		t.Errorf("args %q, want %q", c.Args, want)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["POD_NAMESPACE"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("POD_NAMESPACE: %+v", e)
	}
	if e, ok := env[ManagedNamespacesEnv]; !ok || e.Value != "" {
		t.Errorf("%s: %+v, %v", ManagedNamespacesEnv, e, ok)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != ClusterPort || c.Ports[0].Name != ClusterPortName {
		t.Errorf("container ports %+v: only the cluster port, never the client API", c.Ports)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != ClusterPortName || p.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("%s probe: %+v", name, p)
		}
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probe paths %s, %s", c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
	}

	// Small and bounded: it runs in other people's clusters.
	req := c.Resources.Requests
	if req.Cpu().Cmp(resource.MustParse("50m")) > 0 || req.Memory().Cmp(resource.MustParse("64Mi")) > 0 || req.Cpu().IsZero() || req.Memory().IsZero() {
		t.Errorf("requests %v: want set and at most 50m / 64Mi", req)
	}
	if lim := c.Resources.Limits.Memory(); lim.IsZero() || lim.Cmp(resource.MustParse("256Mi")) > 0 {
		t.Errorf("memory limit %v: want set and at most 256Mi", lim)
	}

	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("no security context")
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot,
		sc.RunAsUser == nil || *sc.RunAsUser == 0, sc.RunAsGroup == nil || *sc.RunAsGroup == 0:
		t.Errorf("runs as root: %+v", sc)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("root filesystem writable")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("privilege escalation allowed")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("capabilities %+v", sc.Capabilities)
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("seccomp %+v", sc.SeccompProfile)
	case sc.Privileged != nil && *sc.Privileged:
		t.Error("privileged")
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Error("host namespaces")
	}
	tmp := false
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if m.MountPath == "/tmp" && v.Name == m.Name && v.EmptyDir != nil {
				tmp = true
			}
		}
	}
	if !tmp {
		t.Error("no emptyDir at /tmp (the root filesystem is read-only)")
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if m.MountPath == TLSDir && v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == TLSSecret {
				mounted = m.ReadOnly && v.Secret.DefaultMode != nil && *v.Secret.DefaultMode == 0o440
			}
		}
	}
	if !mounted {
		t.Errorf("Secret %s is not mounted read-only at %s, unreadable to others", TLSSecret, TLSDir)
	}
	if pod.SecurityContext == nil || pod.SecurityContext.FSGroup == nil || *pod.SecurityContext.FSGroup != *sc.RunAsGroup {
		t.Errorf("pod security context %+v: the key's group must be the manager's", pod.SecurityContext)
	}
	if dep.Spec.Template.Annotations[HashAnnotation] == "" {
		t.Error("no config hash on the pod template")
	}
}

func TestRenderNeverExposesTheClientPort(t *testing.T) {
	manifest, err := Render(Options{Image: "x/y:z"})
	if err != nil {
		t.Fatal(err)
	}
	r := renderObjects(t, Options{Image: "x/y:z"})
	for _, p := range r.svc.Spec.Ports {
		if p.Port == ClientPort || p.TargetPort.IntValue() == ClientPort {
			t.Errorf("service exposes the client port: %+v", p)
		}
	}
	// The only mention of the client port is its loopback address in the args.
	if n := bytes.Count(manifest, []byte("8081")); n != 1 || !bytes.Contains(manifest, []byte("127.0.0.1:8081")) {
		t.Errorf("8081 appears %d times; want once, as 127.0.0.1:8081", n)
	}
}

func TestRenderManagedNamespaces(t *testing.T) {
	r := renderObjects(t, Options{Namespace: "tp-x", Image: "x/y:z", ManagedNamespaces: []string{"b", "a", " b", ""}})
	for _, want := range []string{"nodes", "namespaces", "servicecidrs"} {
		if !grants(r.clusterRole.Rules, want) {
			t.Errorf("ClusterRole does not grant reading %s", want)
		}
	}
	for _, notWant := range []string{"services", "pods", "endpointslices"} {
		if grants(r.clusterRole.Rules, notWant) {
			t.Errorf("ClusterRole grants %s cluster-wide though namespaces are managed", notWant)
		}
	}
	if len(r.roles) != 2 || len(r.roleBindings) != 2 {
		t.Fatalf("%d roles, %d bindings; want one each in a and b (deduplicated)", len(r.roles), len(r.roleBindings))
	}
	for i, ns := range []string{"a", "b"} {
		role, bind := r.roles[i], r.roleBindings[i]
		if role.Namespace != ns || role.Name != "tp-manager-tp-x" || bind.Namespace != ns || bind.RoleRef.Kind != "Role" || bind.RoleRef.Name != role.Name {
			t.Errorf("role %s/%s, binding %s/%s -> %s %s", role.Namespace, role.Name, bind.Namespace, bind.Name, bind.RoleRef.Kind, bind.RoleRef.Name)
		}
		if s := bind.Subjects; len(s) != 1 || s[0].Name != ManagerName || s[0].Namespace != "tp-x" {
			t.Errorf("binding subjects %+v", s)
		}
		for _, want := range []string{"services", "pods", "endpointslices"} {
			if !grants(role.Rules, want) {
				t.Errorf("Role in %s does not grant reading %s", ns, want)
			}
		}
		readOnly(t, "Role", role.Rules)
		if role.Labels[InstanceLabel] != "tp-x" {
			t.Errorf("role labels %v", role.Labels)
		}
	}
	readOnly(t, "ClusterRole", r.clusterRole.Rules)
	for _, e := range r.dep.Spec.Template.Spec.Containers[0].Env {
		if e.Name == ManagedNamespacesEnv && e.Value != "a,b" {
			t.Errorf("%s=%q, want a,b", e.Name, e.Value)
		}
	}
}

func TestRenderAllowedCIDRs(t *testing.T) {
	env := func(o Options) (string, bool) {
		for _, e := range renderObjects(t, o).dep.Spec.Template.Spec.Containers[0].Env {
			if e.Name == AllowedCIDRsEnv {
				return e.Value, true
			}
		}
		return "", false
	}
	// The manager reads the variable at start: it is always there, empty for none.
	if v, ok := env(Options{Image: "x/y:1"}); !ok || v != "" {
		t.Errorf("no --allow-cidr: %s=%q (set %v), want empty", AllowedCIDRsEnv, v, ok)
	}
	if v, _ := env(Options{Image: "x/y:1", AllowedCIDRs: []string{"10.250.0.1/32,192.0.2.9/24", " 172.16.0.0/12", "10.250.0.0/24"}}); v != "10.250.0.0/24,172.16.0.0/12,192.0.2.0/24" {
		t.Errorf("%s=%q, want the ranges canonical, sorted, without those inside another", AllowedCIDRsEnv, v)
	}
	hash := func(o Options) string { return renderObjects(t, o).dep.Spec.Template.Annotations[HashAnnotation] }
	if hash(Options{Image: "x/y:1"}) == hash(Options{Image: "x/y:1", AllowedCIDRs: []string{"10.250.0.1/32"}}) {
		t.Error("other allowed ranges, same hash: the manager would not restart with them")
	}
}

func TestRenderHashFollowsTheConfig(t *testing.T) {
	hash := func(o Options) string {
		return renderObjects(t, o).dep.Spec.Template.Annotations[HashAnnotation]
	}
	base := Options{Image: "x/y:1"}
	if hash(base) != hash(base) {
		t.Error("same options, different hash: re-installing would roll the manager")
	}
	if hash(base) == hash(Options{Image: "x/y:2"}) {
		t.Error("another image, same hash")
	}
	if hash(base) == hash(Options{Image: "x/y:1", ManagedNamespaces: []string{"a"}}) {
		t.Error("other managed namespaces, same hash")
	}
	if hash(Options{Image: "x/y:1", ManagedNamespaces: []string{"a", "b"}}) != hash(Options{Image: "x/y:1", ManagedNamespaces: []string{"b", "a"}}) {
		t.Error("the order of managed namespaces changes the hash")
	}
	withCert := func(fp string) string {
		o, _ := base.withDefaults(true)
		m, err := render(o, fp, nil)
		if err != nil {
			t.Fatal(err)
		}
		objs, _ := Objects(m)
		for _, obj := range objs {
			if obj.GetKind() == "Deployment" {
				return convert[appsv1.Deployment](t, obj).Spec.Template.Annotations[HashAnnotation]
			}
		}
		t.Fatal("no Deployment")
		return ""
	}
	if withCert("aa") == withCert("bb") || withCert("aa") != withCert("aa") {
		t.Error("the hash does not follow the server certificate: a new one would not restart the manager")
	}
}

func TestRenderQuotesValues(t *testing.T) {
	// A value that YAML would read as something else stays a string.
	r := renderObjects(t, Options{Image: "registry:5000/tp/tp:1.0", ManagedNamespaces: []string{"true"}})
	if r.dep.Spec.Template.Spec.Containers[0].Image != "registry:5000/tp/tp:1.0" || r.roles[0].Namespace != "true" {
		t.Errorf("image %q, role namespace %q", r.dep.Spec.Template.Spec.Containers[0].Image, r.roles[0].Namespace)
	}
}

func TestRenderRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{},
		{Image: "x/y:z", Namespace: "Bad_Name"},
		{Image: "x/y:z", ManagedNamespaces: []string{"ok", "not ok"}},
		{Image: "UPPER/case:x"},
		{Image: "x/y:z", AllowedCIDRs: []string{"10.0.0.1"}},
		{Image: "x/y:z", AllowedCIDRs: []string{"10.250.0.1/32,169.254.0.0/16"}},
		{Image: "x/y:z\nkind: Secret"},
	} {
		_, err := Render(o)
		var e *remote.Error
		if !errors.As(err, &e) || e.Kind != remote.Usage || !e.Kind.UserFault() || e.Hint == "" {
			t.Errorf("%+v: got %v, want a usage error with a hint", o, err)
			continue
		}
		t.Logf("%+v: %v", o, err)
	}
}

func grants(rules []rbacv1.PolicyRule, resource string) bool {
	for _, r := range rules {
		if slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, "get") && slices.Contains(r.Verbs, "list") && slices.Contains(r.Verbs, "watch") {
			return true
		}
	}
	return false
}

func readOnly(t *testing.T, what string, rules []rbacv1.PolicyRule) {
	t.Helper()
	for _, r := range rules {
		if slices.Equal(r.APIGroups, []string{"authentication.k8s.io"}) && slices.Equal(r.Resources, []string{"tokenreviews"}) && slices.Equal(r.Verbs, []string{"create"}) {
			continue // checking an agent's token changes nothing
		}
		for _, v := range r.Verbs {
			if !slices.Contains([]string{"get", "list", "watch"}, v) {
				t.Errorf("%s grants %q on %v: the manager must only read", what, v, r.Resources)
			}
		}
		for _, res := range r.Resources {
			if res == "*" || strings.Contains(res, "secrets") || strings.Contains(res, "/") {
				t.Errorf("%s grants %q", what, res)
			}
		}
	}
}

// TestReadmeShowsTheClientRoles keeps README's role sets the ones tp ships and tests.
func TestReadmeShowsTheClientRoles(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), ClientRoles) {
		t.Error("README.md does not show deploy/client-roles.yaml verbatim: paste it again")
	}
}

// tp-connect reads tp's CA bundle, which intercepts give the agent, and no other ConfigMap.
func TestConnectRoleReadsTheCABundleOnly(t *testing.T) {
	objs, err := Objects([]byte(ClientRoles))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetName() != "tp-connect" {
			continue
		}
		role := convert[rbacv1.ClusterRole](t, o)
		found := false
		for _, r := range role.Rules {
			if slices.Contains(r.Resources, "configmaps") {
				found = slices.Equal(r.ResourceNames, []string{CAConfigMap}) && slices.Equal(r.Verbs, []string{"get"})
				if !found {
					t.Errorf("tp-connect's rule on configmaps: %+v", r)
				}
			}
		}
		if !found {
			t.Errorf("tp-connect cannot read ConfigMap %s", CAConfigMap)
		}
		return
	}
	t.Fatal("no tp-connect role")
}

func TestRenderReplicas(t *testing.T) {
	r := renderObjects(t, Options{Image: "localhost/tp/tp:v1", Replicas: 3})
	if n := *r.dep.Spec.Replicas; n != 3 {
		t.Errorf("replicas %d, want 3", n)
	}
	// Spread over the nodes, never held back by it (a one-node cluster runs them all).
	if c := r.dep.Spec.Template.Spec.TopologySpreadConstraints; len(c) != 1 || c[0].TopologyKey != "kubernetes.io/hostname" || c[0].WhenUnsatisfiable != corev1.ScheduleAnyway {
		t.Errorf("spread %+v", c)
	}
	// A rollout never runs fewer than asked for: the old pods hand over to the new ones.
	if u := r.dep.Spec.Strategy.RollingUpdate; u == nil || u.MaxUnavailable.IntValue() != 0 || u.MaxSurge.IntValue() != 1 {
		t.Errorf("rolling update %+v", u)
	}
	for _, n := range []int{-1, MaxReplicas + 1} {
		_, err := Render(Options{Image: "localhost/tp/tp:v1", Replicas: n})
		if remote.KindOf(err) != remote.Usage || !strings.Contains(err.Error(), fmt.Sprintf("%d manager replicas", n)) {
			t.Errorf("--replicas %d: %v", n, err)
		}
	}
}
