//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/deploy/pki"
	"github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/tests/kit"
)

// injCA is a CA for the stand-in agents, which never reach a manager.
var injCA = func() []byte {
	ca, err := pki.NewCA("e2e", time.Now())
	if err != nil {
		panic(err)
	}
	return ca.CertPEM
}()

func injAgent(image string) intercept.AgentConfig {
	return intercept.AgentConfig{Image: image, ManagerAddress: "tp-manager.tp-system:8082", TokenAudience: "tp-agent", CABundle: string(injCA)}
}

func injGet(t *testing.T, cs kubernetes.Interface, ns, name string) *appsv1.Deployment {
	t.Helper()
	d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// injNoTPMarks fails when tp's label or annotations remain on obj, and when its other
// annotations differ from want's (the Deployment controller's revision aside).
func injNoTPMarks(t *testing.T, got, want metav1.Object) {
	t.Helper()
	strip := func(m map[string]string) map[string]string {
		m = maps.Clone(m)
		delete(m, "deployment.kubernetes.io/revision")
		return m
	}
	for k := range got.GetLabels() {
		if strings.HasPrefix(k, "tp.dev/") {
			t.Errorf("label %s remains", k)
		}
	}
	for k := range got.GetAnnotations() {
		if strings.HasPrefix(k, "tp.dev/") {
			t.Errorf("annotation %s remains", k)
		}
	}
	if !reflect.DeepEqual(got.GetLabels(), want.GetLabels()) || !reflect.DeepEqual(strip(got.GetAnnotations()), strip(want.GetAnnotations())) {
		t.Errorf("metadata after restore: labels %v annotations %v, want %v %v", got.GetLabels(), got.GetAnnotations(), want.GetLabels(), want.GetAnnotations())
	}
}

// TestInject gives the test workload (Service targetPort "http") tp's real agent against
// the real API server and tp's real pod webhook (tp install), and restores it: the
// template gets one annotation, the pods get the agent at admission, as the API server
// stores them.
func TestInject(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-inject")
	deployWorkload(t, cs, ns, "web")
	kit.NewLaptop(t).MustTP(t, 3*time.Minute, "install")
	ctx := context.Background()
	orig := injGet(t, cs, ns, "web")
	ref, err := intercept.ParseRef(ns, "web")
	if err != nil {
		t.Fatal(err)
	}
	agent := injAgent(managerImage(t))

	tg, err := intercept.Resolve(ctx, cs, ref, "80")
	if err != nil {
		t.Fatal(err)
	}
	want := intercept.Target{Service: "web", ServicePort: 80, ServicePortName: "http", TargetPortName: "http", AppPort: HTTPPort}
	if *tg != want {
		t.Fatalf("resolve 80: %+v, want %+v", *tg, want)
	}
	if _, err := intercept.Resolve(ctx, cs, ref, ""); err == nil || !strings.Contains(err.Error(), "which port") {
		t.Errorf("resolve without a port: %v", err)
	}

	t.Run("DryRun", func(t *testing.T) {
		plan, err := intercept.Inject(ctx, cs, ref, agent, []intercept.Target{*tg}, true)
		if err != nil {
			t.Fatal(err)
		}
		if !plan.Changed || !strings.Contains(plan.Pods, "name: tp-agent") || strings.Contains(plan.After, "tp-agent") {
			t.Errorf("dry-run plan:\n%s\npods:\n%s", plan.After, plan.Pods)
		}
		if d := injGet(t, cs, ns, "web"); d.Generation != orig.Generation || !reflect.DeepEqual(d.Spec, orig.Spec) || len(d.Labels) != len(orig.Labels) {
			t.Error("the dry run changed the Deployment")
		}
		if rec, err := intercept.GetRecord(ctx, cs, ref); rec != nil || err != nil {
			t.Errorf("the dry run wrote a record: %+v %v", rec, err)
		}
	})

	var injected *appsv1.Deployment
	t.Run("Inject", func(t *testing.T) {
		plan, err := intercept.Inject(ctx, cs, ref, agent, []intercept.Target{*tg}, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Targets) != 1 || plan.Targets[0].AgentPort != agentspec.FirstPort {
			t.Errorf("targets %+v", plan.Targets)
		}
		injected = injGet(t, cs, ns, "web")
		if injected.Generation == orig.Generation {
			t.Error("the Deployment's generation did not change: nothing rolls the pods")
		}
		// The template changes by one annotation: nothing a GitOps tool would revert.
		wantTemplate := orig.Spec.Template.DeepCopy()
		metav1.SetMetaDataAnnotation(&wantTemplate.ObjectMeta, intercept.RestartAnnotation, injected.Spec.Template.Annotations[intercept.RestartAnnotation])
		if !reflect.DeepEqual(injected.Spec.Template, *wantTemplate) || injected.Spec.Template.Annotations[intercept.RestartAnnotation] == "" {
			t.Errorf("the template changed beyond %s:\n%s", intercept.RestartAnnotation, injDiff(injJSON(orig.Spec.Template), injJSON(injected.Spec.Template)))
		}
		injNoTPMarks(t, injected, orig)
		rec, err := intercept.GetRecord(ctx, cs, ref)
		if err != nil || rec == nil || len(rec.Targets) != 1 || rec.Targets[0].AgentPort != agentspec.FirstPort {
			t.Fatalf("record %+v %v", rec, err)
		}
		if err := intercept.WaitRolledOut(ctx, cs, ref, "web", 90*time.Second); err != nil {
			t.Fatal(err)
		}
		pod, err := intercept.PodOf(ctx, cs, ref)
		if err != nil {
			t.Fatal(err)
		}
		// The pod as the API server stores it after tp's webhook admitted it.
		spec := pod.Spec
		if len(spec.Containers) != 2 || spec.Containers[1].Name != agentspec.Container {
			t.Fatalf("containers %d", len(spec.Containers))
		}
		app, ag := spec.Containers[0], spec.Containers[1]
		if app.Ports[0].Name != "tp-http" || app.Ports[0].ContainerPort != HTTPPort || app.Ports[1].Name != "https" {
			t.Errorf("app ports %+v", app.Ports)
		}
		if p := app.ReadinessProbe.HTTPGet.Port; p != intstr.FromInt32(HTTPPort) {
			t.Errorf("readiness probe port %s, want %d", p.String(), HTTPPort)
		}
		if ag.Image != managerImage(t) || len(ag.Ports) != 1 || ag.Ports[0].Name != "http" || ag.Ports[0].ContainerPort != agentspec.FirstPort {
			t.Errorf("agent %s ports %+v", ag.Image, ag.Ports)
		}
		envs := map[string]string{}
		for _, e := range ag.Env {
			envs[e.Name] = e.Value
		}
		if v := envs[agentspec.PortsEnv]; v != fmt.Sprintf("http:%d:%d", agentspec.FirstPort, HTTPPort) {
			t.Errorf("agent env %+v", ag.Env)
		}
		if !strings.Contains(envs[agentspec.CAEnv], "BEGIN CERTIFICATE") {
			t.Errorf("the agent gets no CA to verify the manager by: %+v", ag.Env)
		}
		if sc := ag.SecurityContext; sc == nil || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation {
			t.Errorf("agent security context %+v", sc)
		}
		found := false
		for _, vol := range spec.Volumes {
			found = found || vol.Name == agentspec.TokenVolume && vol.Projected.Sources[0].ServiceAccountToken.Audience == "tp-agent"
		}
		if !found {
			t.Errorf("no token volume: %+v", spec.Volumes)
		}
		hash, _ := rec.Hash()
		if pod.Annotations[intercept.AgentHashAnnotation] != hash {
			t.Errorf("pod agent hash %q, record's %q", pod.Annotations[intercept.AgentHashAnnotation], hash)
		}
		for _, c := range pod.Status.ContainerStatuses {
			if !c.Ready {
				t.Errorf("container %s not ready", c.Name)
			}
		}
	})
	if injected == nil {
		t.FailNow()
	}

	t.Run("AgainChangesNothing", func(t *testing.T) {
		tg, err := intercept.Resolve(ctx, cs, ref, "http")
		if err != nil {
			t.Fatal(err)
		}
		if tg.AgentPort != agentspec.FirstPort || tg.TargetPortName != "http" || tg.AppPort != HTTPPort {
			t.Errorf("resolve of the injected workload: %+v", *tg)
		}
		plan, err := intercept.Inject(ctx, cs, ref, agent, []intercept.Target{*tg}, false)
		if err != nil {
			t.Fatal(err)
		}
		if !plan.AlreadyInjected || plan.Changed {
			t.Errorf("second inject: already %v changed %v:\n%s", plan.AlreadyInjected, plan.Changed, injDiff(plan.Before, plan.After))
		}
		if d := injGet(t, cs, ns, "web"); d.Generation != injected.Generation || !reflect.DeepEqual(d.Spec, injected.Spec) {
			t.Errorf("the Deployment changed: generation %d -> %d", injected.Generation, d.Generation)
		}
		refs, err := intercept.Injected(ctx, cs, ns)
		if err != nil || len(refs) != 1 || refs[0] != (intercept.Ref{Namespace: ns, Kind: intercept.Deployment, Name: "web"}) {
			t.Errorf("Injected: %v %v", refs, err)
		}
	})

	t.Run("Restore", func(t *testing.T) {
		if plan, err := intercept.Restore(ctx, cs, ref, true); err != nil || !plan.Changed {
			t.Fatalf("restore dry run: %v", err)
		}
		if d := injGet(t, cs, ns, "web"); d.Generation != injected.Generation {
			t.Error("the dry run restored")
		}
		if rec, err := intercept.GetRecord(ctx, cs, ref); rec == nil || err != nil {
			t.Errorf("the dry run removed the record: %v", err)
		}
		plan, err := intercept.Restore(ctx, cs, ref, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Warnings) > 0 {
			t.Errorf("warnings: %v", plan.Warnings)
		}
		d := injGet(t, cs, ns, "web")
		if a, b := injJSON(d.Spec.Template), injJSON(orig.Spec.Template); a != b {
			t.Errorf("restored template is not byte-for-byte the original:\n%s", injDiff(b, a))
		}
		injNoTPMarks(t, d, orig)
		if refs, err := intercept.Injected(ctx, cs, ns); err != nil || len(refs) != 0 {
			t.Errorf("Injected after restore: %v %v", refs, err)
		}
		waitFor(t, 90*time.Second, "pods without the agent", func() error {
			for _, p := range livePods(t, cs, ns, "web") {
				if podHasAgent(&p) {
					return fmt.Errorf("pod %s has the agent", p.Name)
				}
			}
			return nil
		})
	})
}

// TestInjectRedirectsTheService checks, with tp's real agent, what the cluster makes of
// the pods tp's webhook admits: the pod stays ready
// (its probes reach the app by number) and the Service's endpoints for port http move to
// the agent's port; after Restore they are back on the app's.
func TestInjectRedirectsTheService(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-inject-eps")
	deployWorkload(t, cs, ns, "web")
	kit.NewLaptop(t).MustTP(t, 3*time.Minute, "install")
	ctx := context.Background()
	ref := intercept.Ref{Namespace: ns, Kind: "deployment", Name: "web"}
	tg, err := intercept.Resolve(ctx, cs, ref, "http")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := intercept.Inject(ctx, cs, ref, injAgent(managerImage(t)), []intercept.Target{*tg}, false); err != nil {
		t.Fatal(err)
	}
	injWaitEndpointPort(t, cs, ns, "web", "http", agentspec.FirstPort)
	injWaitEndpointPort(t, cs, ns, "web", "https", HTTPSPort)
	pod, err := intercept.PodOf(ctx, cs, ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(pod.Spec.Containers) != 2 {
		t.Errorf("the ready pod %s has no agent", pod.Name)
	}
	for _, c := range pod.Status.ContainerStatuses {
		if !c.Ready || c.RestartCount > 0 {
			t.Errorf("container %s: ready %v, restarts %d", c.Name, c.Ready, c.RestartCount)
		}
	}
	if _, err := intercept.Restore(ctx, cs, ref, false); err != nil {
		t.Fatal(err)
	}
	injWaitEndpointPort(t, cs, ns, "web", "http", HTTPPort)
}

// injWaitEndpointPort waits until the Service's EndpointSlices give port name the number
// want, with a ready endpoint.
func injWaitEndpointPort(t *testing.T, cs kubernetes.Interface, ns, svc, name string, want int32) {
	t.Helper()
	waitFor(t, 90*time.Second, fmt.Sprintf("endpoints of %s port %s at %d", svc, name, want), func() error {
		eps, err := cs.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
		if err != nil {
			return err
		}
		var seen []string
		for _, s := range eps.Items {
			ready := false
			for _, e := range s.Endpoints {
				ready = ready || e.Conditions.Ready != nil && *e.Conditions.Ready
			}
			for _, p := range s.Ports {
				if p.Name != nil && *p.Name == name && p.Port != nil {
					seen = append(seen, fmt.Sprintf("%d (ready endpoints: %v)", *p.Port, ready))
					if *p.Port == want && ready {
						return nil
					}
				}
			}
		}
		pods, _ := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + svc})
		return fmt.Errorf("port %s is %v; pods: %s", name, seen, podStates(pods.Items))
	})
}

// TestInjectNumericTargetPort: a Service that targets the pod's port by number is pointed
// at the agent by name, and put back exactly.
func TestInjectNumericTargetPort(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-inject-num")
	deployWorkload(t, cs, ns, "web")
	kit.NewLaptop(t).MustTP(t, 3*time.Minute, "install")
	ctx := context.Background()
	svcs := cs.CoreV1().Services(ns)
	svc, err := svcs.Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Ports[0].TargetPort = intstr.FromInt32(HTTPPort)
	if svc, err = svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	orig := injGet(t, cs, ns, "web")
	ref := intercept.Ref{Namespace: ns, Kind: "deploy", Name: "web"}
	tg, err := intercept.Resolve(ctx, cs, ref, "80")
	if err != nil {
		t.Fatal(err)
	}
	if !tg.Numeric || tg.TargetPortName != "tp-8080" || tg.AppPort != HTTPPort {
		t.Fatalf("target %+v", *tg)
	}
	plan, err := intercept.Inject(ctx, cs, ref, injAgent(managerImage(t)), []intercept.Target{*tg}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Services) != 1 {
		t.Errorf("service changes %+v", plan.Services)
	}
	changed, _ := svcs.Get(ctx, "web", metav1.GetOptions{})
	if changed.Spec.Ports[0].TargetPort != intstr.FromString("tp-8080") || changed.Spec.Ports[1].TargetPort != intstr.FromString("https") {
		t.Errorf("service ports %+v", changed.Spec.Ports)
	}
	injWaitEndpointPort(t, cs, ns, "web", "http", agentspec.FirstPort)
	if err := intercept.WaitRolledOut(ctx, cs, ref, "web", 90*time.Second); err != nil {
		t.Fatal(err)
	}
	// Again: the Service is left alone too.
	if plan, err := intercept.Inject(ctx, cs, ref, injAgent(managerImage(t)), []intercept.Target{*tg}, false); err != nil || plan.Changed {
		t.Errorf("second inject: %v changed %v", err, plan != nil && plan.Changed)
	}
	if _, err := intercept.Restore(ctx, cs, ref, false); err != nil {
		t.Fatal(err)
	}
	restored, _ := svcs.Get(ctx, "web", metav1.GetOptions{})
	if !reflect.DeepEqual(restored.Spec, svc.Spec) {
		t.Errorf("service spec after restore:\n%s", injDiff(injJSON(svc.Spec), injJSON(restored.Spec)))
	}
	injNoTPMarks(t, restored, svc)
	if d := injGet(t, cs, ns, "web"); !reflect.DeepEqual(d.Spec.Template, orig.Spec.Template) {
		t.Error("template not restored")
	}
	injWaitEndpointPort(t, cs, ns, "web", "http", HTTPPort)
}

// TestInjectEnv reads a real pod's environment with Env, and checks it against what the
// container's process has (the test machine is the cluster's node).
func TestInjectEnv(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-inject-env")
	ctx := context.Background()
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web-config"},
		Data: map[string]string{"LOG_LEVEL": "debug", "GREETING": "hello 'world' $x", "dotted.key": "d"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-secret"},
		Data: map[string][]byte{"PASSWORD": []byte("s3cr3t\nline2")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := deployWorkload(t, cs, ns, "web")
	d := injGet(t, cs, ns, "web")
	c := &d.Spec.Template.Spec.Containers[0]
	local := func(name string) corev1.LocalObjectReference { return corev1.LocalObjectReference{Name: name} }
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	c.Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m")}
	c.EnvFrom = []corev1.EnvFromSource{
		{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: local("web-config")}},
		{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: local("web-secret")}},
		{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: local("absent"), Optional: new(true)}},
	}
	c.Env = append(c.Env,
		corev1.EnvVar{Name: "LEVEL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: local("web-config"), Key: "LOG_LEVEL"}}},
		corev1.EnvVar{Name: "PASS", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: local("web-secret"), Key: "PASSWORD"}}},
		corev1.EnvVar{Name: "OPT", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: local("web-secret"), Key: "NOPE", Optional: new(true)}}},
		field("APP", "metadata.labels['app']"),
		field("NODE", "spec.nodeName"),
		field("POD_IP", "status.podIP"),
		field("POD_IPS", "status.podIPs"),
		field("HOST_IP", "status.hostIP"),
		field("UID", "metadata.uid"),
		field("SA", "spec.serviceAccountName"),
		corev1.EnvVar{Name: "CPU_M", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1m")}}},
		corev1.EnvVar{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
		corev1.EnvVar{Name: "MEM_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
		corev1.EnvVar{Name: "EXPANDED", Value: "$(LEVEL)/$(POD_NAME)/$$(LEVEL)/$(NOPE)/$(WEB_SERVICE_HOST)"},
		corev1.EnvVar{Name: "LEVEL", Value: "override"},
	)
	if _, err := cs.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ref := intercept.Ref{Namespace: ns, Kind: intercept.Deployment, Name: "web"}
	var pod *corev1.Pod
	waitFor(t, 90*time.Second, "a ready pod with the new environment", func() error {
		p, err := intercept.PodOf(ctx, cs, ref)
		if err != nil {
			return err
		}
		if len(p.Spec.Containers[0].EnvFrom) == 0 {
			return fmt.Errorf("the newest ready pod %s is an old one", p.Name)
		}
		pod = p
		return nil
	})
	vars, err := intercept.Env(ctx, cs, pod, "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, v := range vars {
		got[v.Name] = v.Value
	}
	for k, v := range map[string]string{
		"CFG_LOG_LEVEL": "debug", "CFG_GREETING": "hello 'world' $x", "CFG_dotted.key": "d", "PASSWORD": "s3cr3t\nline2",
		"LEVEL": "override", "PASS": "s3cr3t\nline2", "APP": "web", "NODE": pod.Spec.NodeName, "POD_IP": pod.Status.PodIP,
		"POD_NAME": pod.Name, "UID": string(pod.UID), "SA": "default", "CPU_M": "1500", "CPU": "2",
		"EXPANDED":         "debug/" + pod.Name + "/$(LEVEL)/$(NOPE)/" + w.ClusterIP,
		"WEB_SERVICE_HOST": w.ClusterIP, "WEB_SERVICE_PORT_HTTP": "80",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["OPT"]; ok {
		t.Error("a missing optional key is set")
	}
	if got["KUBERNETES_SERVICE_HOST"] == "" || got["MEM_MI"] == "" || got["MEM_MI"] == "0" {
		t.Errorf("KUBERNETES_SERVICE_HOST=%q MEM_MI=%q (no limit: the node's allocatable)", got["KUBERNETES_SERVICE_HOST"], got["MEM_MI"])
	}

	// The process itself, seen from the node: what Env says is what the container has.
	proc := injProcessEnv(t, pod.Name)
	for k, v := range got {
		if rv, ok := proc[k]; !ok || rv != v {
			t.Errorf("Env says %s=%q; the container has %q (set %v)", k, v, rv, ok)
		}
	}
	for k, v := range proc {
		switch k {
		case "PATH", "HOSTNAME", "HOME", "TERM":
			continue // the runtime's and the image's
		}
		if _, ok := got[k]; !ok {
			t.Errorf("the container has %s=%q, Env does not", k, v)
		}
	}

	// The env file reads back in a shell to the same values.
	var b bytes.Buffer
	if err := intercept.WriteEnvFile(&b, vars); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "PASSWORD='s3cr3t\nline2'\n") {
		t.Errorf("env file:\n%s", b.String())
	}
}

// injProcessEnv finds the workload process of pod on this machine (the node) and returns
// its environment.
func injProcessEnv(t *testing.T, pod string) map[string]string {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		raw, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil || !bytes.Contains(raw, []byte("\x00POD_NAME="+pod+"\x00")) && !bytes.HasPrefix(raw, []byte("POD_NAME="+pod+"\x00")) {
			continue
		}
		env := map[string]string{}
		for kv := range strings.SplitSeq(strings.TrimSuffix(string(raw), "\x00"), "\x00") {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		return env
	}
	t.Fatalf("no process of pod %s on this machine (the e2e tests run as root on the cluster's node)", pod)
	return nil
}

func injJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// injDiff shows the lines of b that a lacks and the other way round.
func injDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	in := func(l []string) map[string]int {
		m := map[string]int{}
		for _, s := range l {
			m[s]++
		}
		return m
	}
	am, bm := in(al), in(bl)
	var out []string
	for _, s := range al {
		if bm[s] == 0 {
			out = append(out, "- "+s)
		}
	}
	for _, s := range bl {
		if am[s] == 0 {
			out = append(out, "+ "+s)
		}
	}
	return strings.Join(out, "\n")
}
