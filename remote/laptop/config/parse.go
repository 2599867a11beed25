package config

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// valueType is what a key's value must be.
type valueType int

const (
	text valueType = iota
	list
	boolean
	integer
	duration
	file // a path, relative to the file's folder
)

var typeNames = map[valueType]string{text: "a string", file: "a file's path", list: "a list of strings", boolean: "true or false", integer: "an integer", duration: "a duration (30s, 2m)"}

// key is one key a section may hold: the flag it sets (its own name unless given).
type key struct {
	typ  valueType
	flag string
}

type keys map[string]key

// ConnectKeys, InterceptKeys and RunKeys are what the files' sections may hold.
var (
	ConnectKeys = keys{
		"listen": {typ: text}, "dns-listen": {typ: text}, "manager-namespace": {typ: text},
		"lanes": {typ: integer}, "transport": {typ: text}, "also-proxy": {typ: list},
		"never-proxy": {typ: list}, "upstream-proxy": {typ: text}, "upstream-no-proxy": {typ: text},
		"shell": {typ: text}, "allow-other-users": {typ: boolean},
	}
	InterceptKeys = keys{
		"workload": {typ: text, flag: "-"}, "ports": {typ: list, flag: "port"}, "name": {typ: text},
		"http-header": {typ: list}, "http-path": {typ: text}, "wiretap": {typ: boolean},
		"env-file": {typ: file}, "env-json": {typ: file}, "manager-namespace": {typ: text},
		"timeout": {typ: duration}, "mount": {typ: boolean},
	}
	RunKeys = keys{
		"vif": {typ: text}, "manager-namespace": {typ: text}, "transport": {typ: text},
		"timeout": {typ: duration}, "intercept": {typ: text}, "port": {typ: text},
		"as": {typ: text}, "container": {typ: text}, "mount": {typ: boolean}, "egress": {typ: text},
	}
)

// Keys are the section's keys, sorted.
func (ks keys) Keys() []string { return slices.Sorted(maps.Keys(ks)) }

// Flag is the flag key k sets.
func (ks keys) Flag(k string) string {
	switch f := ks[k].flag; f {
	case "":
		return k
	case "-":
		return ""
	default:
		return f
	}
}

// schema is a file's top level.
type schema int

const (
	userSchema schema = iota
	projectSchema
)

var topKeys = map[schema][]string{
	userSchema:    {"connect", "version"},
	projectSchema: {"intercepts", "namespace", "run", "version"},
}

// fileError is a mistake at a node of a file.
func fileError(path string, n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("%s:%d:%d: %s", path, n.Line, n.Column, fmt.Sprintf(format, args...))
}

func parse(path string, src []byte, s schema) (*File, error) {
	f := &File{Path: path}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		// yaml.v3 says "yaml: line N: ...".
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if rest, ok := strings.CutPrefix(msg, "line "); ok {
			return nil, fmt.Errorf("%s:%s", path, rest)
		}
		return nil, fmt.Errorf("%s: %s", path, msg)
	}
	if len(doc.Content) == 0 {
		return f, nil // empty
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, fileError(path, top, "want a mapping of keys (%s)", strings.Join(topKeys[s], ", "))
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if !slices.Contains(topKeys[s], k.Value) {
			return nil, fileError(path, k, "unknown key %q; valid keys: %s", k.Value, strings.Join(topKeys[s], ", "))
		}
		var err error
		switch k.Value {
		case "version":
			if v.Kind != yaml.ScalarNode || v.Value != "1" {
				err = fileError(path, v, "version: want 1, the only version tp reads, got %q", v.Value)
			}
		case "connect":
			f.Connect, err = section(path, "connect", v, ConnectKeys)
		case "run":
			f.Run, err = section(path, "run", v, RunKeys)
		case "namespace":
			var ns []Setting
			ns, err = section(path, "", &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{k, v}}, keys{"namespace": {typ: text}})
			if err == nil {
				f.Namespace = &ns[0]
			}
		case "intercepts":
			f.interceptsAt = Origin{Path: path, Line: k.Line, Column: k.Column}
			f.Intercepts, err = intercepts(path, v)
		}
		if err != nil {
			return nil, err
		}
	}
	return f, nil
}

func intercepts(path string, n *yaml.Node) ([]Intercept, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fileError(path, n, "intercepts: wrong type: want a mapping of names to intercepts, got %s", kindName(n))
	}
	var out []Intercept
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		settings, err := section(path, "intercepts."+k.Value, v, InterceptKeys)
		if err != nil {
			return nil, err
		}
		out = append(out, Intercept{Name: k.Value, Settings: settings, Origin: Origin{Path: path, Line: k.Line, Column: k.Column}})
	}
	return out, nil
}

// section reads a mapping of keys (ks) to values, each checked for its type.
func section(path, name string, n *yaml.Node, ks keys) ([]Setting, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fileError(path, n, "%s: wrong type: want a mapping of keys (%s), got %s", name, strings.Join(ks.Keys(), ", "), kindName(n))
	}
	var out []Setting
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		spec, ok := ks[k.Value]
		if !ok {
			where := ""
			if name != "" {
				where = " in " + name
			}
			return nil, fileError(path, k, "unknown key %q%s; valid keys: %s", k.Value, where, strings.Join(ks.Keys(), ", "))
		}
		values, err := value(spec.typ, v)
		if err != nil {
			return nil, fileError(path, v, "%s: wrong type: want %s, %v", k.Value, typeNames[spec.typ], err)
		}
		if spec.typ == file && !filepath.IsAbs(values[0]) {
			values[0] = filepath.Join(filepath.Dir(path), values[0])
		}
		out = append(out, Setting{Key: k.Value, Flag: ks.Flag(k.Value), Values: values, List: spec.typ == list,
			Origin: Origin{Path: path, Line: k.Line, Column: k.Column}})
	}
	return out, nil
}

// value is a node's value(s) as the flag takes them, if it is of type t.
func value(t valueType, n *yaml.Node) ([]string, error) {
	if t == list {
		if n.Kind != yaml.SequenceNode {
			return nil, fmt.Errorf("got %s", kindName(n))
		}
		var out []string
		for _, e := range n.Content {
			if e.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("got %s in it", kindName(e))
			}
			out = append(out, e.Value)
		}
		return out, nil
	}
	if n.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("got %s", kindName(n))
	}
	ok := true
	switch t {
	case boolean:
		ok = n.Tag == "!!bool"
	case integer:
		ok = n.Tag == "!!int"
	case duration:
		_, err := time.ParseDuration(n.Value)
		ok = err == nil
	case text, file:
		ok = n.Tag != "!!null"
	}
	if !ok {
		return nil, fmt.Errorf("got %q", n.Value)
	}
	return []string{n.Value}, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return fmt.Sprintf("%q", n.Value)
}
