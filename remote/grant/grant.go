// Package grant is the contract between the laptop and the traffic manager for who may
// intercept what. It imports nothing of Kubernetes: the names and checks here are shared by
// the CLI, which writes a grant with the developer's own credentials, and the manager, which
// reads it with its own.
//
// Why a Lease. The manager's client API is reached through pods/portforward in tp's
// namespace: that proves the "connect" right and nothing about the workload's namespace.
// The manager must see proof from the API server that the caller may intercept there. A
// coordination.k8s.io Lease in the workload's namespace is that proof with no new
// credentials: only holders of the tp-intercept rights may write Leases there, the client
// puts the SHA-256 of a fresh per-intercept secret on it and presents the secret to the
// manager, which reads the Lease back. A ValidatingAdmissionPolicy that tp install applies
// makes the API server refuse a grant whose holderIdentity is not the user writing it, so
// the holder the manager shows is the Kubernetes user the API server authenticated, never
// a name the client typed. The Lease also shows intercepts to `kubectl get leases` and
// outlives a manager restart (the laptop asserts its intercepts again with the same secret).
// SubjectAccessReviews were the alternative: they need the caller's identity, which the
// manager cannot learn from a port-forwarded connection.
package grant

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
)

const (
	// Label marks a Lease as an intercept grant, with the grant format's version as value;
	// the admission policy applies to Leases that carry it.
	Label = "tp.dev/intercept-grant"
	// Version is the value of Label this tp writes and accepts.
	Version = "v1"
	// WorkloadAnnotation is "Kind/name" of the intercepted workload.
	WorkloadAnnotation = "tp.dev/workload"
	// PortAnnotation is the name under which the agent serves the intercepted port.
	PortAnnotation = "tp.dev/port"
	// SecretAnnotation is the hex SHA-256 of the secret the client presents.
	SecretAnnotation = "tp.dev/secret-sha256"
	// ClientAnnotation is where the client runs (user@host), for people to read.
	ClientAnnotation = "tp.dev/client"
	// UseAnnotation says what a grant allows: absent for an intercept, UseEgress for
	// connections that leave from the workload's pods (tp run --egress workload). A grant
	// of one use never passes for the other.
	UseAnnotation = "tp.dev/use"
	// UseEgress is UseAnnotation's value on an egress grant.
	UseEgress = "egress"
	// DenyAnnotation with the value "deny" on a namespace forbids intercepts there; the
	// manager enforces it, the CLI checks it first for a better message.
	DenyAnnotation = "tp.dev/intercept"
)

// LeaseName is the name of the Lease that grants the intercept named name: the intercept's
// name is unique among its holder's, the Lease's within its namespace.
func LeaseName(name string) string { return "tp-" + name }

// EgressLeaseName is the name of the Lease that grants one tp run's egress through
// workload: several developers may run as one workload at once, so each run's grant has a
// name of its own, from its secret's hash (which the Lease shows anyway).
func EgressLeaseName(workload, hash string) string {
	if len(workload) > 40 {
		workload = workload[:40]
	}
	return "tp-egress-" + strings.TrimRight(workload, "-.") + "-" + hash[:10]
}

// NewSecret returns a fresh secret and its hash.
func NewSecret() (secret, hash string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("intercept grant: making a secret: %w", err)
	}
	secret = hex.EncodeToString(b[:])
	return secret, Hash(secret), nil
}

// Hash is the hex SHA-256 of a secret, as a grant carries it.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Matches reports, in constant time, whether secret is the one whose hash a grant carries.
func Matches(hash, secret string) bool {
	if secret == "" || len(hash) != sha256.Size*2 {
		return false
	}
	want := Hash(secret)
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(hash)), []byte(want)) == 1
}

// Workload is the value of WorkloadAnnotation.
func Workload(kind, name string) string { return kind + "/" + name }

// Lease is what the manager reads of a grant: the Lease's labels, annotations and holder.
type Lease struct {
	Labels, Annotations map[string]string
	Holder              string
}

// Request is the intercept a client asks for, or (Use UseEgress, no Port) the egress.
type Request struct {
	Namespace, Kind, Workload, Port, Secret string
	Use                                     string
}

// what names what a grant of use allows, for messages.
func what(use string) string {
	if use == UseEgress {
		return "egress grant"
	}
	return "intercept grant"
}

// Check says whether lease grants req, and names its holder. The errors speak to the
// person who asked: what is wrong and what would make it right.
func Check(lease Lease, leaseName string, req Request) (holder string, err error) {
	if lease.Labels[Label] != Version {
		return "", fmt.Errorf("lease %s/%s is not a tp intercept grant (label %s=%s missing)", req.Namespace, leaseName, Label, Version)
	}
	if lease.Holder == "" {
		return "", fmt.Errorf("%s %s/%s names no holder", what(req.Use), req.Namespace, leaseName)
	}
	if got, want := lease.Annotations[WorkloadAnnotation], Workload(req.Kind, req.Workload); !strings.EqualFold(got, want) {
		return "", fmt.Errorf("%s %s/%s is for %q, not %q", what(req.Use), req.Namespace, leaseName, got, want)
	}
	if got := lease.Annotations[UseAnnotation]; got != req.Use {
		return "", fmt.Errorf("lease %s/%s is an %s, not an %s", req.Namespace, leaseName, what(got), what(req.Use))
	}
	if got := lease.Annotations[PortAnnotation]; got != req.Port {
		return "", fmt.Errorf("%s %s/%s is for port %q, not %q", what(req.Use), req.Namespace, leaseName, got, req.Port)
	}
	if !Matches(lease.Annotations[SecretAnnotation], req.Secret) {
		return "", fmt.Errorf("%s %s/%s was written for another request (its secret does not match): intercept or run again to write a new one", what(req.Use), req.Namespace, leaseName)
	}
	return lease.Holder, nil
}
