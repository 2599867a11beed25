package localproxy

import (
	"os/exec"
	"strings"
	"testing"
)

// The architecture's import rule: front ends see remote's small interfaces only, never
// Kubernetes or gRPC.
func TestNoForbiddenImports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-test", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "k8s.io/") || strings.HasPrefix(pkg, "google.golang.org/grpc") {
			t.Errorf("localproxy depends on %s", pkg)
		}
	}
}
