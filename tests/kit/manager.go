package kit

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/deploy"
)

// WaitManagerPods waits until the default install's manager runs n ready pods of its newest
// revision and no other pod (a stopping one included), and returns when.
func WaitManagerPods(t testing.TB, cs kubernetes.Interface, n int32) time.Time {
	t.Helper()
	WaitFor(t, 3*time.Minute, fmt.Sprintf("%d manager pods of the newest revision, alone", n), func() error {
		dep, err := cs.AppsV1().Deployments(deploy.DefaultNamespace).Get(context.Background(), deploy.ManagerName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s := dep.Status
		if s.ObservedGeneration < dep.Generation || s.UpdatedReplicas != n || s.ReadyReplicas != n || s.Replicas != n {
			return fmt.Errorf("deployment status %+v", s)
		}
		pods, err := cs.CoreV1().Pods(deploy.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: deploy.ManagerLabelSelector})
		if err != nil {
			return err
		}
		if len(pods.Items) != int(n) {
			return fmt.Errorf("manager pods: %s", PodStates(pods.Items))
		}
		return nil
	})
	return time.Now()
}

// RestartManager starts a rollout of the default install's manager, as kubectl rollout
// restart does.
func RestartManager(t testing.TB, cs kubernetes.Interface) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"tp.dev/test-restarted-at":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := cs.AppsV1().Deployments(deploy.DefaultNamespace).Patch(context.Background(), deploy.ManagerName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}
