package deploy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"

	"github.com/tpdev/tp/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IsTransport reports whether err failed to get an answer from the API server at all (as
// opposed to an answer that says no).
func IsTransport(err error) bool {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return false
	}
	if _, ok := errors.AsType[*url.Error](err); ok {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	return false
}

// unreachable explains a request that got no answer from host.
func unreachable(host string, err error) *remote.Error {
	cause := err
	// The URL's error repeats the request's URL; host already names the server.
	if ue, ok := errors.AsType[*url.Error](err); ok {
		cause = ue.Err
	}
	return &remote.Error{
		Kind: remote.Unreachable,
		Msg:  "cannot reach the Kubernetes API" + at(host),
		Hint: "check your kubeconfig and context (kubectl cluster-info)",
		Err:  cause,
	}
}

// forbiddenRE reads the RBAC authorizer's refusal (k8s.io/apiserver responsewriters).
var forbiddenRE = regexp.MustCompile(`User "([^"]*)" cannot (\S+) resource "([^"]+)" in API group "([^"]*)"(?: in the namespace "([^"]*)"| at the cluster scope)?`)

// refusal is what a Forbidden answer says was refused.
type refusal struct {
	user, verb, resource, group, namespace string
}

func (r refusal) what() string {
	res := r.resource
	if r.group != "" {
		res += "." + r.group
	}
	where := "at the cluster scope"
	if r.namespace != "" {
		where = fmt.Sprintf("in namespace %q", r.namespace)
	}
	return fmt.Sprintf("%s %s %s", r.verb, res, where)
}

func (r refusal) canI() string {
	res := r.resource
	if r.group != "" {
		res += "." + r.group
	}
	cmd := "kubectl auth can-i " + r.verb + " " + res
	if r.namespace != "" {
		cmd += " -n " + r.namespace
	}
	return cmd
}

func parseRefusal(msg string) (refusal, bool) {
	m := forbiddenRE.FindStringSubmatch(msg)
	if m == nil {
		return refusal{}, false
	}
	return refusal{user: m[1], verb: m[2], resource: m[3], group: m[4], namespace: m[5]}, true
}

// Request names a request to the Kubernetes API, so that its failure can be explained.
type Request struct {
	// Host is the API server's URL, where it is known.
	Host string
	// Action is what the user asked that made the request ("install tp"); empty when the
	// request is itself the action.
	Action string
	// What names the request or its object ("apply ClusterRole tp-manager-x", "update
	// deployments.apps web in namespace shop").
	What string
	// Needs says what rights the action takes and who has them, for a refusal's hint.
	Needs string
	// CanI is a kubectl auth can-i command that checks the right, for a refusal that does
	// not name it.
	CanI string
}

// APIError explains err, the API's answer to req (or its failure to answer), in tp's error
// kinds: an unreachable API, rejected credentials, a missing right (which one, and who can
// grant it), a refusal by the cluster. An *remote.Error passes through as it is.
func APIError(req Request, err error) error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*remote.Error](err); ok {
		return e
	}
	if IsTransport(err) {
		e := unreachable(req.Host, err)
		if req.Action == "" {
			e.Msg += " (" + req.What + ")"
		}
		return e
	}
	// The API's answer is the cause; What already names the request.
	if st, ok := errors.AsType[*apierrors.StatusError](err); ok {
		err = st
	}
	switch {
	case apierrors.IsUnauthorized(err):
		return &remote.Error{
			Kind: remote.Access,
			Msg:  fmt.Sprintf("the Kubernetes API%s rejected your credentials (%s)", at(req.Host), req.What),
			Hint: "your token or client certificate is wrong or expired: log in again, and check the context's user (kubectl config view --minify)",
			Err:  err,
		}
	case apierrors.IsForbidden(err):
		return refused(req, err)
	}
	if req.Action == "" {
		return &remote.Error{Kind: remote.Failed, Msg: "cannot " + req.What, Err: err}
	}
	return &remote.Error{Kind: remote.Failed, Msg: req.Action + ": " + req.What, Err: err}
}

// refused explains a Forbidden answer: RBAC's (which right is missing), or the cluster's own
// (a terminating namespace, admission, quota).
func refused(req Request, err error) error {
	msg := err.Error()
	action, subject := req.Action, req.Action+" ("+req.What+")"
	if req.Action == "" {
		action, subject = req.What, req.What
	}
	if hasCause(err, corev1.NamespaceTerminatingCause) || strings.Contains(msg, "because it is being terminated") {
		return &remote.Error{Kind: remote.Cluster, Msg: "cannot " + subject + ": the namespace is being deleted", Err: err,
			Hint: "wait until the namespace is gone (kubectl get namespace), then try again"}
	}
	if strings.Contains(msg, "attempting to grant RBAC permissions not currently held") {
		return &remote.Error{Kind: remote.Access, Msg: "cannot " + subject + ": it grants the manager read-only rights you do not hold yourself", Err: err,
			Hint: "Kubernetes lets no one grant rights they lack: a cluster admin must " + action + ", or grant you " + req.Needs}
	}
	if req.Action == "" {
		// The request is the action: name it as the user would check it.
		canI := req.CanI
		if r, ok := parseRefusal(msg); ok && canI == "" {
			canI = r.canI()
		}
		return &remote.Error{Kind: remote.Access, Msg: "no permission to " + req.What, Err: err,
			Hint: req.Needs + "; ask a cluster admin for them; check with: " + canI}
	}
	if r, ok := parseRefusal(msg); ok {
		return &remote.Error{Kind: remote.Access, Msg: fmt.Sprintf("no permission to %s (%s)", r.what(), req.What), Err: err,
			Hint: fmt.Sprintf("a cluster admin must %s, or grant %s %s; check with: %s", action, orYou(r.user), req.Needs, r.canI())}
	}
	// A refusal that is not RBAC's: admission, quota, policy.
	return &remote.Error{Kind: remote.Cluster, Msg: fmt.Sprintf("the cluster refused to %s (%s)", action, req.What), Err: err,
		Hint: "an admission policy or quota of the cluster rejects it: ask a cluster admin"}
}

func at(host string) string {
	if host == "" {
		return ""
	}
	return " at " + host
}

func orYou(user string) string {
	if user == "" {
		return "you"
	}
	return fmt.Sprintf("%q", user)
}

func hasCause(err error, t metav1.CauseType) bool {
	var st apierrors.APIStatus
	if !errors.As(err, &st) || st.Status().Details == nil {
		return false
	}
	for _, c := range st.Status().Details.Causes {
		if c.Type == t {
			return true
		}
	}
	return false
}

// isContextErr reports whether err is ctx's own end, not the API's answer.
func isContextErr(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}
