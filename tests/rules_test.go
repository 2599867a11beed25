// Package tests holds the project's cross-package rules; the e2e suites, the cluster
// harness and the benchmark live in its subfolders.
package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
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

// TestNoBuildOutputsTracked keeps build outputs out of git: every clone would carry them
// (a 71 MB debug binary once was).
func TestNoBuildOutputsTracked(t *testing.T) {
	ls := exec.Command("git", "ls-files", "-z")
	ls.Dir = ".." // the module's root: names come relative to it
	out, err := ls.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	magics := map[string][]byte{
		"an ELF binary": []byte("\x7fELF"), "a Mach-O binary": {0xcf, 0xfa, 0xed, 0xfe}, "a Windows binary": []byte("MZ"),
	}
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		path := filepath.Join("..", name)
		fi, err := os.Lstat(path)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the work tree, or a link
		}
		if fi.Size() > 1<<20 {
			t.Errorf("%s is tracked and %d bytes: build outputs belong in .gitignore", name, fi.Size())
		}
		head := make([]byte, 4)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := f.Read(head)
		f.Close()
		for what, magic := range magics {
			if n >= len(magic) && bytes.Equal(head[:len(magic)], magic) {
				t.Errorf("%s is tracked and is %s: build outputs belong in .gitignore", name, what)
			}
		}
	}
}

// TestGofmt keeps every Go file as gofmt writes it, so that a diff shows changes, not layout.
func TestGofmt(t *testing.T) {
	cmd := exec.Command("gofmt", "-l", "cmd", "deploy", "intercept", "localproxy", "netstack", "remote", "tests")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gofmt -l: %v\n%s", err, out)
	}
	if files := strings.Fields(string(out)); len(files) > 0 {
		t.Errorf("not gofmt'ed (run gofmt -w): %s", strings.Join(files, " "))
	}
}
