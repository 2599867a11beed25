// Package kit is what the e2e suites and the benchmarks share: the test cluster's
// kubeconfig, fresh namespaces, the test workload, and the laptop (package doc continues
// in laptop.go).
package kit

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// WorkloadImage is the test workload's image, loaded by make cluster-up.
const WorkloadImage = "localhost/tp/workload:test"

// Workload ports: in the pod, and on its Service.
const (
	HTTPPort    = 8080
	HTTPSPort   = 8443
	TCPEchoPort = 9000
	UDPEchoPort = 9001
)

// KubeconfigPath is TP_E2E_KUBECONFIG, else the checkout's .cluster/kubeconfig.
func KubeconfigPath() string {
	if p := os.Getenv("TP_E2E_KUBECONFIG"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", ".cluster", "kubeconfig")
}

// RESTConfig reads the cluster's admin config; dial, when set, is how connections are made
// (e.g. from the laptop namespace).
func RESTConfig(t testing.TB, dial func(ctx context.Context, network, address string) (net.Conn, error)) *rest.Config {
	t.Helper()
	path := KubeconfigPath()
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("no test cluster (%v): run make cluster-up first", err)
	}
	cfg.Dial = dial
	return cfg
}

func Clientset(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(RESTConfig(t, nil))
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		t.Fatalf("test cluster not ready (%v): run make cluster-up", err)
	}
	return cs
}

// Namespace makes a fresh namespace for one test and deletes it afterwards.
func Namespace(t testing.TB, cs kubernetes.Interface, prefix string) string {
	t.Helper()
	ctx := context.Background()
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	// Pods need the namespace's default service account, which the controller-manager adds.
	WaitFor(t, 30*time.Second, "service account default in "+ns.Name, func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	return ns.Name
}

// Workload is a deployed test workload: one pod behind a Service of the same name.
type Workload struct {
	Namespace, Name string
	Pod             string
	PodIP           string
	ClusterIP       string
}

// DeployWorkload runs the test workload (HTTP, HTTPS, TCP echo, UDP echo) as a Deployment
// with a Service and waits for its pod to be ready. Service ports: http 80, https 443,
// tcp-echo 9000, udp-echo 9001.
func DeployWorkload(t testing.TB, cs kubernetes.Interface, namespace, name string) Workload {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": name}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: new(int64(1)),
					Containers: []corev1.Container{{
						Name:            "workload",
						Image:           WorkloadImage,
						ImagePullPolicy: corev1.PullNever,
						Args: []string{
							fmt.Sprintf("-http=:%d", HTTPPort), fmt.Sprintf("-https=:%d", HTTPSPort),
							fmt.Sprintf("-tcp-echo=:%d", TCPEchoPort), fmt.Sprintf("-udp-echo=:%d", UDPEchoPort),
						},
						Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
						Ports: []corev1.ContainerPort{
							{Name: "http", ContainerPort: HTTPPort},
							{Name: "https", ContainerPort: HTTPSPort},
							{Name: "tcp-echo", ContainerPort: TCPEchoPort},
							{Name: "udp-echo", ContainerPort: UDPEchoPort, Protocol: corev1.ProtocolUDP},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("deploy %s: %v", name, err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
				{Name: "https", Port: 443, TargetPort: intstr.FromString("https")},
				{Name: "tcp-echo", Port: TCPEchoPort, TargetPort: intstr.FromString("tcp-echo")},
				{Name: "udp-echo", Port: UDPEchoPort, TargetPort: intstr.FromString("udp-echo"), Protocol: corev1.ProtocolUDP},
			},
		},
	}
	created, err := cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("service %s: %v", name, err)
	}
	w := Workload{Namespace: namespace, Name: name, ClusterIP: created.Spec.ClusterIP}
	WaitFor(t, 60*time.Second, "pod of "+name+" ready", func() error {
		pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
					w.Pod, w.PodIP = p.Name, p.Status.PodIP
					return nil
				}
			}
		}
		return fmt.Errorf("%d pods, none ready: %s", len(pods.Items), PodStates(pods.Items))
	})
	// The Service answers once kube-proxy has its endpoint: wait for the EndpointSlice.
	WaitFor(t, 30*time.Second, "endpoints of "+name, func() error {
		eps, err := cs.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + name})
		if err != nil {
			return err
		}
		for _, s := range eps.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					return nil
				}
			}
		}
		return fmt.Errorf("no ready endpoint")
	})
	// ...and kube-proxy has programmed it (the node is the host, so the host can tell).
	WaitFor(t, 30*time.Second, "kube-proxy rules for "+name, func() error {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(w.ClusterIP, "80"), time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
	return w
}

func PodStates(pods []corev1.Pod) string {
	s := ""
	for _, p := range pods {
		s += fmt.Sprintf("%s=%s ", p.Name, p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Waiting != nil {
				s += fmt.Sprintf("(%s: %s) ", c.State.Waiting.Reason, c.State.Waiting.Message)
			}
		}
	}
	return s
}

// WaitFor polls check until it returns nil, failing the test with the last error after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
