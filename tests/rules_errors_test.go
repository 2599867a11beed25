package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// sourceFiles lists the module's hand-written Go files outside tests/ (no tests, nothing
// generated), relative to the module's root.
func sourceFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir("..", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", p)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && rel != "." || rel == "tests" || rel == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") && !strings.HasSuffix(p, ".pb.go") {
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking the module: %v", err)
	}
	if len(files) < 50 {
		t.Fatalf("found only %d source files: is the test running in tests/?", len(files))
	}
	return files
}

// TestOneErrorTaxonomy keeps tp's failures in one type with one set of kinds (remote.Error,
// remote.Kind): each edge (SOCKS reply, HTTP status, DNS rcode, gRPC code, exit code) maps
// those kinds once, and no layer invents categories that must be joined by hand again.
func TestOneErrorTaxonomy(t *testing.T) {
	taxonomy := regexp.MustCompile(`(?m)^type (Kind|Category|Code|Class|Severity|Fault)\b`)
	explained := regexp.MustCompile(`(?m)^type \w*Error struct \{[^}]*\b(Kind|Category|Hint)\b`)
	for _, f := range sourceFiles(t) {
		src, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "remote/remote.go" {
			if !taxonomy.Match(src) || !explained.Match(src) {
				t.Errorf("remote/remote.go no longer declares the error kinds and type this rule guards: update the rule")
			}
			continue
		}
		if m := taxonomy.Find(src); m != nil {
			t.Errorf("%s declares %q: tp's error kinds live in remote.Kind only", f, m)
		}
		if m := explained.Find(src); m != nil {
			t.Errorf("%s declares an explained error type (%q): use remote.Error", f, strings.SplitN(string(m), "\n", 2)[0])
		}
	}
}
