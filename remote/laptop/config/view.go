package config

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"

	"go.yaml.in/yaml/v3"

	"github.com/tpdev/tp/remote"
)

// Entry is one value of the merged configuration, and where it came from.
type Entry struct {
	Path   []string // connect listen; intercepts web-app ports
	Values []string
	List   bool
	Origin Origin
}

// Defaults are the commands' own values (their flags' defaults), by section (connect, run)
// and key.
type Defaults map[string]map[string]string

// View is the merged configuration: tp connect's settings (the user file's, else the
// default), the project's namespace (namespaceFlag when the command line gave one), tp run's
// settings and the project's intercepts.
func (fs *Files) View(defaults Defaults, namespaceFlag string) []Entry {
	var out []Entry
	var user, project File
	if fs.User != nil {
		user = *fs.User
	}
	if fs.Project != nil {
		project = *fs.Project
	}
	out = append(out, merged("connect", ConnectKeys, user.Connect, defaults["connect"])...)
	ns := Entry{Path: []string{"namespace"}, Values: []string{""}}
	switch {
	case namespaceFlag != "":
		ns.Values, ns.Origin = []string{namespaceFlag}, Origin{Flag: true}
	case project.Namespace != nil:
		ns.Values, ns.Origin = project.Namespace.Values, project.Namespace.Origin
	}
	out = append(out, ns)
	out = append(out, merged("run", RunKeys, project.Run, defaults["run"])...)
	for _, ic := range project.Intercepts {
		for _, s := range ic.Settings {
			out = append(out, Entry{Path: []string{"intercepts", ic.Name, s.Key}, Values: s.Values, List: s.List, Origin: s.Origin})
		}
	}
	return out
}

func merged(section string, ks keys, set []Setting, defaults map[string]string) []Entry {
	var out []Entry
	for _, k := range ks.Keys() {
		e := Entry{Path: []string{section, k}, List: ks[k].typ == list}
		if d, ok := defaults[k]; ok && d != "" {
			e.Values = []string{d}
		}
		for _, s := range set {
			if s.Key == k {
				e.Values, e.Origin = s.Values, s.Origin
			}
		}
		if k == "upstream-proxy" && len(e.Values) == 1 {
			e.Values = []string{redacted(e.Values[0])}
		}
		if ks[k].typ == boolean && len(e.Values) == 0 {
			e.Values = []string{"false"}
		}
		if !e.List && len(e.Values) == 0 {
			e.Values = []string{""}
		}
		out = append(out, e)
	}
	return out
}

// redacted is a proxy URL without its password, which the view does not show.
func redacted(proxy string) string {
	u, err := url.Parse(proxy)
	if err != nil || u.User == nil {
		return proxy
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Render writes the entries as YAML (each value's origin in a comment) or JSON (each value
// an object: value, source).
func (fs *Files) Render(w io.Writer, entries []Entry, format string) error {
	switch format {
	case "", "yaml":
		root := &yaml.Node{Kind: yaml.MappingNode}
		for _, e := range entries {
			m := root
			for _, p := range e.Path[:len(e.Path)-1] {
				m = child(m, p)
			}
			leaf := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle, LineComment: e.Origin.String()}
			for _, v := range e.Values {
				leaf.Content = append(leaf.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: v})
			}
			if !e.List {
				leaf = leaf.Content[0]
				leaf.LineComment = e.Origin.String()
				if leaf.Value == "" {
					leaf.Style = yaml.DoubleQuotedStyle
				}
			}
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: e.Path[len(e.Path)-1]}, leaf)
		}
		root.HeadComment = fmt.Sprintf("user file: %s\nproject file: %s", fs.path(fs.User), fs.path(fs.Project))
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(root); err != nil {
			return err
		}
		return enc.Close()
	case "json":
		root := map[string]any{"files": map[string]string{"user": fs.path(fs.User), "project": fs.path(fs.Project)}}
		for _, e := range entries {
			m := root
			for _, p := range e.Path[:len(e.Path)-1] {
				if _, ok := m[p].(map[string]any); !ok {
					m[p] = map[string]any{}
				}
				m = m[p].(map[string]any)
			}
			var v any = append([]string{}, e.Values...)
			if !e.List {
				v = e.Values[0]
			}
			m[e.Path[len(e.Path)-1]] = map[string]any{"value": v, "source": e.Origin.String()}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(root)
	}
	return remote.Errorf(remote.Usage, "unknown output %q: yaml or json", format)
}

func (fs *Files) path(f *File) string {
	if f == nil {
		return "none"
	}
	return f.Path
}

// child is the mapping under key in m, made if missing.
func child(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	c := &yaml.Node{Kind: yaml.MappingNode}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, c)
	return c
}
