package intercept

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"
)

// shellName is what a POSIX shell accepts as a variable name.
var shellName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// shellSafe values need no quotes in an assignment. '~' is left out: the shell expands it
// after '=' and ':' in assignments.
var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]*$`)

// WriteEnvFile writes vars as POSIX shell assignments, one per line, for
//
//	set -a; . ./FILE; set +a
//
// A value is written bare when it is made only of letters, digits and _@%+=:,./- (an
// empty value too: KEY=), and otherwise in single quotes, with each single quote inside
// closed, escaped and reopened:
//
//	GREETING='it'\''s a "test"'
//
// Every value survives the shell exactly, new lines included.
//
// docker run --env-file reads the same file, but takes each line literally: bare values
// (the common case) arrive intact, quoted ones arrive with their quotes, and a value with
// a new line cannot be expressed in Docker's format at all. Use WriteDockerEnvFile for
// Docker. Variables no shell can hold (a name like "my.var", a NUL byte in the value) are
// left out with a comment line saying so.
func WriteEnvFile(w io.Writer, vars []EnvVar) error {
	bw := bufio.NewWriter(w)
	for _, v := range dedupe(vars) {
		switch {
		case !shellName.MatchString(v.Name):
			fmt.Fprintf(bw, "# skipped %q: not a shell variable name\n", v.Name)
		case strings.IndexByte(v.Value, 0) >= 0:
			fmt.Fprintf(bw, "# skipped %s: its value holds a NUL byte, which no environment carries\n", v.Name)
		case shellSafe.MatchString(v.Value):
			fmt.Fprintf(bw, "%s=%s\n", v.Name, v.Value)
		default:
			fmt.Fprintf(bw, "%s='%s'\n", v.Name, strings.ReplaceAll(v.Value, "'", `'\''`))
		}
	}
	return bw.Flush()
}

// WriteDockerEnvFile writes vars in the format of docker run --env-file (and podman's):
// KEY=value lines taken literally, no quoting. Docker cannot read a value with a new line
// or one that is not UTF-8, nor a name with white space; such variables are left out with
// a comment line saying so.
func WriteDockerEnvFile(w io.Writer, vars []EnvVar) error {
	bw := bufio.NewWriter(w)
	for _, v := range dedupe(vars) {
		switch {
		case v.Name == "" || strings.ContainsAny(v.Name, " \t\r\n\v\f=") || !utf8.ValidString(v.Name):
			fmt.Fprintf(bw, "# skipped %q: not a name docker reads\n", v.Name)
		case strings.ContainsAny(v.Value, "\r\n\x00") || !utf8.ValidString(v.Value):
			fmt.Fprintf(bw, "# skipped %s: docker's env file cannot hold its value (a line break, NUL or non-UTF-8 byte)\n", v.Name)
		default:
			fmt.Fprintf(bw, "%s=%s\n", v.Name, v.Value)
		}
	}
	return bw.Flush()
}

// WriteEnvJSON writes vars as one JSON object, {"KEY": "value", ...}, in their order.
// JSON strings are Unicode: bytes that are not UTF-8 become U+FFFD.
func WriteEnvJSON(w io.Writer, vars []EnvVar) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	b.WriteString("{")
	for i, v := range dedupe(vars) {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n  ")
		// Encode appends a new line; the object's layout is ours.
		if err := enc.Encode(v.Name); err != nil {
			return err
		}
		b.Truncate(b.Len() - 1)
		b.WriteString(": ")
		if err := enc.Encode(v.Value); err != nil {
			return err
		}
		b.Truncate(b.Len() - 1)
	}
	if len(vars) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("}\n")
	_, err := w.Write(b.Bytes())
	return err
}

// dedupe keeps each name once, at its first place, with its last value, as Env returns
// them; callers may pass lists of their own.
func dedupe(vars []EnvVar) []EnvVar {
	var e orderedEnv
	for _, v := range vars {
		e.set(v)
	}
	return e.vars
}
