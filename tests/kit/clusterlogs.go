package kit

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote/agentspec"
)

// PrintClusterLogs prints the end of the managers' and the agents' logs, for a failed test:
// the cluster's side of a failure goes with the test's namespace and the next install, so
// a test that is about to fail calls it while they are still there.
func PrintClusterLogs(t testing.TB) {
	cfg, err := clientcmd.BuildConfigFromFlags("", KubeconfigPath())
	if err != nil {
		return
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	logs := func(p corev1.Pod, container string) {
		tail := int64(40)
		b, err := cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: container, TailLines: &tail}).DoRaw(ctx)
		if err == nil {
			t.Logf("the end of the log of %s in pod %s/%s:\n%s", container, p.Namespace, p.Name, b)
		}
	}
	managers, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: deploy.ManagerLabelSelector})
	if err == nil {
		for _, p := range managers.Items {
			logs(p, deploy.ManagerContainer)
		}
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			if c.Name == agentspec.Container {
				logs(p, c.Name)
			}
		}
	}
}
