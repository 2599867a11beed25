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

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func wantCategory(t *testing.T, err error, cat Category, wants ...string) *Error {
	t.Helper()
	e, ok := errors.AsType[*Error](err)
	if !ok {
		t.Fatalf("got %T %v, want an *Error of category %s", err, err, cat)
	}
	if e.Category != cat {
		t.Errorf("category %s, want %s: %v", e.Category, cat, err)
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
		wantCategory(t, err, Unreachable, "cannot reach the Kubernetes API at https://"+addr+": ", "connection refused",
			"; check your kubeconfig and context (kubectl cluster-info)")
		wantCategory(t, Uninstall(ctx, cfg, opts), Unreachable, "connection refused")
		_, err = Status(ctx, cfg, "")
		wantCategory(t, err, Unreachable, "connection refused")
	})
	t.Run("UntrustedCertificate", func(t *testing.T) {
		srv := httptest.NewTLSServer(http.NotFoundHandler())
		defer srv.Close()
		_, err := Install(ctx, &rest.Config{Host: srv.URL}, opts)
		wantCategory(t, err, Unreachable, "cannot reach the Kubernetes API at "+srv.URL, "x509", "kubectl cluster-info")
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
		wantCategory(t, err, Unreachable, "cannot reach the Kubernetes API at "+srv.URL+": no answer within 200ms")
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("took %s", took)
		}
	})
	t.Run("NoSuchHost", func(t *testing.T) {
		err := &url.Error{Op: "Get", URL: "https://k8s.nowhere.invalid/version", Err: &net.OpError{
			Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "k8s.nowhere.invalid", IsNotFound: true}}}
		got := apiError("https://k8s.nowhere.invalid", "install tp", "GET /version", installNeeds, err)
		e := wantCategory(t, got, Unreachable, "cannot reach the Kubernetes API at https://k8s.nowhere.invalid: dial tcp: lookup k8s.nowhere.invalid: no such host")
		if _, ok := errors.AsType[*net.DNSError](e); !ok {
			t.Error("the cause is not kept for errors.As")
		}
	})
}

func TestForbiddenNamesWhatIsMissing(t *testing.T) {
	clusterScope := apierrors.NewForbidden(schema.GroupResource{Group: "rbac.authorization.k8s.io", Resource: "clusterroles"}, "tp-manager-tp-system",
		errors.New(`User "alice" cannot patch resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope`))
	err := apiError("https://k8s", "install tp", "apply ClusterRole tp-manager-tp-system", installNeeds, fmt.Errorf("apply ClusterRole tp-manager-tp-system: %w", clusterScope))
	e := wantCategory(t, err, Access,
		"no permission to patch clusterroles.rbac.authorization.k8s.io at the cluster scope (apply ClusterRole tp-manager-tp-system): ",
		`User "alice" cannot patch`,
		`a cluster admin must install tp, or grant "alice" the rights to apply namespaces`,
		"check with: kubectl auth can-i patch clusterroles.rbac.authorization.k8s.io")
	if strings.Count(err.Error(), "apply ClusterRole") != 1 {
		t.Errorf("the object is named more than once: %v", err)
	}
	if !apierrors.IsForbidden(e) || !e.Category.UserFault() {
		t.Error("the API error is not kept as the cause, or the category is not the user's")
	}

	namespaced := apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "tp-manager",
		errors.New(`User "bob" cannot patch resource "deployments" in API group "apps" in the namespace "tp-system"`))
	err = apiError("https://k8s", "uninstall tp", "delete Deployment tp-system/tp-manager", uninstallNeeds, namespaced)
	wantCategory(t, err, Access, `no permission to patch deployments.apps in namespace "tp-system"`,
		"a cluster admin must uninstall tp", "kubectl auth can-i patch deployments.apps -n tp-system")

	escalation := apierrors.NewForbidden(schema.GroupResource{Group: "rbac.authorization.k8s.io", Resource: "clusterroles"}, "tp-manager-x",
		errors.New("user \"carol\" (groups=[\"devs\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}"))
	err = apiError("https://k8s", "install tp", "apply ClusterRole tp-manager-x", installNeeds, escalation)
	wantCategory(t, err, Access, "read-only rights you do not hold yourself", "a cluster admin must install tp")

	quota := apierrors.NewForbidden(schema.GroupResource{Resource: "services"}, "tp-manager", errors.New("exceeded quota: q, requested: services=1"))
	err = apiError("https://k8s", "install tp", "apply Service tp-system/tp-manager", installNeeds, quota)
	wantCategory(t, err, Cluster, "the cluster refused to install tp (apply Service tp-system/tp-manager)", "exceeded quota", "ask a cluster admin")

	terminating := &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: 403, Reason: metav1.StatusReasonForbidden,
		Message: `services "tp-manager" is forbidden: unable to create new content in namespace tp-system because it is being terminated`,
		Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: corev1.NamespaceTerminatingCause}}},
	}}
	err = apiError("https://k8s", "install tp", "apply Service tp-system/tp-manager", installNeeds, terminating)
	wantCategory(t, err, Cluster, "the namespace is being deleted", "wait until the namespace is gone")
}

func TestUnauthorized(t *testing.T) {
	err := apiError("https://k8s:6443", "install tp", "GET /version", installNeeds, apierrors.NewUnauthorized("Unauthorized"))
	wantCategory(t, err, Access, "the Kubernetes API at https://k8s:6443 rejected your credentials (GET /version)", "log in again")
}

func TestOtherAPIErrorsKeepTheirCause(t *testing.T) {
	conflict := apierrors.NewConflict(schema.GroupResource{Resource: "services"}, "tp-manager", errors.New("boom"))
	err := apiError("https://k8s", "install tp", "apply Service tp-system/tp-manager", installNeeds, conflict)
	if CategoryOf(err) != Internal || !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "install tp: apply Service tp-system/tp-manager: ") {
		t.Fatalf("got %v (%s)", err, CategoryOf(err))
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Category: Crash, Msg: "the manager crashed", Err: errors.New("exit 2"), Hint: "report it", Detail: "line 1\nline 2\n"}
	if got, want := e.Error(), "the manager crashed: exit 2; report it\n  line 1\n  line 2"; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	wrapped := fmt.Errorf("tp: %w", &Error{Category: NotInstalled, Msg: "tp is not installed"})
	if !errors.Is(wrapped, ErrNotInstalled) || CategoryOf(wrapped) != NotInstalled {
		t.Fatal("a wrapped NotInstalled error is not ErrNotInstalled")
	}
	if errors.Is(e, ErrNotInstalled) || CategoryOf(errors.New("x")) != Internal {
		t.Fatal("only NotInstalled errors are ErrNotInstalled; plain errors are Internal")
	}
	for cat, user := range map[Category]bool{Usage: true, Unreachable: true, Access: true, Image: true, NotInstalled: true,
		Crash: false, Cluster: false, Timeout: false, Internal: false} {
		if cat.UserFault() != user {
			t.Errorf("%s: UserFault %t, want %t", cat, cat.UserFault(), user)
		}
	}
}
