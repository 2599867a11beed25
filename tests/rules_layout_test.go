package tests

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/tpdev/tp"

// deps lists what pkg links when built for goos, standard library included.
func deps(t *testing.T, goos, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Env = append(os.Environ(), "GOOS="+goos)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("GOOS=%s go list -deps %s: %v\n%s", goos, pkg, err, out)
	}
	return strings.Fields(string(out))
}

// Each binary links only its side: the laptop's tp no cluster-side code (the manager's
// contract is remote/managerspec), the agent in every intercepted pod no Kubernetes client.
func TestBinariesLinkOnlyTheirSide(t *testing.T) {
	for _, r := range []struct {
		pkg       string
		goos      []string
		forbidden string
		why       string
	}{
		{module + "/cmd/tp", []string{"linux", "darwin", "windows"}, module + "/remote/cluster/",
			"the laptop's binary links no cluster-side code: share a contract package (remote/managerspec, remote/agentspec) instead"},
		{module + "/cmd/tp-agent", []string{"linux"}, "k8s.io/",
			"the agent sits in every intercepted pod and carries no Kubernetes client"},
	} {
		for _, goos := range r.goos {
			for _, dep := range deps(t, goos, r.pkg) {
				if strings.HasPrefix(dep, r.forbidden) {
					t.Errorf("%s (GOOS=%s) depends on %s: %s", r.pkg, goos, dep, r.why)
				}
			}
		}
	}
}

// The contracts between the sides are the standard library only, so that every side may
// import them without linking another's code.
func TestContractPackagesAreStandardLibraryOnly(t *testing.T) {
	for _, pkg := range []string{module + "/remote/agentspec", module + "/remote/managerspec", module + "/remote/grant"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep != pkg {
				t.Errorf("%s is a contract package and must import the standard library only; it depends on %s", pkg, dep)
			}
		}
	}
}

// The cluster's programs are wiring: flags and environment into a config, and one call.
// What they do lives in packages, with tests beside it.
func TestClusterCommandsAreWiringOnly(t *testing.T) {
	const (
		maxLines    = 180 // of all their non-test files; 149 when this rule was written
		maxFuncLine = 40  // of any function; the longest was 34
	)
	total := 0
	for _, dir := range []string{"../cmd/tp-cluster", "../cmd/tp-agent"} {
		for _, f := range goFiles(t, dir) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			total += strings.Count(string(src), "\n")
			fset := token.NewFileSet()
			file, err := parser.ParseFile(fset, f, src, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range file.Decls {
				fn, ok := d.(*ast.FuncDecl)
				if !ok {
					continue
				}
				if n := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1; n > maxFuncLine {
					t.Errorf("%s: func %s is %d lines, over %d: move what it does into a package and leave the command wiring", f, fn.Name.Name, n, maxFuncLine)
				}
			}
		}
	}
	if total > maxLines {
		t.Errorf("cmd/tp-cluster and cmd/tp-agent are %d lines, over %d: move what they do into a package and leave the commands wiring", total, maxLines)
	}
}

// goFiles are the non-test Go files directly in dir.
func goFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			out = append(out, f)
		}
	}
	return out
}

// gRPC's tuning (windows, buffers, keepalive, backoff, message and header bounds) is set
// in remote/tunnel only, beside the codec, so that the laptop, the agent and the manager
// agree and each value has one home.
func TestGRPCTuningIsInTunnelOnly(t *testing.T) {
	tuning := map[string]bool{}
	for _, name := range []string{
		"WithInitialWindowSize", "WithInitialConnWindowSize", "InitialWindowSize", "InitialConnWindowSize",
		"WithWriteBufferSize", "WithReadBufferSize", "WriteBufferSize", "ReadBufferSize",
		"WithKeepaliveParams", "KeepaliveParams", "KeepaliveEnforcementPolicy", "WithConnectParams",
		"MaxRecvMsgSize", "MaxSendMsgSize", "MaxCallRecvMsgSize", "MaxCallSendMsgSize",
		"MaxHeaderListSize", "WithMaxHeaderListSize", "WithIdleTimeout",
	} {
		tuning[name] = true
	}
	tuningPkgs := map[string]bool{"google.golang.org/grpc/keepalive": true, "google.golang.org/grpc/backoff": true}
	root := ".."
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if name := d.Name(); rel == filepath.Join("remote", "tunnel") || name == "testdata" || (name != "." && name != ".." && strings.HasPrefix(name, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		file, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		grpcName := ""
		for _, imp := range file.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if tuningPkgs[p] {
				t.Errorf("%s imports %s: gRPC tuning belongs in remote/tunnel (options.go)", rel, p)
			}
			if p == "google.golang.org/grpc" {
				grpcName = "grpc"
				if imp.Name != nil {
					grpcName = imp.Name.Name
				}
			}
		}
		if grpcName == "" {
			return nil
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == grpcName && tuning[sel.Sel.Name] {
					t.Errorf("%s:%d calls grpc.%s: gRPC tuning belongs in remote/tunnel (options.go)", rel, fset.Position(sel.Pos()).Line, sel.Sel.Name)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
