package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/tpdev/tp/cmd/internal/cliargs"
	"github.com/tpdev/tp/cmd/internal/completion"
)

var (
	builtOnce sync.Once
	built     string
	buildErr  error
)

// tpBinary builds tp once for the tests that run it from a shell.
func tpBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds tp")
	}
	builtOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tp-completion")
		if err != nil {
			buildErr = err
			return
		}
		built = filepath.Join(dir, "tp")
		out, err := exec.Command("go", "build", "-o", built, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func TestMain(m *testing.M) {
	// No test reads the user's own configuration file (config_test.go makes its own).
	_ = os.Setenv("TP_CONFIG", os.DevNull)
	code := m.Run()
	if built != "" {
		_ = os.RemoveAll(filepath.Dir(built))
	}
	os.Exit(code)
}

// shellWith runs script in shell (its arguments first) with tp on PATH, and TP_HOME and
// KUBECONFIG pointing at nothing.
func shellWith(t *testing.T, shell string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath(shell); err != nil {
		t.Skipf("no %s on this machine", shell)
	}
	tp := tpBinary(t)
	cmd := exec.Command(shell, args...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(tp)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"TP_HOME="+t.TempDir(), "KUBECONFIG="+filepath.Join(t.TempDir(), "none"), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", shell, args, err, out)
	}
	return string(out)
}

// The bash script, sourced in a real bash, completes as bash would: the completion function
// called with COMP_WORDS and COMP_CWORD, its answer in COMPREPLY.
func TestBashCompletion(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("bash")
	}
	script := `source <(tp completion bash) || exit 1
complete -p tp || exit 1
try() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
  COMPREPLY=(); __tp_complete; echo "$*|${COMPREPLY[*]}"; }
try tp conn
try tp connect --sh
try tp connect --shell ""
try tp env --shell = p
try tp run --vif ""
try tp completion ""
try tp --context x sta
`
	got := shellWith(t, "bash", "-c", script)
	for _, want := range []string{
		"complete -o default -F __tp_complete tp",
		"tp conn|connect\n",
		"tp connect --sh|--shell\n",
		"tp connect --shell |cmd fish json posix powershell\n",
		"tp env --shell = p|posix powershell\n",
		"tp run --vif |auto off on\n",
		"tp completion |bash fish powershell zsh\n",
		"tp --context x sta|status\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("bash completion: no %q in\n%s", want, got)
		}
	}
}

// zsh's completion system only runs inside the line editor: the script's function runs
// here with compadd, _files and compdef standing in for it, on words and CURRENT as zsh
// sets them.
func TestZshCompletion(t *testing.T) {
	script := `compdef() { echo "compdef $*"; }
compadd() { while [[ $1 == -* && $1 != -- ]]; do shift; done; shift; echo "${words[*]}|$*"; }
_files() { echo "${words[*]}|files"; }
source <(tp completion zsh) || exit 1
try() { words=("$@"); CURRENT=${#words}; __tp_complete; }
try tp conn
try tp connect --sh
try tp connect --shell ''
try tp connect --shell=p
try tp run -- ''
`
	got := shellWith(t, "zsh", "-f", "-c", script)
	for _, want := range []string{
		"compdef __tp_complete tp\n",
		"tp conn|connect\n",
		"tp connect --sh|--shell\n",
		"tp connect --shell |cmd fish json posix powershell\n",
		"tp connect --shell=p|--shell=posix --shell=powershell\n",
		"tp run -- |files\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("zsh completion: no %q in\n%s", want, got)
		}
	}
}

func TestFishCompletion(t *testing.T) {
	script := `tp completion fish | source; or exit 1
for line in "tp conn" "tp connect --sh" "tp connect --shell " "tp run --vif=" "tp completion "
    echo "$line|"(string join -- ' ' (complete -C "$line" | string replace -r '\t.*' ''))
end
`
	got := shellWith(t, "fish", "--no-config", "-c", script)
	for _, want := range []string{
		"tp conn|connect\n",
		"tp connect --sh|--shell\n",
		"tp connect --shell |cmd fish json posix powershell\n",
		"tp run --vif=|--vif=auto --vif=off --vif=on\n",
		"tp completion |bash fish powershell zsh\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("fish completion: no %q in\n%s", want, got)
		}
	}
}

func TestCompletionOfAnUnknownShell(t *testing.T) {
	out, err := run(t, "completion", "tcsh")
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "bash, zsh, fish, powershell") {
		t.Errorf("tp completion tcsh: %v (%q)", err, out)
	}
	out, err = run(t, "completion", "powershell")
	if err != nil || !strings.Contains(out, "Register-ArgumentCompleter -Native -CommandName 'tp'") {
		t.Errorf("tp completion powershell: %v\n%s", err, out)
	}
	out, err = run(t, "__complete", "connect", "--sh")
	if err != nil || out != "--shell\n:4\n" {
		t.Errorf("tp __complete connect --sh: %v %q", err, out)
	}
}

// runAs runs tp as main does, called as argv0, capturing what it prints (errors as main
// prints them).
func runAs(t *testing.T, argv0 string, args ...string) string {
	t.Helper()
	t.Setenv("TP_HOME", t.TempDir())
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	completion.NameAsCalled(app, argv0)
	if err := app.Run(cliargs.Interspersed(app, append([]string{argv0}, args...))); err != nil {
		fmt.Fprintln(app.ErrWriter, "tp:", err)
	}
	return out.String()
}

// Run as kubectl's plugin, tp's help and hints name it as the user calls it: kubectl tp.
func TestKubectlPluginNaming(t *testing.T) {
	for _, argv0 := range []string{"/home/u/.krew/bin/kubectl-tp", "kubectl-tp.exe"} {
		help := runAs(t, argv0, "--help")
		if !strings.Contains(help, "kubectl tp [global options] command") || strings.Contains(help, "kubectl-tp") {
			t.Errorf("%s --help:\n%s", argv0, help)
		}
		help = runAs(t, argv0, "intercept", "--help")
		for _, want := range []string{"kubectl tp intercept [command options] WORKLOAD", "   kubectl tp intercept web-app --port 8080:80\n"} {
			if !strings.Contains(help, want) {
				t.Errorf("%s intercept --help: no %q in\n%s", argv0, want, help)
			}
		}
		for args, want := range map[string]string{
			"conect":            "run kubectl tp --help for the list",
			"connect --no-such": "see kubectl tp connect --help",
			"leave":             "(kubectl tp list shows them): kubectl tp leave NAME",
			"status":            "not connected (kubectl tp connect starts a connection)",
			"completion bash":   "complete -o default -F __tp_complete kubectl-tp",
		} {
			if got := runAs(t, argv0, strings.Fields(args)...); !strings.Contains(got, want) {
				t.Errorf("%s %s: no %q in\n%s", argv0, args, want, got)
			}
		}
	}
	if got := runAs(t, "tp", "leave"); !strings.Contains(got, "(tp list shows them): tp leave NAME") || strings.Contains(got, "kubectl") {
		t.Errorf("tp leave: %s", got)
	}
}

// With a kubectl on this machine, kubectl tp runs tp as its plugin.
func TestKubectlRunsThePlugin(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl on this machine")
	}
	dir := t.TempDir()
	plugin := filepath.Join(dir, "kubectl-tp")
	if runtime.GOOS == "windows" {
		plugin += ".exe"
	}
	src, err := os.ReadFile(tpBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plugin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "TP_HOME="+t.TempDir(),
		"KUBECONFIG="+filepath.Join(t.TempDir(), "none"))
	cmd := exec.Command(kubectl, "tp", "leave")
	cmd.Env = env
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "kubectl tp leave NAME") {
		t.Errorf("kubectl tp leave: want the plugin's usage error naming kubectl tp, got\n%s", out)
	}
	cmd = exec.Command(kubectl, "tp", "version")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "cluster image:") {
		t.Errorf("kubectl tp version: %v\n%s", err, out)
	}
	// kubectl tp con<TAB>: kubectl asks kubectl_complete-tp, a link to tp.
	if err := os.Symlink(plugin, filepath.Join(dir, "kubectl_complete-tp")); err != nil {
		t.Skipf("no symbolic link: %v", err)
	}
	cmd = exec.Command(kubectl, "__complete", "tp", "connect", "--sh")
	cmd.Env = env
	if out, err := cmd.Output(); err != nil || !strings.HasPrefix(string(out), "--shell\n:4\n") {
		t.Errorf("kubectl __complete tp connect --sh (kubectl's plugin completion): %v\n%s", err, out)
	}
}
