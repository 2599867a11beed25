package intercept

import (
	"errors"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/agentspec"
)

// The kubelet's own cases (third_party/forked/golang/expansion/expand_test.go).
func TestExpand(t *testing.T) {
	vars := map[string]string{"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": ""}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	for in, want := range map[string]string{
		"$(VAR_A)":                   "A",
		"$(VAR_A)-$(VAR_A)":          "A-A",
		"___$(VAR_B)___":             "___B___",
		"$(VAR_A)_$(VAR_B)_$(VAR_C)": "A_B_C",
		"$$(VAR_B)_$(VAR_A)":         "$(VAR_B)_A",
		"$$(VAR_A)_$$(VAR_B)":        "$(VAR_A)_$(VAR_B)",
		"f000-$$VAR_A":               "f000-$VAR_A",
		`foo\$(VAR_C)bar`:            `foo\Cbar`,
		"$(VAR_A$(VAR_B))":           "$(VAR_A$(VAR_B))",
		"$(VAR_A$(VAR_B)":            "$(VAR_A$(VAR_B)",
		"$(VAR_REF)":                 "$(VAR_A)",
		"foo$(VAR_EMPTY)bar":         "foobar",
		"foo$(VAR_Awhoops!":          "foo$(VAR_Awhoops!",
		"$?_boo_$!":                  "$?_boo_$!",
		"$VAR_A":                     "$VAR_A",
		"$(VAR_DNE)":                 "$(VAR_DNE)",
		"$$$$$$(BIG_MONEY)":          "$$$(BIG_MONEY)",
		"$$$$$$(VAR_A)":              "$$$(VAR_A)",
		"$$$$$$$(GOOD_ODDS)":         "$$$$(GOOD_ODDS)",
		"$$$$$$$(VAR_A)":             "$$$A",
		"${VAR_A}":                   "${VAR_A}",
		"$(VAR_B)_______$(A":         "B_______$(A",
		"$(VAR_C)_______$(":          "C_______$(",
		"$(VAR_A)foobarzab$":         "Afoobarzab$",
		"--$($($($($--":              "--$($($($($--",
		"$(foo$$var)":                "$(foo$$var)",
		"\n":                         "\n",
		// The kubelet turns the byte after a lone $ into a rune.
		"$é": "$\u00c3\xa9",
	} {
		if got := expand(in, lookup); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func envPod() *corev1.Pod {
	cpu500, mem128 := resource.MustParse("500m"), resource.MustParse("128Mi")
	fieldRef := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	resRef := func(name, res, divisor string) corev1.EnvVar {
		sel := &corev1.ResourceFieldSelector{Resource: res}
		if divisor != "" {
			sel.Divisor = resource.MustParse(divisor)
		}
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: sel}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns, UID: "pod-uid",
			Labels:      map[string]string{"app": "web", "tier": "front"},
			Annotations: map[string]string{"example.com/owner": "team-a"}},
		Spec: corev1.PodSpec{
			NodeName: "node-1", ServiceAccountName: "web-sa",
			Containers: []corev1.Container{{Name: "app", Image: "x",
				Resources: corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{corev1.ResourceCPU: cpu500, corev1.ResourceMemory: mem128},
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
				},
				EnvFrom: []corev1.EnvFromSource{
					{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
					{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}}},
					{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Optional: new(true)}},
					{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Optional: new(true)}},
				},
				Env: []corev1.EnvVar{
					{Name: "PLAIN", Value: "x y"},
					{Name: "EMPTY"},
					{Name: "LEVEL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "LOG_LEVEL"}}},
					{Name: "PASS", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "PASSWORD"}}},
					{Name: "OPT_KEY", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "NOPE", Optional: new(true)}}},
					{Name: "OPT_SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "K", Optional: new(true)}}},
					fieldRef("POD", "metadata.name"),
					fieldRef("NS", "metadata.namespace"),
					fieldRef("UID", "metadata.uid"),
					fieldRef("TIER", "metadata.labels['tier']"),
					fieldRef("NO_LABEL", "metadata.labels['nope']"),
					fieldRef("OWNER", "metadata.annotations['example.com/owner']"),
					fieldRef("NODE", "spec.nodeName"),
					fieldRef("SA", "spec.serviceAccountName"),
					fieldRef("HOST_IP", "status.hostIP"),
					fieldRef("POD_IP", "status.podIP"),
					fieldRef("POD_IPS", "status.podIPs"),
					resRef("CPU_M", "limits.cpu", "1m"),
					resRef("CPU", "limits.cpu", ""),
					resRef("CPU_REQ", "requests.cpu", ""),
					resRef("MEM_MI", "limits.memory", "1Mi"),
					resRef("DISK_GI", "limits.ephemeral-storage", "1Gi"), // no limit: the node's allocatable
					resRef("MEM_REQ", "requests.memory", ""),             // no request: 0
					{Name: "EXPANDED", Value: "$(PLAIN)|$(CFG_LOG_LEVEL)|$(UNKNOWN)|$$(PLAIN)|$(LATER)|$(WEB_SERVICE_HOST)"},
					{Name: "LATER", Value: "late"},
					{Name: "PASSWORD", Value: "override"},
				},
			}},
		},
		Status: corev1.PodStatus{
			HostIP: "10.250.0.1", HostIPs: []corev1.HostIP{{IP: "10.250.0.1"}},
			PodIP: "10.244.0.7", PodIPs: []corev1.PodIP{{IP: "10.244.0.7"}, {IP: "fd00::7"}},
		},
	}
}

func envObjects() []runtime.Object {
	return []runtime.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: ns},
			Data: map[string]string{"LOG_LEVEL": "debug", "URL": "http://x/?a=1&b=2", "dotted.key": "v"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: ns},
			Data: map[string][]byte{"PASSWORD": []byte("s3cr3t"), "TOKEN": []byte("tok")}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
			Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse("10Gi")}}},
		service("web", map[string]string{"app": "web"}, svcPort("http", 80, intstr.FromString("http"))),
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "headless", Namespace: ns},
			Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Port: 80}}}},
	}
}

func envClient() *fakeClient { return newClient(envObjects()...) }

func TestEnv(t *testing.T) {
	cs := envClient()
	vars, err := Env(ctx, cs, envPod(), "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	var order []string
	for _, v := range vars {
		if _, dup := got[v.Name]; dup {
			t.Errorf("%s twice", v.Name)
		}
		got[v.Name] = v.Value
		order = append(order, v.Name)
	}
	want := map[string]string{
		"CFG_LOG_LEVEL": "debug", "CFG_URL": "http://x/?a=1&b=2", "CFG_dotted.key": "v",
		"PASSWORD": "override", "TOKEN": "tok",
		"PLAIN": "x y", "EMPTY": "", "LEVEL": "debug", "PASS": "s3cr3t",
		"POD": "web-1", "NS": ns, "UID": "pod-uid", "TIER": "front", "NO_LABEL": "", "OWNER": "team-a",
		"NODE": "node-1", "SA": "web-sa", "HOST_IP": "10.250.0.1", "POD_IP": "10.244.0.7", "POD_IPS": "10.244.0.7,fd00::7",
		"CPU_M": "500", "CPU": "1", "CPU_REQ": "1", "MEM_MI": "128", "DISK_GI": "10", "MEM_REQ": "0",
		"EXPANDED": "x y|debug|$(UNKNOWN)|$(PLAIN)|$(LATER)|10.96.0.20",
		"LATER":    "late",
		// service links: the namespace's Services with a cluster IP, and the API server's
		"WEB_SERVICE_HOST": "10.96.0.20", "WEB_SERVICE_PORT": "80", "WEB_SERVICE_PORT_HTTP": "80",
		"WEB_PORT": "tcp://10.96.0.20:80", "WEB_PORT_80_TCP": "tcp://10.96.0.20:80", "WEB_PORT_80_TCP_PROTO": "tcp",
		"WEB_PORT_80_TCP_PORT": "80", "WEB_PORT_80_TCP_ADDR": "10.96.0.20",
		"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "KUBERNETES_SERVICE_PORT_HTTPS": "443",
		"KUBERNETES_PORT": "tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_PROTO": "tcp", "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %q (set %v), want %q", k, g, ok, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s=%q", k, got[k])
		}
	}
	// envFrom first, in order; a later definition keeps the first place.
	if !slices.Equal(order[:6], []string{"CFG_LOG_LEVEL", "CFG_URL", "CFG_dotted.key", "PASSWORD", "TOKEN", "PLAIN"}) {
		t.Errorf("order %v", order[:6])
	}
	if order[len(order)-1] != "WEB_SERVICE_PORT_HTTP" || vars[len(vars)-1].Source != "service link" {
		t.Errorf("service links not last: %v", vars[len(vars)-1])
	}
	for _, v := range vars {
		if v.Name == "PASS" && v.Source != "secret creds key PASSWORD" {
			t.Errorf("source of PASS: %q", v.Source)
		}
	}

	// Without service links only the API server's Service is there.
	pod := envPod()
	pod.Spec.EnableServiceLinks = new(false)
	vars, err = Env(ctx, cs, pod, "app")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vars {
		if v.Name == "WEB_SERVICE_HOST" {
			t.Error("service links despite enableServiceLinks: false")
		}
		if v.Name == "EXPANDED" && v.Value != "x y|debug|$(UNKNOWN)|$(PLAIN)|$(LATER)|$(WEB_SERVICE_HOST)" {
			t.Errorf("EXPANDED=%q", v.Value)
		}
	}
}

func TestEnvErrors(t *testing.T) {
	withEnv := func(e corev1.EnvVar) *corev1.Pod {
		p := envPod()
		p.Spec.Containers[0].EnvFrom = nil
		p.Spec.Containers[0].Env = []corev1.EnvVar{e}
		return p
	}
	cmKey := func(name, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}}}
	}
	secretKey := func(name, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}}}
	}
	cs := envClient()
	_, err := Env(ctx, cs, withEnv(cmKey("gone", "K")), "")
	wantKind(t, err, remote.Cluster, `ConfigMap "gone" in namespace "shop"`, "does not exist")
	_, err = Env(ctx, cs, withEnv(cmKey("cfg", "NOPE")), "")
	wantKind(t, err, remote.Cluster, `has no key "NOPE"`)
	_, err = Env(ctx, cs, withEnv(secretKey("creds", "NOPE")), "")
	wantKind(t, err, remote.Cluster, `Secret "creds" in namespace "shop" has no key "NOPE"`)
	_, err = Env(ctx, cs, withEnv(corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.hostname"}}}), "")
	wantKind(t, err, remote.Usage, `unsupported fieldPath "spec.hostname"`)
	_, err = Env(ctx, cs, envPod(), "sidecar")
	wantKind(t, err, remote.Usage, `pod "web-1" has no container "sidecar"`, "app")

	forbid(cs, "get", "secrets")
	_, err = Env(ctx, cs, withEnv(secretKey("creds", "PASSWORD")), "")
	wantKind(t, err, remote.Access, "no permission to get secrets creds in namespace shop")

	// A missing limit means the node's allocatable; a user who may not read nodes is told.
	cs = envClient()
	forbid(cs, "get", "nodes")
	_, err = Env(ctx, cs, withEnv(corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.ephemeral-storage"}}}), "")
	wantKind(t, err, remote.Access, "no ephemeral-storage limit", "node's allocatable", "set the limit on the workload")
	// The API server's Service is optional to read.
	forbid(cs, "get", "services")
	if _, err := Env(ctx, cs, withEnv(corev1.EnvVar{Name: "X", Value: "y"}), ""); err != nil {
		t.Errorf("forbidden default/kubernetes: %v", err)
	}
}

func TestEnvDefaultContainer(t *testing.T) {
	pod := envPod()
	pod.Spec.Containers[0].EnvFrom = nil
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "WHO", Value: "app"}}
	pod.Spec.Containers = append(pod.Spec.Containers,
		corev1.Container{Name: agentspec.Container, Env: []corev1.EnvVar{{Name: "WHO", Value: "agent"}}})
	cs := envClient()
	who := func(p *corev1.Pod, c string) string {
		t.Helper()
		vars, err := Env(ctx, cs, p, c)
		if err != nil {
			t.Fatal(err)
		}
		return vars[0].Value
	}
	if w := who(pod, ""); w != "app" {
		t.Errorf("default container: %s (the agent does not count)", w)
	}
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "side", Env: []corev1.EnvVar{{Name: "WHO", Value: "side"}}})
	_, err := Env(ctx, cs, pod, "")
	wantKind(t, err, remote.Usage, "which one?", "app, side")
	pod.Annotations[DefaultContainerAnnotation] = "side"
	if w := who(pod, ""); w != "side" {
		t.Errorf("annotated default: %s", w)
	}
}

func TestPodOf(t *testing.T) {
	tmpl := appTemplate("web")
	pod := func(name string, ready bool, age time.Duration) *corev1.Pod {
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: tmpl.Labels, CreationTimestamp: metav1.NewTime(time.Now().Add(-age))},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
		}
	}
	cs := newClient(deployment("web", tmpl), pod("web-old", true, time.Hour), pod("web-new", true, time.Minute), pod("web-starting", false, 0))
	p, err := PodOf(ctx, cs, Ref{Namespace: ns, Kind: Deployment, Name: "web"})
	if err != nil || p.Name != "web-new" {
		t.Errorf("PodOf: %v %v", p, err)
	}

	cs = newClient(deployment("web", tmpl), pod("web-starting", false, 0))
	_, err = PodOf(ctx, cs, Ref{Namespace: ns, Kind: Deployment, Name: "web"})
	wantKind(t, err, remote.Cluster, `no pod of Deployment "web"`, "web-starting: Running")
	if !errors.Is(err, ErrNoReadyPod) {
		t.Error("not ErrNoReadyPod")
	}
	cs = newClient(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: tmpl}})
	_, err = PodOf(ctx, cs, Ref{Namespace: ns, Kind: Deployment, Name: "web"})
	wantKind(t, err, remote.Usage, "has no pods", "scaled to zero")
}
