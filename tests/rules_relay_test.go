package tests

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// One concept, one place, for what passes between a front end and the tunnel: the
// half-close and reset checks live in remote/conn.go, the byte-counting conn is
// remote.Counted, and UDP flows are relayed by remote/relay alone. These rules keep a
// second copy from growing back.

// sourceFile is one parsed non-test Go file of the module, outside tests/.
type sourceFile struct {
	path string // slash-separated, relative to the module root
	fset *token.FileSet
	file *ast.File
}

// moduleSources parses sourceFiles.
func moduleSources(t *testing.T) []sourceFile {
	t.Helper()
	var out []sourceFile
	for _, rel := range sourceFiles(t) {
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, filepath.Join("..", rel), nil, 0)
		if err != nil {
			t.Fatalf("parsing %s: %v", rel, err)
		}
		out = append(out, sourceFile{path: rel, fset: fset, file: f})
	}
	return out
}

func (f sourceFile) pos(p token.Pos) string {
	return f.path + ":" + strconv.Itoa(f.fset.Position(p).Line)
}

// Whether a conn can half-close or reset is asked in one place, remote.CloseWrite and
// remote.Reset: a second copy drifts (one returned nil where the other said
// ErrUnsupported, one panicked on a conn that was not a tunnel stream).
func TestOneHalfCloseCheck(t *testing.T) {
	const home = "remote/conn.go"
	found := false
	for _, f := range moduleSources(t) {
		ast.Inspect(f.file, func(n ast.Node) bool {
			ta, ok := n.(*ast.TypeAssertExpr)
			if !ok {
				return true
			}
			it, ok := ta.Type.(*ast.InterfaceType)
			if !ok {
				return true
			}
			for _, m := range it.Methods.List {
				for _, name := range m.Names {
					if name.Name != "CloseWrite" && name.Name != "SetLinger" {
						continue
					}
					switch {
					case f.path == home:
						found = true
					default:
						t.Errorf("%s asserts interface{ %s }: use remote.CloseWrite or remote.Reset (%s)", f.pos(ta.Pos()), name.Name, home)
					}
				}
			}
			return true
		})
	}
	if !found {
		t.Errorf("%s no longer holds the CloseWrite check: update this rule to where it moved", home)
	}
}

// Bytes a conn moves are counted by remote.Counted: a Read or Write method that passes
// through to a wrapped conn and adds up what it moved (x.Add(...) or +=) is a second
// counting wrapper.
func TestOneCountingConn(t *testing.T) {
	const home = "remote/conn.go"
	for _, f := range moduleSources(t) {
		if f.path == home {
			continue
		}
		for _, d := range f.file.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || fn.Body == nil || (fn.Name.Name != "Read" && fn.Name.Name != "Write") {
				continue
			}
			if passesThrough(fn) && counts(fn.Body) {
				t.Errorf("%s: %s counts the bytes of a wrapped conn: embed or use remote.Counted (%s)", f.pos(fn.Pos()), fn.Name.Name, home)
			}
		}
	}
}

// passesThrough reports whether fn (Read or Write) calls the same method on a field of its
// receiver: recv.X.Read(...).
func passesThrough(fn *ast.FuncDecl) bool {
	if len(fn.Recv.List) == 0 || len(fn.Recv.List[0].Names) == 0 {
		return false
	}
	recv := fn.Recv.List[0].Names[0].Name
	found := false
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || sel.Sel.Name != fn.Name.Name {
			return true
		}
		if field, ok := sel.X.(*ast.SelectorExpr); ok {
			if id, ok := field.X.(*ast.Ident); ok && id.Name == recv {
				found = true
			}
		}
		return true
	})
	return found
}

func counts(body *ast.BlockStmt) bool {
	found := false
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.AssignStmt:
			found = found || n.Tok == token.ADD_ASSIGN
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Add" {
				found = true
			}
		}
		return true
	})
	return found
}

// UDP flows are relayed by remote/relay alone: a map of flows in a file that handles UDP
// (it names the network "udp"), or a map of UDP flows anywhere, is a second relay, with
// its own idle timeouts and limits to drift.
func TestOneUDPRelay(t *testing.T) {
	const home = "remote/relay/"
	for _, f := range moduleSources(t) {
		if strings.HasPrefix(f.path, home) {
			continue
		}
		udp := namesUDP(f.file)
		ast.Inspect(f.file, func(n ast.Node) bool {
			m, ok := n.(*ast.MapType)
			if !ok {
				return true
			}
			for _, e := range []ast.Expr{m.Key, m.Value} {
				if names(e, "flow") && (udp || names(e, "udp")) {
					t.Errorf("%s keeps a table of UDP flows: use remote/relay's Table", f.pos(m.Pos()))
					break
				}
			}
			return true
		})
	}
}

// The relay sits below the front ends, beside remote: standard library and remote only,
// so every front end can use it without taking in gVisor, gRPC or Kubernetes.
func TestRelayImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/tpdev/tp/remote/relay").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(strings.Split(dep, "/")[0], ".") && dep != "github.com/tpdev/tp/remote" && dep != "github.com/tpdev/tp/remote/relay" {
			t.Errorf("remote/relay must be standard library and remote only; it depends on %s", dep)
		}
	}
}

func namesUDP(f *ast.File) bool {
	found := false
	ast.Inspect(f, func(n ast.Node) bool {
		if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING && lit.Value == `"udp"` {
			found = true
		}
		return !found
	})
	return found
}

// names reports whether a type expression names a type whose name contains word, in any
// case.
func names(e ast.Expr, word string) bool {
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok && strings.Contains(strings.ToLower(id.Name), word) {
			found = true
		}
		return !found
	})
	return found
}
