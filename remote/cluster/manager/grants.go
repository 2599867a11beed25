package manager

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Authorizer decides whether an intercept may be made, from what the API server holds:
// the client's word is never enough (see package grant for why a Lease).
type Authorizer interface {
	// Authorize returns the Kubernetes user who holds the grant named grantName for req (an
	// intercept, or egress through a workload), or an error that says why it may not be made.
	Authorize(ctx context.Context, grantName string, req grant.Request) (holder string, err error)
}

// interceptGrant is what an intercept request asks a grant for.
func interceptGrant(req *tunnelpb.InterceptRequest) (string, grant.Request) {
	return req.GetGrant(), grant.Request{Namespace: req.GetNamespace(), Kind: req.GetKind(), Workload: req.GetWorkload(), Port: req.GetPort(), Secret: req.GetSecret()}
}

// ErrNotAuthorized marks a refusal (as opposed to a failure to find out).
var ErrNotAuthorized = errors.New("not authorized")

// LeaseAuthorizer reads grants (Leases) and namespaces with the manager's own rights.
type LeaseAuthorizer struct {
	CS kubernetes.Interface

	// After a manager restart every connected developer asserts their intercepts again at
	// once, mostly in a few namespaces: the reads of one namespace under way at the same
	// moment are one read. Nothing is kept after it, so a deny annotation applies to the
	// next intercept.
	reads singleflight.Group
}

// namespace reads ns, sharing a read already under way.
func (a *LeaseAuthorizer) namespace(ctx context.Context, ns string) (*corev1.Namespace, error) {
	v, err, _ := a.reads.Do(ns, func() (any, error) {
		return a.CS.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	})
	obj, _ := v.(*corev1.Namespace)
	return obj, err
}

// Authorize checks the namespace's deny annotation and the request's grant.
func (a *LeaseAuthorizer) Authorize(ctx context.Context, name string, req grant.Request) (string, error) {
	ns := req.Namespace
	if len(validation.IsDNS1123Label(ns)) > 0 {
		return "", fmt.Errorf("%w: %q is not a namespace name", ErrNotAuthorized, ns)
	}
	nsObj, err := a.namespace(ctx, ns)
	switch {
	case apierrors.IsNotFound(err):
		return "", fmt.Errorf("%w: no namespace %q", ErrNotAuthorized, ns)
	case apierrors.IsForbidden(err):
		return "", fmt.Errorf("%w: tp's manager may not read namespace %q (is it one of the namespaces tp install manages?)", ErrNotAuthorized, ns)
	case err != nil:
		return "", fmt.Errorf("reading namespace %q: %w", ns, err)
	}
	if strings.TrimSpace(nsObj.Annotations[grant.DenyAnnotation]) == "deny" {
		return "", fmt.Errorf("%w: intercepts are not allowed in namespace %q (it is annotated %s=deny); refused by tp's manager", ErrNotAuthorized, ns, grant.DenyAnnotation)
	}
	doing, kind := "intercepting", "intercept grant"
	if req.Use == grant.UseEgress {
		doing, kind = "connecting as a workload (--egress workload)", "egress grant"
	}
	need := fmt.Sprintf("%s in namespace %q needs the tp-intercept rights there (create, get and update leases.coordination.k8s.io; check with: kubectl auth can-i create leases.coordination.k8s.io -n %s)", doing, ns, ns)
	if name == "" || req.Secret == "" {
		return "", fmt.Errorf("%w: the request carries no %s: %s", ErrNotAuthorized, kind, need)
	}
	if len(validation.IsDNS1123Subdomain(name)) > 0 {
		return "", fmt.Errorf("%w: %q is not a grant's name", ErrNotAuthorized, name)
	}
	lease, err := a.CS.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", fmt.Errorf("%w: no %s %s/%s: %s", ErrNotAuthorized, kind, ns, name, need)
	case apierrors.IsForbidden(err):
		return "", fmt.Errorf("%w: tp's manager may not read leases in namespace %q (is it one of the namespaces tp install manages?)", ErrNotAuthorized, ns)
	case err != nil:
		return "", fmt.Errorf("reading %s %s/%s: %w", kind, ns, name, err)
	}
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	holder, err = grant.Check(grant.Lease{Labels: lease.Labels, Annotations: lease.Annotations, Holder: holder}, name, req)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotAuthorized, err)
	}
	return holder, nil
}
