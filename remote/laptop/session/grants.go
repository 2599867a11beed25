package session

import (
	"context"
	"errors"
	"fmt"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// A session writes the grant of each intercept it asks for (package grant says why a
// Lease) with the developer's own credentials, and removes it when the intercept ends.
// The secret stays in this process: it never goes to disk or to the control socket.

// grantWait bounds the API calls that write or remove one grant.
const grantWait = 10 * time.Second

// heldGrant is the grant this session wrote for one intercept.
type heldGrant struct {
	lease, secret, holder string
	target                grant.Request // what it was written for; a change writes a new one
}

// whoAmI asks the API server which user this session's credentials are: the holder a
// grant names must be exactly that (tp install's admission policy checks it).
func whoAmI(ctx context.Context, cs kubernetes.Interface) (string, error) {
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("asking the API server who you are (SelfSubjectReview): %w", err)
	}
	if r.Status.UserInfo.Username == "" {
		return "", errors.New("the API server names no user for these credentials")
	}
	return r.Status.UserInfo.Username, nil
}

// writeGrant writes the Lease that grants spec: it takes over the grant of the intercept's
// name when that is this session's own or no live intercept holds it (a crashed client's),
// and otherwise writes one of another name, so that the manager, which knows who holds the
// port, says why it refuses. ownHash is the hash of the grant this session holds for the
// name, if any.
func (s *Session) writeGrant(ctx context.Context, spec InterceptSpec, client, ownHash string, live func(ns, lease, hash string) bool) (heldGrant, error) {
	ctx, cancel := context.WithTimeout(ctx, grantWait)
	defer cancel()
	me, err := whoAmI(ctx, s.cs)
	if err != nil {
		return heldGrant{}, err
	}
	secret, hash, err := grant.NewSecret()
	if err != nil {
		return heldGrant{}, err
	}
	name := grant.LeaseName(spec.Name)
	want := func(l *coordv1.Lease) { setGrant(l, spec.grantTarget(), hash, client, me) }
	leases := s.cs.CoordinationV1().Leases(spec.Namespace)
	old, err := leases.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		if h := old.Annotations[grant.SecretAnnotation]; old.Labels[grant.Label] == "" || (h != ownHash && live(spec.Namespace, name, h)) {
			// Not a grant, or another session's live one: leave it be.
			name += "-" + secret[:8]
			err = apierrors.NewNotFound(coordv1.Resource("leases"), name)
		}
	}
	switch {
	case apierrors.IsNotFound(err):
		l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: spec.Namespace}}
		want(l)
		_, err = leases.Create(ctx, l, metav1.CreateOptions{FieldManager: "tp"})
	case err == nil:
		want(old)
		_, err = leases.Update(ctx, old, metav1.UpdateOptions{FieldManager: "tp"})
	}
	if err != nil {
		return heldGrant{}, fmt.Errorf("writing intercept grant %s/%s (lease): %w", spec.Namespace, name, err)
	}
	return heldGrant{lease: name, secret: secret, holder: me, target: spec.grantTarget()}, nil
}

// setGrant makes l the grant of target (its Use included), for the user me.
func setGrant(l *coordv1.Lease, target grant.Request, hash, client, me string) {
	now := metav1.NewMicroTime(time.Now())
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Labels[grant.Label] = grant.Version
	l.Labels["app.kubernetes.io/managed-by"] = "tp"
	l.Annotations[grant.WorkloadAnnotation] = grant.Workload(target.Kind, target.Workload)
	l.Annotations[grant.PortAnnotation] = target.Port
	if target.Use != "" {
		l.Annotations[grant.UseAnnotation] = target.Use
	} else {
		delete(l.Annotations, grant.UseAnnotation) // a Lease taken over keeps no other use
	}
	l.Annotations[grant.SecretAnnotation] = hash
	l.Annotations[grant.ClientAnnotation] = client
	l.Spec.HolderIdentity = &me
	l.Spec.AcquireTime, l.Spec.RenewTime = &now, &now
}

// deleteGrant removes a grant this session wrote, if it is still the one it wrote.
func (s *Session) deleteGrant(ctx context.Context, namespace string, g heldGrant) error {
	ctx, cancel := context.WithTimeout(ctx, grantWait)
	defer cancel()
	leases := s.cs.CoordinationV1().Leases(namespace)
	l, err := leases.Get(ctx, g.lease, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing intercept grant %s/%s: %w", namespace, g.lease, err)
	}
	if l.Annotations[grant.SecretAnnotation] != grant.Hash(g.secret) {
		return nil // rewritten since, by another intercept of that name
	}
	err = leases.Delete(ctx, g.lease, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &l.ResourceVersion}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("removing intercept grant %s/%s: %w", namespace, g.lease, err)
	}
	return nil
}

// grantRefs lists the grants this session's credentials may read in namespace ("" = all),
// for the manager's List: it tells only about grants named with their secret's hash.
func (s *Session) grantRefs(ctx context.Context, namespace string) ([]*tunnelpb.GrantRef, error) {
	list, err := s.cs.CoordinationV1().Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: grant.Label + "=" + grant.Version})
	if err != nil {
		where := fmt.Sprintf("namespace %q", namespace)
		if namespace == "" {
			where = "all namespaces (name one with --namespace)"
		}
		return nil, fmt.Errorf("listing intercept grants (leases) in %s: %w", where, err)
	}
	refs := make([]*tunnelpb.GrantRef, 0, len(list.Items))
	for _, l := range list.Items {
		refs = append(refs, &tunnelpb.GrantRef{Namespace: l.Namespace, Name: l.Name, SecretSha256: l.Annotations[grant.SecretAnnotation]})
	}
	return refs, nil
}

func (spec InterceptSpec) grantTarget() grant.Request {
	return grant.Request{Namespace: spec.Namespace, Kind: spec.Kind, Workload: spec.Workload, Port: spec.Port}
}
