package deploy

import (
	"bytes"
	"context"
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/managerspec"
)

const ownedByWorkload = "has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(o, has(o.controller) && o.controller && (o.kind == 'ReplicaSet' || o.kind == 'StatefulSet'))"

// checkWebhook checks what every install's pod webhook has, whatever the options.
func checkWebhook(t *testing.T, mwc *admissionv1.MutatingWebhookConfiguration, namespace string) admissionv1.MutatingWebhook {
	t.Helper()
	if mwc == nil {
		t.Fatal("no MutatingWebhookConfiguration rendered")
	}
	if mwc.Name != RBACName(namespace) || mwc.Labels[ManagedByLabel] != ManagedByValue || mwc.Labels[InstanceLabel] != namespace {
		t.Errorf("webhook configuration %s, labels %v", mwc.Name, mwc.Labels)
	}
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(mwc.Webhooks))
	}
	w := mwc.Webhooks[0]
	if w.Name != "agent-injector.tp.dev" {
		t.Errorf("webhook %q", w.Name)
	}
	svc := w.ClientConfig.Service
	if svc == nil || svc.Namespace != namespace || svc.Name != ManagerName || svc.Path == nil || *svc.Path != "/mutate-pods" ||
		svc.Port == nil || *svc.Port != 8082 || w.ClientConfig.URL != nil {
		t.Errorf("client config %+v, service %+v: want the manager's Service, its cluster port, /mutate-pods", w.ClientConfig, svc)
	}
	if r := w.Rules; len(r) != 1 || !slices.Equal(r[0].APIGroups, []string{""}) || !slices.Equal(r[0].APIVersions, []string{"v1"}) ||
		!slices.Equal(r[0].Resources, []string{"pods"}) || !slices.Equal(r[0].Operations, []admissionv1.OperationType{admissionv1.Create}) ||
		r[0].Scope == nil || *r[0].Scope != admissionv1.NamespacedScope {
		t.Errorf("rules %+v: want pods, CREATE, namespaced", r)
	}
	if w.FailurePolicy == nil || *w.FailurePolicy != admissionv1.Ignore {
		t.Errorf("failure policy %v: a manager that is down must never block a pod", w.FailurePolicy)
	}
	if w.SideEffects == nil || *w.SideEffects != admissionv1.SideEffectClassNone || !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) ||
		w.TimeoutSeconds == nil || *w.TimeoutSeconds != 5 || w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionv1.NeverReinvocationPolicy {
		t.Errorf("side effects %v, versions %v, timeout %v, reinvocation %v", w.SideEffects, w.AdmissionReviewVersions, w.TimeoutSeconds, w.ReinvocationPolicy)
	}
	if w.ObjectSelector != nil {
		t.Errorf("object selector %+v: pods carry no label of tp's to select by", w.ObjectSelector)
	}
	if m := w.MatchConditions; len(m) != 1 || m[0].Name != "owned-by-workload" || m[0].Expression != ownedByWorkload {
		t.Errorf("match conditions %+v", m)
	}
	return w
}

// selects says whether the namespace selector of w has the one expression on the
// namespace's name, with op and values.
func selects(w admissionv1.MutatingWebhook, op metav1.LabelSelectorOperator, values ...string) bool {
	sel := w.NamespaceSelector
	if sel == nil || len(sel.MatchLabels) > 0 || len(sel.MatchExpressions) != 1 {
		return false
	}
	e := sel.MatchExpressions[0]
	return e.Key == "kubernetes.io/metadata.name" && e.Operator == op && slices.Equal(e.Values, values)
}

func TestRenderWebhook(t *testing.T) {
	manifest, err := Render(Options{Image: testImage})
	if err != nil {
		t.Fatal(err)
	}
	r := readRendered(t, manifest)
	w := checkWebhook(t, r.webhook, DefaultNamespace)
	if !selects(w, metav1.LabelSelectorOpNotIn, DefaultNamespace, "kube-system") {
		t.Errorf("namespace selector %+v: want every namespace but tp's own and kube-system", w.NamespaceSelector)
	}
	// No cluster, no CA: Render (--dry-run) leaves the bundle out and says where it comes
	// from, rather than showing one that is not the cluster's.
	if len(w.ClientConfig.CABundle) != 0 {
		t.Errorf("Render shows a caBundle of %d bytes, though only the cluster's CA can be it", len(w.ClientConfig.CABundle))
	}
	if !bytes.Contains(manifest, []byte("# caBundle: tp install sets it to tp's CA bundle (ConfigMap tp-ca, key ca.crt)")) {
		t.Error("the dry-run manifest does not say where the webhook's caBundle comes from")
	}

	r = renderObjects(t, Options{Namespace: "kube-system", Image: testImage})
	if w := checkWebhook(t, r.webhook, "kube-system"); !selects(w, metav1.LabelSelectorOpNotIn, "kube-system") {
		t.Errorf("installed in kube-system: namespace selector %+v", w.NamespaceSelector)
	}
}

func TestRenderWebhookManagedNamespaces(t *testing.T) {
	r := renderObjects(t, Options{Namespace: "tp-x", Image: testImage, ManagedNamespaces: []string{"b", "tp-x", "a"}})
	if w := checkWebhook(t, r.webhook, "tp-x"); !selects(w, metav1.LabelSelectorOpIn, "a", "b") {
		t.Errorf("namespace selector %+v: want the managed namespaces, sorted, without tp's own", w.NamespaceSelector)
	}
	// Managing only its own namespace, the manager gets no pod at all.
	r = renderObjects(t, Options{Namespace: "tp-x", Image: testImage, ManagedNamespaces: []string{"tp-x"}})
	if w := checkWebhook(t, r.webhook, "tp-x"); !selects(w, metav1.LabelSelectorOpDoesNotExist) {
		t.Errorf("namespace selector %+v: want none selected", w.NamespaceSelector)
	}
}

func TestRenderWebhookCABundle(t *testing.T) {
	o, err := Options{Image: testImage}.withDefaults(true)
	if err != nil {
		t.Fatal(err)
	}
	bundle := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	m, err := render(o, "fp", bundle)
	if err != nil {
		t.Fatal(err)
	}
	w := checkWebhook(t, readRendered(t, m).webhook, DefaultNamespace)
	if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
		t.Errorf("caBundle %q, want the PEM bundle", w.ClientConfig.CABundle)
	}
	if !bytes.Contains(m, []byte("caBundle: \""+base64.StdEncoding.EncodeToString(bundle)+"\"")) {
		t.Error("caBundle is not the bundle's base64")
	}
	// Another bundle is another manifest: a --rotate-ca roll changes the config hash.
	other, _ := render(o, "fp", append(bundle, bundle...))
	if readRendered(t, other).dep.Spec.Template.Annotations[HashAnnotation] == readRendered(t, m).dep.Spec.Template.Annotations[HashAnnotation] {
		t.Error("another CA bundle, same config hash")
	}
}

func TestRenderRecordPolicy(t *testing.T) {
	r := renderObjects(t, Options{Namespace: "tp-x", Image: testImage})
	p, b := r.recordPolicy, r.recordBind
	if p == nil || b == nil {
		t.Fatal("no agent record policy or binding rendered")
	}
	if p.Name != "tp-manager-tp-x-agent-records" || p.Name == r.policy.Name || p.Labels[InstanceLabel] != "tp-x" {
		t.Errorf("record policy %s labels %v", p.Name, p.Labels)
	}
	if b.Name != p.Name || b.Spec.PolicyName != p.Name || !slices.Equal(b.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("record policy binding %s: %+v", b.Name, b.Spec)
	}
	if p.Spec.FailurePolicy == nil || *p.Spec.FailurePolicy != admissionv1.Fail {
		t.Errorf("failure policy %v, want Fail", p.Spec.FailurePolicy)
	}
	mc := p.Spec.MatchConstraints
	if rules := mc.ResourceRules; len(rules) != 1 || !slices.Equal(rules[0].APIGroups, []string{"coordination.k8s.io"}) ||
		!slices.Equal(rules[0].Resources, []string{"leases"}) ||
		!slices.Equal(rules[0].Operations, []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete}) {
		t.Errorf("record policy rules %+v: want leases, CREATE, UPDATE, DELETE", rules)
	}
	if sel := mc.ObjectSelector; sel == nil || len(sel.MatchExpressions) != 1 || sel.MatchExpressions[0].Key != "tp.dev/agent-record" ||
		sel.MatchExpressions[0].Operator != metav1.LabelSelectorOpExists {
		t.Errorf("record policy selects %+v, want leases labelled tp.dev/agent-record", sel)
	}
	vars := map[string]string{}
	for _, v := range p.Spec.Variables {
		vars[v.Name] = v.Expression
	}
	for name, want := range map[string][]string{
		// DELETE has no object: the record is the old one.
		"lease":    {"request.operation == 'DELETE' ? oldObject : object"},
		"rest":     {"startsWith('tp-agent.')", "substring(9)"},
		"resource": {"indexOf('.')", "substring(0, variables.rest.indexOf('.'))"},
		"workload": {"substring(variables.rest.indexOf('.') + 1)"},
		"cleanup":  {"request.operation == 'DELETE'", "namespaceObject.metadata.deletionTimestamp"},
	} {
		for _, w := range want {
			if !strings.Contains(vars[name], w) {
				t.Errorf("variable %s = %q, want it to hold %q", name, vars[name], w)
			}
		}
	}
	if n := len(AgentRecordPrefix); !strings.Contains(vars["rest"], "substring("+strconv.Itoa(n)+")") {
		t.Errorf("variable rest %q does not cut the prefix %q of %d characters", vars["rest"], AgentRecordPrefix, n)
	}
	var checks string
	for _, v := range p.Spec.Validations {
		checks += v.Expression + "\n"
		if v.MessageExpression == "" || v.Reason == nil {
			t.Errorf("validation %q without a message or a reason", v.Expression)
		}
	}
	for _, want := range []string{
		"variables.resource in ['deployments', 'statefulsets', 'replicasets']",
		"authorizer.group('apps').resource(variables.resource).namespace(request.namespace).name(variables.workload).check('update').allowed()",
	} {
		if !strings.Contains(checks, want) {
			t.Errorf("record policy validations do not check %q:\n%s", want, checks)
		}
	}
	last := p.Spec.Validations[len(p.Spec.Validations)-1]
	if want := "'a tp agent record may be written only by who may update ' + variables.resource + '/' + variables.workload + ': ' + request.userInfo.username"; last.MessageExpression != want ||
		*last.Reason != metav1.StatusReasonForbidden {
		t.Errorf("message %q reason %v, want %q, Forbidden", last.MessageExpression, *last.Reason, want)
	}
}

// applyWebhooks makes the fake apply of f write MutatingWebhookConfigurations into its
// clientset, as server-side apply would.
func applyWebhooks(t *testing.T, f *fakeInstaller) {
	f.apply = func(ctx context.Context, obj *unstructured.Unstructured) error {
		f.applied = append(f.applied, obj)
		if obj.GetKind() != "MutatingWebhookConfiguration" {
			return nil
		}
		mwc := &admissionv1.MutatingWebhookConfiguration{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, mwc); err != nil {
			t.Fatal(err)
		}
		c := f.cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
		old, err := c.Get(ctx, mwc.Name, metav1.GetOptions{})
		if err != nil {
			_, err = c.Create(ctx, mwc, metav1.CreateOptions{})
			return err
		}
		mwc.ResourceVersion = old.ResourceVersion
		_, err = c.Update(ctx, mwc, metav1.UpdateOptions{})
		return err
	}
}

func clusterWebhook(t *testing.T, f *fakeInstaller) *admissionv1.MutatingWebhookConfiguration {
	t.Helper()
	mwc, err := f.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), RBACName(ns), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the webhook configuration is not in the cluster: %v", err)
	}
	return mwc
}

// An install from before the webhook: a manager with its certificates, no webhook. tp
// install makes it, trusting the CA the install kept.
func TestInstallAddsTheWebhookToAnOlderInstall(t *testing.T) {
	f := newFake(t, newRollout(running()).done().objects()...)
	f.applied = nil
	opts, _ := Options{Image: testImage}.withDefaults(true)
	if _, err := f.install(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	before := f.certs(t)
	// The older install: everything but the webhook.
	if err := f.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), RBACName(ns), metav1.DeleteOptions{}); err == nil {
		t.Fatal("the plain fake apply wrote a webhook configuration: the test below would prove nothing")
	}
	applyWebhooks(t, f)
	after := installOnce(t, f, false)
	if string(after.bundle) != string(before.bundle) {
		t.Fatal("a reinstall changed the CA bundle")
	}
	w := checkWebhook(t, clusterWebhook(t, f), ns)
	if !bytes.Equal(w.ClientConfig.CABundle, after.bundle) {
		t.Errorf("the webhook's caBundle is not ConfigMap %s's bundle:\n%s", CAConfigMap, w.ClientConfig.CABundle)
	}
	if err := verifies(t, after.tls, w.ClientConfig.CABundle); err != nil {
		t.Errorf("the API server could not verify the manager by the webhook's caBundle: %v", err)
	}
}

// --rotate-ca: the webhook trusts both CAs, so the API server verifies the old manager and
// the new one while the rotation rolls.
func TestRotateCAUpdatesTheWebhookCABundle(t *testing.T) {
	f := newFake(t, newRollout(running()).done().objects()...)
	applyWebhooks(t, f)
	first := installOnce(t, f, false)
	if w := checkWebhook(t, clusterWebhook(t, f), ns); !bytes.Equal(w.ClientConfig.CABundle, first.bundle) {
		t.Fatalf("first install: caBundle is not the CA bundle")
	}
	oldTLS := first.tls
	rotated := installOnce(t, f, true)
	w := checkWebhook(t, clusterWebhook(t, f), ns)
	if !bytes.Equal(w.ClientConfig.CABundle, rotated.bundle) {
		t.Fatal("after --rotate-ca the webhook's caBundle is not the new bundle")
	}
	certs := mustParse(t, w.ClientConfig.CABundle)
	if len(certs) != 2 || string(pemOf(t, certs[0])) != string(rotated.ca.Data["ca.crt"]) || string(pemOf(t, certs[1])) != string(first.ca.Data["ca.crt"]) {
		t.Fatalf("caBundle after rotation: %d certificates, want the new CA and the old", len(certs))
	}
	for what, s := range map[string]*corev1.Secret{"old manager": oldTLS, "new manager": rotated.tls} {
		if err := verifies(t, s, w.ClientConfig.CABundle); err != nil {
			t.Errorf("the API server could not verify the %s by the webhook's caBundle: %v", what, err)
		}
	}
}

func TestUninstallDeletesTheWebhookFirst(t *testing.T) {
	labels := map[string]string{ManagedByLabel: ManagedByValue, InstanceLabel: ns}
	meta := metav1.ObjectMeta{Name: RBACName(ns), Labels: labels}
	recordMeta := metav1.ObjectMeta{Name: RecordPolicyName(ns), Labels: labels}
	otherMeta := metav1.ObjectMeta{Name: RBACName("other-install"), Labels: map[string]string{ManagedByLabel: ManagedByValue, InstanceLabel: "other-install"}}
	objs := append(newRollout(running()).done().objects(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}},
		&rbacv1.ClusterRole{ObjectMeta: meta}, &rbacv1.ClusterRoleBinding{ObjectMeta: meta},
		&admissionv1.ValidatingAdmissionPolicy{ObjectMeta: meta}, &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: meta},
		&admissionv1.ValidatingAdmissionPolicy{ObjectMeta: recordMeta}, &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: recordMeta},
		&admissionv1.MutatingWebhookConfiguration{ObjectMeta: meta},
		&admissionv1.MutatingWebhookConfiguration{ObjectMeta: otherMeta},
		&coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "tp-web-http", Namespace: "shop", Labels: map[string]string{grant.Label: grant.Version}}},
		&coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "tp-agent.deployments.web", Namespace: "shop", Labels: map[string]string{AgentRecordLabel: "v1"}}},
		&coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "leader", Namespace: "shop"}})
	objs = append(objs, rbacObjects(ns, "a")...)
	f := newFake(t, objs...)
	if err := f.uninstall(context.Background(), Options{Namespace: ns, Timeout: time.Second, Log: &f.log}); err != nil {
		t.Fatal(err)
	}
	var deleted []string
	for _, a := range f.cs.Actions() {
		if a.GetVerb() == "delete" {
			deleted = append(deleted, a.GetResource().Resource)
		}
	}
	if len(deleted) == 0 || deleted[0] != "mutatingwebhookconfigurations" {
		t.Fatalf("deleted %v: the webhook configuration must go first", deleted)
	}
	if n := strings.Count(strings.Join(deleted, " "), "mutatingwebhookconfigurations"); n != 1 {
		t.Errorf("deleted %d webhook configurations, want this install's one", n)
	}
	ctx := context.Background()
	list, err := f.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 || list.Items[0].Name != otherMeta.Name {
		t.Errorf("webhook configurations left: %+v, %v; want only the other install's", list, err)
	}
	vaps, _ := f.cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().List(ctx, metav1.ListOptions{})
	vapbs, _ := f.cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().List(ctx, metav1.ListOptions{})
	if len(vaps.Items)+len(vapbs.Items) != 0 {
		t.Errorf("admission policies left: %d policies, %d bindings", len(vaps.Items), len(vapbs.Items))
	}
	leases, _ := f.cs.CoordinationV1().Leases("shop").List(ctx, metav1.ListOptions{})
	if len(leases.Items) != 1 || leases.Items[0].Name != "leader" {
		t.Errorf("leases left in shop: %v; want only the one that is not tp's", leases.Items)
	}
	for _, want := range []string{"MutatingWebhookConfiguration " + RBACName(ns), "ValidatingAdmissionPolicy " + RecordPolicyName(ns), "Lease shop/tp-agent.deployments.web"} {
		if !strings.Contains(f.log.String(), want) {
			t.Errorf("the log does not name %s:\n%s", want, f.log.String())
		}
	}
}

// An install whose webhook is all that is left is still found, and removed.
func TestUninstallFindsALoneWebhook(t *testing.T) {
	labels := map[string]string{ManagedByLabel: ManagedByValue, InstanceLabel: ns}
	f := newFake(t, &admissionv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: RBACName(ns), Labels: labels}})
	if err := f.uninstall(context.Background(), Options{Namespace: ns, Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	list, _ := f.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().List(context.Background(), metav1.ListOptions{})
	if len(list.Items) != 0 {
		t.Errorf("webhook configurations left: %v", list.Items)
	}
}

// Install waits until the API server reaches the webhook of the revision it installed: the
// pod it replaced may answer for a while (kube-proxy lags), and a manager of an earlier tp
// names no pod.
func TestInstallWaitsForTheWebhook(t *testing.T) {
	for _, c := range []struct {
		name    string
		answers func(try int) string
		warns   bool
	}{
		{"the new pod after the old one", func(try int) string {
			switch {
			case try < 3:
				return ""
			case try < 6:
				return "old"
			}
			return "new"
		}, false},
		{"never", func(int) string { return "" }, true},
		{"only the old pod", func(int) string { return "old" }, true},
		{"a manager of an earlier tp", func(int) string { return "earlier" }, true},
	} {
		f := newFake(t, newRollout(running()).done().objects()...)
		tries := 0
		f.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
			cr := a.(k8stesting.CreateActionImpl)
			if !slices.Contains(cr.CreateOptions.DryRun, metav1.DryRunAll) {
				t.Errorf("the probe pod was created for real")
			}
			pod := cr.GetObject().(*corev1.Pod).DeepCopy()
			tries++
			switch c.answers(tries) {
			case "old":
				metav1.SetMetaDataAnnotation(&pod.ObjectMeta, managerspec.WebhookProbeAnswerKey("tp-manager-old-1"), managerspec.WebhookProbeAnswer)
			case "new": // another install's manager answers too: its answer is beside this one's
				metav1.SetMetaDataAnnotation(&pod.ObjectMeta, managerspec.WebhookProbeAnswerKey("tp-manager-other"), managerspec.WebhookProbeAnswer)
				metav1.SetMetaDataAnnotation(&pod.ObjectMeta, managerspec.WebhookProbeAnswerKey("tp-manager-new-1"), managerspec.WebhookProbeAnswer)
			case "earlier":
				metav1.SetMetaDataAnnotation(&pod.ObjectMeta, managerspec.WebhookProbeLabel, managerspec.WebhookProbeAnswer)
			}
			return true, pod, nil
		})
		f.installer.webhookWait = 200 * time.Millisecond
		f.installer.waitWebhook(context.Background(), Options{Namespace: ns, Image: "tp:1"})
		warned := strings.Contains(f.log.String(), "does not reach tp's pod webhook")
		if warned != c.warns || (!c.warns && tries != 5+webhookAnswers) {
			t.Errorf("%s: warned %v after %d tries, log:\n%s", c.name, warned, tries, f.log.String())
		}
	}
}

// A manager that manages only its own namespace has no pod to admit: install does not wait
// for its webhook.
func TestInstallDoesNotProbeAWebhookWithoutNamespaces(t *testing.T) {
	f := newFake(t, newRollout(running()).done().objects()...)
	probes := 0
	f.cs.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		probes++
		return true, &corev1.Pod{}, nil
	})
	f.installer.webhookWait = time.Second
	start := time.Now()
	f.installer.waitWebhook(context.Background(), Options{Namespace: ns, ManagedNamespaces: []string{ns}, Image: "tp:1"})
	if probes != 0 || time.Since(start) > 500*time.Millisecond || strings.Contains(f.log.String(), "warning") {
		t.Errorf("%d probes in %s; log:\n%s", probes, time.Since(start), f.log.String())
	}
}
