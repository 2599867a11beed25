package client

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tpdev/tp/intercept"
)

// The files of --as's container are under the root, follow a ConfigMap's update and the
// pod's replacement, and are gone after Close; a volume tp does not write is reported, not
// skipped.
func TestPodFilesFollowTheirConfigMap(t *testing.T) {
	labels := map[string]string{"app": "web"}
	ready := corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	podSpec := corev1.PodSpec{
		Volumes: []corev1.Volume{
			{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web"}}}},
			{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "web-data"}}},
			{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
		},
		Containers: []corev1.Container{{Name: "app", VolumeMounts: []corev1.VolumeMount{
			{Name: "config", MountPath: "/etc/web"}, {Name: "data", MountPath: "/var/lib/web"}, {Name: "info", MountPath: "/etc/info"}}}},
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", ResourceVersion: "1"}, Data: map[string]string{"level": "debug"}}
	cs := fake.NewClientset(
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1", Labels: labels, UID: "uid-1"}, Status: ready, Spec: podSpec},
		cm,
	)
	var msgs bytes.Buffer
	f, err := writePodFiles(t.Context(), &msgs, cs, intercept.Ref{Namespace: "ns", Kind: intercept.Deployment, Name: "web"}, nil, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(f.Root, "etc", "web", "level")
	if b, err := os.ReadFile(file); err != nil || string(b) != "debug" {
		t.Fatalf("%s: %q, %v", file, b, err)
	}
	for _, want := range []string{"$TP_ROOT=" + f.Root, "/etc/web (configMap config)", "! /var/lib/web (persistentVolumeClaim data)"} {
		if !strings.Contains(msgs.String(), want) {
			t.Errorf("no %q in what tp says:\n%s", want, msgs.String())
		}
	}
	cm = cm.DeepCopy()
	cm.Data["level"], cm.ResourceVersion = "info", "2"
	if _, err := cs.CoreV1().ConfigMaps("ns").Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * podFilesPoll)
	for {
		if b, _ := os.ReadFile(file); string(b) == "info" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ConfigMap's update did not reach %s within %s", file, 3*podFilesPoll)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A rollout: the pod goes, another comes. Its tokens were bound to the old pod, so the
	// files become the new pod's.
	if err := cs.CoreV1().Pods("ns").Delete(t.Context(), "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("ns").Create(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-2", Labels: labels, UID: "uid-2"},
		Status: ready, Spec: podSpec}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(f.Root, "etc", "info", "name")
	deadline = time.Now().Add(3 * podFilesPoll)
	for {
		if b, _ := os.ReadFile(name); string(b) == "web-2" {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(name)
			t.Fatalf("%s is %q: the replaced pod's files were not the new pod's within %s", name, b, 3*podFilesPoll)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.Root); !os.IsNotExist(err) {
		t.Errorf("%s is still there after Close: %v", f.Root, err)
	}
}

// A root whose tp is gone (killed before it could clean up) is removed by the next; those of
// running tps, and other folders, are left.
func TestSweepRootsOfDeadTps(t *testing.T) {
	dir := t.TempDir()
	dead, mine, running, other := rootPrefix+"999999999-a", rootPrefix+strconv.Itoa(os.Getpid())+"-b", rootPrefix+"1-c", "tp-root-x"
	for _, name := range []string{dead, mine, running, other} {
		if err := os.MkdirAll(filepath.Join(dir, name, "etc", "web"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A read-only folder, as a read-only mount leaves one.
	if err := os.Chmod(filepath.Join(dir, dead, "etc"), 0o555); err != nil {
		t.Fatal(err)
	}
	sweepRoots(dir, slog.New(slog.DiscardHandler))
	for name, want := range map[string]bool{dead: false, mine: true, running: true, other: true} {
		if _, err := os.Stat(filepath.Join(dir, name)); (err == nil) != want {
			t.Errorf("%s: there %v after the sweep, want %v", name, err == nil, want)
		}
	}
}
