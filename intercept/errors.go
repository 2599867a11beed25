package intercept

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote"
)

// interceptNeeds is what a refusal's hint says the command takes: every request this
// package makes, so one grant fixes all of them.
const interceptNeeds = "tp intercept needs, in the workload's namespace: get, list and update on deployments, " +
	"statefulsets and replicasets (apps); get, list and update on services; get and list on pods, " +
	"configmaps and secrets (for its environment); delete on pods for a ReplicaSet; get, list, create, " +
	"update and delete on leases (coordination.k8s.io: the intercept's grant): ClusterRole " +
	"tp-intercept of tp's client-roles.yaml, bound there (kubectl create rolebinding USER-tp-intercept " +
	"--clusterrole=tp-intercept --user=USER -n NAMESPACE)"

func usage(msg, hint string) *remote.Error {
	return &remote.Error{Kind: remote.Usage, Msg: msg, Hint: hint}
}

// apiError explains err, the API's answer to verb on resource (name in namespace; either
// may be empty), in deploy's categories: a refusal says which right is missing.
func apiError(ctx context.Context, verb, resource, namespace, name string, err error) error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*remote.Error](err); ok {
		return e
	}
	what := verb + " " + resource
	if name != "" {
		what += " " + name
	}
	if namespace != "" {
		what += " in namespace " + namespace
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if deploy.IsTransport(err) {
		cause := err
		if ue, ok := errors.AsType[*url.Error](err); ok {
			cause = ue.Err
		}
		return &remote.Error{Kind: remote.Unreachable, Msg: "cannot reach the Kubernetes API (" + what + ")",
			Hint: "check your kubeconfig and context (kubectl cluster-info)", Err: cause}
	}
	if st, ok := errors.AsType[*apierrors.StatusError](err); ok {
		err = st
	}
	switch {
	case apierrors.IsUnauthorized(err):
		return &remote.Error{Kind: remote.Access, Msg: "the Kubernetes API rejected your credentials (" + what + ")",
			Hint: "your token or client certificate is wrong or expired: log in again, and check the context's user (kubectl config view --minify)", Err: err}
	case apierrors.IsForbidden(err):
		canI := "kubectl auth can-i " + verb + " " + resource
		if namespace != "" {
			canI += " -n " + namespace
		}
		return &remote.Error{Kind: remote.Access, Msg: "no permission to " + what, Err: err,
			Hint: interceptNeeds + "; ask a cluster admin for them; check with: " + canI}
	}
	return &remote.Error{Kind: remote.Failed, Msg: "cannot " + what, Err: err}
}
