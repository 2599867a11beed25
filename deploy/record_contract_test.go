package deploy_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/intercept"
)

// The record admission policy that deploy renders selects agent records by deploy's label
// and reads the workload out of their names by deploy's prefix; intercept writes them.
// deploy cannot import intercept (intercept imports deploy), so this test holds the two
// to the same contract.
func TestAgentRecordContract(t *testing.T) {
	if deploy.AgentRecordLabel != intercept.RecordLabel {
		t.Errorf("deploy.AgentRecordLabel %q, intercept.RecordLabel %q: the policy would select no record", deploy.AgentRecordLabel, intercept.RecordLabel)
	}
	for _, ref := range []intercept.Ref{
		{Kind: intercept.Deployment, Name: "web"},
		{Kind: intercept.StatefulSet, Name: "db.v2"},
		{Kind: intercept.ReplicaSet, Name: "bare"},
	} {
		name := intercept.RecordName(ref)
		// What the policy's variables compute: the rest after the prefix, split at its
		// first dot into the resource and the workload.
		rest, ok := strings.CutPrefix(name, deploy.AgentRecordPrefix)
		resource, workload, cut := strings.Cut(rest, ".")
		if !ok || !cut || workload != ref.Name || !slices.Contains([]string{"deployments", "statefulsets", "replicasets"}, resource) {
			t.Errorf("record of %s is named %q: the policy reads resource %q, workload %q", ref, name, resource, workload)
		}
		if back, ok := intercept.RecordRef(name); !ok || back.Kind != ref.Kind || back.Name != ref.Name {
			t.Errorf("RecordRef(%q) = %+v, %v", name, back, ok)
		}
	}
}
