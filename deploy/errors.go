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

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Category sorts failures by who can fix them, so the CLI can tell the user's fault from the
// system's (exit codes, wording, whether to ask for a bug report).
type Category string

const (
	// Usage: the command line is wrong (a bad option, nothing installed where it points).
	Usage Category = "usage"
	// Unreachable: the Kubernetes API cannot be reached (kubeconfig, context, network, TLS).
	Unreachable Category = "unreachable"
	// Access: the credentials are rejected, or RBAC does not grant what is needed.
	Access Category = "access"
	// Image: the manager image is not available to the cluster's nodes.
	Image Category = "image"
	// Crash: the manager starts and exits, or is killed.
	Crash Category = "crash"
	// Cluster: the cluster refuses to run the manager (admission, quota, a failed rollout).
	Cluster Category = "cluster"
	// Timeout: the cluster did not get there in time; the message says what was missing.
	Timeout Category = "timeout"
	// NotInstalled: there is no install where the command points (errors.Is ErrNotInstalled).
	NotInstalled Category = "not-installed"
	// Internal: an answer tp does not know how to explain.
	Internal Category = "internal"
)

// UserFault reports whether the user can fix the failure on their side: the command line,
// the kubeconfig, their rights, the image. The other categories point at the cluster or tp.
func (c Category) UserFault() bool {
	switch c {
	case Usage, Unreachable, Access, Image, NotInstalled:
		return true
	}
	return false
}

// Error is a failure of install, uninstall or status, explained: what happened (Msg, with
// the cause Err), what to do (Hint), and evidence (Detail: pod status, events, log lines).
type Error struct {
	Category Category
	Msg      string // one line, names the thing: `the manager image "x" is not available`
	Hint     string // what to do about it
	Detail   string // more lines, shown indented under the message
	Err      error  // the cause, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Msg)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Hint != "" {
		b.WriteString("; ")
		b.WriteString(e.Hint)
	}
	if d := strings.TrimRight(e.Detail, "\n"); d != "" {
		for line := range strings.SplitSeq(d, "\n") {
			b.WriteString("\n  ")
			b.WriteString(line)
		}
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotInstalled) true for errors of category NotInstalled.
func (e *Error) Is(target error) bool { return target == ErrNotInstalled && e.Category == NotInstalled }

// CategoryOf is err's category: Internal unless err is (or wraps) an *Error.
func CategoryOf(err error) Category {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Category
	}
	return Internal
}

// ErrNotInstalled matches (errors.Is) the *Error of Status or Uninstall when the namespace
// holds no tp install.
var ErrNotInstalled = errors.New("tp is not installed")

func usageError(msg, hint string) *Error {
	return &Error{Category: Usage, Msg: msg, Hint: hint}
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
func unreachable(host string, err error) *Error {
	cause := err
	// The URL's error repeats the request's URL; host already names the server.
	if ue, ok := errors.AsType[*url.Error](err); ok {
		cause = ue.Err
	}
	return &Error{
		Category: Unreachable,
		Msg:      "cannot reach the Kubernetes API at " + host,
		Hint:     "check your kubeconfig and context (kubectl cluster-info)",
		Err:      cause,
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
	if e, ok := errors.AsType[*Error](err); ok {
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
		return &Error{
			Category: Access,
			Msg:      fmt.Sprintf("the Kubernetes API at %s rejected your credentials (%s)", host, what),
			Hint:     "your token or client certificate is wrong or expired: log in again, and check the context's user (kubectl config view --minify)",
			Err:      err,
		}
	case apierrors.IsForbidden(err):
		msg := err.Error()
		if hasCause(err, corev1.NamespaceTerminatingCause) || strings.Contains(msg, "because it is being terminated") {
			return &Error{Category: Cluster, Msg: "cannot " + action + " (" + what + "): the namespace is being deleted", Err: err,
				Hint: "wait until the namespace is gone (kubectl get namespace), then try again"}
		}
		if strings.Contains(msg, "attempting to grant RBAC permissions not currently held") {
			return &Error{Category: Access, Msg: "cannot " + action + " (" + what + "): it grants the manager read-only rights you do not hold yourself", Err: err,
				Hint: "Kubernetes lets no one grant rights they lack: a cluster admin must " + action + ", or grant you " + needs}
		}
		if r, ok := parseRefusal(msg); ok {
			return &Error{Category: Access, Msg: fmt.Sprintf("no permission to %s (%s)", r.what(), what), Err: err,
				Hint: fmt.Sprintf("a cluster admin must %s, or grant %s %s; check with: %s", action, orYou(r.user), needs, r.canI())}
		}
		// A refusal that is not RBAC's: admission, quota, policy.
		return &Error{Category: Cluster, Msg: fmt.Sprintf("the cluster refused to %s (%s)", action, what), Err: err,
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
