package client

import (
	"io"
	"path/filepath"
	"regexp"
	"strings"
)

// tp's names as a kubectl plugin: kubectl runs kubectl-tp for kubectl tp, and (1.26 and
// later) kubectl_complete-tp to complete it.
const (
	KubectlPlugin     = "kubectl-tp"
	KubectlCompletion = "kubectl_complete-tp"
)

// ProgramName is how the user calls tp, from its argv[0]: "kubectl tp" when run as the
// kubectl plugin (kubectl-tp, kubectl-tp.exe), KubectlCompletion when run as its
// completion, else "tp".
func ProgramName(argv0 string) string {
	base := strings.ToLower(filepath.Base(strings.ReplaceAll(argv0, `\`, "/")))
	switch strings.TrimSuffix(base, ".exe") {
	case KubectlPlugin:
		return "kubectl tp"
	case KubectlCompletion:
		return KubectlCompletion
	}
	return "tp"
}

// hint is "tp COMMAND" (or "tp --help") in a message, at the start of a word (after a
// space, a quote, a bracket), kubectl's prefix included if there.
var hint = regexp.MustCompile("(^|[\\s\"'(`])(?:kubectl )?tp( (?:install|uninstall|connect|env|run|intercept|leave|list|status|quit|logs|version|completion|help)\\b| --help\\b)")

// Renamed is text with its hints ("run tp quit first", "see tp connect --help") naming
// the program as the user calls it (ProgramName); unchanged for "tp".
func Renamed(name, text string) string {
	if name == "tp" {
		return text
	}
	return hint.ReplaceAllString(text, "${1}"+name+"${2}")
}

// RenamedWriter is w with every write Renamed: the messages of the commands, as the
// user calls tp.
func RenamedWriter(name string, w io.Writer) io.Writer {
	if name == "tp" {
		return w
	}
	return renamedWriter{name, w}
}

type renamedWriter struct {
	name string
	w    io.Writer
}

func (r renamedWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(r.w, Renamed(r.name, string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
