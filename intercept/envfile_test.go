package intercept

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

var awkwardValues = []string{
	"", "plain", "with space", "it's", "'", "''", "a\nb", "\n", "$HOME", "`id`", "$(id)", `back\slash`, "tab\there",
	"~/x", "x:~/y", "a=b", `"dq"`, "ünïcode", "trailing space ", " leading", "*", "?", "[a]", "{a,b}", "!", "#x", "a#b",
	";", "&", "|", "<>", "cr\r", "%", "@", "http://x/?a=1&b=2", "-n", "'\\''",
}

func awkwardVars() []EnvVar {
	var vars []EnvVar
	for i, v := range awkwardValues {
		vars = append(vars, EnvVar{Name: fmt.Sprintf("V%d", i), Value: v})
	}
	return vars
}

// parseEnvFile reads the format WriteEnvFile documents: comment lines, and NAME=VALUE
// where VALUE is bare or a run of single-quoted parts joined by \'.
func parseEnvFile(t *testing.T, s string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for len(s) > 0 {
		if s[0] == '#' {
			_, s, _ = strings.Cut(s, "\n")
			continue
		}
		name, rest, ok := strings.Cut(s, "=")
		if !ok || !shellName.MatchString(name) {
			t.Fatalf("bad line at %q", s)
		}
		var v strings.Builder
		i := 0
	value:
		for i < len(rest) {
			switch c := rest[i]; {
			case c == '\n':
				i++
				break value
			case c == '\'':
				end := strings.IndexByte(rest[i+1:], '\'')
				if end < 0 {
					t.Fatalf("unterminated quote in %q", rest)
				}
				v.WriteString(rest[i+1 : i+1+end])
				i += end + 2
			case c == '\\' && i+1 < len(rest) && rest[i+1] == '\'':
				v.WriteByte('\'')
				i += 2
			default:
				if !shellSafe.MatchString(string(c)) {
					t.Fatalf("unquoted %q in the value of %s", c, name)
				}
				v.WriteByte(c)
				i++
			}
		}
		out[name] = v.String()
		s = rest[i:]
	}
	return out
}

func TestWriteEnvFileRoundTrips(t *testing.T) {
	vars := append(awkwardVars(),
		EnvVar{Name: "my.var", Value: "x"},     // Kubernetes allows it, no shell does
		EnvVar{Name: "NUL", Value: "a\x00b"},   // no environment holds it
		EnvVar{Name: "V1", Value: "plain too"}, // a later value wins
	)
	var b bytes.Buffer
	if err := WriteEnvFile(&b, vars); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	if !strings.Contains(text, "V0=\n") || !strings.Contains(text, "=a=b\n") {
		t.Errorf("simple values are not bare:\n%s", text)
	}
	if !strings.Contains(text, `# skipped "my.var": not a shell variable name`) || !strings.Contains(text, "# skipped NUL:") {
		t.Errorf("no comment for skipped variables:\n%s", text)
	}
	got := parseEnvFile(t, text)
	want := map[string]string{}
	for i, v := range awkwardValues {
		want[fmt.Sprintf("V%d", i)] = v
	}
	want["V1"] = "plain too"
	if len(got) != len(want) {
		t.Errorf("%d variables read, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: read %q, want %q", k, got[k], v)
		}
	}

	// And the real thing, where there is a shell.
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	file := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(file, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `set -a; . "$1"; set +a; shift; for n in "$@"; do eval "printf '%s\0' \"\$$n\""; done`
	args := []string{"-c", script, "sh", file}
	var names []string
	for i := range awkwardValues {
		names = append(names, fmt.Sprintf("V%d", i))
	}
	cmd := exec.Command(sh, append(args, names...)...)
	cmd.Env = []string{"HOME=/nonexistent", "PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sh: %v\n%s", err, out)
	}
	vals := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if len(vals) != len(names) {
		t.Fatalf("sh printed %d values, want %d: %q", len(vals), len(names), out)
	}
	for i, n := range names {
		if vals[i] != want[n] {
			t.Errorf("sh read %s as %q, want %q", n, vals[i], want[n])
		}
	}
}

// readDockerEnvFile reads as docker's CLI does (opts/envfile.go): lines trimmed on the
// left, blank and # lines skipped, NAME=VALUE split at the first =, the value literal.
func readDockerEnvFile(s string) map[string]string {
	out := map[string]string{}
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimLeftFunc(line, unicode.IsSpace)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		out[k] = v
	}
	return out
}

func TestWriteDockerEnvFile(t *testing.T) {
	vars := append(awkwardVars(), EnvVar{Name: "BAD", Value: "\xff"})
	var b bytes.Buffer
	if err := WriteDockerEnvFile(&b, vars); err != nil {
		t.Fatal(err)
	}
	got := readDockerEnvFile(b.String())
	for i, v := range awkwardValues {
		n := fmt.Sprintf("V%d", i)
		if strings.ContainsAny(v, "\r\n") {
			if _, ok := got[n]; ok || !strings.Contains(b.String(), "# skipped "+n+":") {
				t.Errorf("%s (%q) is not skipped with a comment", n, v)
			}
			continue
		}
		if got[n] != v {
			t.Errorf("docker reads %s as %q, want %q", n, got[n], v)
		}
	}
	if _, ok := got["BAD"]; ok {
		t.Error("a value that is not UTF-8 was written")
	}
}

func TestWriteEnvJSON(t *testing.T) {
	vars := append(awkwardVars(), EnvVar{Name: "HTML", Value: "<a&b>"})
	var b bytes.Buffer
	if err := WriteEnvJSON(&b, vars); err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%v:\n%s", err, b.String())
	}
	for _, v := range vars {
		if got[v.Name] != v.Value {
			t.Errorf("%s: %q, want %q", v.Name, got[v.Name], v.Value)
		}
	}
	if !strings.HasPrefix(b.String(), "{\n  \"V0\": \"\",\n  \"V1\": \"plain\",") || !strings.Contains(b.String(), `"<a&b>"`) {
		t.Errorf("layout:\n%s", b.String())
	}
	b.Reset()
	if err := WriteEnvJSON(&b, nil); err != nil || b.String() != "{}\n" {
		t.Errorf("empty: %q %v", b.String(), err)
	}
}
