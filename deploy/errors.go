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

func usageError(msg, hint string) *remote.Error {
	return &remote.Error{Kind: remote.Usage, Msg: msg, Hint: hint}
}

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
		Msg:  "cannot reach the Kubernetes API at " + host,
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

// apiError explains err, which came from the API while doing action (e.g. "install tp",
// "uninstall tp"); what names the object or request ("apply ClusterRole tp-manager-x").
// needs says, for a refusal, what rights the action takes and who has them.
func apiError(host, action, what, needs string, err error) error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*remote.Error](err); ok {
		return e
	}
	if IsTransport(err) {
		return unreachable(host, err)
	}
	// The API's answer is the cause; what already names the request.
	if st, ok := errors.AsType[*apierrors.StatusError](err); ok {
		err = st
	}
	switch {
	case apierrors.IsUnauthorized(err):
		return &remote.Error{
			Kind: remote.Access,
			Msg:  fmt.Sprintf("the Kubernetes API at %s rejected your credentials (%s)", host, what),
			Hint: "your token or client certificate is wrong or expired: log in again, and check the context's user (kubectl config view --minify)",
			Err:  err,
		}
	case apierrors.IsForbidden(err):
		msg := err.Error()
		if hasCause(err, corev1.NamespaceTerminatingCause) || strings.Contains(msg, "because it is being terminated") {
			return &remote.Error{Kind: remote.Cluster, Msg: "cannot " + action + " (" + what + "): the namespace is being deleted", Err: err,
				Hint: "wait until the namespace is gone (kubectl get namespace), then try again"}
		}
		if strings.Contains(msg, "attempting to grant RBAC permissions not currently held") {
			return &remote.Error{Kind: remote.Access, Msg: "cannot " + action + " (" + what + "): it grants the manager read-only rights you do not hold yourself", Err: err,
				Hint: "Kubernetes lets no one grant rights they lack: a cluster admin must " + action + ", or grant you " + needs}
		}
		if r, ok := parseRefusal(msg); ok {
			return &remote.Error{Kind: remote.Access, Msg: fmt.Sprintf("no permission to %s (%s)", r.what(), what), Err: err,
				Hint: fmt.Sprintf("a cluster admin must %s, or grant %s %s; check with: %s", action, orYou(r.user), needs, r.canI())}
		}
		// A refusal that is not RBAC's: admission, quota, policy.
		return &remote.Error{Kind: remote.Cluster, Msg: fmt.Sprintf("the cluster refused to %s (%s)", action, what), Err: err,
			Hint: "an admission policy or quota of the cluster rejects it: ask a cluster admin"}
	}
	return fmt.Errorf("%s: %s: %w", action, what, err)
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
