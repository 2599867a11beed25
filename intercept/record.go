package intercept

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/deploy"
)

// The record of a workload's agent is a Lease in the workload's namespace, named
// RecordName(ref), labelled RecordLabel=RecordVersion, with the Record as JSON in the
// annotation RecordAnnotation. The CLI writes it with the user's rights (an admission
// policy that tp install adds holds the writer to someone who may update the workload);
// the manager's pod webhook reads it when the workload's pods are created. A Lease because
// every tp-intercept user may already write Leases (grants), it has no data a GitOps tool
// owns, and it costs the cluster nothing.
const (
	RecordLabel      = deploy.AgentRecordLabel // install's admission policy selects records by it
	RecordVersion    = "v1"
	RecordAnnotation = "tp.dev/agent-record"
	recordPrefix     = deploy.AgentRecordPrefix // and reads the workload out of their names after it
)

// Record is what tp keeps in the cluster about a workload it injects: the agent's
// configuration and the targets with their agent ports. It lives outside the workload's
// template, so a GitOps controller that re-applies the workload's manifest finds nothing of
// tp's to revert, and the workload's new pods get the agent again at admission.
type Record struct {
	Agent   AgentConfig `json:"agent"`
	Targets []Target    `json:"targets"`
}

// Hash digests what the agent of r runs with: the value of AgentHashAnnotation on the pods
// admitted with it.
func (r Record) Hash() (string, error) {
	ports, err := agentPorts(r.Targets)
	if err != nil {
		return "", err
	}
	return agentHash(r.Agent, ports), nil
}

// RecordName is the name of the Lease that records ref's agent:
// tp-agent.<resource>.<name>, e.g. tp-agent.deployments.web.
func RecordName(ref Ref) string {
	return recordPrefix + strings.ToLower(ref.Kind) + "s." + ref.Name
}

// RecordRef reads a record's Lease name back into the workload it names (namespace
// excluded); ok is false for any other name.
func RecordRef(leaseName string) (ref Ref, ok bool) {
	rest, found := strings.CutPrefix(leaseName, recordPrefix)
	if !found {
		return Ref{}, false
	}
	resource, name, found := strings.Cut(rest, ".")
	if !found || name == "" {
		return Ref{}, false
	}
	for _, kind := range []string{Deployment, StatefulSet, ReplicaSet} {
		if resource == strings.ToLower(kind)+"s" {
			return Ref{Kind: kind, Name: name}, true
		}
	}
	return Ref{}, false
}

// ParseRecord reads a record from its Lease; a Lease without tp's label is not one.
func ParseRecord(lease *coordv1.Lease) (*Record, error) {
	if v := lease.Labels[RecordLabel]; v != RecordVersion {
		return nil, fmt.Errorf("lease %s/%s is not a tp agent record (label %s=%s missing)", lease.Namespace, lease.Name, RecordLabel, RecordVersion)
	}
	rec := &Record{}
	if err := json.Unmarshal([]byte(lease.Annotations[RecordAnnotation]), rec); err != nil {
		return nil, fmt.Errorf("agent record %s/%s: annotation %s: %w", lease.Namespace, lease.Name, RecordAnnotation, err)
	}
	if err := rec.Agent.check(); err != nil {
		return nil, fmt.Errorf("agent record %s/%s: %w", lease.Namespace, lease.Name, err)
	}
	if err := checkTargets(rec.Targets); err != nil {
		return nil, fmt.Errorf("agent record %s/%s: %w", lease.Namespace, lease.Name, err)
	}
	return rec, nil
}

// GetRecord reads ref's record; nil when there is none.
func GetRecord(ctx context.Context, cs kubernetes.Interface, ref Ref) (*Record, error) {
	rec, _, err := getRecord(ctx, cs, ref)
	return rec, err
}

func getRecord(ctx context.Context, cs kubernetes.Interface, ref Ref) (*Record, *coordv1.Lease, error) {
	name := RecordName(ref)
	lease, err := cs.CoordinationV1().Leases(ref.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, apiError(ctx, "get", "leases.coordination.k8s.io", ref.Namespace, name, err)
	}
	rec, err := ParseRecord(lease)
	return rec, lease, err
}

// putRecord writes rec as ref's record: over lease (read before, guarded by its
// resourceVersion) or as a new Lease.
func putRecord(ctx context.Context, cs kubernetes.Interface, ref Ref, rec Record, lease *coordv1.Lease) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode the agent record of %s: %w", ref.describe(), err)
	}
	leases := cs.CoordinationV1().Leases(ref.Namespace)
	opts := metav1.CreateOptions{FieldManager: FieldManager}
	if lease == nil {
		name := RecordName(ref)
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return fmt.Errorf("%s: its name is too long for tp's record (Lease %q): %s", ref.describe(), name, strings.Join(errs, "; "))
		}
		lease = &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ref.Namespace}}
		metav1.SetMetaDataLabel(&lease.ObjectMeta, RecordLabel, RecordVersion)
		metav1.SetMetaDataAnnotation(&lease.ObjectMeta, RecordAnnotation, string(raw))
		_, err = leases.Create(ctx, lease, opts)
		if apierrors.IsAlreadyExists(err) {
			return apierrors.NewConflict(coordv1.Resource("leases"), name, err)
		}
		if err != nil {
			return apiError(ctx, "create", "leases.coordination.k8s.io", ref.Namespace, name, err)
		}
		return nil
	}
	lease = lease.DeepCopy()
	metav1.SetMetaDataAnnotation(&lease.ObjectMeta, RecordAnnotation, string(raw))
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{FieldManager: FieldManager})
	if err != nil && !apierrors.IsConflict(err) {
		return apiError(ctx, "update", "leases.coordination.k8s.io", ref.Namespace, lease.Name, err)
	}
	return err
}

// deleteRecord removes ref's record; none is fine.
func deleteRecord(ctx context.Context, cs kubernetes.Interface, ref Ref) error {
	name := RecordName(ref)
	err := cs.CoordinationV1().Leases(ref.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return apiError(ctx, "delete", "leases.coordination.k8s.io", ref.Namespace, name, err)
	}
	return nil
}

// recordRefs lists the workloads recorded in namespace ("" for all), sorted.
func recordRefs(ctx context.Context, cs kubernetes.Interface, namespace string) ([]Ref, error) {
	list, err := cs.CoordinationV1().Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: RecordLabel + "=" + RecordVersion})
	if err != nil {
		return nil, apiError(ctx, "list", "leases.coordination.k8s.io", namespace, "", err)
	}
	var refs []Ref
	for _, l := range list.Items {
		if r, ok := RecordRef(l.Name); ok {
			r.Namespace = l.Namespace
			refs = append(refs, r)
		}
	}
	slices.SortFunc(refs, func(a, b Ref) int { return strings.Compare(a.Namespace+"/"+a.key(), b.Namespace+"/"+b.key()) })
	return refs, nil
}
