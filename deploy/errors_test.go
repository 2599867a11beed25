package deploy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func wantKind(t *testing.T, err error, kind remote.Kind, wants ...string) *remote.Error {
	t.Helper()
	e, ok := errors.AsType[*remote.Error](err)
	if !ok {
		t.Fatalf("got %T %v, want an *remote.Error of kind %s", err, err, kind)
	}
	if e.Kind != kind {
		t.Errorf("kind %s, want %s: %v", e.Kind, kind, err)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q does not say %q", err.Error(), w)
		}
	}
	return e
}

// The first request of every operation meets the real transport failures.
func TestUnreachableAPIServer(t *testing.T) {
	ctx := context.Background()
	opts := Options{Namespace: "tp-x", Image: testImage}

	t.Run("ConnectionRefused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		cfg := &rest.Config{Host: "https://" + addr}
		_, err = Install(ctx, cfg, opts)
		wantKind(t, err, remote.Unreachable, "cannot reach the Kubernetes API at https://"+addr+": ", "connection refused",
			"; check your kubeconfig and context (kubectl cluster-info)")
		wantKind(t, Uninstall(ctx, cfg, opts), remote.Unreachable, "connection refused")
		_, err = Status(ctx, cfg, "")
		wantKind(t, err, remote.Unreachable, "connection refused")
	})
	t.Run("UntrustedCertificate", func(t *testing.T) {
		srv := httptest.NewTLSServer(http.NotFoundHandler())
		defer srv.Close()
		_, err := Install(ctx, &rest.Config{Host: srv.URL}, opts)
		wantKind(t, err, remote.Unreachable, "cannot reach the Kubernetes API at "+srv.URL, "x509", "kubectl cluster-info")
	})
	t.Run("NoAnswer", func(t *testing.T) {
		hang := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(hang)
		cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = reachFunc(cs.Discovery().RESTClient(), srv.URL, 200*time.Millisecond)(ctx)
		wantKind(t, err, remote.Unreachable, "cannot reach the Kubernetes API at "+srv.URL+": no answer within 200ms")
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("took %s", took)
		}
	})
	t.Run("NoSuchHost", func(t *testing.T) {
		err := &url.Error{Op: "Get", URL: "https://k8s.nowhere.invalid/version", Err: &net.OpError{
			Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "k8s.nowhere.invalid", IsNotFound: true}}}
		got := APIError(Request{Host: "https://k8s.nowhere.invalid", Action: "install tp", What: "GET /version", Needs: installNeeds}, err)
		e := wantKind(t, got, remote.Unreachable, "cannot reach the Kubernetes API at https://k8s.nowhere.invalid: dial tcp: lookup k8s.nowhere.invalid: no such host")
		if _, ok := errors.AsType[*net.DNSError](e); !ok {
			t.Error("the cause is not kept for errors.As")
		}
	})
}

func TestForbiddenNamesWhatIsMissing(t *testing.T) {
	clusterScope := apierrors.NewForbidden(schema.GroupResource{Group: "rbac.authorization.k8s.io", Resource: "clusterroles"}, "tp-manager-tp-system",
		errors.New(`User "alice" cannot patch resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope`))
	err := APIError(Request{Host: "https://k8s", Action: "install tp", What: "apply ClusterRole tp-manager-tp-system", Needs: installNeeds}, fmt.Errorf("apply ClusterRole tp-manager-tp-system: %w", clusterScope))
	e := wantKind(t, err, remote.Access,
		"no permission to patch clusterroles.rbac.authorization.k8s.io at the cluster scope (apply ClusterRole tp-manager-tp-system): ",
		`User "alice" cannot patch`,
		`a cluster admin must install tp, or grant "alice" the rights to apply namespaces`,
		"check with: kubectl auth can-i patch clusterroles.rbac.authorization.k8s.io")
	if strings.Count(err.Error(), "apply ClusterRole") != 1 {
		t.Errorf("the object is named more than once: %v", err)
	}
	if !apierrors.IsForbidden(e) || !e.Kind.UserFault() {
		t.Error("the API error is not kept as the cause, or the category is not the user's")
	}

	namespaced := apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "tp-manager",
		errors.New(`User "bob" cannot patch resource "deployments" in API group "apps" in the namespace "tp-system"`))
	err = APIError(Request{Host: "https://k8s", Action: "uninstall tp", What: "delete Deployment tp-system/tp-manager", Needs: uninstallNeeds}, namespaced)
	wantKind(t, err, remote.Access, `no permission to patch deployments.apps in namespace "tp-system"`,
		"a cluster admin must uninstall tp", "kubectl auth can-i patch deployments.apps -n tp-system")

	escalation := apierrors.NewForbidden(schema.GroupResource{Group: "rbac.authorization.k8s.io", Resource: "clusterroles"}, "tp-manager-x",
		errors.New("user \"carol\" (groups=[\"devs\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}"))
	err = APIError(Request{Host: "https://k8s", Action: "install tp", What: "apply ClusterRole tp-manager-x", Needs: installNeeds}, escalation)
	wantKind(t, err, remote.Access, "read-only rights you do not hold yourself", "a cluster admin must install tp")

	quota := apierrors.NewForbidden(schema.GroupResource{Resource: "services"}, "tp-manager", errors.New("exceeded quota: q, requested: services=1"))
	err = APIError(Request{Host: "https://k8s", Action: "install tp", What: "apply Service tp-system/tp-manager", Needs: installNeeds}, quota)
	wantKind(t, err, remote.Cluster, "the cluster refused to install tp (apply Service tp-system/tp-manager)", "exceeded quota", "ask a cluster admin")

	terminating := &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: 403, Reason: metav1.StatusReasonForbidden,
		Message: `services "tp-manager" is forbidden: unable to create new content in namespace tp-system because it is being terminated`,
		Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: corev1.NamespaceTerminatingCause}}},
	}}
	err = APIError(Request{Host: "https://k8s", Action: "install tp", What: "apply Service tp-system/tp-manager", Needs: installNeeds}, terminating)
	wantKind(t, err, remote.Cluster, "the namespace is being deleted", "wait until the namespace is gone")
}

func TestUnauthorized(t *testing.T) {
	err := APIError(Request{Host: "https://k8s:6443", Action: "install tp", What: "GET /version", Needs: installNeeds}, apierrors.NewUnauthorized("Unauthorized"))
	wantKind(t, err, remote.Access, "the Kubernetes API at https://k8s:6443 rejected your credentials (GET /version)", "log in again")
}

func TestOtherAPIErrorsKeepTheirCause(t *testing.T) {
	conflict := apierrors.NewConflict(schema.GroupResource{Resource: "services"}, "tp-manager", errors.New("boom"))
	err := APIError(Request{Host: "https://k8s", Action: "install tp", What: "apply Service tp-system/tp-manager", Needs: installNeeds}, conflict)
	if remote.KindOf(err) != remote.Failed || !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "install tp: apply Service tp-system/tp-manager: ") {
		t.Fatalf("got %v (%s)", err, remote.KindOf(err))
	}
}
