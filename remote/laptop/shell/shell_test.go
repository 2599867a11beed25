package shell

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// nasty are values a proxy URL with credentials, or a careless user, can produce.
var nasty = []string{
	"socks5h://127.0.0.1:1080",
	"http://user:p@ss:w%rd@proxy.corp:3128",
	"",
	"a'b",
	"''",
	`a\'b`,
	"$HOME",
	"${HOME}",
	"`id`",
	"$(touch PWNED)",
	"x;rm -rf /",
	"spaces  inside and trailing ",
	" leading",
	`back\slash\\double\`,
	`"double" quotes`,
	"tab\there",
	"new\nline",
	"crlf\r\nline",
	"unicode: héllo wörld ✓ 日本語 🙂",
	"typographic ‘quotes’ ‚ ‛ and ’’",
	"glob * ? [a-z] ~ ~/x",
	"hash # comment",
	"100%",
	"%PATH% and !PATH! and ^caret & | < > ( )",
	"-e not an option",
	"=starts with equals",
	"\\",
	"'",
	"end with backslash \\",
	"localhost,127.0.0.1,::1,.svc,*.corp",
}

func nastyVars() []Var {
	vars := make([]Var, len(nasty))
	for i, v := range nasty {
		vars[i] = Var{fmt.Sprintf("TP_TEST_%d", i), v}
	}
	return vars
}

// cmdSafe are the nasty values cmd can carry.
func cmdSafe() []Var {
	var vars []Var
	for _, v := range nastyVars() {
		if cmdValue(v.Value) == nil {
			vars = append(vars, v)
		}
	}
	return vars
}

func TestParse(t *testing.T) {
	for name, want := range map[string]Dialect{
		"posix": Posix, "sh": Posix, "bash": Posix, "zsh": Posix, "BASH": Posix,
		"fish": Fish, "powershell": PowerShell, "pwsh": PowerShell, "PowerShell": PowerShell,
		"cmd": Cmd, "json": JSON, " json ": JSON,
	} {
		got, err := Parse(name)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	_, err := Parse("tcsh")
	if err == nil || err.Error() != `--shell "tcsh": want posix, fish, powershell, cmd or json` {
		t.Errorf("Parse(tcsh): %v", err)
	}
	if _, err := Parse(""); err == nil {
		t.Error("Parse(\"\"): no error")
	}
	for k := Posix; k <= JSON; k++ {
		if got, err := Parse(k.String()); err != nil || got != k {
			t.Errorf("Parse(%v.String()) = %v, %v", k, got, err)
		}
	}
}

func TestDetect(t *testing.T) {
	for _, c := range []struct {
		shell, goos string
		want        Dialect
	}{
		{"/bin/bash", "linux", Posix},
		{"/usr/bin/zsh", "darwin", Posix},
		{"/bin/sh", "freebsd", Posix},
		{"/bin/dash", "linux", Posix},
		{"/bin/ksh", "linux", Posix},
		{"", "linux", Posix},
		{"/usr/bin/fish", "linux", Fish},
		{"/opt/homebrew/bin/fish", "darwin", Fish},
		{"fish", "linux", Fish},
		{"/usr/bin/pwsh", "linux", PowerShell},
		{"", "windows", PowerShell},
		{"/usr/bin/fish", "windows", PowerShell}, // Git Bash's or MSYS's $SHELL leaks into Windows shells
	} {
		getenv := func(k string) string {
			if k == "SHELL" {
				return c.shell
			}
			return ""
		}
		if got := Detect(getenv, c.goos); got != c.want {
			t.Errorf("Detect(SHELL=%q, %s) = %v, want %v", c.shell, c.goos, got, c.want)
		}
	}
}

func TestWriteRefuses(t *testing.T) {
	for _, c := range []struct {
		kind Dialect
		vars []Var
		want string
	}{
		{Posix, []Var{{"A B", "x"}}, "not a variable name"},
		{Posix, []Var{{"1A", "x"}}, "not a variable name"},
		{Posix, []Var{{"A;rm", "x"}}, "not a variable name"},
		{JSON, []Var{{"", "x"}}, "empty variable name"},
		{Fish, []Var{{"A", "x"}, {"A", "y"}}, "A given twice"},
		{Posix, []Var{{"A", "x\x00y"}}, "A: the value holds a NUL byte"},
		{JSON, []Var{{"A", "\xff"}}, "A: the value is not UTF-8"},
		{Cmd, []Var{{"OK", "fine"}, {"HTTP_PROXY", "http://u:p%40ss@h:1"}}, `HTTP_PROXY: the value holds '%'`},
		{Cmd, []Var{{"A", "x!y"}}, `A: the value holds '!'`},
		{Cmd, []Var{{"A", `x"y`}}, `A: the value holds '"'`},
		{Cmd, []Var{{"A", "x\ny"}}, `A: the value holds '\n'`},
		{Cmd, []Var{{"A", "x\ry"}}, `A: the value holds '\r'`},
		{Cmd, []Var{{"A", ""}}, "A: cmd cannot set an empty value"},
		{Dialect(99), []Var{{"A", "x"}}, "unknown shell kind 99"},
	} {
		var b bytes.Buffer
		err := Write(&b, c.kind, c.vars)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Write(%v, %q): %v, want an error with %q", c.kind, c.vars, err, c.want)
		}
		if b.Len() > 0 {
			t.Errorf("Write(%v, %q) wrote %q before failing", c.kind, c.vars, b.Bytes())
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteError(t *testing.T) {
	err := Write(failWriter{}, Fish, []Var{{"A", "x"}})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Write to a failing writer: %v", err)
	}
}

func TestWriteLooks(t *testing.T) {
	vars := []Var{{"HTTP_PROXY", "http://127.0.0.1:1080"}, {"NO_PROXY", "a'b"}}
	for k, want := range map[Dialect]string{
		Posix:      "export HTTP_PROXY='http://127.0.0.1:1080'\nexport NO_PROXY='a'\\''b'\n",
		Fish:       "set -gx HTTP_PROXY 'http://127.0.0.1:1080'\nset -gx NO_PROXY 'a\\'b'\n",
		PowerShell: "$env:HTTP_PROXY = 'http://127.0.0.1:1080'\n$env:NO_PROXY = 'a''b'\n",
		Cmd:        "set \"HTTP_PROXY=http://127.0.0.1:1080\"\nset \"NO_PROXY=a'b\"\n",
		JSON:       "{\n  \"HTTP_PROXY\": \"http://127.0.0.1:1080\",\n  \"NO_PROXY\": \"a'b\"\n}\n",
	} {
		var b bytes.Buffer
		if err := Write(&b, k, vars); err != nil {
			t.Fatal(err)
		}
		if b.String() != want {
			t.Errorf("%v:\n%s\nwant\n%s", k, b.String(), want)
		}
	}
	var b bytes.Buffer
	if err := Write(&b, JSON, nil); err != nil || b.String() != "{}\n" {
		t.Errorf("no variables as JSON: %q, %v", b.String(), err)
	}
}

// runShell runs script with args in a clean environment in a fresh directory, and returns
// the environment it prints with env -0; it fails the test if the script created a file
// there (a value was executed).
func runShell(t *testing.T, env []string, shell string, args ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(shell, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"HOME=/nonexistent", "PATH=" + os.Getenv("PATH")}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", shell, err, stderr.Bytes())
	}
	if stderr.Len() > 0 {
		t.Errorf("%s wrote to stderr:\n%s", shell, stderr.Bytes())
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("%s ran part of a value: it created %s", shell, entries[0].Name())
	}
	got := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	return got
}

func writeFile(t *testing.T, k Dialect, vars []Var) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, k, vars); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(file, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func checkEnv(t *testing.T, shell string, got map[string]string, vars []Var) {
	t.Helper()
	for _, v := range vars {
		if g, ok := got[v.Name]; !ok || g != v.Value {
			t.Errorf("%s read %s as %q (set: %v), want %q", shell, v.Name, g, ok, v.Value)
		}
	}
}

// needEnv0 makes sure env -0 (GNU coreutils) is there to print the environment exactly.
func needEnv0(t *testing.T) {
	t.Helper()
	if err := exec.Command("env", "-0").Run(); err != nil {
		t.Skipf("no env -0 here: %v", err)
	}
}

func TestPosixShells(t *testing.T) {
	needEnv0(t)
	vars := nastyVars()
	file := writeFile(t, Posix, vars)
	ran := 0
	for _, shell := range []string{"sh", "bash", "zsh", "dash", "ksh"} {
		path, err := exec.LookPath(shell)
		if err != nil {
			if shell == "sh" {
				t.Fatal("no sh on PATH")
			}
			continue
		}
		ran++
		t.Run(shell, func(t *testing.T) {
			checkEnv(t, shell, runShell(t, nil, path, "-c", `. "$1" && env -0`, shell, file), vars)
		})
	}
	t.Logf("%d POSIX shells tried", ran)
}

// needFish finds fish, which CI installs; without it the test fails, unless
// TP_SHELL_TESTS_OPTIONAL=1 lets it skip.
func needFish(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("fish")
	if err != nil {
		if os.Getenv("TP_SHELL_TESTS_OPTIONAL") == "1" {
			t.Skip("no fish on PATH (TP_SHELL_TESTS_OPTIONAL=1)")
		}
		t.Fatal("no fish on PATH: install it (apt-get install fish), or set TP_SHELL_TESTS_OPTIONAL=1 to skip the fish tests")
	}
	return path
}

func TestFish(t *testing.T) {
	fish := needFish(t)
	needEnv0(t)
	vars := nastyVars()
	file := writeFile(t, Fish, vars)
	// --no-config: a user's config.fish must not change what is read.
	checkEnv(t, "fish", runShell(t, nil, fish, "--no-config", "-c", `source $argv[1]; and env -0`, file), vars)

	// And the values as fish itself sees them, not only as it exports them.
	var script strings.Builder
	script.WriteString("source $argv[1]; or exit 1\n")
	for _, v := range vars {
		fmt.Fprintf(&script, "printf '%%s\\0' \"$%s\"\n", v.Name)
	}
	cmd := exec.Command(fish, "--no-config", "-c", script.String(), file)
	cmd.Env = []string{"HOME=/nonexistent", "PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fish: %v\n%s", err, out)
	}
	vals := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if len(vals) != len(vars) {
		t.Fatalf("fish printed %d values, want %d: %q", len(vals), len(vars), out)
	}
	for i, v := range vars {
		if vals[i] != v.Value {
			t.Errorf("fish reads %s as %q, want %q", v.Name, vals[i], v.Value)
		}
	}
}

// parsePowerShell reads what Write writes for PowerShell as PowerShell's tokenizer
// would: $env:NAME = '...' statements, each ended by a new line, where inside the single
// quotes any of ' ‘ ’ ‚ ‛ ends the string unless another of them follows, and such a pair
// stands for its second character. Anything else is an error.
func parsePowerShell(text string) ([]Var, error) {
	var vars []Var
	for text != "" {
		rest, ok := strings.CutPrefix(text, "$env:")
		if !ok {
			return nil, fmt.Errorf("want $env: at %q", text)
		}
		name, rest, ok := strings.Cut(rest, " = '")
		if !ok || checkName(name) != nil {
			return nil, fmt.Errorf("want NAME = ' at %q", rest)
		}
		var val strings.Builder
		for {
			r, n := utf8.DecodeRuneInString(rest)
			if n == 0 {
				return nil, fmt.Errorf("%s: unterminated string", name)
			}
			rest = rest[n:]
			if isPowerShellQuote(r) {
				r2, n2 := utf8.DecodeRuneInString(rest)
				if n2 == 0 || !isPowerShellQuote(r2) {
					break
				}
				r, rest = r2, rest[n2:]
			}
			val.WriteRune(r)
		}
		if text, ok = strings.CutPrefix(rest, "\n"); !ok {
			return nil, fmt.Errorf("%s: want a new line after the string, have %q", name, rest)
		}
		vars = append(vars, Var{name, val.String()})
	}
	return vars, nil
}

func TestPowerShell(t *testing.T) {
	vars := nastyVars()
	var b bytes.Buffer
	if err := Write(&b, PowerShell, vars); err != nil {
		t.Fatal(err)
	}
	got, err := parsePowerShell(b.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, b.Bytes())
	}
	checkVars(t, "PowerShell", got, vars)
	// The parser is strict: an undoubled typographic quote ends the string.
	if _, err := parsePowerShell("$env:A = 'it’s'\n"); err == nil {
		t.Error("the test's parser took an undoubled ’")
	}
}

// parseCmd reads what Write writes for cmd as cmd would, refusing what cmd would not take
// literally: set "NAME=value" lines, with no '"', '%' or '!' in between.
func parseCmd(text string) ([]Var, error) {
	var vars []Var
	for _, line := range strings.SplitAfter(text, "\n") {
		if line == "" {
			continue
		}
		body, ok := strings.CutPrefix(line, `set "`)
		if ok {
			body, ok = strings.CutSuffix(body, "\"\n")
		}
		if !ok {
			return nil, fmt.Errorf("want set \"...\" at %q", line)
		}
		if strings.ContainsAny(body, "\"%!\r") {
			return nil, fmt.Errorf("cmd would not take %q literally", body)
		}
		name, val, ok := strings.Cut(body, "=")
		if !ok || checkName(name) != nil || val == "" {
			return nil, fmt.Errorf("want NAME=value in %q", body)
		}
		vars = append(vars, Var{name, val})
	}
	return vars, nil
}

func TestCmd(t *testing.T) {
	vars := cmdSafe()
	if len(vars) < len(nasty)/2 {
		t.Fatalf("cmd takes only %d of the %d values", len(vars), len(nasty))
	}
	var b bytes.Buffer
	if err := Write(&b, Cmd, vars); err != nil {
		t.Fatal(err)
	}
	got, err := parseCmd(b.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, b.Bytes())
	}
	checkVars(t, "cmd", got, vars)
	// Each value cmd cannot take makes Write fail.
	for _, v := range nastyVars() {
		if cmdValue(v.Value) != nil {
			if err := Write(new(bytes.Buffer), Cmd, []Var{v}); err == nil || !strings.HasPrefix(err.Error(), v.Name+": ") {
				t.Errorf("cmd and %q: %v", v.Value, err)
			}
		}
	}
}

func TestJSON(t *testing.T) {
	vars := nastyVars()
	var b bytes.Buffer
	if err := Write(&b, JSON, vars); err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatalf("%v\n%s", err, b.Bytes())
	}
	if len(m) != len(vars) {
		t.Errorf("%d variables read, want %d", len(m), len(vars))
	}
	// The order given, kept.
	dec := json.NewDecoder(&b)
	var got []Var
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	for dec.More() {
		k, _ := dec.Token()
		v, _ := dec.Token()
		got = append(got, Var{k.(string), v.(string)})
	}
	checkVars(t, "JSON", got, vars)
}

func checkVars(t *testing.T, shell string, got, want []Var) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d variables read, want %d", shell, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Errorf("%s: read %q, want %q", shell, got[i], want[i])
		}
	}
}
