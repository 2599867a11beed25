// Package tests holds the project's cross-package rules; the e2e suites, the cluster
// harness and the benchmark live in its subfolders.
package tests

import (
	"os/exec"
	"strings"
	"testing"
)

// The architecture's import rules: front ends see remote's small interfaces only, never
// Kubernetes or gRPC; the tunnel protocol knows nothing of Kubernetes or gVisor; the
// boundary package is the standard library only.
func TestImportRules(t *testing.T) {
	rules := []struct {
		pkgs      string
		forbidden []string
	}{
		{"github.com/tpdev/tp/localproxy/...", []string{"k8s.io/", "google.golang.org/grpc", "gvisor.dev/"}},
		{"github.com/tpdev/tp/netstack/...", []string{"k8s.io/", "google.golang.org/grpc"}},
		{"github.com/tpdev/tp/remote/tunnel/...", []string{"k8s.io/", "gvisor.dev/"}},
	}
	for _, r := range rules {
		out, err := exec.Command("go", "list", "-deps", "-test", r.pkgs).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", r.pkgs, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range r.forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s", r.pkgs, dep)
				}
			}
		}
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/tpdev/tp/remote").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(strings.Split(dep, "/")[0], ".") && dep != "github.com/tpdev/tp/remote" {
			t.Errorf("remote, the boundary package, must be standard library only; it depends on %s", dep)
		}
	}
}
