// Package schema holds the JSON Schemas (draft 2020-12) of what tp prints with -o json: the
// documented contract of package output's shapes, one file per kind, and checks documents
// against them. Scripts may validate tp's output with the same files.
//
// The files leave objects open (a reader of version 1 must accept fields added later);
// Strict closes them, so tp's own tests fail when a shape gains a field its schema does not
// document.
package schema

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"
)

//go:embed *.json
var files embed.FS

// base names the embedded files for the compiler. .invalid never resolves: every file is
// preloaded, so nothing is ever fetched.
const base = "https://schema.tp.invalid/"

// ManifestKind is the kind of tp install --dry-run -o json, a Kubernetes List.
const ManifestKind = "List"

// file is the schema file of a document's kind: tp.status.json for tp.status,
// kubernetes.list.json for a Kubernetes List.
func file(kind string) string {
	if kind == ManifestKind {
		return "kubernetes.list.json"
	}
	return kind + ".json"
}

// Kinds are the kinds with a schema, sorted.
func Kinds() []string {
	var kinds []string
	entries, _ := fs.ReadDir(files, ".")
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".json")
		if name == "kubernetes.list" {
			name = ManifestKind
		}
		kinds = append(kinds, name)
	}
	sort.Strings(kinds)
	return kinds
}

// Source is the schema of kind as it is published.
func Source(kind string) ([]byte, error) {
	b, err := files.ReadFile(file(kind))
	if err != nil {
		return nil, fmt.Errorf("schema of %q: none (have %s)", kind, strings.Join(Kinds(), ", "))
	}
	return b, nil
}

// Validator checks documents against the schemas, compiled once.
type Validator struct {
	schemas map[string]*jsonschema.Schema
}

// New compiles every schema; strict closes every object that lists its properties, so a
// document with a field the schema does not name fails.
func New(strict bool) (*Validator, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for _, kind := range Kinds() {
		src, _ := Source(kind)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(src))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", file(kind), err)
		}
		if strict {
			closeObjects(doc)
		}
		if err := c.AddResource(base+file(kind), doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", file(kind), err)
		}
	}
	v := &Validator{schemas: map[string]*jsonschema.Schema{}}
	for _, kind := range Kinds() {
		s, err := c.Compile(base + file(kind))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", file(kind), err)
		}
		v.schemas[kind] = s
	}
	return v, nil
}

// closeObjects sets additionalProperties false wherever a schema lists properties and says
// nothing of others.
func closeObjects(v any) {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["properties"]; ok {
			if _, set := v["additionalProperties"]; !set {
				v["additionalProperties"] = false
			}
		}
		for _, child := range v {
			closeObjects(child)
		}
	case []any:
		for _, child := range v {
			closeObjects(child)
		}
	}
}

// Validate checks one JSON document (or YAML: -o yaml prints the same shape) against the
// schema its "kind" names, and returns that kind.
func (v *Validator) Validate(doc []byte) (string, error) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return "", fmt.Errorf("not JSON or YAML: %w", err)
	}
	var head struct {
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(js, &head); err != nil {
		return "", fmt.Errorf("not one JSON object: %w", err)
	}
	s, ok := v.schemas[head.Kind]
	if !ok {
		return head.Kind, fmt.Errorf("kind %q: no schema (have %s)", head.Kind, strings.Join(Kinds(), ", "))
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return head.Kind, err
	}
	if err := s.Validate(inst); err != nil {
		return head.Kind, fmt.Errorf("%s does not match %s: %w", head.Kind, file(head.Kind), err)
	}
	return head.Kind, nil
}
