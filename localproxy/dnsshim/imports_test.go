package dnsshim

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports enforces the architecture's rule for front ends: no Kubernetes, gRPC or
// gVisor, so the shim stays small and testable without a cluster. Test dependencies count.
func TestImports(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list dependencies with")
	}
	out, err := exec.Command(gobin, "list", "-deps", "-test", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		for _, banned := range []string{"k8s.io/", "google.golang.org/grpc", "gvisor.dev/"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("dnsshim depends on %s", dep)
			}
		}
	}
}

// TestAPIHidesMiekg keeps miekg/dns, frozen at v1 upstream, swappable: no exported
// identifier may mention its types.
func TestAPIHidesMiekg(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to read the API with")
	}
	out, err := exec.Command(gobin, "doc", "-all", ".").Output()
	if err != nil {
		t.Fatalf("go doc: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "dns.") {
			t.Errorf("exported API mentions miekg/dns: %s", strings.TrimSpace(line))
		}
	}
}
