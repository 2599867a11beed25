// Package shell writes environment variables as commands for the user's shell, for tp
// connect's exports and a future tp env: POSIX shells (sh, bash, zsh, dash, ksh), fish,
// PowerShell, Windows cmd, and JSON for scripts and other tools.
//
// Values are proxy URLs that may hold credentials, so they can contain any character a
// URL can ('$', '%', '@', ';', quotes, spaces, backslashes, non-ASCII letters). Each kind
// quotes them so the shell reads back exactly the bytes given; where a shell cannot carry
// a value in its form (cmd and '%'), Write fails naming the variable rather than print
// something the shell would read differently.
package shell

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"
	"unicode/utf8"
)

// Var is one environment variable.
type Var struct{ Name, Value string }

// Dialect is a shell syntax. The zero Dialect is Posix.
type Dialect int

const (
	Posix      Dialect = iota // export NAME='value'
	Fish                      // set -gx NAME 'value'
	PowerShell                // $env:NAME = 'value'
	Cmd                       // set "NAME=value"
	JSON                      // {"NAME": "value"}
)

func (k Dialect) String() string {
	switch k {
	case Posix:
		return "posix"
	case Fish:
		return "fish"
	case PowerShell:
		return "powershell"
	case Cmd:
		return "cmd"
	case JSON:
		return "json"
	}
	return fmt.Sprintf("Dialect(%d)", int(k))
}

// Parse reads a --shell value: posix, fish, powershell, cmd or json, or the aliases sh,
// bash, zsh (posix) and pwsh (powershell), in any case.
func Parse(name string) (Dialect, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "posix", "sh", "bash", "zsh":
		return Posix, nil
	case "fish":
		return Fish, nil
	case "powershell", "pwsh":
		return PowerShell, nil
	case "cmd":
		return Cmd, nil
	case "json":
		return JSON, nil
	}
	return Posix, fmt.Errorf("--shell %q: want posix, fish, powershell, cmd or json", name)
}

// Detect guesses the user's shell: PowerShell on Windows (cmd users pass --shell cmd; there
// is no reliable way to tell the two apart from the environment), otherwise the one $SHELL
// names: fish, PowerShell (pwsh as a login shell on Linux or macOS), or else a POSIX shell,
// which is also the answer when $SHELL is unset.
func Detect(getenv func(string) string, goos string) Dialect {
	if goos == "windows" {
		return PowerShell
	}
	switch strings.TrimSuffix(path.Base(getenv("SHELL")), ".exe") {
	case "fish":
		return Fish
	case "pwsh", "powershell":
		return PowerShell
	}
	return Posix
}

// Write writes vars as commands that set them, in the order given, or as one JSON object.
// Nothing is written when any variable cannot be carried: a name that is not a portable
// variable name (letters, digits, '_', not starting with a digit), a name given twice, a
// value with a NUL byte (no environment holds one) or that is not UTF-8 (PowerShell, cmd
// and JSON read text), or, for cmd, a value cmd cannot hold (see cmdValue).
func Write(w io.Writer, k Dialect, vars []Var) error {
	var b bytes.Buffer
	seen := map[string]bool{}
	for _, v := range vars {
		if err := checkName(v.Name); err != nil {
			return err
		}
		if seen[v.Name] {
			return fmt.Errorf("variable %s given twice", v.Name)
		}
		seen[v.Name] = true
		if strings.IndexByte(v.Value, 0) >= 0 {
			return fmt.Errorf("%s: the value holds a NUL byte, which no environment carries", v.Name)
		}
		if !utf8.ValidString(v.Value) {
			return fmt.Errorf("%s: the value is not UTF-8", v.Name)
		}
	}
	switch k {
	case Posix:
		for _, v := range vars {
			fmt.Fprintf(&b, "export %s=%s\n", v.Name, posixQuote(v.Value))
		}
	case Fish:
		for _, v := range vars {
			fmt.Fprintf(&b, "set -gx %s %s\n", v.Name, fishQuote(v.Value))
		}
	case PowerShell:
		for _, v := range vars {
			fmt.Fprintf(&b, "$env:%s = %s\n", v.Name, powerShellQuote(v.Value))
		}
	case Cmd:
		for _, v := range vars {
			if err := cmdValue(v.Value); err != nil {
				return fmt.Errorf("%s: %w", v.Name, err)
			}
			fmt.Fprintf(&b, "set \"%s=%s\"\n", v.Name, v.Value)
		}
	case JSON:
		b.WriteString("{")
		for i, v := range vars {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString("\n  ")
			b.Write(jsonString(v.Name))
			b.WriteString(": ")
			b.Write(jsonString(v.Value))
		}
		if len(vars) > 0 {
			b.WriteString("\n")
		}
		b.WriteString("}\n")
	default:
		return fmt.Errorf("unknown shell kind %d", int(k))
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("writing the %s variables: %w", k, err)
	}
	return nil
}

// checkName accepts the names every kind can write unquoted; anything else could end the
// command early (a name is not quoted in any of the shell forms).
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("empty variable name")
	}
	for i, r := range name {
		letter := r == '_' || 'A' <= r && r <= 'Z' || 'a' <= r && r <= 'z'
		if !letter && (i == 0 || r < '0' || r > '9') {
			return fmt.Errorf("%q is not a variable name (letters, digits and _, not starting with a digit)", name)
		}
	}
	return nil
}

// posixQuote single-quotes s: nothing is special inside single quotes, new lines
// included, so each ' inside is closed, escaped and reopened:
//
//	'it'\''s'
func posixQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// fishQuote single-quotes s the fish way: inside single quotes fish reads \' and \\ as
// escapes (and every other backslash literally), so both are escaped.
func fishQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}

// powerShellQuote single-quotes s for PowerShell, whose tokenizer takes the typographic
// quotes ‘ ’ ‚ ‛ for ' too: any of them ends the string unless doubled, and a pair stands
// for its second character. So each is doubled by itself.
func powerShellQuote(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, r := range s {
		if isPowerShellQuote(r) {
			b.WriteRune(r)
		}
		b.WriteRune(r)
	}
	b.WriteByte('\'')
	return b.String()
}

func isPowerShellQuote(r rune) bool {
	return r == '\'' || r == '\u2018' || r == '\u2019' || r == '\u201a' || r == '\u201b'
}

// cmdValue says whether cmd reads s back exactly inside set "NAME=s", whether typed at the
// prompt or run from a .bat file. Inside the quotes cmd leaves & | < > ( ) ^ and spaces
// alone, but it has no escape for the rest:
//   - '%' expands variables (%X%), and a .bat file drops a lone %;
//   - '!' expands variables under delayed expansion (setlocal EnableDelayedExpansion, or
//     cmd /v), which then also eats the ^ in the line;
//   - '"' turns the quoting off for what follows;
//   - a new line ends the command.
//
// An empty value is refused too: set "NAME=" removes NAME rather than setting it empty.
func cmdValue(s string) error {
	if s == "" {
		return fmt.Errorf("cmd cannot set an empty value (set \"NAME=\" removes the variable)")
	}
	if i := strings.IndexAny(s, "%!\"\r\n"); i >= 0 {
		return fmt.Errorf("the value holds %q, which cmd's set cannot carry; use PowerShell", s[i])
	}
	return nil
}

// jsonString encodes s without HTML escaping, which would be valid but harder to read.
func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
