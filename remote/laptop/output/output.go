// Package output is tp's machine-readable output: the -o text|json|yaml flag of tp status,
// list, version and intercept, and the shapes those commands print in JSON and YAML.
//
// Every shape is a contract with scripts: it carries "version" (the shape's, 1; a change
// that breaks a reader makes it 2) and "kind" (tp.status, tp.list, tp.version,
// tp.intercept), and fields are only ever added to it. JSON and YAML print the same struct,
// with the same field names. Text is for people and may change.
//
// tp install --dry-run is the exception: its output is a Kubernetes manifest, for kubectl
// apply -f, not a tp shape (see ManifestList).
package output

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"

	"github.com/tpdev/tp/remote"
)

// Format is how a command prints its result.
type Format string

// The formats -o takes.
const (
	Text Format = "text" // for people, as tp always printed; the default
	JSON Format = "json" // indented JSON of the command's shape
	YAML Format = "yaml" // the same shape in YAML
)

// Parse reads -o's value; "" is Text. Anything else is the user's mistake.
func Parse(s string) (Format, error) {
	switch f := Format(s); f {
	case "":
		return Text, nil
	case Text, JSON, YAML:
		return f, nil
	}
	return "", remote.Errorf(remote.Usage, "-o %q: want text, json or yaml", s)
}

// Structured says whether f is for programs (JSON or YAML).
func (f Format) Structured() bool { return f == JSON || f == YAML }

// Write prints v as f: JSON indented by two spaces, or YAML, each ending in a newline.
// Text is the command's own to print.
func Write(w io.Writer, f Format, v any) error {
	switch f {
	case JSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case YAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return fmt.Errorf("output: %q is not a structured format", f)
}

// SchemaVersion is the version of every shape this package defines.
const SchemaVersion = 1

// The kinds of tp's shapes.
const (
	KindStatus    = "tp.status"
	KindList      = "tp.list"
	KindVersion   = "tp.version"
	KindIntercept = "tp.intercept"
)

// Header starts every shape: {"version": 1, "kind": "tp.…"}.
type Header struct {
	Version int    `json:"version"`
	Kind    string `json:"kind"`
}

// NewHeader is the header of a shape of kind.
func NewHeader(kind string) Header { return Header{Version: SchemaVersion, Kind: kind} }
