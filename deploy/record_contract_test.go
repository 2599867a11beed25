package deploy_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/intercept"
)

// The record admission policy that deploy renders reads the workload out of an agent
// record's name by deploy's prefix, in CEL; intercept names the records (with the same
// label and prefix constants). This test holds intercept's names to what the policy reads.
func TestAgentRecordContract(t *testing.T) {
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
