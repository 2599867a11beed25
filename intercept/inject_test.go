package intercept

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/agentspec"
)

var ctx = context.Background()

func resolve(t *testing.T, cs *fakeClient, ref Ref, remote string) Target {
	t.Helper()
	tg, err := Resolve(ctx, cs, ref, remote)
	if err != nil {
		t.Fatalf("resolve %s %q: %v", ref, remote, err)
	}
	return *tg
}

func TestInjectNamedTargetPortAndRestore(t *testing.T) {
	dep := deployment("web", appTemplate("web"))
	cs := newClient(dep, service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: "deploy", Name: "web"}
	dref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}

	tg := resolve(t, cs, ref, "")
	want := Target{Service: "web", ServicePort: 80, ServicePortName: "http", TargetPortName: "http", AppPort: 8080}
	if tg != want {
		t.Fatalf("resolve: %+v, want %+v", tg, want)
	}
	plan, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Changed || plan.AlreadyInjected || plan.Before == plan.After || len(plan.Services) != 0 {
		t.Errorf("plan: changed %v, already %v, services %v", plan.Changed, plan.AlreadyInjected, plan.Services)
	}
	// 9900 is the sidecar's: the agent takes the next port.
	if len(plan.Targets) != 1 || plan.Targets[0].AgentPort != 9901 {
		t.Errorf("plan targets %+v, want one at agent port 9901", plan.Targets)
	}

	// The record holds the agent's configuration and the targets with their agent ports.
	rec := record(t, cs, dref)
	want.AgentPort = 9901
	if !equality.Semantic.DeepEqual(rec, Record{Agent: testAgent, Targets: []Target{want}}) {
		t.Errorf("record %+v", rec)
	}
	lease, err := cs.CoordinationV1().Leases(ns).Get(ctx, "tp-agent.deployments.web", metav1.GetOptions{})
	if err != nil || lease.Labels[RecordLabel] != RecordVersion {
		t.Errorf("record lease: %v %v", lease, err)
	}
	hash := hashOf(t, rec)

	// The workload gets the restart annotation, nothing else.
	got := getDeployment(t, cs, "web")
	if !equality.Semantic.DeepEqual(got.Labels, dep.Labels) || len(got.Annotations) != 0 {
		t.Errorf("workload marked: labels %v annotations %v", got.Labels, got.Annotations)
	}
	if wantTmpl := withRestart(dep.Spec.Template, hash); !equality.Semantic.DeepEqual(got.Spec.Template, wantTmpl) {
		t.Errorf("template:\n%s\nwant\n%s", toYAML(got.Spec.Template), toYAML(wantTmpl))
	}

	// Its pods are admitted with the agent.
	pod := admitDeployment(t, cs, "web")
	if pod.Annotations[AgentHashAnnotation] != hash || pod.Annotations["team"] != "a" {
		t.Errorf("admitted pod annotations %v, want the hash %s", pod.Annotations, hash)
	}
	if !strings.Contains(plan.Pods, "name: tp-agent") || !strings.Contains(plan.Pods, "name: tp-http") {
		t.Errorf("plan.Pods does not show the admitted pod:\n%s", plan.Pods)
	}
	spec := &pod.Spec
	app := container(t, spec, "app")
	if app.Ports[0].Name != "tp-http" || app.Ports[0].ContainerPort != 8080 || app.Ports[1].Name != "metrics" {
		t.Errorf("app ports %+v", app.Ports)
	}
	if p := app.ReadinessProbe.HTTPGet.Port; p != intstr.FromInt32(8080) {
		t.Errorf("readiness probe port %v, want 8080", p.String())
	}
	if p := app.LivenessProbe.TCPSocket.Port; p != intstr.FromInt32(8080) {
		t.Errorf("liveness probe port %v, want 8080", p.String())
	}
	if p := app.Lifecycle.PreStop.HTTPGet.Port; p != intstr.FromInt32(8080) {
		t.Errorf("preStop port %v, want 8080", p.String())
	}
	if p := app.StartupProbe.HTTPGet.Port; p != intstr.FromString("metrics") {
		t.Errorf("startup probe of another port changed: %v", p.String())
	}
	if shipper := container(t, spec, "log-shipper"); !equality.Semantic.DeepEqual(shipper, &dep.Spec.Template.Spec.Containers[1]) {
		t.Errorf("the other container changed: %+v", shipper)
	}
	agent := container(t, spec, agentspec.Container)
	if agent.Image != testAgent.Image || !slices.Equal(agent.Command, []string{"/tp-agent"}) {
		t.Errorf("agent image %q args %q", agent.Image, agent.Args)
	}
	if len(agent.Ports) != 1 || agent.Ports[0] != (corev1.ContainerPort{Name: "http", ContainerPort: 9901, Protocol: corev1.ProtocolTCP}) {
		t.Errorf("agent ports %+v", agent.Ports)
	}
	if v := envOf(agent, agentspec.PortsEnv); v != "http:9901:8080" {
		t.Errorf("%s=%q", agentspec.PortsEnv, v)
	}
	if v := envOf(agent, agentspec.ManagerEnv); v != testAgent.ManagerAddress {
		t.Errorf("%s=%q", agentspec.ManagerEnv, v)
	}
	if v := envOf(agent, agentspec.CAEnv); v != testAgent.CABundle {
		t.Errorf("%s=%q, want the CA bundle", agentspec.CAEnv, v)
	}
	for _, e := range agent.Env[:2] {
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
			t.Errorf("env %s is not from the downward API", e.Name)
		}
	}
	if agent.Env[0].Name != "POD_NAME" || agent.Env[0].ValueFrom.FieldRef.FieldPath != "metadata.name" ||
		agent.Env[1].Name != "POD_NAMESPACE" || agent.Env[1].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("downward env %+v", agent.Env[:2])
	}
	sc := agent.SecurityContext
	if !*sc.RunAsNonRoot || *sc.RunAsUser != 65532 || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("security context %+v", sc)
	}
	if r := agent.Resources; r.Requests.Cpu().String() != "10m" || r.Requests.Memory().String() != "16Mi" || r.Limits.Memory().String() != "64Mi" {
		t.Errorf("resources %+v", r)
	}
	if agent.ReadinessProbe != nil {
		t.Errorf("the agent has a readiness probe")
	}
	if len(agent.VolumeMounts) != 1 || !equality.Semantic.DeepEqual(agent.VolumeMounts[0], corev1.VolumeMount{Name: agentspec.TokenVolume, MountPath: "/var/run/secrets/tp", ReadOnly: true}) {
		t.Errorf("mounts %+v", agent.VolumeMounts)
	}
	vol := spec.Volumes[len(spec.Volumes)-1]
	if vol.Name != agentspec.TokenVolume || vol.Projected == nil || len(vol.Projected.Sources) != 1 {
		t.Fatalf("volume %+v", vol)
	}
	tok := vol.Projected.Sources[0].ServiceAccountToken
	if tok.Audience != "tp-agent" || *tok.ExpirationSeconds != 3600 || tok.Path != "token" {
		t.Errorf("token projection %+v", tok)
	}

	// Resolving an injected workload gives the same target, with its agent port.
	again := resolve(t, cs, ref, "80")
	if again.TargetPortName != "http" || again.AppPort != 8080 || again.AgentPort != 9901 {
		t.Errorf("resolve after inject: %+v", again)
	}

	refs, err := Injected(ctx, cs, "")
	if err != nil || len(refs) != 1 || refs[0] != dref {
		t.Errorf("Injected: %v %v", refs, err)
	}

	plan, err = Restore(ctx, cs, ref, false)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Changed || len(plan.Warnings) != 0 || len(plan.DeletedPods) != 0 {
		t.Errorf("restore plan: changed %v warnings %v deleted %v", plan.Changed, plan.Warnings, plan.DeletedPods)
	}
	restored := getDeployment(t, cs, "web")
	if !equality.Semantic.DeepEqual(restored.Spec.Template, dep.Spec.Template) {
		t.Errorf("restored template differs:\n%s\nwant\n%s", toYAML(restored.Spec.Template), toYAML(dep.Spec.Template))
	}
	if !equality.Semantic.DeepEqual(restored.ObjectMeta.Labels, dep.Labels) || len(restored.Annotations) != 0 {
		t.Errorf("tp's marks remain: labels %v annotations %v", restored.Labels, restored.Annotations)
	}
	if hasRecord(t, cs, dref) {
		t.Error("the record outlived the restore")
	}
	if refs, _ := Injected(ctx, cs, ns); len(refs) != 0 {
		t.Errorf("Injected after restore: %v", refs)
	}

	// Restoring again changes nothing.
	before := len(writes(cs))
	if plan, err := Restore(ctx, cs, ref, false); err != nil || plan.Changed {
		t.Errorf("second restore: %+v %v", plan, err)
	}
	if w := writes(cs)[before:]; len(w) != 0 {
		t.Errorf("second restore wrote %v", w)
	}
}

// TestInjectIsIdempotent: injecting what is injected changes nothing while the pods run
// the agent, rolls the workload again when some do not, and updates the agent when its
// configuration changes.
func TestInjectIsIdempotent(t *testing.T) {
	dep := deployment("web", appTemplate("web"))
	cs := newClient(dep, service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	tg := resolve(t, cs, ref, "http")
	if _, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil {
		t.Fatal(err)
	}
	first := getDeployment(t, cs, "web")
	hash := hashOf(t, record(t, cs, ref))
	byRS := replicaSetOf(t, cs, dep)
	createPod(t, cs, podOf("web-1", dep.Spec.Template.Labels, map[string]string{AgentHashAnnotation: hash}, byRS))
	createPod(t, cs, podOf("web-2", dep.Spec.Template.Labels, map[string]string{AgentHashAnnotation: hash}, byRS))
	// A pod that is not the Deployment's is not its to judge.
	createPod(t, cs, podOf("stranger", dep.Spec.Template.Labels, nil, nil))
	before := len(writes(cs))

	// The CLI resolves again before each intercept.
	tg = resolve(t, cs, ref, "http")
	plan, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.AlreadyInjected || plan.Changed || plan.Before != plan.After || !strings.Contains(plan.Pods, "name: tp-agent") {
		t.Errorf("second inject: already %v changed %v", plan.AlreadyInjected, plan.Changed)
	}
	if w := writes(cs)[before:]; len(w) != 0 {
		t.Errorf("second inject wrote %v", w)
	}
	if second := getDeployment(t, cs, "web"); !equality.Semantic.DeepEqual(first, second) {
		t.Errorf("the Deployment changed")
	}

	// A pod without the agent (made while the webhook could not admit it) rolls the
	// workload again: a new restart value, the same record.
	p, _ := cs.CoreV1().Pods(ns).Get(ctx, "web-2", metav1.GetOptions{})
	p.Annotations = nil
	if _, err := cs.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	before = len(writes(cs))
	plan, err = Inject(ctx, cs, ref, testAgent, []Target{tg}, false)
	if err != nil || !plan.Changed || plan.AlreadyInjected {
		t.Fatalf("inject with a pod without the agent: %+v %v", plan, err)
	}
	if w := writes(cs)[before:]; !slices.Equal(w, []string{"update deployments"}) {
		t.Errorf("re-roll wrote %v, want the Deployment only", w)
	}
	rolled := getDeployment(t, cs, "web").Spec.Template.Annotations[RestartAnnotation]
	if !strings.HasPrefix(rolled, hash+".") {
		t.Errorf("restart annotation %q after a re-roll, want %s.<time>", rolled, hash)
	}
	if h := hashOf(t, record(t, cs, ref)); h != hash {
		t.Errorf("the record changed on a re-roll")
	}

	// Once the pods run the agent again, nothing changes.
	p.Annotations = map[string]string{AgentHashAnnotation: hash}
	if _, err := cs.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	before = len(writes(cs))
	if plan, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil || !plan.AlreadyInjected || plan.Changed {
		t.Errorf("inject after the re-roll: %+v %v", plan, err)
	}
	if w := writes(cs)[before:]; len(w) != 0 {
		t.Errorf("inject after the re-roll wrote %v", w)
	}

	// A new agent image (the manager was upgraded) updates the agent.
	newer := testAgent
	newer.Image = "registry.example.com/tp/tp:v2"
	plan, err = Inject(ctx, cs, ref, newer, []Target{tg}, false)
	if err != nil || !plan.Changed || plan.AlreadyInjected {
		t.Fatalf("inject with a new image: %+v %v", plan, err)
	}
	rec := record(t, cs, ref)
	if rec.Agent.Image != newer.Image || len(rec.Targets) != 1 || rec.Targets[0].AgentPort != 9901 {
		t.Errorf("record after the new image: %+v", rec)
	}
	got := getDeployment(t, cs, "web")
	if v := got.Spec.Template.Annotations[RestartAnnotation]; v != hashOf(t, rec) || v == hash {
		t.Errorf("restart annotation %q, want the new hash %s", v, hashOf(t, rec))
	}
	if img := container(t, &admitDeployment(t, cs, "web").Spec, agentspec.Container).Image; img != newer.Image {
		t.Errorf("agent image %q", img)
	}
	if !equality.Semantic.DeepEqual(got.Spec.Template.Spec, dep.Spec.Template.Spec) {
		t.Errorf("the template's spec changed")
	}
}

// A new CA bundle (tp install --rotate-ca) updates the agent at the next injection: a new
// hash, so its pods roll; restoring still gives back the original exactly.
func TestInjectFollowsTheCABundle(t *testing.T) {
	orig := appTemplate("web")
	dep := deployment("web", orig)
	cs := newClient(dep, service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	tg := resolve(t, cs, ref, "http")
	if _, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil {
		t.Fatal(err)
	}
	firstHash := admitDeployment(t, cs, "web").Annotations[AgentHashAnnotation]
	createPod(t, cs, podOf("web-1", orig.Labels, map[string]string{AgentHashAnnotation: firstHash}, replicaSetOf(t, cs, dep)))
	rotated := testAgent
	rotated.CABundle = string(newCA("rotated").CertPEM) + testAgent.CABundle
	plan, err := Inject(ctx, cs, ref, rotated, []Target{tg}, false)
	if err != nil || !plan.Changed || plan.AlreadyInjected {
		t.Fatalf("inject with a new CA bundle: %+v %v", plan, err)
	}
	if rec := record(t, cs, ref); rec.Agent.CABundle != rotated.CABundle {
		t.Errorf("record CA bundle not rotated")
	}
	pod := admitDeployment(t, cs, "web")
	if v := envOf(container(t, &pod.Spec, agentspec.Container), agentspec.CAEnv); v != rotated.CABundle {
		t.Errorf("%s after the rotation: %q", agentspec.CAEnv, v)
	}
	newHash := pod.Annotations[AgentHashAnnotation]
	if newHash == firstHash {
		t.Error("the agent hash did not change: the pods would keep the old CA")
	}
	if v := getDeployment(t, cs, "web").Spec.Template.Annotations[RestartAnnotation]; v != newHash {
		t.Errorf("restart annotation %q, want %s: the pods would not roll", v, newHash)
	}
	p, _ := cs.CoreV1().Pods(ns).Get(ctx, "web-1", metav1.GetOptions{})
	p.Annotations[AgentHashAnnotation] = newHash
	if _, err := cs.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if plan, err := Inject(ctx, cs, ref, rotated, []Target{tg}, false); err != nil || !plan.AlreadyInjected {
		t.Errorf("inject again with the same bundle: %+v %v", plan, err)
	}
	if _, err := Restore(ctx, cs, ref, false); err != nil {
		t.Fatal(err)
	}
	if back := getDeployment(t, cs, "web"); !equality.Semantic.DeepEqual(back.Spec.Template, orig) {
		t.Errorf("restored template differs from the original:\n%v", back.Spec.Template)
	}
}

func TestInjectAddsASecondPort(t *testing.T) {
	tmpl := appTemplate("web")
	tmpl.Spec.Containers[0].Ports = append(tmpl.Spec.Containers[0].Ports, corev1.ContainerPort{Name: "grpc-api", ContainerPort: 9000, Protocol: corev1.ProtocolTCP})
	dep := deployment("web", tmpl)
	cs := newClient(dep, service("web", map[string]string{"app": "web"},
		svcPort("http", 80, intstr.FromString("http")), svcPort("grpc", 9000, intstr.FromString("grpc-api"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}

	if _, err := Resolve(ctx, cs, ref, ""); err == nil {
		t.Fatal("two ports and no choice: no error")
	}
	http := resolve(t, cs, ref, "80")
	if _, err := Inject(ctx, cs, ref, testAgent, []Target{http}, false); err != nil {
		t.Fatal(err)
	}
	grpc := resolve(t, cs, ref, "grpc")
	if grpc.TargetPortName != "grpc-api" || grpc.AppPort != 9000 || grpc.AgentPort != 0 {
		t.Fatalf("grpc target %+v", grpc)
	}
	plan, err := Inject(ctx, cs, ref, testAgent, []Target{grpc}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Changed || len(plan.Targets) != 2 {
		t.Fatalf("plan %+v", plan)
	}
	rec := record(t, cs, ref)
	if len(rec.Targets) != 2 || rec.Targets[0].TargetPortName != "http" || rec.Targets[0].AgentPort != 9901 ||
		rec.Targets[1].TargetPortName != "grpc-api" || rec.Targets[1].AgentPort != 9902 {
		t.Errorf("record targets %+v", rec.Targets)
	}
	pod := admitDeployment(t, cs, "web")
	agent := container(t, &pod.Spec, agentspec.Container)
	if v := envOf(agent, agentspec.PortsEnv); v != "grpc-api:9902:9000,http:9901:8080" {
		t.Errorf("%s=%q: the first port must keep its agent port", agentspec.PortsEnv, v)
	}
	app := container(t, &pod.Spec, "app")
	var names []string
	for _, p := range app.Ports {
		names = append(names, p.Name)
	}
	if !slices.Equal(names, []string{"tp-http", "metrics", "tp-grpc-api"}) {
		t.Errorf("app port names %v", names)
	}
	// Both at once again, the pods running that agent: nothing to do.
	createPod(t, cs, podOf("web-1", tmpl.Labels, map[string]string{AgentHashAnnotation: pod.Annotations[AgentHashAnnotation]}, replicaSetOf(t, cs, dep)))
	if plan, err := Inject(ctx, cs, ref, testAgent, []Target{http, grpc}, false); err != nil || !plan.AlreadyInjected {
		t.Errorf("inject both again: %+v %v", plan, err)
	}
	if _, err := Restore(ctx, cs, ref, false); err != nil {
		t.Fatal(err)
	}
	if got := getDeployment(t, cs, "web"); !equality.Semantic.DeepEqual(got.Spec.Template, dep.Spec.Template) {
		t.Errorf("restored template differs")
	}
}

func TestInjectNumericTargetPort(t *testing.T) {
	tmpl := appTemplate("api")
	tmpl.Spec.Containers[0].Ports[0].Name = "" // the Service targets 8080 by number
	tmpl.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intstr.FromInt32(8080)
	tmpl.Spec.Containers[0].LivenessProbe.TCPSocket.Port = intstr.FromInt32(8080)
	tmpl.Spec.Containers[0].Lifecycle = nil
	dep := deployment("api", tmpl)
	svc := service("api", map[string]string{"app": "api"},
		svcPort("web", 80, intstr.FromInt32(8080)), svcPort("metrics", 9090, intstr.FromString("metrics")))
	cs := newClient(dep, svc)
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "api"}

	tg := resolve(t, cs, ref, "web")
	want := Target{Service: "api", ServicePort: 80, ServicePortName: "web", TargetPortName: "tp-8080", AppPort: 8080, Numeric: true}
	if tg != want {
		t.Fatalf("resolve: %+v, want %+v", tg, want)
	}

	// A dry run shows the Service's change and makes none.
	plan, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Services) != 1 || !strings.Contains(plan.Services[0].After, "targetPort: tp-8080") || !strings.Contains(plan.Services[0].Before, "targetPort: 8080") {
		t.Errorf("dry-run service change %+v", plan.Services)
	}
	if w := writes(cs); len(w) != 0 {
		t.Errorf("dry run wrote %v", w)
	}

	if _, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil {
		t.Fatal(err)
	}
	gotSvc, _ := cs.CoreV1().Services(ns).Get(ctx, "api", metav1.GetOptions{})
	if tp := gotSvc.Spec.Ports[0].TargetPort; tp != intstr.FromString("tp-8080") {
		t.Errorf("service targetPort %s", tp.String())
	}
	if tp := gotSvc.Spec.Ports[1].TargetPort; tp != intstr.FromString("metrics") {
		t.Errorf("other port changed: %s", tp.String())
	}
	if gotSvc.Labels[InjectedLabel] != "true" || gotSvc.Annotations[InjectedForAnnotation] != "Deployment/api" || gotSvc.Annotations[OriginalPortsAnnotation] == "" {
		t.Errorf("service marks: %v %v", gotSvc.Labels, gotSvc.Annotations)
	}
	if rec := record(t, cs, ref); len(rec.Targets) != 1 || rec.Targets[0].TargetPortName != "tp-8080" || !rec.Targets[0].Numeric || rec.Targets[0].AgentPort != 9901 {
		t.Errorf("record targets %+v", rec.Targets)
	}
	pod := admitDeployment(t, cs, "api")
	agent := container(t, &pod.Spec, agentspec.Container)
	if agent.Ports[0].Name != "tp-8080" || agent.Ports[0].ContainerPort != 9901 {
		t.Errorf("agent port %+v", agent.Ports[0])
	}
	if app := container(t, &pod.Spec, "app"); !equality.Semantic.DeepEqual(app, &tmpl.Spec.Containers[0]) {
		t.Errorf("the app container changed for a numeric target")
	}

	// Once more, the pods running the agent: nothing changes, the Service included.
	createPod(t, cs, podOf("api-1", tmpl.Labels, map[string]string{AgentHashAnnotation: pod.Annotations[AgentHashAnnotation]}, replicaSetOf(t, cs, dep)))
	before := len(writes(cs))
	tg = resolve(t, cs, ref, "80")
	if want.AgentPort = 9901; tg != want {
		t.Errorf("resolve after inject: %+v", tg)
	}
	if plan, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil || plan.Changed {
		t.Errorf("second inject: %+v %v", plan, err)
	}
	if w := writes(cs)[before:]; len(w) != 0 {
		t.Errorf("second inject wrote %v", w)
	}

	plan, err = Restore(ctx, cs, ref, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Services) != 1 {
		t.Errorf("restore plan services %+v", plan.Services)
	}
	gotSvc, _ = cs.CoreV1().Services(ns).Get(ctx, "api", metav1.GetOptions{})
	if !equality.Semantic.DeepEqual(gotSvc.Spec, svc.Spec) {
		t.Errorf("service spec not restored:\n%s", toYAML(gotSvc.Spec))
	}
	if gotSvc.Labels != nil || !equality.Semantic.DeepEqual(gotSvc.Annotations, svc.Annotations) {
		t.Errorf("service metadata not restored: %v %v", gotSvc.Labels, gotSvc.Annotations)
	}
	if got := getDeployment(t, cs, "api"); !equality.Semantic.DeepEqual(got.Spec.Template, dep.Spec.Template) {
		t.Errorf("restored template differs")
	}
}

func TestNumericTargetPortSharedService(t *testing.T) {
	tmpl := appTemplate("api")
	tmpl.Labels["track"] = "stable"
	canary := appTemplate("api")
	canary.Labels["track"] = "canary"
	stable, can := deployment("api", tmpl), deployment("api-canary", canary)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "api-canary-x", Namespace: ns, Labels: canary.Labels}}
	cs := newClient(stable, can, pod, service("api", map[string]string{"app": "api"}, svcPort("web", 80, intstr.FromInt32(8080))))
	_, err := Resolve(ctx, cs, Ref{Namespace: ns, Kind: Deployment, Name: "api"}, "80")
	wantKind(t, err, remote.Usage, `also selects pod "api-canary-x"`, "give the container port a name")
}

func TestRestoreKeepsOthersServiceEdits(t *testing.T) {
	tmpl := appTemplate("api")
	svc := service("api", map[string]string{"app": "api"}, svcPort("web", 80, intstr.FromInt32(8080)))
	cs := newClient(deployment("api", tmpl), svc)
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "api"}
	tg := resolve(t, cs, ref, "80")
	if _, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil {
		t.Fatal(err)
	}
	s, _ := cs.CoreV1().Services(ns).Get(ctx, "api", metav1.GetOptions{})
	s.Spec.Ports = append(s.Spec.Ports, svcPort("extra", 81, intstr.FromInt32(8081)))
	if _, err := cs.CoreV1().Services(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(ctx, cs, ref, false); err != nil {
		t.Fatal(err)
	}
	s, _ = cs.CoreV1().Services(ns).Get(ctx, "api", metav1.GetOptions{})
	if len(s.Spec.Ports) != 2 || s.Spec.Ports[0].TargetPort != intstr.FromInt32(8080) || s.Spec.Ports[1].Name != "extra" {
		t.Errorf("ports after restore %+v", s.Spec.Ports)
	}
}

func TestRestoreWorkloadDeletedWhileInjected(t *testing.T) {
	cs := newClient(deployment("api", appTemplate("api")), service("api", map[string]string{"app": "api"}, svcPort("web", 80, intstr.FromInt32(8080))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "api"}
	tg := resolve(t, cs, ref, "80")
	if _, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil {
		t.Fatal(err)
	}
	if err := cs.AppsV1().Deployments(ns).Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	refs, err := Injected(ctx, cs, "")
	if err != nil || len(refs) != 1 || refs[0].Name != "api" {
		t.Fatalf("Injected: %v %v", refs, err)
	}
	if _, err := Restore(ctx, cs, refs[0], false); err != nil {
		t.Fatal(err)
	}
	s, _ := cs.CoreV1().Services(ns).Get(ctx, "api", metav1.GetOptions{})
	if s.Spec.Ports[0].TargetPort != intstr.FromInt32(8080) || s.Labels[InjectedLabel] != "" {
		t.Errorf("service not restored: %+v %v", s.Spec.Ports, s.Labels)
	}
	if hasRecord(t, cs, ref) {
		t.Error("the record of the deleted workload remains")
	}
	_, err = Restore(ctx, cs, refs[0], false)
	wantKind(t, err, remote.Usage, `there is no Deployment "api"`)
}

func TestRestoreRecordOfADeletedWorkload(t *testing.T) {
	cs := newClient(deployment("web", appTemplate("web")), service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	tg := resolve(t, cs, ref, "")
	if _, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil {
		t.Fatal(err)
	}
	if err := cs.AppsV1().Deployments(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if refs, err := Injected(ctx, cs, ns); err != nil || len(refs) != 1 || refs[0] != ref {
		t.Fatalf("Injected: %v %v", refs, err)
	}
	if plan, err := Restore(ctx, cs, ref, false); err != nil || !plan.Changed {
		t.Fatalf("restore: %+v %v", plan, err)
	}
	if hasRecord(t, cs, ref) {
		t.Error("the record remains")
	}
}

func TestInjectStatefulSet(t *testing.T) {
	tmpl := appTemplate("db")
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: tmpl,
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}},
	}
	cs := newClient(sts, service("db", map[string]string{"app": "db"}, svcPort("http", 80, intstr.FromString("http"))))
	ref, err := ParseRef(ns, "sts/db")
	if err != nil {
		t.Fatal(err)
	}
	tg := resolve(t, cs, ref, "")
	plan, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], "OnDelete") {
		t.Errorf("warnings %v", plan.Warnings)
	}
	rec := record(t, cs, ref)
	got, _ := cs.AppsV1().StatefulSets(ns).Get(ctx, "db", metav1.GetOptions{})
	if want := withRestart(tmpl, hashOf(t, rec)); !equality.Semantic.DeepEqual(got.Spec.Template, want) || len(got.Labels) != 0 {
		t.Errorf("statefulset after inject: labels %v template\n%s", got.Labels, toYAML(got.Spec.Template))
	}
	container(t, &admit(t, &got.Spec.Template, rec).Spec, agentspec.Container)
	if RecordName(ref) != "tp-agent.statefulsets.db" || !hasRecord(t, cs, ref) {
		t.Errorf("no record %s", RecordName(ref))
	}
	if refs, _ := Injected(ctx, cs, ns); len(refs) != 1 || refs[0].Kind != StatefulSet {
		t.Errorf("Injected %v", refs)
	}
	if _, err := Restore(ctx, cs, ref, false); err != nil {
		t.Fatal(err)
	}
	got, _ = cs.AppsV1().StatefulSets(ns).Get(ctx, "db", metav1.GetOptions{})
	if !equality.Semantic.DeepEqual(got.Spec.Template, tmpl) || len(got.Labels) != 0 || len(got.Annotations) != 0 || hasRecord(t, cs, ref) {
		t.Errorf("not restored")
	}
}

func TestInjectReplicaSetRestartsItsPods(t *testing.T) {
	tmpl := appTemplate("job")
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "job", Namespace: ns, UID: "rs-uid"},
		Spec:       appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: tmpl},
	}
	owned := func(name string, annotations map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: tmpl.Labels, UID: types.UID(name),
			Annotations:     annotations,
			OwnerReferences: []metav1.OwnerReference{{Kind: ReplicaSet, Name: "job", UID: "rs-uid", Controller: new(true)}}}}
	}
	stranger := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: ns, Labels: tmpl.Labels}}
	cs := newClient(rs, owned("job-a", nil), owned("job-b", nil), stranger,
		service("job", map[string]string{"app": "job"}, svcPort("http", 80, intstr.FromString("http"))))
	ref, _ := ParseRef(ns, "rs/job")
	tg := resolve(t, cs, ref, "")

	plan, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, true)
	if err != nil || !slices.Equal(plan.DeletedPods, []string{"job-a", "job-b"}) {
		t.Fatalf("dry run: %v %v", plan.DeletedPods, err)
	}
	if w := writes(cs); len(w) != 0 {
		t.Errorf("dry run wrote %v", w)
	}
	plan, err = Inject(ctx, cs, ref, testAgent, []Target{tg}, false)
	if err != nil || !slices.Equal(plan.DeletedPods, []string{"job-a", "job-b"}) {
		t.Fatalf("inject: %v %v", plan.DeletedPods, err)
	}
	pods, _ := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if len(pods.Items) != 1 || pods.Items[0].Name != "other" {
		t.Errorf("pods left %v", pods.Items)
	}
	got, _ := cs.AppsV1().ReplicaSets(ns).Get(ctx, "job", metav1.GetOptions{})
	hash := hashOf(t, record(t, cs, ref))
	if v := got.Spec.Template.Annotations[RestartAnnotation]; v != hash {
		t.Fatalf("restart annotation %q, want %s", v, hash)
	}
	// The ReplicaSet made a pod with the agent: injecting again leaves it alone.
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, owned("job-c", map[string]string{AgentHashAnnotation: hash}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if plan, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil || plan.Changed || len(plan.DeletedPods) != 0 {
		t.Errorf("second inject: %+v %v", plan, err)
	}
	plan, err = Restore(ctx, cs, ref, false)
	if err != nil || !slices.Equal(plan.DeletedPods, []string{"job-c"}) {
		t.Errorf("restore: %v %v", plan.DeletedPods, err)
	}
	got, _ = cs.AppsV1().ReplicaSets(ns).Get(ctx, "job", metav1.GetOptions{})
	if !equality.Semantic.DeepEqual(got.Spec.Template, tmpl) || hasRecord(t, cs, ref) {
		t.Errorf("not restored")
	}
}

func TestReplicaSetOfADeploymentIsRefused(t *testing.T) {
	tmpl := appTemplate("web")
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-6d4f", Namespace: ns,
			OwnerReferences: []metav1.OwnerReference{{Kind: Deployment, Name: "web", Controller: new(true)}}},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: tmpl},
	}
	cs := newClient(rs, service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref, _ := ParseRef(ns, "rs/web-6d4f")
	tg := resolve(t, cs, ref, "")
	_, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false)
	wantKind(t, err, remote.Usage, `belongs to Deployment "web"`, "intercept deployment/web")
}

func TestInjectDryRunChangesNothing(t *testing.T) {
	cs := newClient(deployment("web", appTemplate("web")), service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	tg := resolve(t, cs, ref, "")
	plan, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Changed || !strings.Contains(plan.After, RestartAnnotation) || strings.Contains(plan.Before, RestartAnnotation) ||
		strings.Contains(plan.After, "tp-agent") {
		t.Errorf("plan, template:\n%s", plan.After)
	}
	if !strings.Contains(plan.Pods, "name: tp-agent") || !strings.Contains(plan.Pods, "name: tp-http") {
		t.Errorf("plan, pods:\n%s", plan.Pods)
	}
	if w := writes(cs); len(w) != 0 {
		t.Errorf("dry run wrote %v", w)
	}
	if _, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil {
		t.Fatal(err)
	}
	before := len(writes(cs))
	plan, err = Restore(ctx, cs, ref, true)
	if err != nil || !plan.Changed || strings.Contains(plan.After, RestartAnnotation) || !strings.Contains(plan.Before, RestartAnnotation) {
		t.Fatalf("restore dry run: %v %v", plan, err)
	}
	if w := writes(cs)[before:]; len(w) != 0 {
		t.Errorf("restore dry run wrote %v", w)
	}
	if !hasRecord(t, cs, ref) || getDeployment(t, cs, "web").Spec.Template.Annotations[RestartAnnotation] == "" {
		t.Error("restore dry run restored")
	}
}

// TestRestoreKeepsEditsWhileInjected: the template is the user's while injected; Restore
// takes back its annotation only.
func TestRestoreKeepsEditsWhileInjected(t *testing.T) {
	orig := appTemplate("web")
	cs := newClient(deployment("web", orig), service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	tg := resolve(t, cs, ref, "")
	if _, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil {
		t.Fatal(err)
	}
	d := getDeployment(t, cs, "web")
	d.Spec.Template.Spec.Containers[0].Image = "example.com/app:2"
	if _, err := cs.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	plan, err := Restore(ctx, cs, ref, false)
	if err != nil || len(plan.Warnings) != 0 {
		t.Errorf("restore: %v %v", plan.Warnings, err)
	}
	want := *orig.DeepCopy()
	want.Spec.Containers[0].Image = "example.com/app:2"
	if got := getDeployment(t, cs, "web"); !equality.Semantic.DeepEqual(got.Spec.Template, want) {
		t.Errorf("restored template:\n%s\nwant\n%s", toYAML(got.Spec.Template), toYAML(want))
	}
}

// legacyTargets is what an older tp injected in the legacy tests: an agent port the
// allocation would not give today, so that keeping it shows.
var legacyTargets = []Target{{Service: "web", ServicePort: 80, ServicePortName: "http", TargetPortName: "http", AppPort: 8080, AgentPort: 9905}}

// TestInjectMigratesALegacyInjection: a workload an older tp injected in its template gets
// its original template back, with the restart annotation, and a record that keeps the
// agent ports it gave out.
func TestInjectMigratesALegacyInjection(t *testing.T) {
	orig := appTemplate("web")
	cs := newClient(legacyDeployment(t, "web", orig, legacyTargets), service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	if refs, err := Injected(ctx, cs, ns); err != nil || len(refs) != 1 || refs[0] != ref {
		t.Errorf("Injected, legacy: %v %v", refs, err)
	}
	tg := resolve(t, cs, ref, "http")
	if tg.AgentPort != 9905 || tg.AppPort != 8080 {
		t.Errorf("resolve of a legacy injection: %+v", tg)
	}
	plan, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false)
	if err != nil || !plan.Changed || plan.AlreadyInjected {
		t.Fatalf("inject: %+v %v", plan, err)
	}
	rec := record(t, cs, ref)
	if !equality.Semantic.DeepEqual(rec, Record{Agent: testAgent, Targets: legacyTargets}) {
		t.Errorf("record %+v, want the legacy targets", rec)
	}
	got := getDeployment(t, cs, "web")
	if want := withRestart(orig, hashOf(t, rec)); !equality.Semantic.DeepEqual(got.Spec.Template, want) {
		t.Errorf("template:\n%s\nwant\n%s", toYAML(got.Spec.Template), toYAML(want))
	}
	if got.Labels[InjectedLabel] != "" || len(got.Annotations) != 0 {
		t.Errorf("legacy marks remain: %v %v", got.Labels, got.Annotations)
	}
	// The pods admitted now are those the old template made: same hash, same agent.
	legacyPod, _ := inject(&orig, testAgent, legacyTargets)
	if pod := admit(t, &got.Spec.Template, rec); !equality.Semantic.DeepEqual(pod.Spec, legacyPod.Spec) {
		t.Errorf("admitted pod differs from the legacy template:\n%s", toYAML(pod.Spec))
	}
	if refs, err := Injected(ctx, cs, ns); err != nil || len(refs) != 1 || refs[0] != ref {
		t.Errorf("Injected, migrated: %v %v", refs, err)
	}
	if _, err := Restore(ctx, cs, ref, false); err != nil {
		t.Fatal(err)
	}
	if got := getDeployment(t, cs, "web"); !equality.Semantic.DeepEqual(got.Spec.Template, orig) || hasRecord(t, cs, ref) {
		t.Errorf("not restored")
	}
}

// TestRestoreALegacyInjection: Restore gives a legacy workload its saved template back and
// warns when that undoes an edit made while injected.
func TestRestoreALegacyInjection(t *testing.T) {
	orig := appTemplate("web")
	dep := legacyDeployment(t, "web", orig, legacyTargets)
	cs := newClient(dep)
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	plan, err := Restore(ctx, cs, ref, false)
	if err != nil || !plan.Changed || len(plan.Warnings) != 0 {
		t.Fatalf("restore: %+v %v", plan, err)
	}
	got := getDeployment(t, cs, "web")
	if !equality.Semantic.DeepEqual(got.Spec.Template, orig) || !equality.Semantic.DeepEqual(got.Labels, map[string]string{"owner": "me"}) || len(got.Annotations) != 0 {
		t.Errorf("restored: labels %v annotations %v template\n%s", got.Labels, got.Annotations, toYAML(got.Spec.Template))
	}

	edited := legacyDeployment(t, "web", orig, legacyTargets)
	edited.Spec.Template.Spec.Containers[0].Image = "example.com/app:2"
	cs = newClient(edited)
	plan, err = Restore(ctx, cs, ref, false)
	if err != nil || len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], "undoes that change") {
		t.Errorf("restore: %v %v", plan.Warnings, err)
	}
	if got := getDeployment(t, cs, "web"); !equality.Semantic.DeepEqual(got.Spec.Template, orig) {
		t.Errorf("not restored to the saved original")
	}
}

// TestRestoreDeletesAgentPodsOfAnUnmarkedTemplate: when the template lost tp's annotation
// (a GitOps tool applied its manifest again), removing it rolls nothing: Restore deletes
// the Deployment's pods that run the agent.
func TestRestoreDeletesAgentPodsOfAnUnmarkedTemplate(t *testing.T) {
	orig := appTemplate("web")
	dep := deployment("web", orig)
	cs := newClient(dep, service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	tg := resolve(t, cs, ref, "")
	if _, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil {
		t.Fatal(err)
	}
	hash := hashOf(t, record(t, cs, ref))
	d := getDeployment(t, cs, "web")
	d.Spec.Template = *orig.DeepCopy()
	if _, err := cs.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	byRS := replicaSetOf(t, cs, dep)
	agentHash := map[string]string{AgentHashAnnotation: hash}
	createPod(t, cs, podOf("web-6d4f-a", orig.Labels, agentHash, byRS))
	createPod(t, cs, podOf("web-6d4f-b", orig.Labels, nil, byRS))
	createPod(t, cs, podOf("stranger", orig.Labels, agentHash, nil))

	plan, err := Restore(ctx, cs, ref, false)
	if err != nil || !plan.Changed || !slices.Equal(plan.DeletedPods, []string{"web-6d4f-a"}) {
		t.Fatalf("restore: %+v %v", plan, err)
	}
	pods, _ := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	var left []string
	for _, p := range pods.Items {
		left = append(left, p.Name)
	}
	slices.Sort(left)
	if !slices.Equal(left, []string{"stranger", "web-6d4f-b"}) {
		t.Errorf("pods left %v", left)
	}
	if hasRecord(t, cs, ref) {
		t.Error("the record remains")
	}
	if got := getDeployment(t, cs, "web"); !equality.Semantic.DeepEqual(got.Spec.Template, orig) {
		t.Errorf("template changed")
	}
}

func TestInjectRetriesOnConflict(t *testing.T) {
	cs := newClient(deployment("web", appTemplate("web")), service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	tg := resolve(t, cs, ref, "")
	conflicts := 2
	cs.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts > 0 {
			conflicts--
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "deployments"}, "web", nil)
		}
		return false, nil, nil
	})
	if _, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil {
		t.Fatal(err)
	}
	if v := getDeployment(t, cs, "web").Spec.Template.Annotations[RestartAnnotation]; v != hashOf(t, record(t, cs, ref)) {
		t.Errorf("not injected: restart annotation %q", v)
	}
	gets := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "deployments" {
			gets++
		}
	}
	if gets < 4 { // resolve + three attempts, each from a fresh read
		t.Errorf("%d reads of the Deployment: each attempt must read it anew", gets)
	}
}

func TestInjectForbidden(t *testing.T) {
	cs := newClient(deployment("web", appTemplate("web")), service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	tg := resolve(t, cs, ref, "")
	forbid(cs, "update", "deployments")
	_, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false)
	wantKind(t, err, remote.Access, "no permission to update deployments.apps web in namespace shop",
		"update on deployments", "services", "kubectl auth can-i update deployments.apps -n shop")

	cs = newClient(deployment("api", appTemplate("api")), service("api", map[string]string{"app": "api"}, svcPort("web", 80, intstr.FromInt32(8080))))
	ref.Name = "api"
	tg = resolve(t, cs, ref, "")
	forbid(cs, "update", "services")
	_, err = Inject(ctx, cs, ref, testAgent, []Target{tg}, false)
	wantKind(t, err, remote.Access, "no permission to update services api in namespace shop")

	cs = newClient(deployment("web", appTemplate("web")), service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref.Name = "web"
	tg = resolve(t, cs, ref, "")
	forbid(cs, "create", "leases")
	_, err = Inject(ctx, cs, ref, testAgent, []Target{tg}, false)
	wantKind(t, err, remote.Access, "no permission to create leases.coordination.k8s.io tp-agent.deployments.web in namespace shop",
		"create, update and delete on leases")
	if w := writes(cs); !slices.Equal(w, []string{"create leases"}) {
		t.Errorf("a refused record changed %v: the workload must not roll without it", w)
	}
}

func TestCheckAllowed(t *testing.T) {
	cs := newClient(namespaceObj("locked", map[string]string{DenyAnnotation: "deny"}))
	err := CheckAllowed(ctx, cs, "locked")
	wantKind(t, err, remote.Usage, `intercepts are not allowed in namespace "locked"`, "tp.dev/intercept=deny",
		"kubectl annotate namespace locked tp.dev/intercept-")
	if err := CheckAllowed(ctx, cs, ns); err != nil {
		t.Errorf("unannotated namespace: %v", err)
	}
	wantKind(t, CheckAllowed(ctx, cs, "nope"), remote.Usage, `namespace "nope" does not exist`)

	// Inject checks it too.
	d := deployment("web", appTemplate("web"))
	d.Namespace = "locked"
	cs = newClient(namespaceObj("locked", map[string]string{DenyAnnotation: "deny"}), d)
	_, err = Inject(ctx, cs, Ref{Namespace: "locked", Kind: Deployment, Name: "web"}, testAgent,
		[]Target{{Service: "web", ServicePort: 80, TargetPortName: "http", AppPort: 8080}}, true)
	wantKind(t, err, remote.Usage, "not allowed")

	// Users who may not read namespaces are not refused.
	forbid(cs, "get", "namespaces")
	if err := CheckAllowed(ctx, cs, "locked"); err != nil {
		t.Errorf("forbidden namespace read: %v", err)
	}
}

func TestResolveErrors(t *testing.T) {
	tmpl := appTemplate("web")
	tmpl.Spec.Containers[0].Ports = append(tmpl.Spec.Containers[0].Ports, corev1.ContainerPort{Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolUDP})
	orphan := appTemplate("lonely")
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "cache", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: appTemplate("cache")}}
	udp := svcPort("dns", 53, intstr.FromString("dns"))
	udp.Protocol = corev1.ProtocolUDP
	cs := newClient(deployment("web", tmpl), deployment("lonely", orphan), deployment("admin", appTemplate("admin")), sts,
		service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http")), svcPort("metrics", 9090, intstr.FromString("metrics")), udp),
		service("web-public", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))),
		service("admin", map[string]string{"app": "admin"}, svcPort("http", 80, intstr.FromString("admin-http"))),
	)
	ref := func(name string) Ref { return Ref{Namespace: ns, Kind: "Deployment", Name: name} }

	_, err := Resolve(ctx, cs, ref("wbe"), "")
	wantKind(t, err, remote.Usage, `there is no Deployment "wbe" in namespace "shop"`, "the Deployments there: admin, lonely, web")
	_, err = Resolve(ctx, cs, ref("cache"), "")
	wantKind(t, err, remote.Usage, "there is a StatefulSet of that name: intercept statefulset/cache")
	_, err = Resolve(ctx, cs, ref("lonely"), "")
	wantKind(t, err, remote.Usage, `no Service in namespace "shop" selects the pods of Deployment "lonely"`, "kubectl expose deployment/lonely")
	_, err = Resolve(ctx, cs, ref("web"), "")
	wantKind(t, err, remote.Usage, "which port of", "web:80 (http) → pod port http (8080)", "web:9090 (metrics)", "--port")
	_, err = Resolve(ctx, cs, ref("web"), "8081")
	wantKind(t, err, remote.Usage, `no port "8081" leads to the pods`, "web:9090 (metrics) → pod port metrics (9090)")
	_, err = Resolve(ctx, cs, ref("web"), "dns")
	wantKind(t, err, remote.Usage, "intercepts carry TCP only")
	_, err = Resolve(ctx, cs, ref("web"), "nope/80")
	wantKind(t, err, remote.Usage, `Service "nope" does not select`, "web, web-public")
	_, err = Resolve(ctx, cs, ref("admin"), "")
	wantKind(t, err, remote.Usage, "cannot reach the pods", `targetPort "admin-http"`)
	_, err = Resolve(ctx, cs, Ref{Namespace: ns, Kind: "DaemonSet", Name: "x"}, "")
	wantKind(t, err, remote.Usage, "tp intercepts Deployments, StatefulSets and ReplicaSets")

	// Two Services on the same named port are one intercept: the agent takes both.
	tg, err := Resolve(ctx, cs, ref("web"), "80")
	if err != nil || tg.TargetPortName != "http" || tg.Service != "web" {
		t.Errorf("80: %+v %v", tg, err)
	}
	tg, err = Resolve(ctx, cs, ref("web"), "web-public/http")
	if err != nil || tg.Service != "web-public" {
		t.Errorf("web-public/http: %+v %v", tg, err)
	}
	// The pod's own port name and number are understood too.
	if tg, err := Resolve(ctx, cs, ref("web"), "8080"); err != nil || tg.TargetPortName != "http" {
		t.Errorf("8080: %+v %v", tg, err)
	}

	forbid(cs, "list", "services")
	_, err = Resolve(ctx, cs, ref("web"), "")
	wantKind(t, err, remote.Access, "no permission to list services in namespace shop")
}

func TestParseRef(t *testing.T) {
	for in, want := range map[string]Ref{
		"web":                  {ns, Deployment, "web"},
		"deploy/web":           {ns, Deployment, "web"},
		"Deployment/web":       {ns, Deployment, "web"},
		"deployments.apps/web": {ns, Deployment, "web"},
		"sts/db":               {ns, StatefulSet, "db"},
		"StatefulSet/db":       {ns, StatefulSet, "db"},
		"rs/web-6d4f":          {ns, ReplicaSet, "web-6d4f"},
		"replicaset/web-6d4f":  {ns, ReplicaSet, "web-6d4f"},
	} {
		got, err := ParseRef(ns, in)
		if err != nil || got != want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"ds/x", "deploy/", "deploy/Web", ""} {
		_, err := ParseRef(ns, in)
		wantKind(t, err, remote.Usage)
	}
}

func TestLongPortNames(t *testing.T) {
	tmpl := appTemplate("web")
	tmpl.Spec.Containers[0].Ports = []corev1.ContainerPort{
		{Name: "http-public-api", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, // 15 characters
		{Name: "http-public-apx", ContainerPort: 8081, Protocol: corev1.ProtocolTCP}, // same first 7
		{Name: "tp-http", ContainerPort: 8082, Protocol: corev1.ProtocolTCP},         // takes the short form of "http"
		{Name: "http", ContainerPort: 8083, Protocol: corev1.ProtocolTCP},
	}
	tmpl.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intstr.FromString("http-public-api")
	tmpl.Spec.Containers[0].LivenessProbe = nil
	tmpl.Spec.Containers[0].StartupProbe = nil
	tmpl.Spec.Containers[0].Lifecycle = nil
	dep := deployment("web", tmpl)
	cs := newClient(dep, service("web", map[string]string{"app": "web"},
		svcPort("a", 80, intstr.FromString("http-public-api")), svcPort("b", 81, intstr.FromString("http-public-apx")),
		svcPort("c", 82, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	var targets []Target
	for _, p := range []string{"a", "b", "c"} {
		targets = append(targets, resolve(t, cs, ref, p))
	}
	if _, err := Inject(ctx, cs, ref, testAgent, targets, false); err != nil {
		t.Fatal(err)
	}
	spec := admitDeployment(t, cs, "web").Spec
	seen := map[string]bool{}
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
				t.Errorf("port name %q: %v", p.Name, errs)
			}
			if seen[p.Name] {
				t.Errorf("port name %q twice", p.Name)
			}
			seen[p.Name] = true
		}
	}
	app := container(t, &spec, "app")
	for i, want := range []string{RenamedPortName("http-public-api", &tmpl.Spec), RenamedPortName("http-public-apx", &tmpl.Spec), "tp-http", RenamedPortName("http", &tmpl.Spec)} {
		if app.Ports[i].Name != want {
			t.Errorf("port %d named %q, want %q", i, app.Ports[i].Name, want)
		}
	}
	if n := app.Ports[0].Name; !strings.HasPrefix(n, "tp-http-pu-") || len(n) != 15 {
		t.Errorf("long name shortened to %q", n)
	}
	if n := app.Ports[3].Name; n == "tp-http" || !strings.HasPrefix(n, "tp-http-") {
		t.Errorf("taken name replaced by %q", n)
	}
	if app.ReadinessProbe.HTTPGet.Port != intstr.FromInt32(8080) {
		t.Errorf("probe port %s", app.ReadinessProbe.HTTPGet.Port.String())
	}
	// The same template gives the same names every time.
	if RenamedPortName("http-public-api", &tmpl.Spec) != app.Ports[0].Name {
		t.Error("renaming is not deterministic")
	}
	if _, err := Restore(ctx, cs, ref, false); err != nil {
		t.Fatal(err)
	}
	if got := getDeployment(t, cs, "web"); !equality.Semantic.DeepEqual(got.Spec.Template, dep.Spec.Template) {
		t.Error("not restored")
	}
}

func TestFitName(t *testing.T) {
	for _, base := range []string{"a", "http", "abcdefghijkl", "abcdefghijklm", "abcdef-ghijklmn", "a-b-c-d-e-f-g-h", "8080", "65535", "x1234567890-y"} {
		n := fitName(base, map[string]bool{})
		if errs := validation.IsValidPortName(n); len(errs) > 0 {
			t.Errorf("fitName(%q) = %q: %v", base, n, errs)
		}
		if taken := fitName(base, map[string]bool{n: true}); taken == n || len(validation.IsValidPortName(taken)) > 0 {
			t.Errorf("fitName(%q) with %q taken = %q", base, n, taken)
		}
	}
}

func TestInjectRefusesHostNetworkAndForeignAgent(t *testing.T) {
	host := appTemplate("h")
	host.Spec.HostNetwork = true
	foreign := appTemplate("f")
	foreign.Spec.Containers = append(foreign.Spec.Containers, corev1.Container{Name: agentspec.Container, Image: "x"})
	cs := newClient(deployment("h", host), deployment("f", foreign))
	tg := []Target{{Service: "s", ServicePort: 80, TargetPortName: "http", AppPort: 8080}}
	_, err := Inject(ctx, cs, Ref{Namespace: ns, Kind: Deployment, Name: "h"}, testAgent, tg, false)
	wantKind(t, err, remote.Usage, "node's network")
	_, err = Inject(ctx, cs, Ref{Namespace: ns, Kind: Deployment, Name: "f"}, testAgent, tg, false)
	wantKind(t, err, remote.Usage, `already has a container named "tp-agent"`)
	if w := writes(cs); len(w) != 0 {
		t.Errorf("refused injections wrote %v", w)
	}
	_, err = Inject(ctx, cs, Ref{Namespace: ns, Kind: Deployment, Name: "f"}, AgentConfig{Image: "x", ManagerAddress: "nope", TokenAudience: "a", CABundle: testAgent.CABundle}, tg, false)
	wantKind(t, err, remote.Usage, "not host:port")
	noCA := testAgent
	noCA.CABundle = ""
	_, err = Inject(ctx, cs, Ref{Namespace: ns, Kind: Deployment, Name: "f"}, noCA, tg, false)
	wantKind(t, err, remote.Usage, "the CA bundle for the agent is not usable")
	_, err = Inject(ctx, cs, Ref{Namespace: ns, Kind: Deployment, Name: "f"}, testAgent, nil, false)
	wantKind(t, err, remote.Usage, "no port to intercept")
}

func TestRecordNames(t *testing.T) {
	for _, ref := range []Ref{{Kind: Deployment, Name: "web"}, {Kind: StatefulSet, Name: "db"}, {Kind: ReplicaSet, Name: "web.v2-6d4f"}} {
		name := RecordName(ref)
		if got, ok := RecordRef(name); !ok || got != ref {
			t.Errorf("RecordRef(%q) = %+v %v, want %+v", name, got, ok, ref)
		}
	}
	if n := RecordName(Ref{Namespace: ns, Kind: Deployment, Name: "web"}); n != "tp-agent.deployments.web" {
		t.Errorf("RecordName = %q", n)
	}
	for _, name := range []string{"web", "tp-agent.deployments", "tp-agent.deployments.", "tp-agent.daemonsets.x", "tp-agent.Deployments.web", "other.deployments.web", "kube-scheduler"} {
		if ref, ok := RecordRef(name); ok {
			t.Errorf("RecordRef(%q) = %+v, want none", name, ref)
		}
	}
}

func TestParseRecord(t *testing.T) {
	rec := Record{Agent: testAgent, Targets: []Target{{Service: "web", ServicePort: 80, TargetPortName: "http", AppPort: 8080, AgentPort: 9901}}}
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	lease := func(labels map[string]string, annotation string) *coordv1.Lease {
		return &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "tp-agent.deployments.web", Namespace: ns, Labels: labels,
			Annotations: map[string]string{RecordAnnotation: annotation}}}
	}
	label := map[string]string{RecordLabel: RecordVersion}
	if got, err := ParseRecord(lease(label, string(raw))); err != nil || !equality.Semantic.DeepEqual(*got, rec) {
		t.Errorf("ParseRecord: %+v %v", got, err)
	}
	for what, l := range map[string]*coordv1.Lease{
		"no label":       lease(nil, string(raw)),
		"other version":  lease(map[string]string{RecordLabel: "v0"}, string(raw)),
		"bad JSON":       lease(label, "{"),
		"no annotation":  lease(label, ""),
		"no targets":     lease(label, `{"agent":`+string(must(json.Marshal(testAgent)))+`,"targets":[]}`),
		"no agent image": lease(label, `{"agent":{},"targets":[]}`),
	} {
		if got, err := ParseRecord(l); err == nil {
			t.Errorf("%s: ParseRecord = %+v, want an error", what, got)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestInjectAfterTheRecordWasLost: a template that keeps tp's annotation while the record
// is gone (a restore that stopped half-way, a hand's kubectl delete) made pods without the
// agent; injecting again writes the record and rolls those pods.
func TestInjectAfterTheRecordWasLost(t *testing.T) {
	dep := deployment("web", appTemplate("web"))
	cs := newClient(dep, service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	tg := resolve(t, cs, ref, "")
	if _, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false); err != nil {
		t.Fatal(err)
	}
	hash := hashOf(t, record(t, cs, ref))
	if err := cs.CoordinationV1().Leases(ns).Delete(ctx, RecordName(ref), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	createPod(t, cs, podOf("web-1", dep.Spec.Template.Labels, nil, replicaSetOf(t, cs, dep)))

	plan, err := Inject(ctx, cs, ref, testAgent, []Target{tg}, false)
	if err != nil || !plan.Changed || plan.AlreadyInjected {
		t.Fatalf("inject: %+v %v", plan, err)
	}
	if h := hashOf(t, record(t, cs, ref)); h != hash {
		t.Errorf("record hash %s, want %s", h, hash)
	}
	if v := getDeployment(t, cs, "web").Spec.Template.Annotations[RestartAnnotation]; !strings.HasPrefix(v, hash+".") {
		t.Errorf("restart annotation %q: the pod without the agent is not rolled", v)
	}
}

// TestInjectASecondServiceOfTheSamePort: a second Service on the port the agent already
// carries changes the record, not the agent: pods that run it are not rolled.
func TestInjectASecondServiceOfTheSamePort(t *testing.T) {
	dep := deployment("web", appTemplate("web"))
	cs := newClient(dep, service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))),
		service("web-public", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))))
	ref := Ref{Namespace: ns, Kind: Deployment, Name: "web"}
	if _, err := Inject(ctx, cs, ref, testAgent, []Target{resolve(t, cs, ref, "web/80")}, false); err != nil {
		t.Fatal(err)
	}
	hash := hashOf(t, record(t, cs, ref))
	createPod(t, cs, podOf("web-1", dep.Spec.Template.Labels, map[string]string{AgentHashAnnotation: hash}, replicaSetOf(t, cs, dep)))
	before := len(writes(cs))
	plan, err := Inject(ctx, cs, ref, testAgent, []Target{resolve(t, cs, ref, "web-public/80")}, false)
	if err != nil || !plan.Changed || plan.AlreadyInjected {
		t.Fatalf("inject: %+v %v", plan, err)
	}
	rec := record(t, cs, ref)
	if len(rec.Targets) != 2 || rec.Targets[1].Service != "web-public" || rec.Targets[1].AgentPort != rec.Targets[0].AgentPort || hashOf(t, rec) != hash {
		t.Errorf("record %+v", rec.Targets)
	}
	if w := writes(cs)[before:]; !slices.Equal(w, []string{"update leases"}) {
		t.Errorf("wrote %v, want the record only", w)
	}
}
