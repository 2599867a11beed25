package intercept

import (
	"context"
	"errors"
	"fmt"

	"github.com/tpdev/tp/deploy"
)

// interceptNeeds is what a refusal's hint says the command takes: every request this
// package makes, so one grant fixes all of them.
const interceptNeeds = "tp intercept needs, in the workload's namespace: get, list and update on deployments, " +
	"statefulsets and replicasets (apps); get, list and update on services; get and list on pods, " +
	"configmaps and secrets (for its environment and files); create on serviceaccounts/token (the " +
	"files' tokens); delete on pods; get, list, create, update and delete " +
	"on leases (coordination.k8s.io: the intercept's grant and the workload's agent record): ClusterRole " +
	"tp-intercept of tp's client-roles.yaml, bound there (kubectl create rolebinding USER-tp-intercept " +
	"--clusterrole=tp-intercept --user=USER -n NAMESPACE)"

// apiError explains err, the API's answer to verb on resource (name in namespace; either
// may be empty): a refusal says which right is missing.
func apiError(ctx context.Context, verb, resource, namespace, name string, err error) error {
	return apiErrorNeeding(ctx, interceptNeeds, verb, resource, namespace, name, err)
}

// apiErrorNeeding is apiError for a command whose rights needs names.
func apiErrorNeeding(ctx context.Context, needs, verb, resource, namespace, name string, err error) error {
	if err == nil {
		return nil
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
	canI := "kubectl auth can-i " + verb + " " + resource
	if namespace != "" {
		canI += " -n " + namespace
	}
	return deploy.APIError(deploy.Request{What: what, Needs: needs, CanI: canI}, err)
}
