package intercept

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tpdev/tp/intercept/volume"
	"github.com/tpdev/tp/remote"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func mode(m int32) *int32 { return &m }

func cmVolume(name, cm string, items ...corev1.KeyToPath) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: cm}, Items: items}}}
}

func downwardFile(p, field string) corev1.DownwardAPIVolumeFile {
	return corev1.DownwardAPIVolumeFile{Path: p, FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: field}}
}

// apiAccessVolume is the service-account volume the API server's admission adds to pods.
func apiAccessVolume() corev1.Volume {
	return corev1.Volume{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: mode(0o644),
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: new(int64(3607))}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{downwardFile("namespace", "metadata.namespace")}}},
		},
	}}}
}

func volumePod() *corev1.Pod {
	pod := envPod()
	c := &pod.Spec.Containers[0]
	c.EnvFrom, c.Env = nil, []corev1.EnvVar{{Name: "STAGE", Value: "prod"}}
	cfg := cmVolume("cfg", "cfg", corev1.KeyToPath{Key: "LOG_LEVEL", Path: "conf/level", Mode: mode(0o600)}, corev1.KeyToPath{Key: "URL", Path: "url"})
	cfg.ConfigMap.DefaultMode = mode(0o440)
	gone := cmVolume("gone", "gone")
	gone.ConfigMap.Optional = new(true)
	pod.Spec.Volumes = []corev1.Volume{
		cfg, gone,
		cmVolume("tree", "tree", corev1.KeyToPath{Key: "pa", Path: "prod/a"}, corev1.KeyToPath{Key: "pb", Path: "prod/b/c"}, corev1.KeyToPath{Key: "da", Path: "dev/a"}),
		{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds", DefaultMode: mode(0o400)}}},
		{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			downwardFile("labels", "metadata.labels"),
			downwardFile("annotations", "metadata.annotations"),
			downwardFile("name", "metadata.name"),
			downwardFile("tier", "metadata.labels['tier']"),
			{Path: "cpu_m", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.cpu", Divisor: resource.MustParse("1m")}},
			{Path: "mem", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.memory"}, Mode: mode(0o600)},
		}}}},
		{Name: "vault", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{DefaultMode: mode(0o440), Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "URL", Path: "vault-url"}}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Items: []corev1.KeyToPath{{Key: "TOKEN", Path: "secret/token", Mode: mode(0o400)}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{downwardFile("pod", "metadata.name")}}},
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "vault-token", Audience: "vault", ExpirationSeconds: new(int64(600))}},
		}}}},
		apiAccessVolume(),
		{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "web-data"}}},
		{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log"}}},
	}
	c.VolumeMounts = []corev1.VolumeMount{
		{Name: "cfg", MountPath: "/etc/cfg"},
		{Name: "gone", MountPath: "/etc/gone"},
		{Name: "tree", MountPath: "/etc/stage", SubPathExpr: "$(STAGE)"},
		{Name: "creds", MountPath: "/etc/creds", ReadOnly: true},
		{Name: "creds", MountPath: "/etc/password", SubPath: "PASSWORD"},
		{Name: "podinfo", MountPath: "/etc/podinfo"},
		{Name: "vault", MountPath: "/vault"},
		{Name: "kube-api-access-x7k2p", MountPath: saDir, ReadOnly: true},
		{Name: "cache", MountPath: "/cache"},
		{Name: "data", MountPath: "/data"},
		{Name: "host", MountPath: "/host"},
	}
	return pod
}

func volumeClient() *fakeClient {
	cs := newClient(append(envObjects(),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "tree", Namespace: ns}, Data: map[string]string{"pa": "A", "pb": "B", "da": "D"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: ns}, Data: map[string]string{"ca.crt": "CA PEM"}},
	)...)
	cs.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		create := a.(k8stesting.CreateActionImpl)
		req := create.Object.(*authv1.TokenRequest).DeepCopy()
		if a.GetSubresource() != "token" {
			return false, nil, nil
		}
		req.Status = authv1.TokenRequestStatus{
			Token:               fmt.Sprintf("token of %s for %v, %ds", create.Name, req.Spec.Audiences, *req.Spec.ExpirationSeconds),
			ExpirationTimestamp: metav1.NewTime(time.Now().Add(time.Duration(*req.Spec.ExpirationSeconds) * time.Second)),
		}
		return true, req, nil
	})
	return cs
}

type fileWant struct {
	data string
	mode fs.FileMode
}

func filesOf(tree *volume.Tree) map[string]fileWant {
	out := map[string]fileWant{}
	for _, m := range tree.Mounts {
		for _, f := range m.Files {
			p := m.Path
			if f.Path != "" {
				p += "/" + f.Path
			}
			out[p] = fileWant{string(f.Data), f.Mode}
		}
	}
	return out
}

func TestVolumes(t *testing.T) {
	cs := volumeClient()
	start := time.Now()
	tree, reports, err := Volumes(ctx, cs, volumePod(), "app")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]fileWant{
		"/etc/cfg/conf/level":      {"debug", 0o600}, // items: key to path, the item's mode over defaultMode
		"/etc/cfg/url":             {"http://x/?a=1&b=2", 0o440},
		"/etc/stage/a":             {"A", 0o644}, // subPathExpr $(STAGE): the folder prod
		"/etc/stage/b/c":           {"B", 0o644},
		"/etc/creds/PASSWORD":      {"s3cr3t", 0o400}, // no items: every key
		"/etc/creds/TOKEN":         {"tok", 0o400},
		"/etc/password":            {"s3cr3t", 0o400}, // subPath of one key: the file itself
		"/etc/podinfo/labels":      {"app=\"web\"\ntier=\"front\"", 0o644},
		"/etc/podinfo/annotations": {`example.com/owner="team-a"`, 0o644},
		"/etc/podinfo/name":        {"web-1", 0o644},
		"/etc/podinfo/tier":        {"front", 0o644},
		"/etc/podinfo/cpu_m":       {"500", 0o644},
		"/etc/podinfo/mem":         {"134217728", 0o600},
		"/vault/vault-url":         {"http://x/?a=1&b=2", 0o440},
		"/vault/secret/token":      {"tok", 0o400},
		"/vault/pod":               {"web-1", 0o440},
		"/vault/vault-token":       {"token of web-sa for [vault], 600s", 0o440},
		saDir + "/token":           {"token of web-sa for [], 3607s", 0o644},
		saDir + "/ca.crt":          {"CA PEM", 0o644},
		saDir + "/namespace":       {ns, 0o644},
	}
	got := filesOf(tree)
	for p, w := range want {
		if g, ok := got[p]; !ok || g != w {
			t.Errorf("%s = %+v (there %v), want %+v", p, g, ok, w)
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("unexpected file %s = %+v", p, g)
		}
	}
	mounts := map[string]volume.Mount{}
	for _, m := range tree.Mounts {
		mounts[m.Path] = m
	}
	if m, ok := mounts["/etc/gone"]; !ok || len(m.Files) != 0 || !m.ReadOnly {
		t.Errorf("optional missing ConfigMap: %+v (there %v), want an empty read-only folder", m, ok)
	}
	if m := mounts["/etc/password"]; m.SubPath != "PASSWORD" || !m.ReadOnly {
		t.Errorf("subPath mount %+v", m)
	}
	if m := mounts["/cache"]; !m.Scratch || m.ReadOnly {
		t.Errorf("emptyDir mount %+v, want a writable scratch folder", m)
	}
	for _, p := range []string{"/data", "/host"} {
		if _, ok := mounts[p]; ok {
			t.Errorf("%s is mounted", p)
		}
	}

	byPath := map[string]volume.Report{}
	for _, r := range reports {
		byPath[r.MountPath] = r
	}
	if len(reports) != len(volumePod().Spec.Containers[0].VolumeMounts) {
		t.Errorf("%d reports for %d mounts", len(reports), len(volumePod().Spec.Containers[0].VolumeMounts))
	}
	for p, w := range map[string]struct {
		kind, done string
		warning    bool
	}{
		"/data":      {"persistentVolumeClaim", "not mounted: the data of persistent volume claim web-data stays in the cluster", true},
		"/host":      {"hostPath", "not mounted: host path /var/log", true},
		"/cache":     {"emptyDir", "an empty folder", false},
		"/etc/gone":  {"configMap", "ConfigMap gone does not exist (optional)", false},
		"/etc/stage": {"configMap", "subPath prod", false},
		"/vault":     {"projected", "a token of ServiceAccount web-sa", false},
	} {
		r := byPath[p]
		if r.Kind != w.kind || !strings.Contains(r.Done, w.done) || r.Warning != w.warning {
			t.Errorf("report of %s: %+v, want kind %s, %q, warning %v", p, r, w.kind, w.done, w.warning)
		}
	}

	// The tokens: one request per projection, bound to the pod, with its audience and life.
	var requests []*authv1.TokenRequest
	for _, a := range cs.Actions() {
		if a.GetVerb() == "create" && a.GetSubresource() == "token" {
			if name := a.(k8stesting.CreateActionImpl).Name; name != "web-sa" || a.GetNamespace() != ns {
				t.Errorf("token requested for %s in %s, want web-sa in %s", name, a.GetNamespace(), ns)
			}
			requests = append(requests, a.(k8stesting.CreateActionImpl).Object.(*authv1.TokenRequest))
		}
	}
	if len(requests) != 2 {
		t.Fatalf("%d token requests, want 2", len(requests))
	}
	for _, r := range requests {
		if b := r.Spec.BoundObjectRef; b == nil || b.Kind != "Pod" || b.Name != "web-1" || b.UID != "pod-uid" {
			t.Errorf("token not bound to the pod: %+v", b)
		}
	}
	if s := requests[0].Spec; len(s.Audiences) != 1 || s.Audiences[0] != "vault" || *s.ExpirationSeconds != 600 {
		t.Errorf("vault token request %+v", s)
	}
	// Renewed at 80% of the shortest life.
	if r := tree.Renew.Sub(start); r < 470*time.Second || r > 490*time.Second {
		t.Errorf("renew in %v, want 480s", r)
	}
}

// The service-account mount the API server adds to a pod with no ServiceAccount named.
func TestVolumesDefaultServiceAccount(t *testing.T) {
	cs := volumeClient()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "job-1", Namespace: ns, UID: "u1"},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{apiAccessVolume()},
			Containers: []corev1.Container{{Name: "job", VolumeMounts: []corev1.VolumeMount{{Name: "kube-api-access-x7k2p", MountPath: saDir, ReadOnly: true}}}}}}
	tree, _, err := Volumes(ctx, cs, pod, "")
	if err != nil {
		t.Fatal(err)
	}
	got := filesOf(tree)
	for p, w := range map[string]string{"token": "token of default for [], 3607s", "ca.crt": "CA PEM", "namespace": ns} {
		if got[saDir+"/"+p].data != w {
			t.Errorf("%s = %q, want %q", p, got[saDir+"/"+p].data, w)
		}
	}
	// Written under a root, as tp run without a mount namespace does, and rewritten when the
	// CA changes.
	root := t.TempDir()
	if err := tree.WriteTo(root); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, filepath.FromSlash(saDir))
	if b, err := os.ReadFile(filepath.Join(dir, "ca.crt")); err != nil || string(b) != "CA PEM" {
		t.Errorf("ca.crt = %q (%v)", b, err)
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: ns}, Data: map[string]string{"ca.crt": "NEW CA"}}
	if _, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	tree, _, err = Volumes(ctx, cs, pod, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.WriteTo(root); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "ca.crt")); err != nil || string(b) != "NEW CA" {
		t.Errorf("ca.crt after the update = %q (%v)", b, err)
	}
	if now, _ := os.Readlink(filepath.Join(dir, "..data")); now == old || !strings.HasPrefix(now, "..20") {
		t.Errorf("..data -> %q, was %q: want a new version", now, old)
	}
	if _, err := os.Stat(filepath.Join(dir, old)); !os.IsNotExist(err) {
		t.Errorf("the old version %s is still there (%v)", old, err)
	}
	if err := volume.Remove(root); err != nil {
		t.Error(err)
	}
}

func TestVolumesErrors(t *testing.T) {
	withVolume := func(v corev1.Volume, m corev1.VolumeMount) *corev1.Pod {
		pod := volumePod()
		pod.Spec.Volumes = []corev1.Volume{v}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{m}
		return pod
	}
	cs := volumeClient()
	_, _, err := Volumes(ctx, cs, withVolume(cmVolume("x", "nope"), corev1.VolumeMount{Name: "x", MountPath: "/x"}), "")
	wantKind(t, err, remote.Cluster, `the ConfigMap "nope" in namespace "shop", which pod "web-1"'s volumes reads, does not exist`)
	_, _, err = Volumes(ctx, cs, withVolume(cmVolume("x", "cfg", corev1.KeyToPath{Key: "NOPE", Path: "p"}), corev1.VolumeMount{Name: "x", MountPath: "/x"}), "")
	wantKind(t, err, remote.Cluster, `ConfigMap "cfg" in namespace "shop" has no key "NOPE"`)
	opt := cmVolume("x", "cfg", corev1.KeyToPath{Key: "NOPE", Path: "p"})
	opt.ConfigMap.Optional = new(true)
	if tree, _, err := Volumes(ctx, cs, withVolume(opt, corev1.VolumeMount{Name: "x", MountPath: "/x"}), ""); err != nil || len(tree.Mounts) != 1 || len(tree.Mounts[0].Files) != 0 {
		t.Errorf("optional missing key: %+v, %v; want an empty mount", tree, err)
	}
	// An optional reference read first does not excuse a required one.
	twice := withVolume(opt, corev1.VolumeMount{Name: "x", MountPath: "/x"})
	opt.Name, opt.ConfigMap.Name, opt.ConfigMap.Items = "o", "nope", nil
	twice.Spec.Volumes = []corev1.Volume{opt, cmVolume("r", "nope")}
	twice.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "o", MountPath: "/o"}, {Name: "r", MountPath: "/r"}}
	_, _, err = Volumes(ctx, cs, twice, "")
	wantKind(t, err, remote.Cluster, `the ConfigMap "nope" in namespace "shop"`, "does not exist")
	_, _, err = Volumes(ctx, cs, withVolume(cmVolume("x", "cfg"), corev1.VolumeMount{Name: "y", MountPath: "/x"}), "")
	wantKind(t, err, remote.Cluster, `mounts volume "y", which the pod does not have`)
	_, _, err = Volumes(ctx, cs, withVolume(cmVolume("x", "cfg"), corev1.VolumeMount{Name: "x", MountPath: "/x", SubPath: "../etc"}), "")
	wantKind(t, err, remote.Usage, `subPath "../etc" of mount /x leaves its volume`)

	forbid(cs, "get", "secrets")
	_, _, err = Volumes(ctx, cs, withVolume(corev1.Volume{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds"}}},
		corev1.VolumeMount{Name: "s", MountPath: "/s"}), "")
	wantKind(t, err, remote.Access, "no permission to get secrets creds in namespace shop", "tp run --as needs", "kubectl auth can-i get secrets -n shop")

	forbid(cs, "create", "serviceaccounts")
	_, _, err = Volumes(ctx, cs, withVolume(apiAccessVolume(), corev1.VolumeMount{Name: "kube-api-access-x7k2p", MountPath: saDir}), "")
	wantKind(t, err, remote.Access, "no permission to create serviceaccounts/token web-sa in namespace shop", "kubectl auth can-i create serviceaccounts/token -n shop")
}
