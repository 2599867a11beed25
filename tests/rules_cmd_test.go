package tests

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The laptop's tp is wiring: flags into a config struct, one call into
// remote/laptop/client per command. What tp does lives there, with tests beside it.
func TestLaptopCommandIsWiringOnly(t *testing.T) {
	const (
		// of cmd/tp's non-test files, help texts' continuation lines not counted (they are not
		// code); 579 with them when this rule was written (2,053 before the move), 576
		// without them when tp env came.
		maxLines    = 600
		maxFuncCode = 40 // lines of any function in cmd/, help texts not counted; the longest was 37
	)
	total := 0
	for _, f := range cmdSources(t, "../cmd/tp") {
		total += strings.Count(string(f.src), "\n") - f.textLines()
	}
	if total > maxLines {
		t.Errorf("cmd/tp is %d lines of code, over %d: move what it does into remote/laptop/client and leave the command wiring", total, maxLines)
	}
	// tp-cluster and tp-agent have their own, tighter bound (rules_layout_test.go).
	dirs, _ := filepath.Glob("../cmd/*")
	dirs = append(dirs, "../cmd/internal/buildinfo")
	for _, dir := range dirs {
		if base := filepath.Base(dir); base == "tp-cluster" || base == "tp-agent" || base == "internal" {
			continue
		}
		for _, f := range cmdSources(t, dir) {
			for _, fn := range f.funcs() {
				if n := f.codeLines(fn); n > maxFuncCode {
					t.Errorf("%s: func %s has %d lines of code, over %d: move what it does into a package and leave the command wiring", f.path, fn.Name.Name, n, maxFuncCode)
				}
			}
		}
	}
}

// Orchestration has names: opening, spawning, waiting, holding, serving, printing.
// cmd/tp declares none of them; their home is remote/laptop/client.
func TestLaptopCommandHasNoOrchestration(t *testing.T) {
	orchestration := regexp.MustCompile(`^(?i:open|spawn|wait|hold|prepare|ensure|serve|print|render|load|dial|listen|running|proxy|remote|kill)`)
	wiring := regexp.MustCompile(`(Command|Flags?|Config)$`)
	for _, f := range cmdSources(t, "../cmd/tp") {
		for _, fn := range f.funcs() {
			if name := fn.Name.Name; orchestration.MatchString(name) && !wiring.MatchString(name) {
				t.Errorf("%s: func %s is orchestration: it belongs in remote/laptop/client", f.path, name)
			}
		}
	}
}

// cmd/tp reaches the laptop's machinery through remote/laptop/client only: it builds no
// connection, proxy, tunnel or Kubernetes client, and runs no program, itself.
func TestLaptopCommandImportsTheClientOnly(t *testing.T) {
	forbidden := []string{
		"k8s.io/", "google.golang.org/grpc", "os/exec", "net", "net/http",
		"github.com/tpdev/tp/localproxy", "github.com/tpdev/tp/netstack",
		"github.com/tpdev/tp/remote/laptop/session", "github.com/tpdev/tp/remote/laptop/control",
		"github.com/tpdev/tp/remote/laptop/portforward", "github.com/tpdev/tp/remote/tunnel",
		"github.com/tpdev/tp/intercept",
	}
	// ns.ChildMain must run before the CLI: tp run's namespace starts as tp itself.
	allowed := map[string]bool{"github.com/tpdev/tp/netstack/ns": true}
	for _, imp := range imports(t, "github.com/tpdev/tp/cmd/tp") {
		if allowed[imp] {
			continue
		}
		for _, f := range forbidden {
			if imp == f || strings.HasPrefix(imp, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("cmd/tp imports %s: reach it through remote/laptop/client", imp)
			}
		}
	}
}

// The control socket speaks tp's own types, not the wire protocol's: its JSON is a
// contract with the CLI and scripts, and must not change when a .proto does.
func TestControlSocketSpeaksItsOwnTypes(t *testing.T) {
	for _, imp := range imports(t, "github.com/tpdev/tp/remote/laptop/control") {
		if strings.HasPrefix(imp, "github.com/tpdev/tp/remote/tunnel") || strings.HasPrefix(imp, "google.golang.org/protobuf") {
			t.Errorf("remote/laptop/control imports %s: convert at the session's boundary (remote/laptop/client) and keep the socket's types plain Go", imp)
		}
	}
}

// imports lists pkg's direct imports, for every OS tp is built for, each once.
func imports(t *testing.T, pkg string) []string {
	t.Helper()
	var all []string
	seen := map[string]bool{}
	for _, goos := range []string{"linux", "darwin", "windows"} {
		cmd := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, pkg)
		cmd.Env = append(os.Environ(), "GOOS="+goos)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("GOOS=%s go list %s: %v\n%s", goos, pkg, err, out)
		}
		for _, imp := range strings.Fields(string(out)) {
			if !seen[imp] {
				seen[imp] = true
				all = append(all, imp)
			}
		}
	}
	return all
}

// cmdSource is one non-test Go file of a command, parsed.
type cmdSource struct {
	path string
	src  []byte
	fset *token.FileSet
	file *ast.File
}

// cmdSources parses the non-test Go files directly in dir.
func cmdSources(t *testing.T, dir string) []cmdSource {
	t.Helper()
	var out []cmdSource
	for _, p := range goFiles(t, dir) {
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fset := token.NewFileSet()
		file, err := parser.ParseFile(fset, p, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cmdSource{path: strings.TrimPrefix(filepath.ToSlash(p), "../"), src: src, fset: fset, file: file})
	}
	return out
}

func (s cmdSource) funcs() []*ast.FuncDecl {
	var out []*ast.FuncDecl
	for _, d := range s.file.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok {
			out = append(out, fn)
		}
	}
	return out
}

// textLines counts the continuation lines of the file's string literals.
func (s cmdSource) textLines() int {
	n := 0
	ast.Inspect(s.file, func(node ast.Node) bool {
		if lit, ok := node.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			n += s.fset.Position(lit.End()).Line - s.fset.Position(lit.Pos()).Line
		}
		return true
	})
	return n
}

// codeLines is fn's length without the continuation lines of its string literals: a
// command's help text is not code.
func (s cmdSource) codeLines(fn *ast.FuncDecl) int {
	n := s.fset.Position(fn.End()).Line - s.fset.Position(fn.Pos()).Line + 1
	ast.Inspect(fn, func(node ast.Node) bool {
		if lit, ok := node.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			n -= s.fset.Position(lit.End()).Line - s.fset.Position(lit.Pos()).Line
		}
		return true
	})
	return n
}
